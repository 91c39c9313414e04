"""``idx:root=DIR:split=train|t10k|test|ood`` — the MNIST family's IDX files (gzip or raw).

The IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/, "FILE FORMATS"): two zero
bytes, a type byte (``0x08`` = unsigned byte, the only type the MNIST family uses), a byte with
the number of dimensions d, then d big-endian uint32 sizes, then the data in row-major order.
Images are ``idx3-ubyte`` (N, rows, cols); labels are ``idx1-ubyte`` (N,).

Two ways to name the files:

* ``root=DIR`` with ``split``: ``train`` reads ``train-images-idx3-ubyte[.gz]`` and
  ``train-labels-idx1-ubyte[.gz]``; ``t10k`` (alias ``test``) reads the ``t10k-*`` pair;
  ``ood`` is the ``t10k`` pair under :data:`OOD_SHIFT` (below). The ``images.idx3-ubyte``
  spelling of some mirrors is found too. Because the reader takes ``split``, ``idx:root=DIR`` is
  also a task spec (train / test / ood).
* ``images=FILE`` (and optionally ``labels=FILE``): one explicit pair, no ``split``.

Gzip is detected from the file's magic bytes, not its name. Grey images are expanded to 3
channels without a copy. Class names come from ``names=FILE`` (one per line), else from
``dataset=fashion-mnist|mnist|kmnist``, else (``dataset=auto``) from the root folder's name when it
is one of those, else ``"0".."K-1"``.

The ``ood`` split: the official test images with a fixed photometric shift, "washed out":
``x' = 77 + 0.6 x`` (contrast lowered to 60 %, black background lifted to grey 77 of 255,
rounded). It keeps every shape and class, so a user can reason about it: a model whose features
depend on absolute intensities (raw pixels, a random net) loses accuracy, one that learned
contrast/brightness invariance from its augmentations should keep most of it. It is deterministic
(no randomness), so every run sees the same OOD images.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import zlib
from pathlib import Path

import numpy as np

from divssl.data.pool import ArrayPool, register_pool
from divssl.errors import ConfigError, unknown_choice

SPLITS = ("train", "t10k", "test", "ood")
_SPLIT_FILES = {"train": "train", "t10k": "t10k", "test": "t10k", "ood": "t10k"}
_UBYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"

# The photometric shift of split=ood: x' = OOD_SHIFT["offset"] + OOD_SHIFT["contrast"] * x.
OOD_SHIFT: dict[str, float] = {"contrast": 0.6, "offset": 77.0}

# Class names of known IDX datasets, in label order.
KNOWN_CLASS_NAMES: dict[str, list[str]] = {
    # zalandoresearch/fashion-mnist README.md, "Labels" table (also in Debian's
    # dataset-fashion-mnist: /usr/share/doc/dataset-fashion-mnist/README.md.gz).
    "fashion-mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
    # http://yann.lecun.com/exdb/mnist/, "FILE FORMATS": "The labels values are 0 to 9" (digits).
    "mnist": [str(d) for d in range(10)],
    # rois-codh/kmnist README.md (one hiragana per row of the syllabary; romanised as in
    # torchvision/datasets/mnist.py, class KMNIST, attribute ``classes``).
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
}  # fmt: skip
DATASETS = ("auto", *KNOWN_CLASS_NAMES)


def _read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it starts with the gzip magic.

    Raises:
        ConfigError: missing file or a broken/truncated gzip stream (naming the file).
    """
    if not path.is_file():
        raise ConfigError("data.pool", f"no such IDX file: {path}")
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise ConfigError("data.pool", f"{path}: broken or truncated gzip stream ({exc})") from exc


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read one unsigned-byte IDX file.

    Args:
        path: ``.idx3-ubyte`` / ``.idx1-ubyte`` file, raw or gzip.
        ndim: the expected number of dimensions (3 for images, 1 for labels).

    Returns:
        uint8 array of the header's shape, e.g. (N, 28, 28) or (N,).

    Raises:
        ConfigError: a malformed header, another element type, the wrong number of dimensions,
            or a data section shorter or longer than the header says (naming the file).
    """
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ConfigError("data.pool", f"{path}: not an IDX file (bad magic {data[:4].hex()})")
    if data[2] != _UBYTE:
        raise ConfigError(
            "data.pool", f"{path}: IDX element type 0x{data[2]:02x}, only 0x08 (ubyte) is read"
        )
    if data[3] != ndim:
        raise ConfigError(
            "data.pool", f"{path}: IDX file has {data[3]} dimensions, expected {ndim}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ConfigError("data.pool", f"{path}: truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64))
    have = len(data) - header
    if have != expected:
        what = "truncated" if have < expected else "trailing bytes"
        raise ConfigError(
            "data.pool",
            f"{path}: header says {shape} = {expected} bytes of data, file has {have} ({what})",
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find(root: Path, prefix: str, kind: str, ndim: int) -> Path:
    """``<prefix>-<kind>-idx<ndim>-ubyte`` (or ``.idx<ndim>-ubyte``), raw or ``.gz``."""
    names = [f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"]
    for name in names:
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise ConfigError("data.pool.root", f"no {names[0]}[.gz] under {root}")


def apply_ood_shift(images: np.ndarray) -> np.ndarray:
    """The fixed photometric shift of ``split=ood``: ``round(77 + 0.6 x)``, uint8.

    Args:
        images: (N, H, W) or (N, H, W, C) uint8.

    Returns:
        Array of the same shape, uint8 in [77, 230].
    """
    shifted = OOD_SHIFT["offset"] + OOD_SHIFT["contrast"] * images.astype(np.float32)
    return np.clip(np.rint(shifted), 0, 255).astype(np.uint8)


def _class_names(
    names: str | None, dataset: str, folder: Path, labels: np.ndarray | None
) -> list[str] | None:
    if labels is None:
        return None
    top = int(labels.max()) + 1 if len(labels) else 0
    if names is not None:
        path = Path(str(names)).expanduser()
        if not path.is_file():
            raise ConfigError("data.pool.names", f"no such file: {path}")
        out = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        source = str(path)
    else:
        if dataset not in DATASETS:
            raise unknown_choice("data.pool.dataset", dataset, DATASETS)
        key = dataset
        if key == "auto":
            name = re.sub(r"[_ ]", "-", folder.name.lower())
            key = name if name in KNOWN_CLASS_NAMES else ""
        if not key:
            return [str(i) for i in range(top)]
        out, source = KNOWN_CLASS_NAMES[key], f"dataset={key}"
    if len(out) < top:
        raise ConfigError(
            "data.pool.names", f"{source} names {len(out)} classes but labels go up to {top - 1}"
        )
    return list(out)


class IdxPool(ArrayPool):
    """IDX images in memory; the fingerprint hashes every stored pixel (47 MB: ~0.1 s, once)."""

    def __init__(self, raw: np.ndarray, **kwargs: object) -> None:
        super().__init__(np.broadcast_to(raw[..., None], (*raw.shape, 3)), **kwargs)  # type: ignore[arg-type]
        self._raw = raw
        self._digest: bytes | None = None

    def content_fingerprint(self) -> bytes:
        if self._digest is None:
            self._digest = hashlib.sha256(np.ascontiguousarray(self._raw).data).digest()
        return self._digest


@register_pool("idx")
def idx(
    root: str | None = None,
    split: str | None = None,
    images: str | None = None,
    labels: str | None = None,
    names: str | None = None,
    dataset: str = "auto",
) -> IdxPool:
    """Open an IDX pool (see the module docstring for the keys).

    Keys are ``"<split>/<index:05d>"`` (``"file/<index>"`` for explicit paths).

    Raises:
        ConfigError: neither ``root`` nor ``images`` (or both), an unknown ``split`` or
            ``dataset``, a missing or malformed file, or image and label counts that disagree.
    """
    if (root is None) == (images is None):
        raise ConfigError("data.pool", "give either root=DIR (with split) or images=FILE")
    base: Path | None = None
    if images is not None:
        if split is not None:
            raise ConfigError(
                "data.pool.split", "split picks files under root=; it cannot go with images="
            )
        if labels is None and names is not None:
            raise ConfigError("data.pool.names", "class names need labels=FILE")
        image_path = Path(str(images)).expanduser()
        label_path = None if labels is None else Path(str(labels)).expanduser()
        key_prefix = "file"
    else:
        split = "train" if split is None else str(split)
        if split not in SPLITS:
            raise unknown_choice("data.pool.split", split, SPLITS)
        if labels is not None:
            raise ConfigError("data.pool.labels", "labels= goes with images=, not with root=")
        base = Path(str(root)).expanduser()
        if not base.is_dir():
            raise ConfigError("data.pool.root", f"no such folder: {base}")
        image_path = _find(base, _SPLIT_FILES[split], "images", 3)
        label_path = _find(base, _SPLIT_FILES[split], "labels", 1)
        key_prefix = "ood" if split == "ood" else _SPLIT_FILES[split]
    raw = read_idx(image_path, 3)
    label_array = None if label_path is None else read_idx(label_path, 1).astype(np.int64)
    if label_array is not None and len(label_array) != len(raw):
        raise ConfigError(
            "data.pool",
            f"{label_path} has {len(label_array)} labels but {image_path} has {len(raw)} images",
        )
    if split == "ood":
        raw = apply_ood_shift(raw)
    keys = [f"{key_prefix}/{i:05d}" for i in range(len(raw))]
    folder = base if base is not None else image_path.parent
    class_names = _class_names(names, str(dataset), folder, label_array)
    return IdxPool(raw, labels=label_array, class_names=class_names, keys=keys, source="source")
