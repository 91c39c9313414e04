"""WebDataset pools fill the whole-image store: aspect kept, crops over each image's extent.

The streamed batches, the cached store (``load_stored_pool``) and the batched device decoder
(run on the CPU with the same function) are checked against the PIL path of random-access pools.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from divssl.data.cache import load_stored_pool, pixel_limit, resize_shorter
from divssl.data.pool import open_pool
from divssl.data.readers.wds import RawChunk, RawItem, decode_chunks
from divssl.data.stream import StreamLoader, stream_batches, stream_subset
from divssl.errors import ConfigError
from divssl.pretrain.augment import (
    AugmentPreset,
    ViewSpec,
    denormalize,
    make_views,
    sample_crop_boxes,
)

JPEG_SOI = b"\xff\xd8"
CORNER_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]  # TL, TR, BL, BR


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIVSSL_CACHE", str(tmp_path / "cache"))


def _encode(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _cornered(h: int, w: int, block: int = 6) -> np.ndarray:
    """A grey (h, w) image with a distinct pure colour in a block x block square at each corner."""
    arr = np.full((h, w, 3), 128, dtype=np.uint8)
    tl, tr, bl, br = CORNER_COLOURS
    arr[:block, :block], arr[:block, -block:] = tl, tr
    arr[-block:, :block], arr[-block:, -block:] = bl, br
    return arr


def _smooth(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], -1)
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def _write_shard(path: Path, samples: list[tuple[str, bytes | None]]) -> str:
    """One shard of ``(key, image bytes)``; ``None`` writes a sample without an image member."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i, (key, data) in enumerate(samples):
            members = [(f"{key}.cls", str(i % 2).encode())]
            if data is not None:
                ext = "jpg" if data[:2] == JPEG_SOI else "png"
                members.insert(0, (f"{key}.{ext}", data))
            for name, blob in members:
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    return f"wds:urls={path}:buffer=2"


def test_stream_crops_reach_all_four_corners_of_non_square_wds_images(tmp_path: Path) -> None:
    # A wide, a tall and a square image: the stream keeps each whole (a centre-cropped square
    # store would never show the 24 px at either end of the long side, nor its corner blocks).
    shapes = [(24, 72), (72, 24), (24, 24)]
    sources = [_cornered(h, w) for h, w in shapes]
    spec = _write_shard(
        tmp_path / "s" / "a.tar", [(f"k{i}", _encode(a)) for i, a in enumerate(sources)]
    )
    loader = stream_batches(open_pool(spec), 3, [60] * 8, order_seed=0, size=16, store_size=24)
    spec_view = ViewSpec(16, flip_p=0.0, jitter_p=0.0, gray_p=0.0, blur_p=0.0)
    gen = torch.Generator().manual_seed(0)
    seen = {shape: set() for shape in shapes}
    hits = {shape: np.zeros(4, dtype=int) for shape in shapes}
    for images, labels, extents in loader:
        assert images.shape == (60, 3, 72, 72) and images.dtype == torch.uint8
        assert labels.shape == (60,) and extents.dtype == torch.int64
        for row, (h, w) in enumerate(extents.tolist()):
            # the stored image is the source itself (shorter side 24 = store size), top-left
            src = sources[shapes.index((h, w))]
            assert np.array_equal(images[row, :, :h, :w].permute(1, 2, 0).numpy(), src)
        many = extents.repeat(20, 1)  # 20 boxes per streamed image
        boxes = sample_crop_boxes(
            len(many), many[:, 0], many[:, 1], (0.08, 1.0), (3 / 4, 4 / 3), gen
        )
        top, left, bh, bw = boxes.unbind(dim=1)
        assert (top + bh <= many[:, 0]).all() and (left + bw <= many[:, 1]).all()
        for (h, w), (t, lf, hh, ww) in zip(many.tolist(), boxes.tolist(), strict=True):
            at = [t == 0 and lf == 0, t == 0 and lf + ww == w, t + hh == h and lf == 0]
            at.append(t + hh == h and lf + ww == w)
            hits[(h, w)] += np.array(at, dtype=int)
        (view,) = make_views(images, AugmentPreset([spec_view]), gen, extents=extents)
        pixels = (denormalize(view) * 255).round().clamp(0, 255).to(torch.uint8)
        for row, (h, w) in enumerate(extents.tolist()):
            present = {tuple(p) for p in pixels[row].permute(1, 2, 0).reshape(-1, 3).tolist()}
            seen[(h, w)] |= present & set(CORNER_COLOURS)
    for shape in shapes:
        assert (hits[shape] > 0).all(), (shape, hits[shape])  # boxes touch every corner
        assert seen[shape] == set(CORNER_COLOURS), shape  # and views show every corner's pixels


