"""Running a study: prepare the folder, execute every job on a backend, gather the results.

``STUDY_DIR`` layout::

    study.yaml            the validated spec (after ${param} substitution)
    plan.json             every job with its resolved config (what workers read)
    pools/<name>.csv|npz  derived pools (relabel / classes / diversity steps)
    tasks/<name>.yaml     inline tasks
    runs/<hash>/          pretraining run (config.yaml, summary.json, checkpoints/, backbone.pt,
                          eval/<eval id>/*.json, records/<eval id>.json, failed.json)
    baselines/<hash>/     from-scratch fine-tuning baselines (eval/, records/)
    locks/<hash>.lock     one file lock per job
    events.jsonl          start / done / skipped / failed events of every worker
    results.parquet|csv   the gathered records;  distances.json|csv  pool distances

:func:`execute_job` is what every backend runs for one job. It takes the job's lock without
waiting (another runner holding it means the job is being run: skip it and move on), re-checks
completion after acquiring it, resumes an interrupted pretraining from its checkpoint, runs the
missing evaluations (features are cached by the evaluation code, so they are reused), writes one
record per evaluation atomically, logs to MLflow when asked, and on any error writes
``failed.json`` (the error, its type and traceback) and returns, so the other jobs continue.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from divssl.errors import ConfigError, RunFailed
from divssl.io import atomic_write_json, atomic_write_yaml, read_json
from divssl.progress import Activity
from divssl.study.plan import Plan, file_paths, load_run_config
from divssl.study.progress import append_event, job_complete, pretrain_done
from divssl.study.results import (
    eval_rows,
    job_dir,
    job_evaluations,
    read_plan,
    record_path,
    run_columns,
    write_results,
)

PLAN_FILE = "plan.json"
STUDY_FILE = "study.yaml"


# ------------------------------------------------------------------------------- preparation


def materialize_derived(name: str, info: dict[str, Any], view: Any) -> Path:
    """Write a derived pool once: a CSV of the original image paths, or an ``.npz`` of images.

    Args:
        name: pool name.
        info: the plan's entry (``path``, ``format``).
        view: the in-memory pool built at plan time.
    """
    from filelock import FileLock

    path = Path(info["path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            return path
        if info["format"] == "csv":
            import pandas as pd

            from divssl.io import atomic_write_text

            labels = view.labels
            names = view.class_names
            table = pd.DataFrame({"path": file_paths(view)})
            if labels is not None and names is not None:
                table["label"] = labels
                table["class_name"] = [names[i] if i >= 0 else "" for i in labels]
            atomic_write_text(path, table.to_csv(index=False))
        else:
            from divssl.data.cli import export_pool

            export_pool(view, path, fmt="npz")
    return path


def prepare_study(plan: Plan) -> dict[str, Any]:
    """Write ``study.yaml``, ``plan.json``, derived pools and inline tasks; return the plan doc."""
    root = plan.study_dir
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_yaml(root / STUDY_FILE, plan.study.to_dict())
    doc = plan.to_json()
    atomic_write_json(root / PLAN_FILE, doc)
    for name, info in plan.derived.items():
        materialize_derived(name, info, plan.derived_views[name])
    for name, doc_task in plan.inline_tasks.items():
        atomic_write_yaml(Path(plan.tasks[name]), doc_task)
    return doc


# ---------------------------------------------------------------------------------- one job


def _event(study_dir: Path, job: dict[str, Any], event: str, **extra: Any) -> None:
    append_event(
        study_dir,
        {
            "job": job["id"],
            "kind": job["kind"],
            "event": event,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            **extra,
        },
    )


def _pretrain(study_dir: Path, plan_doc: dict[str, Any], job: dict[str, Any]) -> None:
    """Pretrain (or resume) a run; DDP through torchrun when a run has several GPUs."""
    folder = job_dir(study_dir, job)
    if pretrain_done(folder):
        return
    gpus = int(plan_doc.get("gpus_per_run") or 0)
    if gpus > 1:
        from divssl.study.backends import run_ddp

        config_path = study_dir / "configs" / f"{job['id']}.yaml"
        atomic_write_yaml(config_path, job["config"])
        run_ddp(config_path, gpus, folder)
        if not pretrain_done(folder):
            raise RunFailed(f"DDP pretraining of {job['id']} ended without a completed summary")
        return
    from divssl.pretrain.loop import pretrain

    cfg = load_run_config(job["config"])
    pretrain(cfg, resume=True)


def run_evaluation(folder: Path, job: dict[str, Any], ev: dict[str, Any]) -> dict[str, Any]:
    """Call the evaluation function of ``ev['kind']`` for a run or a from-scratch baseline.

    Results go to ``<folder>/eval/<eval id>/`` so evaluations of one kind and task with other
    settings never overwrite each other.
    """
    from divssl.evaluate import run_finetune, run_knn, run_linear

    common: dict[str, Any] = {
        "eval_seed": ev["eval_seed"],
        "n_boot": ev["n_boot"],
        "level": ev["level"],
        "out_dir": folder / "eval" / ev["id"],
    }
    run_dir: Path | None = folder
    if job["kind"] == "baseline":
        run_dir = None
        common.update(
            init="random",
            backbone=job["backbone"],
            image_size=job["image_size"],
            cifar_stem=job["cifar_stem"],
            seed=job["seed"],
        )
    spec = ev["task_spec"]
    if ev["kind"] == "knn":
        return run_knn(
            run_dir,
            spec,
            ks=ev["k"],
            temperature=ev["temperature"],
            fractions=ev["fractions"],
            feature_batch_size=ev["feature_batch_size"],
            **common,
        )
    if ev["kind"] == "linear":
        return run_linear(
            run_dir,
            spec,
            fractions=ev["fractions"],
            protocol=ev["protocol"],
            solver=ev["solver"],
            weight_decays=ev["weight_decays"],
            lrs=ev["lrs"],
            val_fraction=ev["val_fraction"],
            epochs=ev["epochs"],
            batch_size=ev["batch_size"],
            max_iter=ev["max_iter"],
            feature_batch_size=ev["feature_batch_size"],
            **common,
        )
    return run_finetune(
        run_dir,
        spec,
        epochs=ev["epochs"],
        batch_size=ev["batch_size"],
        base_lr=ev["base_lr"],
        weight_decay=ev["weight_decay"],
        momentum=ev["momentum"],
        warmup_fraction=ev["warmup_fraction"],
        eval_points=ev["eval_points"],
        **common,
    )


def _evaluate(study_dir: Path, plan_doc: dict[str, Any], job: dict[str, Any]) -> list[dict]:
    folder = job_dir(study_dir, job)
    summary = read_json(folder / "summary.json") if job["kind"] == "pretrain" else None
    base = run_columns(job, summary, str(plan_doc["study"]))
    rows: list[dict[str, Any]] = []
    for ev in job_evaluations(job):
        path = record_path(folder, ev["id"])
        if path.is_file():
            rows += read_json(path)["rows"]
            continue
        with Activity(f"eval {ev['id']} of {job['id']}"):  # lines in a log, spinner on a tty
            result = run_evaluation(folder, job, ev)
        new = eval_rows(base, ev, result)
        atomic_write_json(path, {"eval": ev, "result_path": result.get("path"), "rows": new})
        rows += new
    return rows


def _record_failure(folder: Path, job: dict[str, Any], exc: BaseException, stage: str) -> str:
    previous = folder / "failed.json"
    attempts = 1
    if previous.is_file():
        attempts = int(read_json(previous).get("attempts", 0)) + 1
    message = str(exc) or type(exc).__name__
    atomic_write_json(previous, {
        "job": job["id"], "kind": job["kind"], "stage": stage, "type": type(exc).__name__,
        "error": message, "traceback": traceback.format_exc(), "attempts": attempts,
        "time": time.time(), "host": socket.gethostname(), "pid": os.getpid(),
    })  # fmt: skip
    return message


def execute_job(study_dir: str, job_id: str) -> dict[str, Any]:
    """Run one job of ``STUDY_DIR/plan.json`` (what every backend calls).

    Returns:
        ``{"id", "kind", "status", "seconds", "pid", "cuda_visible_devices"}`` with status
        ``done`` / ``skipped`` (already complete) / ``locked`` (another runner holds it) /
        ``failed`` (plus ``error``).
    """
    from filelock import FileLock, Timeout

    root = Path(study_dir)
    plan_doc = read_json(root / PLAN_FILE)
    job = next((j for j in plan_doc["jobs"] if j["id"] == job_id), None)
    if job is None:
        raise ConfigError("job", f"no job {job_id!r} in {root / PLAN_FILE}")
    out: dict[str, Any] = {
        "id": job_id,
        "kind": job["kind"],
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
        if job["kind"] == "pretrain":
            _pretrain(root, plan_doc, job)
        stage = "evaluate"
        rows = _evaluate(root, plan_doc, job)
        stage = "tracking"
        from divssl.study.tracking import log_job, wants_mlflow

        if wants_mlflow(plan_doc, job):
            out["mlflow_run"] = log_job(root, plan_doc, job, folder, rows)
        (folder / "failed.json").unlink(missing_ok=True)
        _event(root, job, "done")
        return {**out, "status": "done", "seconds": time.perf_counter() - t0}
    except Exception as exc:  # recorded in failed.json; the study goes on with the other jobs
        message = _record_failure(job_dir(root, job), job, exc, stage)
        _event(root, job, "failed", error=message, stage=stage)
        return {
            **out,
            "status": "failed",
            "error": f"{stage}: {message}",
            "seconds": time.perf_counter() - t0,
        }
    finally:
        lock.release()


# --------------------------------------------------------------------------------- distances


def _pool_ref(plan_doc: dict[str, Any], ref: str) -> str:
    """A distance operand: a pool name, a task name (its train split) or ``task:split``."""
    name, _, split = ref.partition(":") if ref.count(":") == 1 else (ref, "", "")
    if name in plan_doc["pools"] and not split:
        return str(plan_doc["pools"][name])
    if name in plan_doc["tasks"]:
        split = split or "train"
        inline = plan_doc.get("inline_tasks", {}).get(name)
        if inline is not None:
            if split not in inline:
                raise ConfigError("distances", f"task {name!r} has no split {split!r}")
            return str(inline[split])
        from divssl.evaluate.tasks import open_task

        task = open_task(str(plan_doc["tasks"][name]))
        if not task.has(split):
            raise ConfigError("distances", f"task {name!r} has no split {split!r}", task.specs)
        return task.specs[split]
    raise ConfigError(
        "distances", f"unknown pool or task {ref!r}", [*plan_doc["pools"], *plan_doc["tasks"]]
    )


def best_run(study_dir: Path, plan_doc: dict[str, Any], frame: Any) -> str | None:
    """The run with the highest mean ID top-1 on the plan's first evaluation.

    The largest label fraction, the smallest k and the last fine-tuning point are used.
    """
    if frame is None or frame.empty:
        return None
    first = next(
        (
            j["evaluations"][0]
            for j in plan_doc["jobs"]
            if j["kind"] == "pretrain" and j["evaluations"]
        ),
        None,
    )
    if first is None:
        return None
    sel = frame[
        (frame["eval_id"] == first["id"])
        & (frame["split"] == "id")
        & (frame["metric"] == "top1")
        & (frame["kind"] == "pretrain")
    ]
    if sel.empty:
        return None
    for col, pick in (("label_fraction", "max"), ("k", "min"), ("eval_point", "max")):
        if sel[col].notna().any():
            sel = sel[sel[col] == getattr(sel[col], pick)()]
    return str(sel.groupby("run")["value"].mean().idxmax())


def _extractor_name(study_dir: Path, plan_doc: dict[str, Any], name: str, frame: Any) -> str:
    if name == "run:best":
        run = best_run(study_dir, plan_doc, frame)
        if run is None:
            raise ConfigError("distances.extractor", "run:best needs finished evaluations")
        return f"run:{study_dir / 'runs' / run}"
    ids = {j["id"] for j in plan_doc["jobs"] if j["kind"] == "pretrain"}
    if name.startswith("run:") and name[4:] in ids:
        return f"run:{study_dir / 'runs' / name[4:]}"
    return name


def compute_distances(study_dir: str | Path, study: Any, frame: Any = None) -> list[dict]:
    """Every distance block of the study -> ``distances.json`` and ``distances.csv`` rows.

    Returns:
        Rows ``{a, b, metric, extractor, extractor_name, value, std, n_a, n_b}``.
    """
    import pandas as pd

    from divssl.data.pool import open_pool
    from divssl.distances import distance_matrix, get_extractor, pool_features
    from divssl.distances.pipeline import parse_metrics, reference_ranges
    from divssl.io import atomic_write_text

    root = Path(study_dir)
    plan_doc = read_plan(root)
    rows: list[dict[str, Any]] = []
    opened: dict[str, Any] = {}
    for dspec in study.distances:
        metrics = parse_metrics(dspec.metric)
        ext_name = _extractor_name(root, plan_doc, dspec.extractor, frame)
        ext = get_extractor(ext_name, dspec.weights)
        feats = {}
        for ref in dict.fromkeys([*dspec.a, *dspec.b]):
            spec = _pool_ref(plan_doc, ref)
            if spec not in opened:
                opened[spec] = open_pool(spec, field="distances")
            feats[ref] = pool_features(
                opened[spec], ext, dspec.max_images, dspec.seed, "vdna" in metrics, dspec.batch_size
            )
        ranges, reference = None, dspec.vdna_reference or dspec.a[0]
        if "vdna" in metrics:  # one fixed range per extractor and layer, from the reference
            spec = _pool_ref(plan_doc, reference)
            if spec not in opened:
                opened[spec] = open_pool(spec, field="distances.vdna_reference")
            ranges = reference_ranges(
                opened[spec], ext, dspec.max_images, dspec.seed, dspec.batch_size
            )
        tables = distance_matrix(
            {r: feats[r] for r in dspec.a},
            {r: feats[r] for r in dspec.b},
            metrics,
            dspec.kid_subsets,
            dspec.kid_subset_size,
            dspec.vdna_bins,
            dspec.seed,
            vdna_fixed_ranges=ranges,
            vdna_reference=reference,
        )
        for metric, table in tables.items():
            for i, a in enumerate(table.rows):
                for j, b in enumerate(table.cols):
                    rows.append(
                        {
                            "a": a,
                            "b": b,
                            "metric": metric,
                            "extractor": dspec.extractor,
                            "extractor_name": ext_name,
                            "value": float(table.values[i, j]),
                            "std": None if table.std is None else float(table.std[i, j]),
                            "n_a": int(len(feats[a].indices)),
                            "n_b": int(len(feats[b].indices)),
                        }
                    )
    atomic_write_json(root / "distances.json", rows)
    atomic_write_text(root / "distances.csv", pd.DataFrame(rows).to_csv(index=False))
    return rows


# ------------------------------------------------------------------------------------ study


@dataclass
class StudyOutcome:
    """What a ``divssl run`` did.

    Attributes:
        study_dir: the study folder.
        results: per job, the dict returned by :func:`execute_job`.
        rows: rows in ``results.parquet``.
        distances_error: why distances were not computed (``None`` when they were or none asked).
    """

    study_dir: Path
    results: list[dict[str, Any]]
    rows: int
    distances_error: str | None = None

    def count(self, status: str) -> int:
        """Jobs with this status."""
        return sum(1 for r in self.results if r.get("status") == status)

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The failed jobs."""
        return [r for r in self.results if r.get("status") == "failed"]


