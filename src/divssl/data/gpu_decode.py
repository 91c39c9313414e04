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

Device ``cpu`` runs the same code with torchvision's CPU JPEG decoder (used by the tests and as
the fallback when no GPU is present).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from divssl.data.pool import ArrayPool, CorruptImage, Pool

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
    from divssl.data.cache import decode_resized

    dev = torch.device(device)
    out = np.zeros((len(blobs), size, size, 3), dtype=np.uint8)
    result = BatchResult(out)
    jpeg_pos = [i for i, b in enumerate(blobs) if is_jpeg(b)]
    cpu_pos = sorted(set(range(len(blobs))) - set(jpeg_pos))
    if jpeg_pos:
        data = [torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8) for i in jpeg_pos]
        try:
            decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=dev)
        except RuntimeError:
            # One undecodable file fails the whole batched call: decode them one by one.
            decoded = []
            for t in data:
                try:
                    decoded.append(decode_jpeg(t, mode=ImageReadMode.RGB, device=dev))
                except RuntimeError:
                    decoded.append(None)
        crops, kept = [], []
        for pos, img in zip(jpeg_pos, decoded, strict=True):
            if img is None or img.shape[0] != 3:
                cpu_pos.append(pos)  # e.g. CMYK JPEG: PIL converts it
                continue
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


def load_file_pool(
    pool: Pool, size: int, device: torch.device | str = "cuda", batch: int = DEFAULT_BATCH
) -> tuple[ArrayPool, list[str]]:
    """Decode a file-backed pool (one with ``path(index)``, e.g. ``folder:``) into an
    :class:`ArrayPool` with batched device decoding; corrupt files are dropped and returned.

    Args:
        pool: a random-access pool whose samples are files (``pool.path(i)``).
        size: decoded side.
        device: decoding device.
        batch: files per decode call.

    Returns:
        The decoded pool (in pool order, corrupt samples skipped) and the corrupt keys.

    Raises:
        TypeError: the pool has no files to read.
    """
    if not hasattr(pool, "path"):
        raise TypeError(f"{type(pool).__name__} has no files (path(index)) to decode in batches")
    n = len(pool)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    bad: list[int] = []
    for lo in range(0, n, batch):
        idx = range(lo, min(n, lo + batch))
        blobs = [Path(pool.path(i)).read_bytes() for i in idx]
        res = decode_resize_batch(blobs, size, device)
        images[lo : lo + len(blobs)] = res.images
        bad.extend(lo + p for p in res.corrupt)
    kept = np.setdiff1d(np.arange(n), np.asarray(bad, dtype=np.int64))
    keys = pool.keys
    labels = None if pool.labels is None else np.asarray(pool.labels)[kept]
    decoded = ArrayPool(
        images[kept] if bad else images,
        labels=labels,
        class_names=pool.class_names,
        keys=[keys[int(i)] for i in kept],
        source=pool.source,
        spec=pool.spec,
    )
    return decoded, [keys[i] for i in bad]
