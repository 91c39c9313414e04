"""End to end: `divssl eval linear|knn|finetune` on a world task with a random-init run dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from divssl.errors import ConfigError
from divssl.evaluate.cli import app
from divssl.io import atomic_write_yaml, read_json
from divssl.pretrain.backbones import build_backbone, export_backbone

TASK = "world:classes=4:per_class=25:size=16"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # The many tiny float64 ops of L-BFGS crawl when intra-op threads compete with other
    # processes (xdist workers) for the two cores; one thread keeps these tests fast.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DIVSSL_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model, _ = build_backbone("convnet_tiny", 16)
    run = tmp_path / "run"
    run.mkdir()
    export_backbone(model, run / "backbone.pt")
    atomic_write_yaml(
        run / "config.yaml",
        {"method": "simclr", "backbone": "convnet_tiny", "image_size": 16, "cifar_stem": False,
         "data": {"pool": TASK}, "seed": 0},
    )  # fmt: skip
    return run


def invoke(*args: str) -> dict:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_linear_and_knn_write_json_and_reuse_cache(run_dir: Path) -> None:
    common = ["--run", str(run_dir), "--task", TASK, "--n-boot", "50", "--device", "cpu"]
    out = invoke("linear", *common, "--fractions", "20,100", "--weight-decays", "1e-3,1e-1")
    path = run_dir / "eval" / "linear_world-classes-4-per_class-25-size-16.json"
    assert path.is_file() and "computed" in out.output
    res = read_json(path)
    assert res["kind"] == "linear" and res["protocol"] == "cached"
    assert res["task"]["splits"]["ood"].endswith("split=ood") and res["num_classes"] == 4
    assert [r["fraction"] for r in res["results"]] == [20.0, 100.0]
    assert [r["n_train"] for r in res["results"]] == [20, 100]
    assert not any(rec["cache_hit"] for rec in res["feature_cache"].values())
    for entry in res["results"]:
        assert entry["chosen"]["weight_decay"] in (1e-3, 1e-1) and len(entry["sweep"]) == 2
        for split in ("test", "ood"):
            top1 = entry[split]["top1"]
            assert set(top1) == {"value", "ci_low", "ci_high", "n"} and top1["n"] == 100
            assert top1["ci_low"] <= top1["value"] <= top1["ci_high"]
            assert 0.0 <= entry[split]["macro_f1"]["value"] <= 1.0
    assert res["encoder"]["init"] == "pretrained" and len(res["encoder"]["checkpoint_sha256"]) == 16
    # Re-running reuses every split's features; kNN shares the same cache.
    again = invoke("linear", *common, "--fractions", "20,100", "--weight-decays", "1e-3,1e-1")
    assert "computed" not in again.output and "hit" in again.output
    res2 = read_json(path)
    assert all(rec["cache_hit"] for rec in res2["feature_cache"].values())
    assert res2["results"][1]["test"] == res["results"][1]["test"]
    invoke("knn", *common, "--k", "5,500")
    knn = read_json(run_dir / "eval" / "knn_world-classes-4-per_class-25-size-16.json")
    assert all(rec["cache_hit"] for rec in knn["feature_cache"].values())
    assert [(r["k"], r["k_used"]) for r in knn["results"]] == [(5, 5), (500, 100)]
    assert 0.0 <= knn["results"][0]["ood"]["top1"]["value"] <= 1.0


def test_random_init_baseline_and_finetune(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "baseline"
    invoke(
        "knn", "--task", TASK, "--init", "random", "--backbone", "convnet_tiny",
        "--image-size", "16", "--seed", "7", "--out", str(out), "--n-boot", "20",
        "--device", "cpu",
    )  # fmt: skip
    res = read_json(out / "knn_world-classes-4-per_class-25-size-16_random-s7.json")
    assert res["encoder"] == {
        "init": "random", "seed": 7, "torch": torch.__version__, "backbone": "convnet_tiny",
        "image_size": 16, "cifar_stem": False,
    }  # fmt: skip
    invoke(
        "finetune", "--run", str(run_dir), "--task", TASK, "--epochs", "2", "--batch-size", "32",
        "--eval-points", "3", "--n-boot", "20", "--device", "cpu",
    )  # fmt: skip
    ft = read_json(run_dir / "eval" / "finetune_world-classes-4-per_class-25-size-16.json")
    assert [p["step"] for p in ft["points"]] == [2, 4, 6]
    assert [p["images_seen"] for p in ft["points"]] == [64, 128, 192]
    for point in ft["points"]:
        for split in ("test", "ood"):
            assert set(point[split]["macro_f1"]) == {"value", "ci_low", "ci_high", "n"}
    assert len(ft["id_ood"]) == 3 and "ood_macro_f1" in ft["id_ood"][0]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["linear", "--fractions", "abc"], "fractions"),
        (["linear", "--fractions", "0,10"], "fractions"),
        (["linear", "--protocol", "adam"], "protocol"),
        (["knn", "--k", "0"], "k"),
        (["knn", "--device", "tpu"], "device"),
        (["finetune", "--eval-points", "0"], "eval_points"),
    ],
)
def test_bad_input_names_the_field_and_writes_nothing(
    run_dir: Path, args: list[str], field: str
) -> None:
    result = runner.invoke(app, [*args, "--run", str(run_dir), "--task", TASK])
    assert isinstance(result.exception, ConfigError), result.output
    assert result.exception.field == field
    assert not (run_dir / "eval").exists()


def test_missing_task_file(run_dir: Path) -> None:
    result = runner.invoke(app, ["linear", "--run", str(run_dir), "--task", "nope.yaml"])
    assert isinstance(result.exception, ConfigError) and result.exception.field == "task"
