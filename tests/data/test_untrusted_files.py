"""Hostile pool files: symlinks out of the root, device files and FIFOs, decompression bombs."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from divssl.data import cache
from divssl.data.cache import (
    DEFAULT_MAX_PIXELS,
    current_max_pixels,
    decode_resized,
    load_array_pool,
    open_rgb,
    pixel_limit,
)
from divssl.data.pool import CorruptImage, open_pool
from divssl.errors import ConfigError
from divssl.pretrain.config import Config


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIVSSL_CACHE", str(tmp_path / "cache"))


def _png(value: int, size: int = 12) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_bomb(width: int, height: int) -> bytes:
    """A few-hundred-byte 1-bit PNG declaring width x height pixels (a decompression bomb: the
    IDAT holds only the first rows, so decoding would allocate the whole image first)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    rows = zlib.compress(b"\0" * (1 + (width + 7) // 8) * 16)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")
    )


@pytest.fixture
def hostile_folder(tmp_path: Path) -> Path:
    root = tmp_path / "pool"
    outside = tmp_path / "outside"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            (root / cls / f"{i}.png").write_bytes(_png(10 * i + (cls == "b")))
    outside.mkdir()
    (outside / "secret.png").write_bytes(_png(200))
    (outside / "x.png").write_bytes(_png(201))
    os.symlink(outside / "secret.png", root / "a" / "link_out.png")  # a file out of the root
    os.symlink(root / "a" / "0.png", root / "b" / "link_in.png")  # a link inside the root
    os.symlink("/dev/zero", root / "b" / "zero.png")  # a device
    os.mkfifo(root / "a" / "fifo.png")  # would block an open()
    os.symlink(outside, root / "b" / "ext")  # a folder out of the root
    return root


def test_folder_refuses_links_out_of_root_and_non_regular_files(hostile_folder):
    pool = open_pool(f"folder:root={hostile_folder}")
    keys = list(pool.keys)
    assert "b/ext/x.png" not in keys  # a linked folder out of the root is not entered
    decoded, stats = load_array_pool(pool, 8)
    assert sorted(stats.corrupt) == ["a/fifo.png", "a/link_out.png", "b/zero.png"]
    assert len(decoded) == 7  # 6 images + the link inside the root
    with pytest.raises(CorruptImage, match="outside the pool root"):
        pool.read(keys.index("a/link_out.png"))
    with pytest.raises(CorruptImage, match="not a regular file"):
        pool.read(keys.index("a/fifo.png"))


def test_follow_symlinks_true_allows_links_but_never_opens_devices(hostile_folder):
    pool = open_pool(f"folder:root={hostile_folder}:follow_symlinks=true")
    keys = list(pool.keys)
    assert "b/ext/x.png" in keys and "b/ext/secret.png" in keys
    decoded, stats = load_array_pool(pool, 8)
    assert sorted(stats.corrupt) == ["a/fifo.png", "b/zero.png"]  # never opened
    assert len(decoded) == len(keys) - 2
    assert int(pool.read(keys.index("a/link_out.png"))[0, 0, 0]) == 200


def test_follow_symlinks_changes_the_manifest_and_the_limit_the_mmap_cache(hostile_folder):
    plain = open_pool(f"folder:root={hostile_folder}")
    following = open_pool(f"folder:root={hostile_folder}:follow_symlinks=true")
    assert plain.manifest_hash() != following.manifest_hash()
    _, default = load_array_pool(plain, 8, cache="mmap")
    with pixel_limit(100):  # 12x12 images = 144 pixels: every image refused
        _, low = load_array_pool(plain, 8, cache="mmap")
    assert len(default.corrupt) == 3 and low.decoded == 0  # not the default limit's cache


def test_bad_follow_symlinks_value_names_the_field(hostile_folder):
    with pytest.raises(ConfigError) as info:
        open_pool(f"folder:root={hostile_folder}:follow_symlinks=maybe")
    assert info.value.field == "data.pool.follow_symlinks"


def test_header_bomb_is_refused_before_decoding():
    bomb = png_header_bomb(20_000, 20_000)
    assert len(bomb) < 2_000
    with pytest.raises(CorruptImage, match="exceeds data.max_pixels"):
        open_rgb(bomb, "bomb.png")
    big = png_header_bomb(13_000, 13_000)  # under PIL's hard limit, over its warning limit
    with pytest.raises(CorruptImage, match="169000000 pixels exceeds data.max_pixels=89478485"):
        open_rgb(big, "big.png")


def test_pixel_limit_can_be_lowered_and_raised():
    image = _png(7, size=200)  # 40,000 pixels
    with pixel_limit(10_000):
        assert current_max_pixels() == 10_000
        with pytest.raises(CorruptImage, match="40000 pixels exceeds data.max_pixels=10000"):
            open_rgb(image)
    assert current_max_pixels() == DEFAULT_MAX_PIXELS
    assert open_rgb(image, max_pixels=40_000).size == (200, 200)  # the limit is inclusive
    with pytest.raises(ConfigError, match="data.max_pixels"), pixel_limit(0):
        current_max_pixels()


def test_bombs_in_a_pool_are_counted_as_corrupt(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(4):
        (root / f"{i}.png").write_bytes(_png(i, size=40))
    (root / "bomb.png").write_bytes(png_header_bomb(20_000, 20_000))
    pool = open_pool(f"folder:root={root}")
    with pixel_limit(1_000):  # 40x40 = 1600 pixels: all refused
        _, stats = load_array_pool(pool, 8)
    assert stats.decoded == 0 and len(stats.corrupt) == 5
    _, stats = load_array_pool(pool, 8)
    assert stats.corrupt == ["bomb.png"] and stats.decoded == 4


def test_workers_inherit_the_pixel_limit(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(6):
        (root / f"{i}.png").write_bytes(_png(i, size=40 if i % 2 else 20))
    pool = open_pool(f"folder:root={root}")
    with pixel_limit(1_000):  # 20x20 pass, 40x40 refused
        _, stats = load_array_pool(pool, 8, workers=2)
    assert sorted(stats.corrupt) == ["1.png", "3.png", "5.png"]


def test_large_jpeg_decodes_reduced_and_close_to_a_full_decode(monkeypatch):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    arr = np.kron(base, np.ones((64, 64, 1), dtype=np.uint8))  # 512x512 smooth blocks
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    full = decode_resized(data, 16)
    assert open_rgb(data, target=16).size == (512, 512)  # below the threshold: exact path
    monkeypatch.setattr(cache, "DRAFT_MIN_PIXELS", 1000)
    drafted = open_rgb(data, target=16)
    assert 32 <= drafted.size[0] < 512  # reduced by DCT scaling, kept >= 2 x target
    reduced = decode_resized(data, 16)
    assert np.abs(reduced.astype(int) - full.astype(int)).mean() < 8


def test_max_pixels_default_matches_the_decoder():
    assert Config().data.max_pixels == DEFAULT_MAX_PIXELS == Image.MAX_IMAGE_PIXELS