def test_square_and_non_square_wds_sources_are_stored_like_a_folder(tmp_path: Path) -> None:
    # The same files as a wds shard and as an image folder: identical whole-image stores
    # (shorter side 20, aspect kept), square or not; the stream's batches hold the same pixels.
    rng = np.random.default_rng(0)
    arrays = {
        "sq": _smooth(rng, 40, 40),
        "wide": _smooth(rng, 40, 100),
        "tall": _smooth(rng, 90, 30),
    }
    (tmp_path / "f" / "x").mkdir(parents=True)
    for key, arr in arrays.items():
        (tmp_path / "f" / "x" / f"{key}.png").write_bytes(_encode(arr))
    spec = _write_shard(tmp_path / "s" / "a.tar", [(k, _encode(a)) for k, a in arrays.items()])
    want = {k: resize_shorter(Image.fromarray(a), 20) for k, a in arrays.items()}
    assert {k: v.shape[:2] for k, v in want.items()} == {
        "sq": (20, 20), "wide": (20, 50), "tall": (60, 20),
    }  # fmt: skip
    stores = {
        "wds": load_stored_pool(open_pool(spec), 20)[0],
        "wds-mmap": load_stored_pool(open_pool(spec), 20, cache="mmap", cache_dir=tmp_path / "c")[
            0
        ],
        "folder": load_stored_pool(open_pool(f"folder:root={tmp_path / 'f'}"), 20)[0],
    }
    for name, store in stores.items():
        assert len(store) == 3, name
        for i, key in enumerate(store.keys):
            np.testing.assert_array_equal(store.read(i), want[key.rsplit("/", 1)[-1].split(".")[0]])
    loader = stream_batches(open_pool(spec), 3, [3], order_seed=0, size=8, store_size=20)
    ((images, _, extents),) = list(loader)
    got = sorted(tuple(e) for e in extents.tolist())
    assert got == sorted(v.shape[:2] for v in want.values())
    for row, (h, w) in enumerate(extents.tolist()):
        block = images[row, :, :h, :w].permute(1, 2, 0).numpy()
        assert any(np.array_equal(block, v) for v in want.values())


def _coded(shard: int, pos: int) -> bytes:
    """A non-square 8 x 12 PNG that encodes (shard, pos) in its G and B channels."""
    arr = np.full((8, 12, 3), 100, dtype=np.uint8)
    arr[..., 1], arr[..., 2] = shard, pos
    return _encode(arr)


def _ids(images: torch.Tensor) -> list[tuple[int, int]]:
    return [(int(img[1, 0, 0]), int(img[2, 0, 0])) for img in images]


def test_corrupt_wds_samples_skipped_and_counted_in_whole_image_streams(tmp_path: Path) -> None:
    samples: list[tuple[str, bytes | None]] = [(f"k{p:02d}", _coded(0, p)) for p in range(12)]
    samples[2] = ("k02", b"not an image")
    samples[5] = ("k05", None)  # no image member
    samples[7] = ("k07", b"\xff\xd8\xff broken jpeg")
    spec = _write_shard(tmp_path / "s" / "a.tar", samples)
    bad = {"a.tar/k02", "a.tar/k05", "a.tar/k07"}
    sizes = [5] * 6  # 30 images: more than one pass over the 9 decodable ones

    def run(store_size: int | None, device: str | None = None) -> tuple[list, StreamLoader]:
        pool = open_pool(spec)
        loader = StreamLoader(pool, stream_subset(pool, 12), sizes, 3, 0, 8, 0,
                              store_size=store_size, device=device)  # fmt: skip
        return [(_ids(b[0]), b[1].tolist(), *(tuple(t.shape) for t in b)) for b in loader], loader

    square, ref_loader = run(None)  # the fixed-size path: the order to reproduce
    for store_size, device in ((16, None), (16, "cpu")):  # PIL, and the device decoder on CPU
        whole, loader = run(store_size, device)
        assert [b[0] for b in whole] == [b[0] for b in square]  # same samples, same order
        assert [b[1] for b in whole] == [b[1] for b in square]
        assert all(b[2] == (5, 3, 8, 12) and b[4] == (5, 2) for b in whole)  # every batch full
        assert loader.corrupt_count == ref_loader.corrupt_count == 3
        assert set(loader.corrupt_keys) == bad
    assert all(b[2] == (5, 3, 8, 8) for b in square)


