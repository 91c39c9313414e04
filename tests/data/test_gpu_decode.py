"""Batched device JPEG decoding (run on the CPU with the same function) against the PIL path."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from divssl.data.cache import decode_resized, load_stored_pool, pixel_limit
from divssl.data.gpu_decode import decode_resize_batch, is_jpeg, load_file_store
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


def test_folder_pool_stores_whole_images_in_batches_and_drops_corrupt(tmp_path) -> None:
    rng = np.random.default_rng(1)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for j in range(3):
            (tmp_path / cls / f"{j}.jpg").write_bytes(_encoded(rng, 20 + j, 30, "JPEG"))
    (tmp_path / "b" / "9.jpg").write_bytes(b"\xff\xd8\xff broken")
    (tmp_path / "b" / "8.jpg").write_bytes(_encoded(rng, 40, 50, "JPEG"))  # over the limit below
    pool = folder(str(tmp_path))
    with pixel_limit(1500):
        stored, corrupt = load_file_store(pool, 16, device="cpu", batch=4)
    assert corrupt == ["b/8.jpg", "b/9.jpg"]
    assert len(stored) == 6 and "b/9.jpg" not in stored.keys
    assert list(stored.labels) == [0, 0, 0, 1, 1, 1]
    # the CPU path's geometry: shorter side 16, aspect kept (20 x 30 -> 16 x 24)
    ref, _ = load_stored_pool(folder(str(tmp_path)), 16)
    by_key = {k: i for i, k in enumerate(ref.keys)}
    for i, key in enumerate(stored.keys):
        got, want = stored.read(i).astype(int), ref.read(by_key[key]).astype(int)
        assert got.shape == want.shape
        assert np.abs(got - want).mean() < 2.0  # torch vs PIL antialiased bilinear
    assert stored.read(0).shape == (16, 24, 3)
    with pytest.raises(TypeError, match="no files"):
        load_file_store(stored, 16, device="cpu")
