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

Every backend (:mod:`divssl.study.backends`) runs :func:`divssl.study.worker.execute_job` for
each job, which loads its job from ``plan.json`` as a typed object (:mod:`divssl.study.jobs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock
from rich.console import Console

from divssl.data.cli import export_pool
from divssl.data.pool import Pool, open_pool
from divssl.distances import distance_matrix, get_extractor, pool_features
from divssl.distances.pipeline import reference_ranges
from divssl.errors import ConfigError
from divssl.evaluate.baselines import compute_study_baselines
from divssl.evaluate.tasks import open_task
from divssl.io import atomic_write_json, atomic_write_text, atomic_write_yaml
from divssl.study.backends import make_backend
from divssl.study.diversity import compute_vendi
from divssl.study.jobs import PLAN_FILE, DerivedPoolFile, JobResult, PlanDoc, read_plan
from divssl.study.plan import Plan, file_paths
from divssl.study.progress import Event, StudyProgress, append_event
from divssl.study.results import extractor_name, write_results
from divssl.study.spec import Study
from divssl.study.worker import execute_job

__all__ = ["StudyOutcome", "compute_distances", "execute_job", "prepare_study", "run_study"]

STUDY_FILE = "study.yaml"


# ------------------------------------------------------------------------------- preparation


def materialize_derived(name: str, info: DerivedPoolFile, view: Pool) -> Path:
    """Write a derived pool once: a CSV of the original image paths, or an ``.npz`` of images.

    Args:
        name: pool name.
        info: the plan's entry (``path``, ``format``).
        view: the in-memory pool built at plan time.
    """
    path = Path(info.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            return path
        if info.format == "csv":
            labels = view.labels
            names = view.class_names
            table = pd.DataFrame({"path": file_paths(view)})
            if labels is not None and names is not None:
                table["label"] = labels
                table["class_name"] = [names[i] if i >= 0 else "" for i in labels]
            atomic_write_text(path, table.to_csv(index=False))
        else:
            export_pool(view, path, fmt="npz")
    return path


def prepare_study(plan: Plan) -> PlanDoc:
    """Write ``study.yaml``, ``plan.json``, derived pools and inline tasks; return the plan doc."""
    root = plan.study_dir
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_yaml(root / STUDY_FILE, plan.study.to_dict())
    doc = plan.to_doc()
    atomic_write_json(root / PLAN_FILE, doc.model_dump(mode="json"))
    for name, info in doc.derived.items():
        materialize_derived(name, info, plan.derived_views[name])
    for name, doc_task in plan.inline_tasks.items():
        atomic_write_yaml(Path(plan.tasks[name]), doc_task)
    return doc


# --------------------------------------------------------------------------------- distances


def _pool_ref(plan_doc: PlanDoc, ref: str) -> str:
    """A distance operand: a pool name, a task name (its train split) or ``task:split``."""
    name, _, split = ref.partition(":") if ref.count(":") == 1 else (ref, "", "")
    if name in plan_doc.pools and not split:
        return plan_doc.pools[name]
    if name in plan_doc.tasks:
        split = split or "train"
        inline = plan_doc.inline_tasks.get(name)
        if inline is not None:
            if split not in inline:
                raise ConfigError("distances", f"task {name!r} has no split {split!r}")
            return inline[split]
        task = open_task(plan_doc.tasks[name])
        if not task.has(split):
            raise ConfigError("distances", f"task {name!r} has no split {split!r}", task.specs)
        return task.specs[split]
    raise ConfigError(
        "distances", f"unknown pool or task {ref!r}", [*plan_doc.pools, *plan_doc.tasks]
    )


def compute_distances(
    study_dir: str | Path, study: Study, frame: pd.DataFrame | None = None
) -> list[dict[str, Any]]:
    """Every distance block of the study -> ``distances.json`` and ``distances.csv`` rows.

    Returns:
        Rows ``{a, b, metric, extractor, extractor_name, value, std, n_a, n_b}``.
    """
    root = Path(study_dir)
    plan_doc = read_plan(root)
    rows: list[dict[str, Any]] = []
    opened: dict[str, Pool] = {}
    for dspec in study.distances:
        metrics = list(dspec.metric)
        ext_name = extractor_name(root, plan_doc, dspec.extractor, frame)
        ext = get_extractor(
            ext_name, dspec.weights, input_size=dspec.input_size, layers=dspec.layers
        )
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
    results: list[JobResult]
    rows: int
    distances_error: str | None = None
    vendi_error: str | None = None  # why the Vendi scores were not computed

    def count(self, status: str) -> int:
        """Jobs with this status."""
        return sum(1 for r in self.results if r.get("status") == status)

    @property
    def failed(self) -> list[JobResult]:
        """The failed jobs."""
        return [r for r in self.results if r.get("status") == "failed"]


def run_study(
    plan: Plan,
    backend: str = "local",
    *,
    address: str | None = None,
    executor: str = "slurm",
    workers: int | None = None,
    console: Console | None = None,
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
    console = console or Console(stderr=True)
    runner = make_backend(backend, plan, address=address, executor=executor, workers=workers)
    doc = prepare_study(plan)
    root = plan.study_dir
    ids = [j.id for j in doc.jobs]
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
    vendi_error = None
    if plan.study.vendi is not None:  # measured diversity of every pool and subset (cached)
        try:
            compute_vendi(root, plan.study, frame)
        except ConfigError as exc:
            vendi_error = str(exc)
            append_event(
                root, {"job": "vendi", "kind": "vendi", "event": "failed", "error": vendi_error}
            )
    if plan.study.report.baselines and not (root / "baselines.json").is_file():
        try:  # reference rows only: a failure is recorded, the study's results stand
            compute_study_baselines(root)
        except ConfigError as exc:
            event: Event = {"job": "baselines", "kind": "baselines", "event": "failed"}
            append_event(root, {**event, "error": str(exc)})
    return StudyOutcome(root, results, len(frame), distances_error, vendi_error)