def run_study(
    plan: Plan,
    backend: str = "local",
    *,
    address: str | None = None,
    executor: str = "slurm",
    workers: int | None = None,
    console: Any = None,
) -> StudyOutcome:
    """Prepare the study folder, run every job on a backend, compute distances, gather results.

    Args:
        plan: from :func:`divssl.study.plan.build_plan`.
        backend: ``local``, ``ray`` or ``slurm``.
        address: Ray cluster address (``None``: start a local Ray).
        executor: SLURM backend: ``slurm`` (sbatch job arrays) or ``local`` (submitit's
            LocalExecutor, for tests and single machines).
        workers: local backend: parallel worker processes (default from ``resources``).
        console: rich console for the progress display.
    """
    from rich.console import Console

    from divssl.study.backends import make_backend
    from divssl.study.progress import StudyProgress

    console = console or Console(stderr=True)
    runner = make_backend(backend, plan, address=address, executor=executor, workers=workers)
    doc = prepare_study(plan)
    root = plan.study_dir
    ids = [j["id"] for j in doc["jobs"]]
    with StudyProgress(root, doc, console, live=not runner.in_process) as progress:
        results = runner.run(str(root), ids, progress.job_finished)
    frame = write_results(root, doc)
    distances_error = None
    if plan.study.distances:
        try:
            compute_distances(root, plan.study, frame)
        except ConfigError as exc:
            distances_error = str(exc)
            append_event(
                root,
                {
                    "job": "distances",
                    "kind": "distances",
                    "event": "failed",
                    "error": distances_error,
                },
            )
    if plan.study.report.baselines and not (root / "baselines.json").is_file():
        from divssl.evaluate.baselines import compute_study_baselines

        try:  # reference rows only: a failure is recorded, the study's results stand
            compute_study_baselines(root)
        except ConfigError as exc:
            event = {"job": "baselines", "kind": "baselines", "event": "failed"}
            append_event(root, {**event, "error": str(exc)})
    return StudyOutcome(root, results, len(frame), distances_error)
