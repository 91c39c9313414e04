"""``cifar10:root=DIR:split=train|test`` and ``cifar100:root=DIR:split=...:labels=fine|coarse``.

Both distributed formats are read:

* python (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``, ``batches.meta``;
  ``cifar-100-python/train``, ``test``, ``meta``): pickled dicts. They are loaded with
  :class:`SafeUnpickler`, which refuses every global except the numpy array reconstruction
  functions, so a tampered file cannot run code (``pickle.load`` would run ``os.system``);
* binary (``cifar-10-batches-bin/data_batch_*.bin``, ``test_batch.bin``, ``batches.meta.txt``;
  ``cifar-100-binary/train.bin``, ``test.bin``, ``{fine,coarse}_label_names.txt``): fixed-size
  records of label byte(s) then 3072 pixel bytes (1024 R, 1024 G, 1024 B, row-major 32x32).

``root`` may be the extracted folder itself or its parent. Pools are :class:`ArrayPool` of
(N, 32, 32, 3) uint8 with keys ``"<split>/<index:05d>"``; both formats give the same keys, pixels
and manifest hash.
"""

from __future__ import annotations

import hashlib
import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from divssl.data.pool import ArrayPool, register_pool
from divssl.errors import ConfigError

SPLITS = ("train", "test")
_PIXELS = 3 * 32 * 32

# The only globals a pickled numpy array needs (numpy 1.x names and numpy >= 2 names):
# _reconstruct/ndarray/dtype for protocols <= 4, _frombuffer for protocol 5, scalar for numpy
# scalars inside lists. Each only builds arrays from bytes; nothing else may be loaded.
_NUMPY_GLOBALS = {
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
}


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as Python 3 uses it to pickle ``bytes`` at protocol <= 2 (latin-1)."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


def _numpy_core(submodule: str) -> Any:
    try:
        return importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:  # numpy < 2
        return importlib.import_module(f"numpy.core.{submodule}")


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds plain containers and numpy arrays.

    ``find_class`` returns the numpy reconstruction functions listed in ``_NUMPY_GLOBALS`` (and a
    latin-1-only ``_codecs.encode``, which Python 3 protocol-2 pickles use for ``bytes``) and
    raises :class:`pickle.UnpicklingError` for any other global (``os.system``, ``eval``, ...).
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        target = _NUMPY_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        where, attr = target
        owner = importlib.import_module("numpy") if where == "numpy" else _numpy_core(where)
        return getattr(owner, attr)


