"""Image decoding and the decode cache: a pool decoded once into one uint8 array.

Every reader decodes through :func:`decode_image` (PIL, ``convert("RGB")`` as in torchvision's
``default_loader``), so corrupt, truncated, zero-byte and non-image files all raise
:class:`~divssl.data.pool.CorruptImage` and are skipped and counted by the loaders.

:func:`load_array_pool` turns any random-access pool (an image folder, a CSV of paths, a Hugging
Face dataset, ...) into an :class:`~divssl.data.pool.ArrayPool` of shape (N', size, size, 3): the
shorter side of each image is resized to ``size`` (PIL bilinear, which antialiases when
downscaling) and the centre ``size`` x ``size`` crop kept, exactly torchvision's
``Resize(size)`` + ``CenterCrop(size)`` on PIL images. With ``cache="mmap"`` the array is written
once to a ``.npy`` file keyed by (manifest hash, size) and later opened memory-mapped, so a pool of
10^6 images costs one decoding pass, not one per run.

Pretraining crops its views from whole images instead: :func:`load_stored_pool` keeps each image's
aspect ratio (shorter side ``store_size``, never upsampled) in a :class:`StoredPool`, one packed
uint8 buffer plus per-image offsets and extents (memory or ``mmap``), whose
:meth:`StoredPool.gather` pads a batch to its largest extent for the on-device crops.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, ImageFile

from divssl.cache import cache_root
from divssl.data.pool import ArrayPool, CorruptImage, Pool
from divssl.errors import ConfigError
from divssl.io import atomic_write_json, read_json

T = TypeVar("T")
CACHE_MODES = ("memory", "mmap")
_CHUNK = 256  # images per decoding task: large enough to amortise inter-process transfer

# Everything PIL raises for undecodable input: UnidentifiedImageError and "image file is
# truncated" are OSErrors; some plugins raise SyntaxError/ValueError/EOFError on bad headers.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


@dataclass
class DecodeStats:
    """What one decoding pass found.

    Attributes:
        total: samples in the pool.
        decoded: samples decoded (``total - len(corrupt)``).
        corrupt: keys of the samples that could not be decoded.
    """

    total: int
    decoded: int
    corrupt: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _strict_truncation() -> Iterator[None]:
    # A truncated file must fail rather than decode with grey padding, whatever the caller set.
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


# Decompression bombs: an image whose header declares more pixels than this is refused as
# corrupt before any pixel is decoded (``data.max_pixels``). The default is PIL's own warning
# threshold (``Image.MAX_IMAGE_PIXELS`` = 89,478,485, ~9459^2: ~270 MB of RGB); PIL's guard is
# replaced by this one so that a user can raise the limit.
DEFAULT_MAX_PIXELS = 89_478_485
# Images above this many pixels are decoded reduced (JPEG DCT scaling via ``Image.draft``) when
# the format allows, never below twice the target side; smaller images decode exactly as before.
DRAFT_MIN_PIXELS = 2**24
_LIMITS = {"max_pixels": DEFAULT_MAX_PIXELS}


def current_max_pixels() -> int:
    """The per-image pixel limit in force in this process."""
    return _LIMITS["max_pixels"]


@contextlib.contextmanager
def pixel_limit(max_pixels: int) -> Iterator[None]:
    """Decode with a per-image pixel limit (worker processes inherit it, see ``map_pool_chunks``).

    Raises:
        ConfigError: ``max_pixels`` < 1.
    """
    if max_pixels < 1:
        raise ConfigError("data.max_pixels", f"must be >= 1, got {max_pixels}")
    previous = _LIMITS["max_pixels"]
    _LIMITS["max_pixels"] = int(max_pixels)
    try:
        yield
    finally:
        _LIMITS["max_pixels"] = previous


def _check_and_draft(img: Image.Image, max_pixels: int, target: int | None) -> None:
    """Refuse a bomb from its header; ask a large JPEG to decode reduced (before ``load``)."""
    width, height = img.size
    if width * height > max_pixels:
        raise Image.DecompressionBombError(
            f"{width}x{height} = {width * height} pixels exceeds data.max_pixels={max_pixels} "
            "(raise data.max_pixels to accept it)"
        )
    if target is not None and width * height > DRAFT_MIN_PIXELS and img.format == "JPEG":
        img.draft("RGB", (2 * target, 2 * target))  # keeps each side >= 2 x target


def open_rgb(
    data: bytes | str | Path,
    name: str = "",
    max_pixels: int | None = None,
    target: int | None = None,
) -> Image.Image:
    """Fully decode an image file or encoded bytes into an RGB PIL image.

    Args:
        data: encoded bytes, or a file path.
        name: sample key used in the error message.
        max_pixels: per-image pixel limit (default :func:`current_max_pixels`).
        target: output side the caller resizes to; allows reduced decoding of large JPEGs.

    Raises:
        CorruptImage: zero-byte, truncated, non-image, over the pixel limit or otherwise
            undecodable input.
    """
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    limit = current_max_pixels() if max_pixels is None else max_pixels
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our own limit (checked from the header) replaces PIL's
    try:
        with _strict_truncation(), Image.open(source) as img:
            _check_and_draft(img, limit, target)
            img.load()
            return img.convert("RGB")
    except _DECODE_ERRORS as exc:
        label = name or ("<bytes>" if isinstance(data, bytes) else str(data))
        raise CorruptImage(f"{label}: {exc}") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def decode_image(data: bytes | str | Path, name: str = "") -> np.ndarray:
    """Decode an image into an array of shape (H, W, 3), dtype uint8 (see :func:`open_rgb`)."""
    return np.asarray(open_rgb(data, name))


def resize_center_crop(image: Image.Image | np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` (PIL bilinear) and take the centre square crop.

    Matches torchvision's ``Resize(size)`` followed by ``CenterCrop(size)`` on a PIL image.

    Args:
        image: PIL image or array of shape (H, W, 3), uint8.
        size: output side length.

    Returns:
        Array of shape (size, size, 3), dtype uint8.
    """
    img = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    w, h = img.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    if (new_w, new_h) != (size, size):
        img = img.crop((left, top, left + size, top + size))
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def decode_resized(data: bytes | str | Path, size: int, name: str = "") -> np.ndarray:
    """Decode and resize/centre-crop to (size, size, 3) uint8 in one step."""
    return resize_center_crop(open_rgb(data, name, target=size), size)


