"""MLflow tracking against a real local SQLite store, queried back with mlflow.search_runs."""

from __future__ import annotations

import json

import pytest
import yaml

from divssl.study.tracking import (
    default_uri,
    eval_metric_key,
    flatten,
    log_job,
    tracking_uri,
    wants_mlflow,
)

CONFIG = {
    "method": "simclr",
    "backbone": "convnet_tiny",
    "seed": 0,
    "tracking": "none",
    "budget": {"images": 64, "epochs": None},
    "data": {"pool": "world:classes=4"},
}
JOB = {
    "id": "0123456789ab",
    "kind": "pretrain",
    "config": CONFIG,
    "factors": {"subset.fraction": 0.5, "seed": 0},
}
ROWS = [
    {"eval": "knn", "task": "wt", "split": "id", "metric": "top1", "label_fraction": 100.0,
     "k": 20, "eval_point": None, "value": 0.625},
    {"eval": "finetune", "task": "wt", "split": "ood", "metric": "macro_f1",
     "label_fraction": 100.0, "k": None, "eval_point": 3, "value": 0.25},
]  # fmt: skip


def _run_folder(tmp_path):
    folder = tmp_path / "s" / "runs" / JOB["id"]
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"status": "completed"}))
    (folder / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    lines = [{"step": 1, "loss": 4.5, "lr": 0.1}, {"step": 2, "loss": 4.0, "lr": 0.05}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def test_tracking_switches_and_store_choice(tmp_path):
    plan_doc = {"study": "tiny", "tracking": {"kind": "none", "uri": None}}
    assert not wants_mlflow(plan_doc, JOB)
    assert wants_mlflow(plan_doc, {**JOB, "config": {**CONFIG, "tracking": "mlflow"}})
    assert wants_mlflow({**plan_doc, "tracking": {"kind": "mlflow"}}, JOB)
    assert tracking_uri(tmp_path, plan_doc, JOB) == default_uri(tmp_path)
    assert default_uri(tmp_path) == f"sqlite:///{tmp_path.absolute()}/mlflow.db"
    job = {**JOB, "config": {**CONFIG, "mlflow_uri": "http://mlflow:5000"}}
    assert tracking_uri(tmp_path, plan_doc, job) == "http://mlflow:5000"
    assert flatten({"a": {"b": 1, "c": {}}, "d": [1]}) == {"a.b": 1, "a.c": {}, "d": [1]}
    assert eval_metric_key(ROWS[0]) == "eval/knn/wt/id/top1/f100/k20"
    assert eval_metric_key(ROWS[1]) == "eval/finetune/wt/ood/macro_f1"


@pytest.mark.slow
def test_a_job_is_logged_once_to_a_local_mlflow_store(tmp_path):
    import mlflow

    folder = _run_folder(tmp_path)
    study_dir = tmp_path / "s"
    plan_doc = {"study": "tiny", "tracking": {"kind": "mlflow", "uri": None}}
    first = log_job(study_dir, plan_doc, JOB, folder, ROWS)
    second = log_job(study_dir, plan_doc, JOB, folder, ROWS)  # re-logging replaces the run
    assert first != second
    mlflow.set_tracking_uri(default_uri(study_dir))
    runs = mlflow.search_runs(experiment_names=["tiny"])
    assert list(runs["run_id"]) == [second]
    row = runs.iloc[0]
    assert row["params.method"] == "simclr" and row["params.budget.images"] == "64"
    assert row["params.data.pool"] == "world:classes=4"
    assert row["tags.divssl.run"] == JOB["id"] and row["tags.factor.subset.fraction"] == "0.5"
    assert row["metrics.eval/knn/wt/id/top1/f100/k20"] == pytest.approx(0.625)
    assert row["status"] == "FINISHED"
    client = mlflow.MlflowClient(tracking_uri=default_uri(study_dir))
    loss = client.get_metric_history(second, "pretrain/loss")
    assert [(m.step, m.value) for m in loss] == [(1, 4.5), (2, 4.0)]
    artifacts = sorted(a.path for a in client.list_artifacts(second))
    assert artifacts == ["config.yaml", "summary.json"]
    assert (study_dir / "mlflow.db").is_file() and (study_dir / "mlartifacts").is_dir()
