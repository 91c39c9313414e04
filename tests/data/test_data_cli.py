"""``divssl data inspect / world / fractaldb / index-shards`` and pool export."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from divssl.data.cli import _generator_spec, app, export_pool
from divssl.data.inspect import inspect_pool
from divssl.data.pool import ArrayPool, open_pool
from divssl.errors import ConfigError

runner = CliRunner()


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIVSSL_CACHE", str(tmp_path / "cache"))


def encode(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def img(seed: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_folder(root: Path) -> None:
    for i, (cls, h, w) in enumerate([("a", 10, 12), ("a", 20, 8), ("b", 14, 14), ("b", 6, 30)]):
        (root / cls).mkdir(parents=True, exist_ok=True)
        (root / cls / f"{i}.png").write_bytes(encode(img(i, h, w)))
    (root / "b" / "zero.jpg").write_bytes(b"")
    (root / "a" / "text.png").write_text("not an image")


def test_inspect_folder_reports_counts_sizes_and_corrupt(tmp_path: Path) -> None:
    make_folder(tmp_path / "f")
    spec = f"folder:root={tmp_path / 'f'}"
    result = runner.invoke(app, ["inspect", spec, "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["num_samples"] == 6 and report["decoded"] == 4
    assert report["counts_per_class"] == {"a": 3, "b": 3}
    assert report["counts_per_source"] == {"source": 6}
    assert report["corrupt"] == {"count": 2, "keys": ["a/text.png", "b/zero.jpg"]}
    heights, widths = [10, 20, 14, 6], [12, 8, 14, 30]
    assert report["image_size"]["height"] == {
        "min": 6,
        "median": float(np.median(heights)),
        "max": 20,
    }
    assert report["image_size"]["width"]["median"] == float(np.median(widths))
    assert report["image_size"]["histogram"] == {"10x12": 1, "20x8": 1, "14x14": 1, "6x30": 1}
    assert report["manifest_hash"] == open_pool(spec).manifest_hash()
    assert "manifest hash" in result.output and report["manifest_hash"] in result.output
    assert inspect_pool(spec, workers=2)["corrupt"]["count"] == 2


def write_shard(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_index_shards_and_inspect_wds(tmp_path: Path) -> None:
    root = tmp_path / "shards"
    root.mkdir()
    write_shard(root / "00.tar", [("x0.png", encode(img(0, 5, 5))), ("x0.cls", b"1")])
    write_shard(
        root / "01.tar",
        [("y0.jpg", b"junk"), ("y0.cls", b"0"), ("y1.png", encode(img(1, 4, 6))), ("y1.cls", b"1")],
    )
    urls = f"{root}/{{00..01}}.tar"
    result = runner.invoke(app, ["index-shards", urls, "--verify"])
    assert result.exit_code == 0, result.output
    index = json.loads((root / "index.json").read_text())
    assert {k: (v["count"], v["checked"], v["corrupt"]) for k, v in index["shards"].items()} == {
        "00.tar": (1, 1, []),
        "01.tar": (2, 2, [0]),
    }
    report = inspect_pool(f"wds:urls={urls}:source=web")
    assert report["streaming"] and report["num_samples"] == 3
    assert report["counts_per_source"] == {"web": 3}
    assert report["corrupt"]["keys"] == ["01.tar/y0"]
    assert report["counts_per_class"] == {"0": 1, "1": 2}
    assert report["image_size"]["height"] == {"min": 4, "median": 4.5, "max": 5}
    bad = runner.invoke(app, ["index-shards", f"{root}/{{00..02}}.tar"])
    assert isinstance(bad.exception, ConfigError) and "missing shard" in str(bad.exception)


def test_export_pool_folder_and_npz_round_trip(tmp_path: Path) -> None:
    arr = np.stack([img(i, 8, 8) for i in range(5)])
    pool = ArrayPool(arr, labels=np.array([1, 0, 1, 1, 0]), class_names=["c000", "c001"])
    pool.spec, pool.source = "test:pool", "synthetic"
    out = export_pool(pool, tmp_path / "folder", "folder")
    back = open_pool(f"folder:root={out}")
    assert back.class_names == ["c000", "c001"] and back.source == "synthetic"
    assert sorted(back.labels.tolist()) == sorted(pool.labels.tolist())
    for i, key in enumerate(back.keys):
        np.testing.assert_array_equal(back.read(i), arr[int(Path(key).stem)])
        assert back.labels[i] == pool.labels[int(Path(key).stem)]
    meta = json.loads((out / "pool.json").read_text())
    assert meta["manifest_hash"] == pool.manifest_hash() and meta["num_written"] == 5
    npz_path = export_pool(pool, tmp_path / "n", "npz")
    assert npz_path == tmp_path / "n" / "pool.npz"
    again = open_pool(f"npz:path={npz_path}")
    np.testing.assert_array_equal(again.images, arr)
    assert again.labels.tolist() == pool.labels.tolist() and again.class_names == pool.class_names
    with pytest.raises(ConfigError, match="not an empty folder"):
        export_pool(pool, tmp_path / "folder", "folder")
    with pytest.raises(ConfigError, match="valid choices: folder, npz"):
        export_pool(pool, tmp_path / "x", "tiff")
    assert not (tmp_path / "x").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_generator_spec_normalisation() -> None:
    assert _generator_spec("world", "world:classes=3") == "world:classes=3"
    assert _generator_spec("world", "classes=3:size=16") == "world:classes=3:size=16"
    assert _generator_spec("world", "world") == "world"
    with pytest.raises(ConfigError, match="expected a world spec"):
        _generator_spec("world", "fractaldb:categories=2")


def test_generator_commands_with_a_stand_in_generator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from divssl.data import pool as pool_module

    arr = np.stack([img(i, 6, 6) for i in range(4)])

    def fake(classes: int = 2, seed: int = 0) -> ArrayPool:
        labels = np.arange(len(arr)) % classes
        return ArrayPool(arr, labels, [f"c{i:03d}" for i in range(classes)], source="synthetic")

    pool_module.pool_names()  # load the built-in readers before standing in for the generators
    monkeypatch.setitem(pool_module._REGISTRY, "world", fake)
    monkeypatch.setitem(pool_module._REGISTRY, "fractaldb", fake)
    result = runner.invoke(app, ["world", "classes=2", "--out", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "w" / "pool.json").read_text())["spec"] == "world:classes=2"
    back = open_pool(f"folder:root={tmp_path / 'w'}")
    assert back.class_names == ["c000", "c001"] and back.labels.tolist() == [0, 0, 1, 1]
    assert back.source == "synthetic"
    result = runner.invoke(
        app,
        ["fractaldb", "fractaldb:classes=4", "--out", str(tmp_path / "f.npz"), "--format", "npz"],
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(open_pool(f"npz:path={tmp_path / 'f.npz'}").images, arr)
    assert (tmp_path / "f.json").is_file()
    bad = runner.invoke(app, ["world", "classes=2:colour=red", "--out", str(tmp_path / "z")])
    assert isinstance(bad.exception, ConfigError) and "spec.colour" in str(bad.exception)


def test_world_command_writes_folder_and_npz(tmp_path: Path) -> None:
    pytest.importorskip("divssl.data.readers.world", reason="world reader not available")
    spec = "world:classes=3:per_class=4:size=16:seed=0"
    result = runner.invoke(app, ["world", spec, "--out", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    world = open_pool(spec)
    disk = open_pool(f"folder:root={tmp_path / 'w'}")
    assert len(disk) == len(world) == 12 and disk.class_names == world.class_names
    for i, key in enumerate(disk.keys):
        np.testing.assert_array_equal(disk.read(i), world.read(int(Path(key).stem)))
    result = runner.invoke(
        app, ["world", spec, "--out", str(tmp_path / "w.npz"), "--format", "npz"]
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(open_pool(f"npz:path={tmp_path / 'w.npz'}").images, world.images)
    bad = runner.invoke(app, ["world", spec, "--out", str(tmp_path / "w")])
    assert isinstance(bad.exception, ConfigError)


def test_fractaldb_command_writes_npz(tmp_path: Path) -> None:
    pytest.importorskip("divssl.data.readers.fractaldb", reason="fractaldb reader not available")
    spec = "fractaldb:categories=2:instances=2:size=16:points=2000:seed=0"
    result = runner.invoke(
        app, ["fractaldb", spec, "--out", str(tmp_path / "fr"), "--format", "npz"]
    )
    assert result.exit_code == 0, result.output
    pool = open_pool(f"npz:path={tmp_path / 'fr' / 'pool.npz'}")
    np.testing.assert_array_equal(pool.images, open_pool(spec).images)
    assert json.loads((tmp_path / "fr" / "pool.json").read_text())["source"] == "synthetic"


def _primary_colour_pool(path: Path) -> str:
    """Pure red, green and blue images, four each: orthogonal pixel vectors at any size."""
    images = np.zeros((12, 9, 9, 3), np.uint8)
    for i in range(12):
        images[i, :, :, i % 3] = 50 + 10 * (i // 3)  # brightness differs: cosine ignores it
    labels = np.arange(12) % 3
    np.savez(path, images=images, labels=labels, class_names=np.array(["red", "green", "blue"]))
    return f"npz:path={path}"


def test_inspect_reports_the_pixel_vendi_score(tmp_path: Path) -> None:
    spec = _primary_colour_pool(tmp_path / "rgb.npz")
    result = runner.invoke(app, ["inspect", spec, "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    vendi = json.loads((tmp_path / "r.json").read_text())["vendi"]
    assert vendi["extractor"].startswith("pixels|size=32")  # the default: fast, no weights
    assert vendi["score"] == pytest.approx(3.0, rel=1e-9)
    assert vendi["per_class"] == pytest.approx({"red": 1.0, "green": 1.0, "blue": 1.0})
    assert vendi["class_mean"] == pytest.approx(1.0) and vendi["n"] == 12
    assert "Vendi score (pixels, 12 images)" in result.output
    capped = inspect_pool(spec, vendi_max_images=3)["vendi"]
    assert capped["n"] == 3 and capped["max_images"] == 3
    off = runner.invoke(app, ["inspect", spec, "--no-vendi", "--json", str(tmp_path / "o.json")])
    assert off.exit_code == 0 and json.loads((tmp_path / "o.json").read_text())["vendi"] is None


def test_inspect_vendi_bad_settings_and_undefined_score(tmp_path: Path) -> None:
    spec = _primary_colour_pool(tmp_path / "rgb.npz")
    out = tmp_path / "r.json"
    bad = runner.invoke(app, ["inspect", spec, "--vendi-extractor", "sift", "--json", str(out)])
    assert isinstance(bad.exception, ConfigError) and bad.exception.field == "extractor"
    bad = runner.invoke(app, ["inspect", spec, "--vendi-max-images", "0", "--json", str(out)])
    assert isinstance(bad.exception, ConfigError)
    assert bad.exception.field == "vendi_max_images" and not out.exists()
    np.savez(tmp_path / "black.npz", images=np.zeros((3, 8, 8, 3), np.uint8))
    report = inspect_pool(f"npz:path={tmp_path / 'black.npz'}")  # inspection still succeeds
    assert "all zero" in report["vendi"]["error"] and report["decoded"] == 3
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_text("not an image")
    report = inspect_pool(f"folder:root={tmp_path / 'junk'}")
    assert "no decodable images" in report["vendi"]["error"] and report["corrupt"]["count"] == 1
