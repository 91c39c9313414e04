"""Batched JPEG decoding on the training device (nvJPEG through torchvision), CPU fallback.

A GPU run over ImageNet-scale JPEG folders is otherwise bound by the CPU workers that decode
(a 2-core host decodes a few hundred 500 px JPEGs per second). Here a batch of encoded files is
decoded with ``torchvision.io.decode_jpeg(list_of_bytes, device=...)`` (one nvJPEG batch call on
CUDA), each image is resized (shorter side to ``size``, bilinear with antialiasing) and
centre-cropped on the device — torchvision's ``Resize(size)`` + ``CenterCrop(size)`` on tensors,
the same geometry as :func:`divssl.data.cache.resize_center_crop` (values agree with the PIL
path to a few grey levels, the difference between PIL's and torch's antialiased bilinear) — and
the uint8 batch comes back to host memory for the decoded cache.

Files that are not baseline/progressive JPEG (PNG, CMYK JPEG, corrupt bytes) are decoded on the
CPU with the same PIL path the readers use (:func:`divssl.data.cache.decode_resized`); those that
fail there too are reported as corrupt, exactly as the CPU decoding pass does.

Training pools go through :func:`load_file_store`: the same batched device decode, each image
resized to its *storage* resolution (shorter side ``store_size``, aspect kept, never upsampled, as
:func:`divssl.data.cache.resize_shorter`) and packed into a
:class:`~divssl.data.cache.StoredPool`, so views are cropped from the whole image exactly as on
the CPU path. Files are read through the pool's own checks (``read_bytes``: links out of the root,
non-regular files) and every header is checked against ``data.max_pixels`` before any decode.

WebDataset streams use the same device decode per chunk of samples
(:func:`decode_store_blobs`, called by :mod:`divssl.data.readers.wds` when pretraining on CUDA).

Device ``cpu`` runs the same code with torchvision's CPU JPEG decoder (used by the tests and as
the fallback when no GPU is present).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from divssl.data.cache import (
    StoredPool,
    current_max_pixels,
    decode_resized,
    open_rgb,
    resize_shorter,
    store_shape,
)
from divssl.data.pool import CorruptImage, Pool

JPEG_MAGIC = b"\xff\xd8\xff"
DEFAULT_BATCH = 256  # files per nvJPEG call: large enough to fill the decoder, small in memory


def is_jpeg(data: bytes) -> bool:
    """Whether the bytes start with a JPEG start-of-image marker."""
    return data[:3] == JPEG_MAGIC


def _resize_center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) uint8 -> (3, size, size) uint8: shorter side to ``size``, centre crop.

    The output side lengths follow :func:`divssl.data.cache.resize_center_crop`
    (``int(size * long / short)``), so the crops cover the same pixels.
    """
    h, w = image.shape[-2:]
    new_h, new_w = (int(size * h / w), size) if w <= h else (size, int(size * w / h))
    if (new_h, new_w) != (h, w):
        image = TF.resize(image, [new_h, new_w], antialias=True)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return image[:, top : top + size, left : left + size]


@dataclass
class BatchResult:
    """Images of one decoded batch.

    Attributes:
        images: (B, size, size, 3) uint8 host array; rows of corrupt files are zeros.
        corrupt: positions in the batch that could not be decoded.
        on_device: positions decoded by ``decode_jpeg`` on the device (the rest on the CPU).
    """

    images: np.ndarray
    corrupt: list[int] = field(default_factory=list)
    on_device: list[int] = field(default_factory=list)


