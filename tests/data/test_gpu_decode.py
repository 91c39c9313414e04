"""Batched device JPEG decoding (run on the CPU with the same function) against the PIL path."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from divssl.data.cache import decode_resized
from divssl.data.gpu_decode import decode_resize_batch, is_jpeg, load_file_pool
from divssl.data.readers.folder import folder


def _encoded(rng: np.random.Generator, h: int, w: int, fmt: str) -> bytes:
    # Smooth images (low-frequency gradients + noise): resampling filters then agree closely.
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], -1)
    arr = np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def test_batch_matches_pil_geometry_and_falls_back_for_png_and_corrupt() -> None:
    rng = np.random.default_rng(0)
    blobs = [
        _encoded(rng, 48, 64, "JPEG"),  # landscape
        _encoded(rng, 80, 40, "JPEG"),  # portrait
        _encoded(rng, 32, 32, "PNG"),  # not a JPEG: CPU path
        b"\xff\xd8\xff garbage",  # looks like a JPEG, is not
        _encoded(rng, 24, 24, "JPEG"),  # already the target size
    ]
    assert [is_jpeg(b) for b in blobs] == [True, True, False, True, True]
    res = decode_resize_batch(blobs, 24, device="cpu")
    assert res.images.shape == (5, 24, 24, 3) and res.images.dtype == np.uint8
    assert res.corrupt == [3] and res.on_device == [0, 1, 4]
    for i in (0, 1, 2, 4):
        ref = decode_resized(blobs[i], 24).astype(int)
        diff = np.abs(res.images[i].astype(int) - ref)
        # Same crop geometry; antialiased bilinear of torch vs PIL differ by a few grey levels.
        assert diff.mean() < 2.0 and diff.max() <= 24, i
    np.testing.assert_array_equal(res.images[2], decode_resized(blobs[2], 24))  # PNG: same path
    assert not res.images[3].any()


def test_folder_pool_decodes_in_batches_and_drops_corrupt(tmp_path) -> None:
    rng = np.random.default_rng(1)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for j in range(3):
            (tmp_path / cls / f"{j}.jpg").write_bytes(_encoded(rng, 20 + j, 30, "JPEG"))
    (tmp_path / "b" / "9.jpg").write_bytes(b"\xff\xd8\xff broken")
    pool = folder(str(tmp_path))
    decoded, corrupt = load_file_pool(pool, 16, device="cpu", batch=4)
    assert corrupt == ["b/9.jpg"]
    assert len(decoded) == 6 and decoded.images.shape == (6, 16, 16, 3)
    assert "b/9.jpg" not in decoded.keys
    assert list(decoded.labels) == [0, 0, 0, 1, 1, 1]
    first = decode_resized(tmp_path / "a" / "0.jpg", 16).astype(int)
    assert np.abs(decoded.images[0].astype(int) - first).mean() < 2.0
    with pytest.raises(TypeError, match="no files"):
        load_file_pool(decoded, 16, device="cpu")