# ----------------------------------------------------------------------------- decoding pass

_WORKER_POOL: Pool | None = None


def _init_worker(pool: Pool, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    global _WORKER_POOL
    _WORKER_POOL = pool
    _LIMITS["max_pixels"] = max_pixels  # the parent's limit, whatever the start method


def _run_in_worker(task: tuple[Callable[..., Any], int, int, tuple[Any, ...]]) -> Any:
    assert _WORKER_POOL is not None
    fn, start, stop, args = task
    return fn(_WORKER_POOL, start, stop, *args)


def map_pool_chunks(
    pool: Pool,
    fn: Callable[..., T],
    args: tuple[Any, ...] = (),
    workers: int = 0,
    chunk: int = _CHUNK,
) -> Iterator[T]:
    """Apply ``fn(pool, start, stop, *args)`` to consecutive index chunks, in order.

    Args:
        pool: a random-access pool (sent once to each worker process).
        fn: a module-level function (picklable) processing samples ``start .. stop-1``.
        args: extra arguments of ``fn``.
        workers: ``multiprocessing`` processes; 0 runs in this process.
        chunk: samples per task.

    Yields:
        ``fn``'s results in increasing ``start``.
    """
    tasks = [(fn, s, min(s + chunk, len(pool)), args) for s in range(0, len(pool), chunk)]
    if workers <= 0:
        for f, start, stop, a in tasks:
            yield f(pool, start, stop, *a)
        return
    with multiprocessing.get_context().Pool(
        workers, _init_worker, (pool, current_max_pixels())
    ) as procs:
        yield from procs.imap(_run_in_worker, tasks)


def _read_resized(pool: Pool, index: int, size: int) -> np.ndarray:
    read_for = getattr(pool, "read_for_size", None)  # lets large JPEGs decode reduced
    image = read_for(index, size) if read_for is not None else pool.read(index)
    if image.shape[0] == size and image.shape[1] == size:
        return np.ascontiguousarray(image, dtype=np.uint8)
    return resize_center_crop(image, size)


def decode_chunk(
    pool: Pool, start: int, stop: int, size: int
) -> tuple[int, np.ndarray, np.ndarray]:
    """Decode samples ``start .. stop-1`` of ``pool``, resized to ``size``.

    Returns:
        ``start``, images (stop - start, size, size, 3) uint8 (zeros where corrupt) and a bool
        mask of shape (stop - start,) that is ``False`` for corrupt samples.
    """
    images = np.zeros((stop - start, size, size, 3), dtype=np.uint8)
    valid = np.zeros(stop - start, dtype=bool)
    for j, index in enumerate(range(start, stop)):
        try:
            images[j] = _read_resized(pool, index, size)
            valid[j] = True
        except CorruptImage:
            continue
    return start, images, valid


def iter_decoded_chunks(
    pool: Pool, size: int, workers: int = 0, chunk: int = _CHUNK
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Decode a random-access pool in order, in chunks (see :func:`decode_chunk`).

    Yields:
        ``(start, images (k, size, size, 3) uint8, valid (k,) bool)`` in increasing ``start``.
    """
    return map_pool_chunks(pool, decode_chunk, (size,), workers, chunk)


def _check_args(size: int, cache: str, workers: int) -> None:
    if cache not in CACHE_MODES:
        raise ConfigError("data.cache", f"unknown value {cache!r}", CACHE_MODES)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ConfigError("image_size", f"must be a positive integer, got {size!r}")
    if workers < 0:
        raise ConfigError("data.workers", f"must be >= 0, got {workers}")


def _decode_streaming(target: np.ndarray, pool: Pool, size: int, workers: int) -> np.ndarray:
    valid = np.zeros(len(pool), dtype=bool)
    iter_resized = getattr(pool, "iter_resized", None)
    if iter_resized is not None:
        samples = iter_resized(size, workers=workers)
    else:
        samples = ((i, resize_center_crop(img, size)) for i, img in pool.iter_samples())
    for index, image in samples:
        target[index] = image
        valid[index] = True
    return valid


def _decode_into(target: np.ndarray, pool: Pool, size: int, workers: int) -> np.ndarray:
    """Decode every sample of ``pool`` into ``target`` (N, size, size, 3); return the valid mask."""
    if pool.streaming:
        return _decode_streaming(target, pool, size, workers)
    valid = np.zeros(len(pool), dtype=bool)
    for start, images, ok in iter_decoded_chunks(pool, size, workers):
        target[start : start + len(images)] = images
        valid[start : start + len(images)] = ok
    return valid


def _wrap(pool: Pool, images: np.ndarray, kept: np.ndarray) -> ArrayPool:
    keys = [pool.keys[int(i)] for i in kept] if len(kept) != len(pool) else list(pool.keys)
    labels = None if pool.labels is None else np.asarray(pool.labels)[kept]
    return ArrayPool(
        images,
        labels=labels,
        class_names=pool.class_names,
        keys=keys,
        source=pool.source,
        spec=pool.spec,
    )


def _stats(pool: Pool, corrupt: Sequence[int] | np.ndarray) -> DecodeStats:
    keys = pool.keys
    return DecodeStats(
        total=len(pool),
        decoded=len(pool) - len(corrupt),
        corrupt=[keys[int(i)] for i in corrupt],
    )


def _load_memory(pool: Pool, size: int, workers: int) -> tuple[ArrayPool, DecodeStats]:
    images = np.empty((len(pool), size, size, 3), dtype=np.uint8)
    valid = _decode_into(images, pool, size, workers)
    kept = np.flatnonzero(valid)
    if len(kept) != len(pool):
        images = images[kept]
    return _wrap(pool, images, kept), _stats(pool, np.flatnonzero(~valid))


def _write_mmap(pool: Pool, size: int, workers: int, path: Path, meta_path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    compact = path.with_name(f".{path.name}.{os.getpid()}.compact.tmp")
    try:
        full = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(len(pool), size, size, 3)
        )
        valid = _decode_into(full, pool, size, workers)
        kept = np.flatnonzero(valid)
        if len(kept) != len(pool):
            # Corrupt rows are dropped by copying the survivors into a second file, chunk by chunk,
            # so that memory stays bounded whatever the pool size.
            out = np.lib.format.open_memmap(
                compact, mode="w+", dtype=np.uint8, shape=(len(kept), size, size, 3)
            )
            for s in range(0, len(kept), 4096):
                out[s : s + 4096] = full[kept[s : s + 4096]]
            out.flush()
            del out
            tmp.unlink()
            compact.rename(tmp)
        else:
            full.flush()
        del full
        corrupt = np.flatnonzero(~valid)
        atomic_write_json(
            meta_path,
            {
                "manifest_hash": pool.manifest_hash(),
                "size": size,
                "total": len(pool),
                "corrupt_positions": [int(i) for i in corrupt],
            },
        )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        compact.unlink(missing_ok=True)


def _cache_stem(pool: Pool, tag: str) -> str:
    """File stem of an mmap cache entry: the pool's manifest hash, a size tag, and the pixel
    limit when it is not the default (the limit decides which images count as corrupt)."""
    stem = f"{pool.manifest_hash()}-{tag}"
    if current_max_pixels() != DEFAULT_MAX_PIXELS:
        stem += f"-px{current_max_pixels()}"
    return stem


def _load_mmap(
    pool: Pool, size: int, workers: int, cache_dir: str | Path | None
) -> tuple[ArrayPool, DecodeStats]:
    from filelock import FileLock

    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "decoded"
    folder.mkdir(parents=True, exist_ok=True)
    stem = _cache_stem(pool, str(size))
    path, meta_path = folder / f"{stem}.npy", folder / f"{stem}.json"
    with FileLock(str(folder / f"{stem}.lock")):
        if not (path.is_file() and meta_path.is_file()):
            _write_mmap(pool, size, workers, path, meta_path)
    meta = read_json(meta_path)
    corrupt = np.asarray(meta["corrupt_positions"], dtype=np.int64)
    valid = np.ones(len(pool), dtype=bool)
    valid[corrupt] = False
    images = np.load(path, mmap_mode="r", allow_pickle=False)
    return _wrap(pool, images, np.flatnonzero(valid)), _stats(pool, corrupt)


def load_array_pool(
    pool: Pool,
    size: int,
    cache: str = "memory",
    cache_dir: str | Path | None = None,
    workers: int = 0,
) -> tuple[ArrayPool, DecodeStats]:
    """Decode a pool once into an :class:`ArrayPool` of (N', size, size, 3) uint8 images.

    Corrupt samples are skipped and counted; keys and labels stay aligned with the survivors. An
    :class:`ArrayPool` whose images are already ``size`` x ``size`` is returned unchanged.

    Args:
        pool: the pool to decode (random-access; streaming pools are decoded in stream order).
        size: side length of the output images.
        cache: ``"memory"`` (decode into RAM) or ``"mmap"`` (write a ``.npy`` keyed by (manifest
            hash, size) in ``cache_dir`` once, then reuse it memory-mapped).
        cache_dir: folder for ``mmap`` files; defaults to ``<divssl cache root>/decoded``.
        workers: decoding processes; 0 decodes in this process.

    Returns:
        The decoded pool and the :class:`DecodeStats` of the pass.

    Raises:
        ConfigError: unknown cache mode, bad size or worker count.
    """
    _check_args(size, cache, workers)
    if isinstance(pool, ArrayPool) and pool.images.shape[1:3] == (size, size):
        return pool, DecodeStats(total=len(pool), decoded=len(pool), corrupt=[])
    if cache == "mmap":
        return _load_mmap(pool, size, workers, cache_dir)
    return _load_memory(pool, size, workers)


# ----------------------------------------------------------------------------- whole-image storage
#
# Training views are cropped from the whole image (issue 10 item 9), so pools are stored with
# their aspect ratio: shorter side ``store_size`` (never upsampled), every image at its own
# (h, w). Images are packed back to back in one flat uint8 buffer with per-image offsets and
# extents; a pool whose images all share one shape is that buffer seen as (N, h, w, 3).

# Views up to this side are CIFAR-like: store at the view size (solo-learn crops 32 px CIFAR
# images straight to 32 px views). Larger views store the shorter side at 256/224 of the view
# (256 px for 224 px views, the usual ImageNet storage of the references' Resize(256) pipelines).
STORE_AT_VIEW_SIZE_MAX = 64
STORE_TO_VIEW_RATIO = 256 / 224


def default_store_size(image_size: int) -> int:
    """Storage shorter side for a view size: ``image_size`` up to 64 px, else 256/224 of it."""
    if image_size <= STORE_AT_VIEW_SIZE_MAX:
        return image_size
    return round(image_size * STORE_TO_VIEW_RATIO)


def store_shape(height: int, width: int, store_size: int) -> tuple[int, int]:
    """(h, w) of an image stored with shorter side ``store_size``, aspect kept, never upsampled.

    The longer side is ``int(store_size * long / short)``, as torchvision's ``Resize(size)``.
    """
    if min(height, width) <= store_size:
        return height, width
    if width <= height:
        return int(store_size * height / width), store_size
    return store_size, int(store_size * width / height)


def resize_shorter(image: Image.Image | np.ndarray, store_size: int) -> np.ndarray:
    """Resize so the shorter side is ``store_size`` (PIL bilinear, antialiased), keeping the
    aspect ratio; images whose shorter side is already at most ``store_size`` are kept as they are.

    Args:
        image: PIL image or array (H, W, 3) uint8.
        store_size: target shorter side.

    Returns:
        Array (h, w, 3) uint8 with ``(h, w) == store_shape(H, W, store_size)``.
    """
    img = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    w, h = img.size
    new_h, new_w = store_shape(h, w, store_size)
    if (new_h, new_w) != (h, w):
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


class StoredPool(Pool):
    """Decoded images at their storage resolution, each with its own extent (h, w).

    Args:
        pixels: flat uint8 buffer (in memory or memory-mapped) holding every image's (h, w, 3)
            pixels back to back.
        offsets: (N,) int64 start of each image in ``pixels``.
        extents: (N, 2) int64 ``(h, w)`` of each image.
        labels: (N,) int labels or ``None``.
        class_names: label names or ``None``.
        keys: sample keys; defaults to zero-padded positions.
        source: source tag.
        spec: spec string for provenance.
    """

    def __init__(
        self,
        pixels: np.ndarray,
        offsets: np.ndarray,
        extents: np.ndarray,
        labels: np.ndarray | None = None,
        class_names: list[str] | None = None,
        keys: Sequence[str] | None = None,
        source: str = "source",
        spec: str = "",
    ) -> None:
        offsets = np.asarray(offsets, dtype=np.int64)
        extents = np.asarray(extents, dtype=np.int64).reshape(-1, 2)
        if pixels.ndim != 1 or pixels.dtype != np.uint8:
            raise ValueError(
                f"pixels must be a flat uint8 buffer, got {pixels.shape} {pixels.dtype}"
            )
        if offsets.shape != (len(extents),):
            raise ValueError(
                f"offsets {offsets.shape} and extents {extents.shape} differ in length"
            )
        ends = offsets + extents.prod(axis=1) * 3
        if len(extents) and (offsets.min() < 0 or ends.max() > len(pixels) or extents.min() < 1):
            raise ValueError("offsets/extents point outside the pixel buffer or are empty")
        self.pixels, self.offsets, self.extents = pixels, offsets, extents
        self._labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        if self._labels is not None and len(self._labels) != len(extents):
            raise ValueError("labels and images differ in length")
        self.class_names = class_names
        self._keys = list(keys) if keys is not None else [f"{i:08d}" for i in range(len(extents))]
        self.source = source
        self.spec = spec
        self.images: np.ndarray | None = self._uniform_view()

    def _uniform_view(self) -> np.ndarray | None:
        """(N, h, w, 3) view of the buffer when every image has one shape, packed in order."""
        n = len(self.extents)
        if n == 0 or not (self.extents == self.extents[0]).all():
            return None
        h, w = (int(v) for v in self.extents[0])
        if not np.array_equal(self.offsets, np.arange(n, dtype=np.int64) * (h * w * 3)):
            return None
        return self.pixels[: n * h * w * 3].reshape(n, h, w, 3)

    @classmethod
    def from_array(cls, pool: ArrayPool) -> StoredPool:
        """Wrap an :class:`ArrayPool` (N, H, W, 3) without copying when it is contiguous."""
        images = np.ascontiguousarray(pool.images)
        n, h, w, _ = images.shape
        return cls(
            images.reshape(-1),
            np.arange(n, dtype=np.int64) * (h * w * 3),
            np.tile(np.array([[h, w]], dtype=np.int64), (n, 1)),
            labels=pool.labels,
            class_names=pool.class_names,
            keys=pool.keys,
            source=pool.source,
            spec=pool.spec,
        )

    def __len__(self) -> int:
        return len(self.extents)

    @property
    def keys(self) -> Sequence[str]:
        return self._keys

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    @property
    def nbytes(self) -> int:
        """Bytes of pixels plus offsets and extents (what the pool costs in memory or on disk)."""
        return int(self.extents.prod(axis=1).sum() * 3 + self.offsets.nbytes + self.extents.nbytes)

    def read(self, index: int) -> np.ndarray:
        h, w = (int(v) for v in self.extents[index])
        start = int(self.offsets[index])
        return np.asarray(self.pixels[start : start + h * w * 3]).reshape(h, w, 3)

    def gather(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A batch padded to its largest extent, with the true extents.

        Each image fills the top-left ``(h, w)`` of its row. Bilinear sampling of a crop inside
        that extent reads at most one pixel beyond it (the right neighbour of the last column,
        the one below the last row), so exactly that column and row replicate the image's border
        (what ``grid_sample``'s border padding gives on the image alone); the rest of the padding
        is zeros that no crop reads. Copying only that much keeps gathering cheap (about 3x
        faster than replicating the border over the whole padding at 256 px).

        Args:
            indices: (B,) positions.

        Returns:
            Images (B, H, W, 3) uint8 with H, W the largest extents of the batch, and extents
            (B, 2) int64 ``(h, w)``.
        """
        indices = np.asarray(indices, dtype=np.int64)
        extents = self.extents[indices]
        if self.images is not None:
            return np.ascontiguousarray(self.images[indices]), extents
        return pad_images([self.read(int(i)) for i in indices.tolist()])[0], extents

    def content_fingerprint(self) -> bytes:
        h = hashlib.sha256(self.extents.tobytes())
        step = max(1, len(self.pixels) // (1 << 20))
        h.update(np.ascontiguousarray(self.pixels[::step]).tobytes())
        return h.digest()


def pad_images(images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pad whole images of different shapes into one batch (see :meth:`StoredPool.gather`).

    Each image fills the top-left ``(h, w)`` of its row; the column right of it and the row
    below it replicate its border (all a bilinear crop inside the extent can read); the rest is
    zeros.

    Args:
        images: B arrays (h_i, w_i, 3) uint8.

    Returns:
        Images (B, H, W, 3) uint8 with H, W the largest extents, and extents (B, 2) int64.
    """
    extents = np.array([img.shape[:2] for img in images], dtype=np.int64).reshape(-1, 2)
    height, width = (int(v) for v in extents.max(axis=0)) if len(images) else (0, 0)
    out = np.zeros((len(images), height, width, 3), dtype=np.uint8)
    for row, img in enumerate(images):
        h, w = img.shape[:2]
        out[row, :h, :w] = img
        if w < width:
            out[row, :h, w] = img[:, w - 1]
        if h < height:
            cols = min(w + 1, width)
            out[row, h, :cols] = out[row, h - 1, :cols]
    return out, extents


def decode_store_chunk(
    pool: Pool, start: int, stop: int, store_size: int
) -> tuple[int, list[np.ndarray | None]]:
    """Decode samples ``start .. stop-1`` at storage resolution (``None`` where corrupt)."""
    out: list[np.ndarray | None] = []
    for index in range(start, stop):
        try:
            read_for = getattr(pool, "read_for_size", None)  # lets large JPEGs decode reduced
            image = read_for(index, store_size) if read_for is not None else pool.read(index)
            out.append(resize_shorter(image, store_size))
        except CorruptImage:
            out.append(None)
    return start, out


def _iter_stored(pool: Pool, store_size: int, workers: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, image at storage resolution)`` for every decodable sample, in pool order."""
    if pool.streaming:
        iter_stored = getattr(pool, "iter_stored", None)  # wds: decoded in worker processes
        if iter_stored is not None:
            yield from iter_stored(store_size, workers=workers)
            return
        for index, image in pool.iter_samples():
            yield index, resize_shorter(image, store_size)
        return
    for start, images in map_pool_chunks(pool, decode_store_chunk, (store_size,), workers):
        for j, stored in enumerate(images):
            if stored is not None:
                yield start + j, stored


def _stored_from(
    pool: Pool,
    pixels: np.ndarray,
    offsets: list[int],
    extents: list[tuple[int, int]],
    kept: list[int],
) -> StoredPool:
    keep = np.asarray(kept, dtype=np.int64)
    return StoredPool(
        pixels,
        np.asarray(offsets, dtype=np.int64),
        np.asarray(extents, dtype=np.int64).reshape(-1, 2),
        labels=None if pool.labels is None else np.asarray(pool.labels)[keep],
        class_names=pool.class_names,
        keys=[pool.keys[int(i)] for i in keep],
        source=pool.source,
        spec=pool.spec,
    )


def _store_memory(pool: Pool, store_size: int, workers: int) -> tuple[StoredPool, DecodeStats]:
    parts: list[np.ndarray] = []
    offsets: list[int] = []
    extents: list[tuple[int, int]] = []
    kept: list[int] = []
    position = 0
    for index, image in _iter_stored(pool, store_size, workers):
        offsets.append(position)
        extents.append(image.shape[:2])
        kept.append(index)
        parts.append(image.reshape(-1))
        position += image.size
    pixels = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)
    corrupt = sorted(set(range(len(pool))) - set(kept))
    return _stored_from(pool, pixels, offsets, extents, kept), _stats(pool, corrupt)


def _write_store(pool: Pool, store_size: int, workers: int, stem: Path) -> None:
    """Write ``<stem>.u8`` (packed pixels), ``<stem>.npz`` (offsets, extents, kept) and, last,
    ``<stem>.json`` (the entry is complete once the JSON exists)."""
    pix_tmp = stem.with_name(f".{stem.name}.{os.getpid()}.u8.tmp")
    idx_tmp = stem.with_name(f".{stem.name}.{os.getpid()}.npz.tmp")
    offsets: list[int] = []
    extents: list[tuple[int, int]] = []
    kept: list[int] = []
    position = 0
    try:
        with open(pix_tmp, "wb") as fh:
            for index, image in _iter_stored(pool, store_size, workers):
                offsets.append(position)
                extents.append(image.shape[:2])
                kept.append(index)
                fh.write(np.ascontiguousarray(image).tobytes())
                position += image.size
        with open(idx_tmp, "wb") as fh:
            np.savez(
                fh,
                offsets=np.asarray(offsets, dtype=np.int64),
                extents=np.asarray(extents, dtype=np.int64).reshape(-1, 2),
                kept=np.asarray(kept, dtype=np.int64),
            )
        os.replace(pix_tmp, stem.with_suffix(".u8"))
        os.replace(idx_tmp, stem.with_suffix(".npz"))
        corrupt = sorted(set(range(len(pool))) - set(kept))
        atomic_write_json(
            stem.with_suffix(".json"),
            {
                "manifest_hash": pool.manifest_hash(),
                "store_size": store_size,
                "total": len(pool),
                "bytes": position,
                "corrupt_positions": [int(i) for i in corrupt],
            },
        )
    finally:
        pix_tmp.unlink(missing_ok=True)
        idx_tmp.unlink(missing_ok=True)


def _store_mmap(
    pool: Pool, store_size: int, workers: int, cache_dir: str | Path | None
) -> tuple[StoredPool, DecodeStats]:
    from filelock import FileLock

    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "stored"
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / _cache_stem(pool, f"s{store_size}")
    with FileLock(str(stem.with_suffix(".lock"))):
        if not stem.with_suffix(".json").is_file():
            _write_store(pool, store_size, workers, stem)
    meta = read_json(stem.with_suffix(".json"))
    with np.load(stem.with_suffix(".npz"), allow_pickle=False) as index:
        offsets, extents, kept = index["offsets"], index["extents"], index["kept"]
    pixels: np.ndarray
    if int(meta["bytes"]):
        pixels = np.memmap(stem.with_suffix(".u8"), dtype=np.uint8, mode="r")
    else:
        pixels = np.zeros(0, dtype=np.uint8)
    stored = _stored_from(pool, pixels, offsets.tolist(), extents.tolist(), kept.tolist())
    return stored, _stats(pool, meta["corrupt_positions"])


def load_stored_pool(
    pool: Pool,
    store_size: int,
    cache: str = "memory",
    cache_dir: str | Path | None = None,
    workers: int = 0,
) -> tuple[StoredPool, DecodeStats]:
    """Decode a pool once at storage resolution (aspect kept, shorter side ``store_size``).

    Images whose shorter side is at most ``store_size`` are kept at their own size. Corrupt
    samples are skipped and counted; keys and labels stay aligned with the survivors. An
    :class:`ArrayPool` that needs no resizing is wrapped without a copy.

    Args:
        pool: the pool to decode (random-access; streaming pools are decoded in stream order).
        store_size: shorter side of the stored images.
        cache: ``"memory"`` or ``"mmap"`` (write ``<hash>-s<store_size>.{u8,npz,json}`` in
            ``cache_dir`` once, then reuse the pixels memory-mapped).
        cache_dir: folder for ``mmap`` files; defaults to ``<divssl cache root>/stored``.
        workers: decoding processes; 0 decodes in this process.

    Returns:
        The stored pool and the :class:`DecodeStats` of the pass.

    Raises:
        ConfigError: unknown cache mode, bad size or worker count.
    """
    if cache not in CACHE_MODES:
        raise ConfigError("data.cache", f"unknown value {cache!r}", CACHE_MODES)
    if not isinstance(store_size, int) or isinstance(store_size, bool) or store_size < 1:
        raise ConfigError("data.store_size", f"must be a positive integer, got {store_size!r}")
    if workers < 0:
        raise ConfigError("data.workers", f"must be >= 0, got {workers}")
    if isinstance(pool, ArrayPool) and min(pool.images.shape[1:3]) <= store_size:
        stats = DecodeStats(total=len(pool), decoded=len(pool), corrupt=[])
        return StoredPool.from_array(pool), stats
    if cache == "mmap":
        return _store_mmap(pool, store_size, workers, cache_dir)
    return _store_memory(pool, store_size, workers)