def decode_resize_batch(
    blobs: Sequence[bytes], size: int, device: torch.device | str = "cuda"
) -> BatchResult:
    """Decode encoded images and resize/centre-crop each to (size, size, 3) uint8.

    Args:
        blobs: encoded files (JPEG on the device; anything PIL reads on the CPU).
        size: output side.
        device: where JPEGs are decoded and resized (``cuda``, ``cuda:N`` or ``cpu``).

    Returns:
        The batch, with the positions that were corrupt and those decoded on the device.
    """
    dev = torch.device(device)
    out = np.zeros((len(blobs), size, size, 3), dtype=np.uint8)
    result = BatchResult(out)
    crops, kept, cpu_pos = [], [], []
    for pos, img in enumerate(_decode_on_device(blobs, dev)):
        if img is None:
            cpu_pos.append(pos)  # not JPEG, CMYK JPEG or corrupt: PIL decides
        else:
            crops.append(_resize_center_crop(img, size))
            kept.append(pos)
    if crops:
        out[kept] = torch.stack(crops).permute(0, 2, 3, 1).cpu().numpy()
        result.on_device = kept
    for pos in sorted(cpu_pos):
        try:
            out[pos] = decode_resized(blobs[pos], size)
        except CorruptImage:
            result.corrupt.append(pos)
    return result


