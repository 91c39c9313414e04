"""One job of a study, as every backend runs it: :func:`execute_job`.

:func:`execute_job` loads the job from ``STUDY_DIR/plan.json`` as a typed object
(:mod:`divssl.study.jobs`), takes the job's lock without waiting (another runner holding it means
the job is being run: skip it and move on), re-checks completion after acquiring it, resumes an
interrupted pretraining from its checkpoint, runs the missing evaluations (features are cached by
the evaluation code, so they are reused), writes one record per evaluation atomically (rows
validated against :class:`divssl.study.results.ResultRecord`), logs to MLflow when asked, and on
any error writes ``failed.json`` (the error, its type and traceback) and returns, so the other
jobs continue.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from divssl.errors import RunFailed
from divssl.evaluate import run_finetune, run_knn, run_linear
from divssl.evaluate.settings import RunOptions
from divssl.io import atomic_write_json, atomic_write_yaml, read_json
from divssl.pretrain.config import config_from_tree
from divssl.pretrain.loop import pretrain
from divssl.progress import Activity
from divssl.study.ddp import run_ddp
from divssl.study.jobs import (
    BaselineJob,
    JobResult,
    PlanDoc,
    PlannedEvaluation,
    PretrainJob,
    job_dir,
    read_plan,
    record_path,
)
from divssl.study.progress import Event, append_event, job_complete, pretrain_done
from divssl.study.results import eval_rows, record_rows, run_columns
from divssl.study.spec import FinetuneEval, KnnEval, LinearEval
from divssl.study.tracking import log_job, wants_mlflow

Job = PretrainJob | BaselineJob


def _event(study_dir: Path, job: Job, event: str, failure: tuple[str, str] | None = None) -> None:
    """Append a job event; ``failure`` is ``(error, stage)`` of a failed job."""
    line: Event = {
        "job": job.id,
        "kind": job.kind,
        "event": event,
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }
    if failure is not None:
        line["error"], line["stage"] = failure
    append_event(study_dir, line)


def _pretrain(study_dir: Path, plan: PlanDoc, job: PretrainJob) -> None:
    """Pretrain (or resume) a run; DDP through torchrun when a run has several GPUs."""
    folder = job_dir(study_dir, job)
    if pretrain_done(folder):
        return
    if plan.gpus_per_run > 1:
        config_path = study_dir / "configs" / f"{job.id}.yaml"
        atomic_write_yaml(config_path, job.config)
        run_ddp(config_path, plan.gpus_per_run, folder)
        if not pretrain_done(folder):
            raise RunFailed(f"DDP pretraining of {job.id} ended without a completed summary")
        return
    pretrain(config_from_tree(job.config), resume=True)


def run_options(folder: Path, job: Job, ev: PlannedEvaluation) -> RunOptions:
    """Where an evaluation of a job runs: the run's backbone, or a seeded random init for a
    from-scratch baseline; results go to ``<folder>/eval/<eval id>/`` so evaluations of one kind
    and task with other settings never overwrite each other."""
    out_dir = folder / "eval" / ev.id
    if isinstance(job, BaselineJob):
        return RunOptions(
            init="random",
            backbone=job.backbone,
            image_size=job.image_size,
            cifar_stem=job.cifar_stem,
            seed=job.seed,
            out_dir=out_dir,
        )
    return RunOptions(out_dir=out_dir)


def run_evaluation(folder: Path, job: Job, ev: PlannedEvaluation) -> dict[str, Any]:
    """Call the evaluation function of ``ev``'s kind with its settings (the study's model)."""
    run_dir = None if isinstance(job, BaselineJob) else folder
    options = run_options(folder, job, ev)
    settings = ev.settings  # a KnnEval is a KnnSettings (plus its task), and so on
    if isinstance(settings, KnnEval):
        return run_knn(run_dir, ev.task_spec, settings, options)
    if isinstance(settings, LinearEval):
        return run_linear(run_dir, ev.task_spec, settings, options)
    assert isinstance(settings, FinetuneEval)
    return run_finetune(run_dir, ev.task_spec, settings, options)


def _evaluate(study_dir: Path, plan: PlanDoc, job: Job) -> list[dict[str, Any]]:
    folder = job_dir(study_dir, job)
    summary = read_json(folder / "summary.json") if job.kind == "pretrain" else None
    base = run_columns(job, summary, plan.study)
    rows: list[dict[str, Any]] = []
    for ev in job.owed:
        path = record_path(folder, ev.id)
        if path.is_file():
            rows += read_json(path)["rows"]
            continue
        with Activity(f"eval {ev.id} of {job.id}"):  # lines in a log, spinner on a tty
            result = run_evaluation(folder, job, ev)
        new = record_rows(eval_rows(base, ev, result))
        doc = {"eval": ev.model_dump(mode="json"), "result_path": result.get("path"), "rows": new}
        atomic_write_json(path, doc)
        rows += new
    return rows


def _record_failure(folder: Path, job: Job, exc: BaseException, stage: str) -> str:
    previous = folder / "failed.json"
    attempts = 1
    if previous.is_file():
        attempts = int(read_json(previous).get("attempts", 0)) + 1
    message = str(exc) or type(exc).__name__
    atomic_write_json(previous, {
        "job": job.id, "kind": job.kind, "stage": stage, "type": type(exc).__name__,
        "error": message, "traceback": traceback.format_exc(), "attempts": attempts,
        "time": time.time(), "host": socket.gethostname(), "pid": os.getpid(),
    })  # fmt: skip
    return message


def execute_job(study_dir: str, job_id: str) -> JobResult:
    """Run one job of ``STUDY_DIR/plan.json`` (what every backend calls).

    Returns:
        ``{"id", "kind", "status", "seconds", "pid", "cuda_visible_devices"}`` with status
        ``done`` / ``skipped`` (already complete) / ``locked`` (another runner holds it) /
        ``failed`` (plus ``error``).

    Raises:
        ConfigError: no such job in the plan, or a plan that does not validate.
    """
    root = Path(study_dir)
    plan = read_plan(root)
    job = plan.job(job_id)
    out: JobResult = {
        "id": job_id,
        "kind": job.kind,
        "pid": os.getpid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    lock_path = root / "locks" / f"{job_id}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(blocking=False)
    except Timeout:
        return {**out, "status": "locked", "seconds": 0.0}
    t0 = time.perf_counter()
    stage = "pretrain"
    try:
        if job_complete(root, job):  # re-check now that the lock is ours
            _event(root, job, "skipped")
            return {**out, "status": "skipped", "seconds": 0.0}
        _event(root, job, "start")
        folder = job_dir(root, job)
        folder.mkdir(parents=True, exist_ok=True)
        if isinstance(job, PretrainJob):
            _pretrain(root, plan, job)
        stage = "evaluate"
        rows = _evaluate(root, plan, job)
        stage = "tracking"
        plan_json, job_json = plan.model_dump(mode="json"), job.model_dump(mode="json")
        if wants_mlflow(plan_json, job_json):
            out["mlflow_run"] = log_job(root, plan_json, job_json, folder, rows)
        (folder / "failed.json").unlink(missing_ok=True)
        _event(root, job, "done")
        return {**out, "status": "done", "seconds": time.perf_counter() - t0}
    except Exception as exc:  # recorded in failed.json; the study goes on with the other jobs
        message = _record_failure(job_dir(root, job), job, exc, stage)
        _event(root, job, "failed", (message, stage))
        return {
            **out,
            "status": "failed",
            "error": f"{stage}: {message}",
            "seconds": time.perf_counter() - t0,
        }
    finally:
        lock.release()
