"""Bad data in a training pool is skipped and counted once; N, E and D use the decodable count."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from divssl.io import read_json
from divssl.pretrain.config import load_config
from divssl.pretrain.loop import pretrain


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIVSSL_CACHE", str(tmp_path / "cache"))


def _png(rng: np.random.Generator, size: int = 20) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _cfg(tmp_path: Path, *extra: str):
    return load_config(
        None,
        [
            "batch_size=16",
            "image_size=16",
            "tracking=none",
            "log_every=1",
            f"out={tmp_path / 'run'}",
            *extra,
        ],
    )


def test_default_subset_is_every_decodable_image(tmp_path):
    """The issue's reproduction: corrupt files in a folder pool, no subset key set."""
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "pool" / cls).mkdir(parents=True)
        for i in range(8):
            (tmp_path / "pool" / cls / f"{i}.png").write_bytes(_png(rng))
    (tmp_path / "pool" / "a" / "broken.png").write_bytes(b"not an image")
    (tmp_path / "pool" / "b" / "empty.png").write_bytes(b"")
    (tmp_path / "pool" / "b" / "cut.png").write_bytes(_png(rng)[:40])
    s = read_json(
        pretrain(_cfg(tmp_path, f"data.pool=folder:root={tmp_path / 'pool'}", "budget.images=40"))
        / "summary.json"
    )
    assert s["corrupt_images"] == 3
    assert s["unique_images"] == 16 and s["images_seen"] == 40
    assert s["epochs"] == pytest.approx(40 / 16) and s["diversity"] == pytest.approx(16 / 40)


def test_default_subset_fraction_counts_decodable_images(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "flat").mkdir()
    for i in range(10):
        (tmp_path / "flat" / f"{i}.png").write_bytes(_png(rng))
    for i in range(4):
        (tmp_path / "flat" / f"bad{i}.png").write_bytes(b"junk")
    cfg = _cfg(tmp_path, f"data.pool=folder:root={tmp_path / 'flat'}", "subset.fraction=0.5")
    cfg = cfg.model_copy(update={"budget": cfg.budget.model_copy(update={"images": 20})})
    s = read_json(pretrain(cfg) / "summary.json")
    assert s["unique_images"] == 5 and s["corrupt_images"] == 4  # half of the 10 decodable


def _write_shards(root: Path, bad: set[tuple[int, int]]) -> str:
    rng = np.random.default_rng(2)
    root.mkdir()
    for shard in range(3):
        with tarfile.open(root / f"{shard:06d}.tar", "w") as tar:
            for i in range(8):
                image = b"not an image" if (shard, i) in bad else _png(rng)
                for ext, data in (("png", image), ("cls", str(i % 2).encode())):
                    info = tarfile.TarInfo(f"s{shard}_{i:03d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(root / "{000000..000002}.tar")


def test_webdataset_bad_samples_counted_once_and_n_corrected(tmp_path):
    """3 undecodable samples of 24, met on each of 4 passes: counted 3 times, not 12, and N is
    the 21 decodable samples (the index says 24), so E and D are C/21 and 21/C."""
    urls = _write_shards(tmp_path / "shards", {(0, 1), (1, 5), (2, 7)})
    cfg = _cfg(tmp_path, f"data.pool=wds:urls={urls}", "budget.images=96")
    s = read_json(pretrain(cfg) / "summary.json")
    assert s["images_seen"] == 96
    assert s["corrupt_images"] == 3
    assert s["unique_images"] == 21 and s["unique_images_indexed"] == 24
    assert s["unique_images_exact"] is True
    assert s["epochs"] == pytest.approx(96 / 21) and s["diversity"] == pytest.approx(21 / 96)
    assert "decodable" in s["unique_images_note"]


def test_webdataset_without_bad_samples_keeps_the_index_n(tmp_path):
    urls = _write_shards(tmp_path / "shards", set())
    s = read_json(
        pretrain(_cfg(tmp_path, f"data.pool=wds:urls={urls}", "budget.images=48")) / "summary.json"
    )
    assert s["corrupt_images"] == 0 and s["unique_images"] == 24
    assert "unique_images_note" not in s
