"""Experiment tracking: every run writes TensorBoard event files; MLflow on request.

With ``tracking: mlflow`` in the study (or the pretraining key ``tracking=mlflow``) each finished
run is logged to an MLflow tracking store, by default the local SQLite store
``sqlite:///STUDY_DIR/mlflow.db`` (artifacts under ``STUDY_DIR/mlartifacts``), else the study's
``tracking_uri`` or the run's ``mlflow_uri`` (a server URI works the same):

* params: the resolved config, flattened to dotted keys;
* tags: the run hash, study, job kind and every grid factor (``factor.<axis>``);
* metrics: the ``metrics.jsonl`` series (``pretrain/<name>`` at each logged step) and every
  evaluation number (``eval/<kind>/<task>/<split>/<metric>[/f<fraction>][/k<k>]``, the
  fine-tuning points as steps);
* artifacts: ``summary.json`` and ``config.yaml``.

Logging is idempotent: an earlier MLflow run with the same run hash is deleted first, so running
a study twice leaves one MLflow run per study run.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from divssl.config_tree import flatten

RUN_TAG = "divssl.run"
_BATCH_PARAMS = 100  # MLflow's log_batch limits
_BATCH_METRICS = 1000
_MAX_PARAM = 6000  # MLflow's parameter value length limit


def default_uri(study_dir: str | Path) -> str:
    """``sqlite:///<absolute STUDY_DIR>/mlflow.db``."""
    return f"sqlite:///{Path(study_dir).absolute() / 'mlflow.db'}"


def wants_mlflow(plan_doc: dict[str, Any], job: dict[str, Any]) -> bool:
    """Study-level ``tracking: mlflow`` or the run's own ``tracking=mlflow``."""
    if plan_doc.get("tracking", {}).get("kind") == "mlflow":
        return True
    return job.get("config", {}).get("tracking") == "mlflow"


def tracking_uri(study_dir: str | Path, plan_doc: dict[str, Any], job: dict[str, Any]) -> str:
    """The store of a job: the study's ``tracking_uri``, the run's ``mlflow_uri``, or SQLite."""
    uri = plan_doc.get("tracking", {}).get("uri") or job.get("config", {}).get("mlflow_uri")
    return str(uri) if uri else default_uri(study_dir)


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= _MAX_PARAM else text[: _MAX_PARAM - 3] + "..."


def _key(text: str) -> str:
    """MLflow keys allow letters, digits, ``_-. /``; anything else becomes ``-``."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "-", text)


def series_metrics(metrics_path: Path) -> Iterator[tuple[str, float, int]]:
    """``(pretrain/<name>, value, step)`` of every numeric field of ``metrics.jsonl``."""
    if not metrics_path.is_file():
        return
    for line in metrics_path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        step = int(record.get("step", 0))
        for name, value in record.items():
            if name == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(float(value)):
                yield f"pretrain/{_key(name)}", float(value), step


def eval_metric_key(row: dict[str, Any]) -> str:
    """``eval/<kind>/<task>/<split>/<metric>`` plus the label fraction and k when set."""
    key = f"eval/{row['eval']}/{row['task']}/{row['split']}/{row['metric']}"
    if row.get("label_fraction") is not None and row["eval"] != "finetune":
        key += f"/f{row['label_fraction']:g}"
    if row.get("k") is not None:
        key += f"/k{row['k']}"
    return _key(key)


def eval_metrics(rows: list[dict[str, Any]]) -> Iterator[tuple[str, float, int]]:
    """``(key, value, step)`` of every evaluation number (fine-tuning points are steps)."""
    for row in rows:
        value = row.get("value")
        if value is None or not math.isfinite(float(value)):
            continue
        yield eval_metric_key(row), float(value), int(row.get("eval_point") or 0)


def _experiment_id(client: Any, name: str, study_dir: Path, uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = None
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        location = (study_dir.absolute() / "mlartifacts").as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def log_job(
    study_dir: str | Path,
    plan_doc: dict[str, Any],
    job: dict[str, Any],
    folder: Path,
    rows: list[dict[str, Any]],
) -> str:
    """Log one finished job (params, tags, metric series, eval metrics, artifacts) to MLflow.

    Args:
        study_dir: the study folder.
        plan_doc: ``plan.json``.
        job: the job's dict.
        folder: the run (or baseline) folder.
        rows: the job's result rows (:mod:`divssl.study.results`).

    Returns:
        The MLflow run id.
    """
    # optional dependency (divssl[mlflow]), heavy to import: deferred until a job is logged
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    root = Path(study_dir)
    uri = tracking_uri(root, plan_doc, job)
    client = MlflowClient(tracking_uri=uri)
    exp_id = _experiment_id(client, str(plan_doc["study"]), root, uri)
    for old in client.search_runs([exp_id], filter_string=f"tags.`{RUN_TAG}` = '{job['id']}'"):
        client.delete_run(old.info.run_id)
    tags = {RUN_TAG: job["id"], "divssl.study": str(plan_doc["study"]), "divssl.kind": job["kind"]}
    tags.update({f"factor.{_key(k)}": _param_text(v) for k, v in job.get("factors", {}).items()})
    run = client.create_run(exp_id, run_name=job["id"], tags=tags)
    run_id = run.info.run_id
    source = (
        job["config"]
        if job["kind"] == "pretrain"
        else {k: job[k] for k in ("task", "backbone", "image_size", "cifar_stem", "seed")}
    )
    params = [Param(_key(k), _param_text(v)) for k, v in flatten(source).items()]
    for i in range(0, len(params), _BATCH_PARAMS):
        client.log_batch(run_id, params=params[i : i + _BATCH_PARAMS])
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, s) for k, v, s in series_metrics(folder / "metrics.jsonl")]
    metrics += [Metric(k, v, now, s) for k, v, s in eval_metrics(rows)]
    for i in range(0, len(metrics), _BATCH_METRICS):
        client.log_batch(run_id, metrics=metrics[i : i + _BATCH_METRICS])
    for name in ("summary.json", "config.yaml"):
        if (folder / name).is_file():
            client.log_artifact(run_id, str(folder / name))
    client.log_batch(run_id, tags=[RunTag("divssl.folder", str(folder))])
    client.set_terminated(run_id, "FINISHED")
    return str(run_id)
