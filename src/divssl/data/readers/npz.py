"""``npz:path=FILE`` — images in a NumPy ``.npz`` archive.

Arrays: ``images`` (N, H, W, 3) uint8 or (N, H, W) grey (repeated to RGB without a copy),
optional ``labels`` (N,) int, optional ``class_names`` (K,) str. Loaded with
``allow_pickle=False``. When ``images`` is stored uncompressed (``np.savez``) it is memory-mapped
straight from the archive, so pools larger than RAM open instantly; compressed members
(``np.savez_compressed``) are read into memory.
"""

from __future__ import annotations

import hashlib
import struct
import zipfile
from pathlib import Path

import numpy as np

from divssl.data.pool import ArrayPool, register_pool
from divssl.errors import ConfigError

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zip local file header (30 bytes)


def memmap_npz_member(path: Path, name: str) -> np.ndarray | None:
    """Memory-map an uncompressed ``.npy`` member of an ``.npz`` archive.

    ``np.load`` reads npz members fully into memory even with ``mmap_mode``; an uncompressed
    (ZIP_STORED) member is a plain ``.npy`` at a fixed offset, so it can be mapped directly.

    Returns:
        A read-only memmap, or ``None`` when the member is compressed or not a plain array.
    """
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo(f"{name}.npy")
        except KeyError:
            return None
        if info.compress_type != zipfile.ZIP_STORED:
            return None
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        fields = _LOCAL_HEADER.unpack(fh.read(_LOCAL_HEADER.size))
        name_len, extra_len = fields[-2], fields[-1]
        fh.seek(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            return None
        if dtype.hasobject:
            return None
        offset = fh.tell()
    return np.memmap(
        path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
    )


class NpzPool(ArrayPool):
    """An :class:`ArrayPool` backed by an ``.npz`` file; fingerprint = file stat + pixel sample."""

    def __init__(self, path: Path, raw: np.ndarray, **kwargs: object) -> None:
        images = raw if raw.ndim == 4 else np.broadcast_to(raw[..., None], (*raw.shape, 3))
        super().__init__(images, **kwargs)  # type: ignore[arg-type]
        self.path = path
        self._raw = raw

    def content_fingerprint(self) -> bytes:
        # (size, mtime_ns) of the file plus a strided sample of the stored pixels (the grey array
        # itself for grey images, so no (N, H, W, 3) copy is ever made).
        st = self.path.stat()
        step = max(1, len(self._raw) // 4096)
        h = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}:{self._raw.shape}".encode())
        h.update(np.ascontiguousarray(self._raw[::step]).tobytes())
        return h.digest()


def _load_member(path: Path, data: np.lib.npyio.NpzFile, name: str) -> np.ndarray:
    mapped = memmap_npz_member(path, name)
    return mapped if mapped is not None else data[name]


@register_pool("npz")
def npz(path: str) -> NpzPool:
    """Open an ``.npz`` pool.

    Raises:
        ConfigError: missing file, missing/malformed ``images``, mismatched ``labels``.
    """
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise ConfigError("data.pool.path", f"no such file: {file}")
    try:
        data = np.load(file, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ConfigError("data.pool.path", f"{file}: not a readable .npz ({exc})") from exc
    with data:
        if "images" not in data.files:
            raise ConfigError("data.pool.path", f"{file}: no 'images' array (has {data.files})")
        try:
            raw = _load_member(file, data, "images")
            labels = np.asarray(data["labels"], dtype=np.int64) if "labels" in data.files else None
            names = [str(n) for n in data["class_names"]] if "class_names" in data.files else None
        except ValueError as exc:  # object arrays (refused without pickle), bad label values
            raise ConfigError("data.pool.path", f"{file}: {exc}") from exc
    if raw.dtype != np.uint8 or raw.ndim not in (3, 4) or (raw.ndim == 4 and raw.shape[-1] != 3):
        raise ConfigError(
            "data.pool.path",
            f"{file}: 'images' must be (N, H, W, 3) or (N, H, W) uint8, "
            f"got {raw.shape} {raw.dtype}",
        )
    if labels is not None and labels.shape != (len(raw),):
        raise ConfigError("data.pool.path", f"{file}: 'labels' must have shape ({len(raw)},)")
    if labels is not None and names is None and len(labels):
        names = [str(i) for i in range(int(labels.max()) + 1)]
    return NpzPool(file, raw, labels=labels, class_names=names, source="source")