def _decode_on_device(blobs: Sequence[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """(3, H, W) uint8 tensors on ``device`` for JPEG blobs; ``None`` where the device decoder
    cannot read one (not JPEG, CMYK, corrupt), for the CPU path to try."""
    out: list[torch.Tensor | None] = [None] * len(blobs)
    jpeg_pos = [i for i, b in enumerate(blobs) if is_jpeg(b)]
    if not jpeg_pos:
        return out
    data = [torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8) for i in jpeg_pos]
    try:
        decoded: list[torch.Tensor | None] = list(
            decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        )
    except RuntimeError:  # one undecodable file fails the batched call: one by one
        decoded = []
        for t in data:
            try:
                decoded.append(decode_jpeg(t, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                decoded.append(None)
    for pos, img in zip(jpeg_pos, decoded, strict=True):
        out[pos] = img if img is not None and img.shape[0] == 3 else None
    return out


def header_pixels(blob: bytes) -> int | None:
    """Pixels an encoded image's header declares (no pixel is decoded); ``None`` if unreadable."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # data.max_pixels (the caller's check) replaces PIL's guard
    try:
        with Image.open(io.BytesIO(blob)) as img:
            width, height = img.size
    except Exception:  # noqa: BLE001 - any failure to parse a header means "corrupt"
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    return width * height


def _store_resize(image: torch.Tensor, store_size: int) -> torch.Tensor:
    """(3, H, W) uint8 tensor -> (h, w, 3) uint8 tensor at storage resolution, same device."""
    h, w = image.shape[-2:]
    new_h, new_w = store_shape(int(h), int(w), store_size)
    if (new_h, new_w) != (h, w):
        image = TF.resize(image, [new_h, new_w], antialias=True)
    return image.permute(1, 2, 0)


def _to_host(images: list[torch.Tensor]) -> list[np.ndarray]:
    """(h, w, 3) device tensors -> host arrays with one device-to-host copy (one sync, not one
    per image); the arrays are views of one buffer."""
    if not images:
        return []
    flat = torch.cat([t.reshape(-1) for t in images]).cpu().numpy()
    out, start = [], 0
    for t in images:
        n = t.numel()
        out.append(flat[start : start + n].reshape(t.shape))
        start += n
    return out


def decode_store_blobs(
    blobs: Sequence[bytes | None],
    keys: Sequence[str],
    store_size: int,
    device: torch.device | str = "cuda",
    max_pixels: int | None = None,
) -> list[np.ndarray | None]:
    """Decode encoded images at storage resolution, the JPEGs in one batched device call.

    Every header is checked against the pixel limit before any pixel is decoded. JPEGs are
    decoded by ``decode_jpeg`` on ``device`` and resized there (shorter side ``store_size``,
    aspect kept, never upsampled: :func:`divssl.data.cache.store_shape`); the rest (PNG, CMYK
    JPEG, bytes the device decoder refuses) go through the CPU path of the readers
    (:func:`divssl.data.cache.open_rgb` + :func:`divssl.data.cache.resize_shorter`).

    Args:
        blobs: encoded files; ``None`` marks a sample without image bytes (corrupt).
        keys: sample keys (error messages of the CPU path), one per blob.
        store_size: shorter side of the stored images.
        device: decoding device (``cuda``, ``cuda:N`` or ``cpu``).
        max_pixels: per-image pixel limit (default :func:`divssl.data.cache.current_max_pixels`).

    Returns:
        Per blob, an (h, w, 3) uint8 host array at storage resolution, or ``None`` where the
        sample is corrupt: no bytes, unreadable header, over the pixel limit, or undecodable on
        both paths.
    """
    limit = current_max_pixels() if max_pixels is None else int(max_pixels)
    out: list[np.ndarray | None] = [None] * len(blobs)
    todo: list[int] = []
    present: list[bytes] = []
    for pos, blob in enumerate(blobs):
        pixels = header_pixels(blob) if blob is not None else None
        if blob is not None and pixels is not None and pixels <= limit:
            todo.append(pos)
            present.append(blob)
    decoded = _decode_on_device(present, torch.device(device))
    on_device = [(pos, img) for pos, img in zip(todo, decoded, strict=True) if img is not None]
    host = _to_host([_store_resize(img, store_size) for _, img in on_device])
    for (pos, _), arr in zip(on_device, host, strict=True):
        out[pos] = arr
    for pos, blob, img in zip(todo, present, decoded, strict=True):
        if img is not None:
            continue
        try:
            image = open_rgb(blob, keys[pos], max_pixels=limit, target=store_size)
        except CorruptImage:
            continue
        out[pos] = resize_shorter(image, store_size)
    return out


def load_file_store(
    pool: Pool, store_size: int, device: torch.device | str = "cuda", batch: int = DEFAULT_BATCH
) -> tuple[StoredPool, list[str]]:
    """Decode a file-backed pool at storage resolution with batched device decoding.

    Args:
        pool: a random-access pool whose samples are files (``pool.read_bytes(i)``).
        store_size: shorter side of the stored images (never upsampled).
        device: decoding device.
        batch: files per decode call.

    Returns:
        The stored pool (pool order, corrupt samples skipped) and the corrupt keys: unreadable,
        refused by the pool's checks, over ``data.max_pixels``, or undecodable on both paths.

    Raises:
        TypeError: the pool has no files to read.
    """
    if not hasattr(pool, "read_bytes"):
        raise TypeError(f"{type(pool).__name__} has no files (read_bytes(index)) to decode")
    keys = pool.keys
    parts: list[np.ndarray] = []
    offsets: list[int] = []
    extents: list[tuple[int, int]] = []
    kept: list[int] = []
    bad: list[int] = []
    position = 0
    for lo in range(0, len(pool), batch):
        idx = list(range(lo, min(len(pool), lo + batch)))
        blobs: list[bytes | None] = []
        for i in idx:
            try:
                blobs.append(pool.read_bytes(i))
            except CorruptImage:
                blobs.append(None)  # refused by the pool's checks: corrupt
        stored = decode_store_blobs(blobs, [keys[i] for i in idx], store_size, device)
        for i, image in zip(idx, stored, strict=True):
            if image is None:
                bad.append(i)
                continue
            offsets.append(position)
            extents.append(image.shape[:2])
            kept.append(i)
            parts.append(image.reshape(-1))
            position += image.size
    keep = np.asarray(kept, dtype=np.int64)
    stored_pool = StoredPool(
        np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8),
        np.asarray(offsets, dtype=np.int64),
        np.asarray(extents, dtype=np.int64).reshape(-1, 2),
        labels=None if pool.labels is None else np.asarray(pool.labels)[keep],
        class_names=pool.class_names,
        keys=[keys[int(i)] for i in keep],
        source=pool.source,
        spec=pool.spec,
    )
    return stored_pool, [keys[i] for i in sorted(bad)]
