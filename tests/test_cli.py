"""The command line: exit codes and 'bad input writes nothing'."""

import subprocess
import sys

import pytest

POOL = "data.pool=world:classes=4:per_class=16:size=16:seed=0"


def _divssl(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "divssl.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_help_lists_every_command(tmp_path):
    out = _divssl("--help", cwd=tmp_path)
    assert out.returncode == 0
    for cmd in (
        "pretrain",
        "eval",
        "distance",
        "data",
        "plan",
        "run",
        "report",
        "quickstart",
        "results",
        "fit",
    ):
        assert cmd in out.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["method=simclrr"], "method"),
        (["backbone=resnet7"], "backbone"),
        (["budget.images=0"], "budget.images"),
        (["subset.size=999"], "subset.size"),
        (["subset.size=4", "subset.fraction=0.5"], "subset"),
        (["unknown_key=1"], "unknown_key"),
        (["data.pool=nosuchpool:x=1"], "data.pool"),
    ],
)
def test_bad_pretrain_input_exits_2_and_writes_nothing(tmp_path, args, needle):
    out = _divssl("pretrain", POOL, f"out={tmp_path / 'run'}", *args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr
    assert not (tmp_path / "run").exists()


def test_pretrain_then_knn_end_to_end(tmp_path):
    run = tmp_path / "run"
    out = _divssl(
        "pretrain",
        POOL,
        "budget.images=64",
        "batch_size=32",
        f"out={run}",
        "tracking=none",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert (run / "summary.json").is_file() and (run / "backbone.pt").is_file()
    out = _divssl(
        "eval",
        "knn",
        "--run",
        str(run),
        "--task",
        "world:classes=4:per_class=10:size=16:seed=0",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert list((run / "eval").glob("knn_*.json"))


def test_nan_run_exits_1(tmp_path):
    out = _divssl(
        "pretrain",
        POOL,
        "budget.images=64",
        "batch_size=32",
        "optim.name=sgd",
        "optim.base_lr=1e30",
        "optim.warmup_epochs=0",
        f"out={tmp_path / 'run'}",
        "tracking=none",
        cwd=tmp_path,
    )
    assert out.returncode == 1
    assert "non-finite" in out.stderr