def test_device_decoder_on_cpu_matches_the_pil_store_and_refuses_the_same_samples() -> None:
    rng = np.random.default_rng(3)
    blobs: list[bytes | None] = [
        _encode(_smooth(rng, 48, 64), "JPEG"),  # landscape JPEG: decode_jpeg
        _encode(_smooth(rng, 80, 40), "JPEG"),  # portrait JPEG
        _encode(_smooth(rng, 30, 50), "PNG"),  # not a JPEG: the PIL path
        b"\xff\xd8\xff garbage",  # looks like a JPEG, is not
        None,  # no image member
        _encode(_smooth(rng, 60, 60), "JPEG"),  # over the pixel limit below
        _encode(_smooth(rng, 12, 20), "JPEG"),  # shorter side below the store size: kept
    ]
    items = [RawItem(0, i, f"k{i}", b, 0) for i, b in enumerate(blobs)]
    with pixel_limit(3500):
        cpu, dev = (
            next(decode_chunks([RawChunk(items)], None, 0, store_size=16, device=d))
            for d in (None, "cpu")
        )
    for out in (cpu, dev):
        assert out.valid.tolist() == [True, True, True, False, False, False, True]
        assert out.sizes.tolist()[:3] == [[16, 21], [32, 16], [16, 26]]
        assert out.sizes.tolist()[3:] == [[-1, -1]] * 3 + [[12, 20]]
    for a, b in zip(cpu.images, dev.images, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 3.0  # torch vs PIL resampling
    np.testing.assert_array_equal(cpu.images[2], dev.images[2])  # PNG: the same PIL path


def test_whole_image_stream_rejects_a_bad_store_size(tmp_path: Path) -> None:
    spec = _write_shard(tmp_path / "s" / "a.tar", [("k0", _coded(0, 0))])
    with pytest.raises(ConfigError, match="data.store_size"):
        stream_batches(open_pool(spec), 1, [1], 0, store_size=0)


def test_pretraining_crops_streamed_wds_images_over_their_own_extents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import divssl.pretrain.loop as train
    from divssl.io import read_json, read_yaml
    from divssl.pretrain.config import load_config

    rng = np.random.default_rng(4)
    shapes = [(20, 36), (40, 24), (16, 16), (18, 30)]
    samples = [(f"k{i:02d}", _encode(_smooth(rng, *shapes[i % 4]))) for i in range(12)]
    spec = _write_shard(tmp_path / "s" / "a.tar", samples)
    seen: list[torch.Tensor | None] = []

    def recording(images, preset, generator, extents=None):
        seen.append(extents)
        assert extents is None or bool((extents <= torch.tensor(images.shape[-2:])).all())
        return make_views(images, preset, generator, extents=extents)

    monkeypatch.setattr(train, "make_views", recording)
    cfg = load_config(
        None,
        [
            f"data.pool={spec}",
            "subset.size=12",
            "budget.images=24",
            "batch_size=8",
            "image_size=16",
            "tracking=none",
            f"out={tmp_path / 'run'}",
        ],
    )
    run = train.pretrain(cfg)
    summary = read_json(run / "summary.json")
    assert summary["images_seen"] == 24 and summary["store_size"] == 16
    assert read_yaml(run / "config.yaml")["data"]["store_size"] == 16
    ragged = [e for e in seen if e is not None]  # (FLOP counting makes views of a dummy batch)
    assert len(ragged) == 3  # every training step: whole images with their extents
    got = {tuple(e) for ext in ragged for e in ext.tolist()}
    assert got == {(16, 28), (26, 16), (16, 16), (16, 26)}  # shorter side 16, aspect kept
