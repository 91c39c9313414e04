"""Decoding and the decode cache (memory and mmap), against torchvision's resize + crop."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torchvision.transforms as T
from PIL import Image, ImageFile

import divssl.data.cache as dcache
from divssl.data.cache import decode_image, load_array_pool, resize_center_crop
from divssl.data.pool import ArrayPool, CorruptImage, open_pool
from divssl.errors import ConfigError


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIVSSL_CACHE", str(tmp_path / "cache"))


def rand_image(seed: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def encode(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def reference(arr: np.ndarray, size: int) -> np.ndarray:
    """torchvision's Resize(size) (PIL bilinear) then CenterCrop(size)."""
    tf = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(size)])
    return np.asarray(tf(Image.fromarray(arr)))


SHAPES = [(12, 20), (31, 9), (16, 16), (5, 7), (40, 41)]


@pytest.mark.parametrize(("h", "w"), SHAPES)
def test_resize_center_crop_matches_torchvision(h: int, w: int) -> None:
    arr = rand_image(h * w, h, w)
    for size in (8, 16):
        out = resize_center_crop(arr, size)
        assert out.shape == (size, size, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out, reference(arr, size))


def test_decode_image_rejects_corrupt_input_even_when_truncation_allowed(tmp_path: Path) -> None:
    good = rand_image(0, 32, 32)
    np.testing.assert_array_equal(decode_image(encode(good)), good)
    jpeg = encode(rand_image(1, 64, 64), "JPEG")
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        for bad in (b"", jpeg[: len(jpeg) // 2], b"plain text, not an image"):
            with pytest.raises(CorruptImage):
                decode_image(bad, "k")
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # caller's setting restored
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    grey = Image.fromarray(good[..., 0])
    buf = io.BytesIO()
    grey.save(buf, format="PNG")
    assert decode_image(buf.getvalue()).shape == (32, 32, 3)


def make_folder(root: Path) -> dict[str, np.ndarray]:
    images = {}
    for i, (h, w) in enumerate(SHAPES):
        rel = f"{'ab'[i % 2]}/{i}.png"
        images[rel] = rand_image(10 + i, h, w)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(encode(images[rel]))
    (root / "a/bad.jpg").write_bytes(b"")
    (root / "b/trunc.jpg").write_bytes(encode(rand_image(3, 64, 64), "JPEG")[:300])
    return images


def check_decoded(pool, decoded, stats, images: dict[str, np.ndarray], size: int) -> None:
    assert stats.total == len(pool) == 7 and stats.decoded == 5
    assert sorted(stats.corrupt) == ["a/bad.jpg", "b/trunc.jpg"]
    assert decoded.images.shape == (5, size, size, 3)
    assert list(decoded.keys) == sorted(images)
    assert decoded.labels.tolist() == [0 if k.startswith("a/") else 1 for k in decoded.keys]
    assert decoded.class_names == ["a", "b"]
    for key, img in zip(decoded.keys, decoded.images, strict=True):
        np.testing.assert_array_equal(img, reference(images[key], size))


def test_load_array_pool_memory_skips_corrupt(tmp_path: Path) -> None:
    images = make_folder(tmp_path / "f")
    pool = open_pool(f"folder:root={tmp_path / 'f'}")
    decoded, stats = load_array_pool(pool, 8)
    check_decoded(pool, decoded, stats, images, 8)
    assert decoded.spec == pool.spec and decoded.source == pool.source


def test_load_array_pool_mmap_writes_once_and_reuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = make_folder(tmp_path / "f")
    pool = open_pool(f"folder:root={tmp_path / 'f'}")
    decoded, stats = load_array_pool(pool, 8, cache="mmap", cache_dir=tmp_path / "dc")
    check_decoded(pool, decoded, stats, images, 8)
    assert isinstance(decoded.images, np.memmap)
    files = sorted(p.name for p in (tmp_path / "dc").iterdir() if not p.name.endswith(".lock"))
    assert files == [f"{pool.manifest_hash()}-8.json", f"{pool.manifest_hash()}-8.npy"]

    def fail(*args, **kwargs):
        raise AssertionError("decoded again instead of reusing the cache")

    monkeypatch.setattr(dcache, "decode_chunk", fail)
    again, stats2 = load_array_pool(pool, 8, cache="mmap", cache_dir=tmp_path / "dc")
    np.testing.assert_array_equal(again.images, decoded.images)
    assert list(again.keys) == list(decoded.keys) and stats2 == stats
    with pytest.raises(AssertionError, match="decoded again"):
        load_array_pool(pool, 6, cache="mmap", cache_dir=tmp_path / "dc")  # new size: new entry


def test_default_cache_dir_and_workers(tmp_path: Path) -> None:
    images = make_folder(tmp_path / "f")
    pool = open_pool(f"folder:root={tmp_path / 'f'}")
    decoded, stats = load_array_pool(pool, 8, cache="mmap", workers=2)
    check_decoded(pool, decoded, stats, images, 8)
    assert (tmp_path / "cache" / "decoded" / f"{pool.manifest_hash()}-8.npy").is_file()


def test_array_pools_unchanged_or_resized() -> None:
    arr = np.stack([rand_image(i, 16, 16) for i in range(3)])
    pool = ArrayPool(arr, labels=np.array([0, 1, 0]), class_names=["x", "y"])
    same, stats = load_array_pool(pool, 16)
    assert same is pool and stats.decoded == 3 and stats.corrupt == []
    small, _ = load_array_pool(pool, 8)
    assert small.images.shape == (3, 8, 8, 3) and small.labels.tolist() == [0, 1, 0]
    np.testing.assert_array_equal(small.images[1], reference(arr[1], 8))


def test_streaming_pool_decodes_in_order(tmp_path: Path) -> None:
    arrays = [rand_image(i, 10, 14) for i in range(5)]
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for i, a in enumerate(arrays):
            data = encode(a) if i != 2 else b"junk"
            info = tarfile.TarInfo(f"{i:03d}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    pool = open_pool(f"wds:urls={tmp_path / 's.tar'}")
    for workers in (0, 1):
        decoded, stats = load_array_pool(pool, 8, workers=workers)
        assert stats.corrupt == ["s.tar/002"] and list(decoded.keys) == [
            f"s.tar/{i:03d}" for i in (0, 1, 3, 4)
        ]
        for key, img in zip(decoded.keys, decoded.images, strict=True):
            np.testing.assert_array_equal(img, reference(arrays[int(key[-3:])], 8))


def test_bad_arguments() -> None:
    pool = ArrayPool(np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ConfigError, match="valid choices: memory, mmap"):
        load_array_pool(pool, 4, cache="disk")
    with pytest.raises(ConfigError, match="image_size"):
        load_array_pool(pool, 0)
    with pytest.raises(ConfigError, match="workers"):
        load_array_pool(pool, 4, workers=-1)


# ----------------------------------------------------------------------------- whole-image store


def resize_reference(arr: np.ndarray, size: int) -> np.ndarray:
    """torchvision's Resize(size) alone (PIL bilinear), aspect kept."""
    return np.asarray(
        T.Resize(size, interpolation=T.InterpolationMode.BILINEAR)(Image.fromarray(arr))
    )


@pytest.mark.parametrize(("h", "w"), SHAPES)
def test_resize_shorter_matches_torchvision_and_never_upsamples(h: int, w: int) -> None:
    arr = rand_image(h * w + 1, h, w)
    for size in (4, 8, 16):
        out = dcache.resize_shorter(arr, size)
        assert out.shape[:2] == dcache.store_shape(h, w, size)
        if min(h, w) > size:
            assert min(out.shape[:2]) == size
            np.testing.assert_array_equal(out, resize_reference(arr, size))
        else:
            np.testing.assert_array_equal(out, arr)  # kept at its own, smaller size


def test_default_store_size() -> None:
    # view size up to 64 px (CIFAR-like pools), 256/224 of the view above (256 for 224)
    assert [dcache.default_store_size(s) for s in (16, 32, 64)] == [16, 32, 64]
    assert dcache.default_store_size(224) == 256
    assert dcache.default_store_size(96) == round(96 * 256 / 224)


def check_stored(pool, stored, stats, images: dict[str, np.ndarray], size: int) -> None:
    assert stats.total == len(pool) == len(SHAPES) + 2 and stats.decoded == len(SHAPES)
    assert sorted(stats.corrupt) == ["a/bad.jpg", "b/trunc.jpg"]
    assert sorted(stored.keys) == sorted(images)
    assert stored.labels.tolist() == [0 if k.startswith("a/") else 1 for k in stored.keys]
    for i, key in enumerate(stored.keys):
        h, w = images[key].shape[:2]
        assert tuple(stored.extents[i]) == dcache.store_shape(h, w, size)
        np.testing.assert_array_equal(stored.read(i), dcache.resize_shorter(images[key], size))


def test_stored_pool_memory_round_trip(tmp_path: Path) -> None:
    images = make_folder(tmp_path / "f")
    pool = open_pool(f"folder:root={tmp_path / 'f'}")
    stored, stats = dcache.load_stored_pool(pool, 8)
    check_stored(pool, stored, stats, images, 8)
    assert stored.images is None  # shapes differ: no (N, h, w, 3) view
    # pixels plus 8 bytes of offset and 16 of extent per image
    assert stored.nbytes == int(stored.extents.prod(axis=1).sum() * 3 + 24 * len(stored))


def test_stored_pool_mmap_writes_once_and_reuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = make_folder(tmp_path / "f")
    pool = open_pool(f"folder:root={tmp_path / 'f'}")
    stored, stats = dcache.load_stored_pool(pool, 8, cache="mmap", cache_dir=tmp_path / "sc")
    check_stored(pool, stored, stats, images, 8)
    assert isinstance(stored.pixels, np.memmap)
    stem = f"{pool.manifest_hash()}-s8"
    files = sorted(p.name for p in (tmp_path / "sc").iterdir() if not p.name.endswith(".lock"))
    assert files == [f"{stem}.json", f"{stem}.npz", f"{stem}.u8"]

    def fail(*args, **kwargs):
        raise AssertionError("decoded again instead of reusing the cache")

    monkeypatch.setattr(dcache, "decode_store_chunk", fail)
    again, stats2 = dcache.load_stored_pool(pool, 8, cache="mmap", cache_dir=tmp_path / "sc")
    assert list(again.keys) == list(stored.keys) and stats2 == stats
    np.testing.assert_array_equal(again.extents, stored.extents)
    for i in range(len(again)):
        np.testing.assert_array_equal(again.read(i), stored.read(i))
    with pytest.raises(AssertionError, match="decoded again"):
        dcache.load_stored_pool(pool, 6, cache="mmap", cache_dir=tmp_path / "sc")  # new entry


def test_stored_pool_workers_and_default_dir(tmp_path: Path) -> None:
    images = make_folder(tmp_path / "f")
    pool = open_pool(f"folder:root={tmp_path / 'f'}")
    stored, stats = dcache.load_stored_pool(pool, 8, cache="mmap", workers=2)
    check_stored(pool, stored, stats, images, 8)
    assert (tmp_path / "cache" / "stored" / f"{pool.manifest_hash()}-s8.u8").is_file()


def test_array_pools_wrapped_without_copy_or_resized() -> None:
    arr = np.stack([rand_image(i, 16, 24) for i in range(3)])
    pool = ArrayPool(arr, labels=np.array([0, 1, 0]), class_names=["x", "y"], spec="arr")
    for size in (16, 32):  # at or above the shorter side: kept as is, no copy
        same, stats = dcache.load_stored_pool(pool, size)
        assert np.shares_memory(same.pixels, arr) and stats.decoded == 3
        np.testing.assert_array_equal(same.images, arr)
        assert same.labels.tolist() == [0, 1, 0] and same.spec == "arr"
    small, _ = dcache.load_stored_pool(pool, 8)
    assert small.images.shape == (3, 8, 12, 3)  # one shape for all: a uniform view
    np.testing.assert_array_equal(small.images[1], resize_reference(arr[1], 8))


def test_gather_pads_with_one_replicated_border_row_and_column() -> None:
    shapes = [(3, 5), (6, 2), (4, 4)]
    imgs = [rand_image(i, h, w) for i, (h, w) in enumerate(shapes)]
    offsets = np.cumsum([0] + [im.size for im in imgs[:-1]])
    pool = dcache.StoredPool(np.concatenate([im.reshape(-1) for im in imgs]), offsets, shapes)
    batch, extents = pool.gather(np.array([2, 0, 1]))
    assert batch.shape == (3, 6, 5, 3) and extents.tolist() == [[4, 4], [3, 5], [6, 2]]
    for row, index in enumerate([2, 0, 1]):
        img = imgs[index]
        h, w = img.shape[:2]
        # the image plus one replicated column and row (all that bilinear crops can read)
        rows = np.minimum(np.arange(min(h + 1, 6)), h - 1)
        cols = np.minimum(np.arange(min(w + 1, 5)), w - 1)
        np.testing.assert_array_equal(batch[row, : len(rows), : len(cols)], img[rows][:, cols])
        assert not batch[row, h + 1 :].any() and not batch[row, :, w + 1 :].any()
    with pytest.raises(ValueError):
        dcache.StoredPool(np.zeros(10, np.uint8), np.array([0]), np.array([[2, 2]]))


def test_stored_pool_bad_arguments() -> None:
    pool = ArrayPool(np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ConfigError, match="valid choices: memory, mmap"):
        dcache.load_stored_pool(pool, 4, cache="disk")
    with pytest.raises(ConfigError, match="data.store_size"):
        dcache.load_stored_pool(pool, 0)
    with pytest.raises(ConfigError, match="workers"):
        dcache.load_stored_pool(pool, 4, workers=-1)
