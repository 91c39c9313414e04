"""The `plan`, `run`, `results` and `quickstart` commands (typer app mounted by divssl.cli)."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from divssl.errors import ConfigError
from divssl.io import atomic_write_json
from divssl.study import cli as study_cli
from divssl.study.cli import app

from .conftest import plan_doc, planned_knn, pretrain_job, tiny_tree, write_study


def _fake_study_dir(root):
    """A study folder with plan.json and two seeds' records (no training)."""
    jobs = []
    knn = planned_knn("t")
    for seed, acc in ((0, 0.5), (1, 0.7)):
        job_id = f"run{seed}"
        jobs.append(pretrain_job(job_id, [knn]))
        rows = [
            {
                "run": job_id,
                "method": "simclr",
                "seed": seed,
                "eval": "knn",
                "task": "t",
                "split": split,
                "metric": "top1",
                "k": 20,
                "value": acc - 0.1 * (split == "ood"),
                "ci_low": 0.0,
                "ci_high": 1.0,
                "n": 64,
            }
            for split in ("id", "ood")
        ]
        atomic_write_json(root / "runs" / job_id / "records" / f"{knn.id}.json", {"rows": rows})
    doc = plan_doc(jobs, study="fake", study_dir=str(root))
    atomic_write_json(root / "plan.json", doc.model_dump(mode="json"))
    return root


def test_plan_prints_runs_and_totals(tmp_path):
    spec = write_study(tmp_path / "s.yaml", tiny_tree())
    result = CliRunner().invoke(
        app, ["plan", str(spec), "--no-measure", "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.exception
    assert "runs: 2" in result.output and "total images (sum of C): 128" in result.output
    assert "subset.fraction" in result.output and not (tmp_path / "out").exists()


def test_plan_with_measurement_writes_only_the_cache(tmp_path):
    spec = write_study(tmp_path / "s.yaml", tiny_tree())
    args = [
        "plan",
        str(spec),
        "--out",
        str(tmp_path / "out"),
        "--measure-steps",
        "1",
        "--measure-warmup",
        "0",
        "--measure-batch",
        "8",
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.exception
    assert "estimated pretraining time on cpu" in result.output and "img/s" in result.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["throughput.json"]


def test_bad_input_raises_config_error_naming_the_field(tmp_path):
    spec = write_study(tmp_path / "s.yaml", tiny_tree(grid={"method": ["simclr", "nope"]}))
    result = CliRunner().invoke(app, ["plan", str(spec), "--no-measure"])
    assert isinstance(result.exception, ConfigError)  # divssl.cli maps it to exit code 2
    assert result.exception.field == "grid.method[1]"
    result = CliRunner().invoke(app, ["plan", str(spec), "--set", "x=1"])
    assert isinstance(result.exception, ConfigError) and result.exception.field == "--set x"


def test_results_filters_summarises_and_exports(tmp_path):
    root = _fake_study_dir(tmp_path / "study")
    out = tmp_path / "ood.csv"
    result = CliRunner().invoke(
        app, ["results", str(root), "--where", "split=ood", "--export", str(out)]
    )
    assert result.exit_code == 0, result.exception
    assert "0.5" in result.output and "n_seeds" in result.output  # mean of 0.4 and 0.6
    exported = pd.read_csv(out)
    assert sorted(exported["value"]) == pytest.approx([0.4, 0.6])
    assert (root / "results.parquet").is_file() and (root / "results.csv").is_file()
    raw = CliRunner().invoke(app, ["results", str(root), "--raw", "--where", "seed=1"])
    assert raw.exit_code == 0 and "run1" in raw.output and "run0" not in raw.output
    bad = CliRunner().invoke(app, ["results", str(root), "--where", "colour=red"])
    assert isinstance(bad.exception, ConfigError) and bad.exception.field == "--where"
    missing = CliRunner().invoke(app, ["results", str(tmp_path / "nothing")])
    assert isinstance(missing.exception, ConfigError)


def test_run_and_quickstart_commands(tmp_path, monkeypatch):
    tree = tiny_tree(grid={"pool": ["w"], "seed": [0]}, report={"sections": ["summary"]})
    spec = write_study(tmp_path / "s.yaml", tree)
    monkeypatch.setattr(study_cli, "quickstart_spec", lambda: spec)
    result = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path / "q")])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "1 done" in result.output and (tmp_path / "q" / "results.parquet").is_file()
    try:
        import divssl.report  # noqa: F401
    except ImportError:
        pass
    else:
        assert "report" in result.output and (tmp_path / "q" / "report").is_dir()
    again = CliRunner().invoke(app, ["run", str(spec), "--out", str(tmp_path / "q")])
    assert again.exit_code == 0 and "1 already complete" in again.output