def safe_load_pickle(path: Path) -> dict[str, Any]:
    """Load a CIFAR python-format pickle with :class:`SafeUnpickler`; keys decoded to ``str``.

    Raises:
        ConfigError: the file holds anything but plain data and numpy arrays, or is not a dict.
    """
    try:
        with open(path, "rb") as fh:
            # latin1 as torchvision does: Python 2 str pixel buffers come back byte for byte.
            obj = SafeUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ConfigError("data.pool", f"{path}: not a safe CIFAR pickle ({exc})") from exc
    if not isinstance(obj, dict):
        raise ConfigError("data.pool", f"{path}: expected a dict, got {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _as_str_list(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _to_hwc(data: Any, path: Path) -> np.ndarray:
    flat = np.asarray(data)
    if flat.dtype != np.uint8 or flat.ndim != 2 or flat.shape[1] != _PIXELS:
        raise ConfigError("data.pool", f"{path}: 'data' must be (N, 3072) uint8, got {flat.shape}")
    return np.ascontiguousarray(flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _find_dir(root: Path, names: tuple[str, ...], marker: str) -> Path | None:
    for candidate in [root / n for n in names] + [root]:
        if (candidate / marker).is_file():
            return candidate
    return None


def _read_python(folder: Path, files: list[str], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in files:
        batch = safe_load_pickle(folder / name)
        if label_key not in batch or "data" not in batch:
            raise ConfigError("data.pool", f"{folder / name}: missing 'data' or {label_key!r}")
        images.append(_to_hwc(batch["data"], folder / name))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _read_binary(
    folder: Path, files: list[str], label_bytes: int, label_byte: int
) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    record = label_bytes + _PIXELS
    for name in files:
        raw = np.fromfile(folder / name, dtype=np.uint8)
        if raw.size % record:
            raise ConfigError("data.pool", f"{folder / name}: size is not a multiple of {record}")
        rows = raw.reshape(-1, record)
        labels.append(rows[:, label_byte].astype(np.int64))
        images.append(_to_hwc(rows[:, label_bytes:], folder / name))
    return np.concatenate(images), np.concatenate(labels)


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError("data.pool.split", f"unknown value {split!r}", SPLITS)


class CifarPool(ArrayPool):
    """CIFAR images in memory; the fingerprint hashes every pixel (150 MB: ~0.2 s, once), so any
    change to any image changes the manifest hash, whichever format the files are in."""

    _digest: bytes | None = None

    def content_fingerprint(self) -> bytes:
        if self._digest is None:
            self._digest = hashlib.sha256(np.ascontiguousarray(self.images).data).digest()
        return self._digest


def _pool(images: np.ndarray, labels: np.ndarray, names: list[str], split: str) -> CifarPool:
    if labels.min(initial=0) < 0 or labels.max(initial=-1) >= len(names):
        raise ConfigError("data.pool", f"labels outside 0..{len(names) - 1}")
    keys = [f"{split}/{i:05d}" for i in range(len(images))]
    return CifarPool(images, labels=labels, class_names=names, keys=keys, source="source")


@register_pool("cifar10")
def cifar10(root: str, split: str = "train") -> CifarPool:
    """Open CIFAR-10 (python or binary format) under ``root``."""
    _check_split(split)
    base = Path(str(root)).expanduser()
    py = _find_dir(base, ("cifar-10-batches-py",), "batches.meta")
    if py is not None:
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        images, labels = _read_python(py, files, "labels")
        names = _as_str_list(safe_load_pickle(py / "batches.meta")["label_names"])
        return _pool(images, labels, names, split)
    binary = _find_dir(base, ("cifar-10-batches-bin",), "batches.meta.txt")
    if binary is not None:
        files = (
            [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
        )
        images, labels = _read_binary(binary, files, 1, 0)
        return _pool(images, labels, _read_lines(binary / "batches.meta.txt"), split)
    raise ConfigError(
        "data.pool.root", f"no CIFAR-10 files under {base} (cifar-10-batches-py or -bin)"
    )


@register_pool("cifar100")
def cifar100(root: str, split: str = "train", labels: str = "fine") -> CifarPool:
    """Open CIFAR-100 (python or binary format) with fine (100) or coarse (20) labels."""
    _check_split(split)
    if labels not in ("fine", "coarse"):
        raise ConfigError("data.pool.labels", f"unknown value {labels!r}", ["coarse", "fine"])
    base = Path(str(root)).expanduser()
    py = _find_dir(base, ("cifar-100-python",), "meta")
    if py is not None:
        images, label_array = _read_python(py, [split], f"{labels}_labels")
        names = _as_str_list(safe_load_pickle(py / "meta")[f"{labels}_label_names"])
        return _pool(images, label_array, names, split)
    binary = _find_dir(base, ("cifar-100-binary",), "fine_label_names.txt")
    if binary is not None:
        # Each record is <coarse byte><fine byte><3072 pixel bytes>.
        images, label_array = _read_binary(
            binary, [f"{split}.bin"], 2, 0 if labels == "coarse" else 1
        )
        return _pool(images, label_array, _read_lines(binary / f"{labels}_label_names.txt"), split)
    raise ConfigError(
        "data.pool.root", f"no CIFAR-100 files under {base} (cifar-100-python or -binary)"
    )
