"""``divssl distance``: tables, saved matrices and input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from divssl.distances.cli import app
from divssl.errors import ConfigError
from divssl.io import atomic_write_yaml
from divssl.pretrain.backbones import build_backbone, export_backbone

WORLD = "world:classes=4:per_class=20:size=16"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIVSSL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DIVSSL_INCEPTION_WEIGHTS", raising=False)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model, _ = build_backbone("convnet_tiny", 16)
    root = tmp_path / "run"
    root.mkdir()
    export_backbone(model, root / "backbone.pt")
    atomic_write_yaml(
        root / "config.yaml",
        {"backbone": "convnet_tiny", "image_size": 16, "cifar_stem": False, "seed": 0},
    )
    return root


def _invoke(args: list[str]) -> object:
    return CliRunner().invoke(app, args, catch_exceptions=True)


def test_cli_world_pools_table_and_json(tmp_path: Path, run_dir: Path) -> None:
    out = tmp_path / "d.json"
    args = ["--a", f"{WORLD}:shift=0", "--b", f"{WORLD}:shift=0", "--b", f"{WORLD}:shift=1"]
    result = _invoke(
        [
            *args,
            "--metric",
            "fid,kid,vdna",
            "--extractor",
            f"run:{run_dir}",
            "--kid-subsets",
            "10",
            "--vdna-bins",
            "50",
            "--out",
            str(out),
        ]
    )
    assert result.exit_code == 0, result.output
    assert "FID" in result.output and "KID" in result.output and "VisualDNA" in result.output
    assert "shift=1" in result.output
    saved = json.loads(out.read_text())
    assert saved["pools"][f"{WORLD}:shift=0"]["n_images"] == 80
    assert saved["extractor"]["input_size"] == 16
    for metric in ("fid", "kid", "vdna"):
        table = saved["metrics"][metric]
        assert table["rows"] == [f"{WORLD}:shift=0"]
        assert table["cols"] == [f"{WORLD}:shift=0", f"{WORLD}:shift=1"]
        same, shifted = table["values"][0]
        assert shifted > same, metric
    assert abs(saved["metrics"]["fid"]["values"][0][0]) < 1e-3
    assert saved["metrics"]["vdna"]["values"][0][0] == 0.0
    assert len(saved["metrics"]["vdna"]["per_layer"]) == 4
    # VisualDNA's ranges come from the declared reference pool (default: the first --a).
    assert saved["vdna_reference"]["spec"] == f"{WORLD}:shift=0"
    assert saved["metrics"]["vdna"]["params"]["reference"] == f"{WORLD}:shift=0"


def test_cli_csv_output(tmp_path: Path, run_dir: Path) -> None:
    rng = np.random.default_rng(0)
    for name, lo in (("x", 0), ("y", 100)):
        np.savez(tmp_path / f"{name}.npz", images=rng.integers(lo, lo + 150, (12, 16, 16, 3), "u1"))
    out = tmp_path / "d.csv"
    result = _invoke(
        [
            "--a",
            f"npz:path={tmp_path / 'x.npz'}",
            "--b",
            f"npz:path={tmp_path / 'y.npz'}",
            "--metric",
            "kid",
            "--metric",
            "fid",
            "--extractor",
            f"run:{run_dir}",
            "--max-images",
            "10",
            "--out",
            str(out),
        ]
    )
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0] == "metric,a,b,value,std"
    assert [line.split(",")[0] for line in lines[1:]] == ["kid", "fid"]
    assert float(lines[2].split(",")[3]) > 0.0


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (["--metric", "lpips"], "metric"),
        (["--extractor", "inception"], "weights"),
        (["--extractor", "sift"], "extractor"),
        (["--max-images", "1"], "max_images"),
        (["--out", "d.txt"], "out"),
        (["--a", "npz:path=/nonexistent/x.npz"], "a"),
        (["--layers", "features.99"], "layers"),
    ],
)
def test_cli_bad_input_raises_config_error_and_writes_nothing(
    tmp_path: Path, run_dir: Path, extra: list[str], field: str
) -> None:
    np.savez(tmp_path / "x.npz", images=np.zeros((4, 8, 8, 3), np.uint8))
    spec = f"npz:path={tmp_path / 'x.npz'}"
    options = {"--a": spec, "--extractor": f"run:{run_dir}", "--out": str(tmp_path / "d.json")}
    options.update({k: v for k, v in zip(extra[::2], extra[1::2], strict=True)})
    if options["--out"] == "d.txt":
        options["--out"] = str(tmp_path / "d.txt")
    args = [x for kv in options.items() for x in kv]
    result = _invoke([*args, "--b", spec, "--metric", options.get("--metric", "fid,vdna")])
    assert isinstance(result.exception, ConfigError), result.output
    if field == "a":  # the reader reports its own key (e.g. data.pool.path)
        assert "nonexistent" in str(result.exception)
    else:
        assert result.exception.field == field
    if field == "weights":
        assert "DIVSSL_INCEPTION_WEIGHTS" in str(result.exception)
    assert not list(tmp_path.glob("d.*"))


def _orthogonal_pool(path: Path, copies: int = 5) -> str:
    """Three images lighting disjoint pixel rows (orthogonal pixel vectors), ``copies`` each."""
    base = np.zeros((3, 12, 12, 3), np.uint8)
    for i in range(3):
        base[i, 4 * i : 4 * i + 4] = 200
    images = np.repeat(base, copies, axis=0)
    labels = np.repeat(np.arange(3), copies)
    np.savez(path, images=images, labels=labels, class_names=np.array(["a", "b", "c"]))
    return f"npz:path={path}"


def test_cli_vendi_scores_one_pool_without_b(tmp_path: Path) -> None:
    # Three distinct images, five copies each: VS = 3 for the pool, 1 within each class.
    spec = _orthogonal_pool(tmp_path / "o.npz")
    out = tmp_path / "v.json"
    args = ["--a", spec, "--metric", "vendi", "--extractor", "pixels", "--input-size", "12"]
    result = _invoke([*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Vendi" in result.output
    saved = json.loads(out.read_text())
    assert saved["metrics"] == {}
    score = saved["vendi"][spec]
    assert score["score"] == pytest.approx(3.0, rel=1e-9)
    assert score["per_class"] == pytest.approx({"a": 1.0, "b": 1.0, "c": 1.0}, rel=1e-9)
    assert score["class_mean"] == pytest.approx(1.0, rel=1e-9)
    assert score["n"] == 15 and score["class_counts"] == {"a": 5, "b": 5, "c": 5}
    assert score["kernel"] == "cosine" and saved["extractor"]["name"] == "pixels"


def test_cli_vendi_beside_fid_and_in_csv(tmp_path: Path, run_dir: Path) -> None:
    x = _orthogonal_pool(tmp_path / "x.npz")
    np.savez(tmp_path / "y.npz", images=np.full((6, 16, 16, 3), 90, np.uint8))
    y = f"npz:path={tmp_path / 'y.npz'}"
    out = tmp_path / "d.csv"
    args = ["--a", x, "--b", y, "--metric", "fid,vendi", "--extractor", f"run:{run_dir}"]
    result = _invoke([*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [line.split(",") for line in out.read_text().splitlines()[1:]]
    assert [r[0] for r in rows] == ["fid", "vendi", "vendi_class_mean", "vendi"]
    assert [r[1] for r in rows[1:]] == [x, x, y]
    assert float(rows[3][3]) == pytest.approx(1.0, rel=1e-6)  # six identical images


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (["--metric", "fid"], "b"),
        (["--metric", "vendi", "--vendi-kernel", "poly"], "vendi_kernel"),
        (["--metric", "vendi", "--extractor", "pixels", "--weights", "w.pt"], "weights"),
    ],
)
def test_cli_vendi_bad_input(tmp_path: Path, run_dir: Path, extra: list[str], field: str) -> None:
    spec = _orthogonal_pool(tmp_path / "o.npz")
    out = tmp_path / "d.json"
    options = {"--extractor": f"run:{run_dir}"}
    options.update({k: v for k, v in zip(extra[::2], extra[1::2], strict=True)})
    args = [x for kv in options.items() for x in kv]
    result = _invoke(["--a", spec, *args, "--out", str(out)])
    assert isinstance(result.exception, ConfigError), result.output
    assert result.exception.field == field
    assert not out.exists()


def test_cli_vendi_of_a_black_image_is_a_clear_error(tmp_path: Path) -> None:
    np.savez(tmp_path / "k.npz", images=np.zeros((4, 8, 8, 3), np.uint8))
    out = tmp_path / "d.json"
    args = ["--a", f"npz:path={tmp_path / 'k.npz'}", "--metric", "vendi", "--extractor", "pixels"]
    result = _invoke([*args, "--out", str(out)])
    assert isinstance(result.exception, ConfigError) and result.exception.field == "pool"
    assert "all zero" in str(result.exception)
    assert not out.exists()
