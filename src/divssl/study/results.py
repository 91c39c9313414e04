"""The results store: one JSON record per run x evaluation, gathered into one long table.

Every evaluation of a run writes ``STUDY_DIR/runs/<hash>/records/<eval id>.json`` (atomically)
holding rows in long format, one per (split, label fraction, k, evaluation point, metric), each a
:class:`ResultRecord` (the one declaration of the schema, validated when written)::

    run, study, kind, baseline, method, backbone, image_size, pool, composition, source,
    budget_images (C), unique_images (N), epochs (E), diversity (D), normalization, seed, steps,
    images_seen, flops_per_image, total_flops, wall_seconds, <every grid axis>,
    eval, eval_id, task, split (id | ood), label_fraction, k, eval_point, eval_step,
    metric (top1 | top5 | macro_f1), value, ci_low, ci_high, n

:func:`write_results` gathers the records of the study's current plan into a pandas DataFrame and
writes ``STUDY_DIR/results.parquet`` and ``results.csv`` atomically; ``divssl results`` filters,
summarises over seeds and exports them.
"""

from __future__ import annotations

import io
import json
import math
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from divssl.errors import ConfigError
from divssl.evaluate.stats import seed_summary
from divssl.io import atomic_write_bytes, atomic_write_text, read_json
from divssl.study.jobs import (
    BaselineJob,
    PlanDoc,
    PlannedEvaluation,
    PretrainJob,
    job_dir,
    read_plan,
    record_path,
)

SPLIT_NAMES = {"test": "id", "ood": "ood"}
RESULTS_PARQUET = "results.parquet"
RESULTS_CSV = "results.csv"
Metric = Literal["top1", "top5", "macro_f1"]  # scores in [0, 1] (divssl.evaluate.metrics)


class ResultRecord(BaseModel):
    """One row of the results store: one number of one evaluation of one run.

    The single declaration of the results schema: the runner validates every row against it
    when it writes a record, and the readers (``divssl results``, :mod:`divssl.report`) derive
    their column lists from it (:data:`RESULT_COLUMNS`, :data:`REQUIRED_COLUMNS`,
    :data:`NUMERIC_COLUMNS`, :data:`SCORE_METRICS`) and trust the rows. Grid axes that are not
    fields (``subset.fraction``, ``optim.base_lr``, ...) are extra columns, JSON text when not
    scalar. Run columns of a from-scratch baseline that it has no value for are null.
    """

    model_config = ConfigDict(extra="allow", allow_inf_nan=True)

    # the run (or from-scratch baseline)
    study: str
    run: str
    kind: Literal["pretrain", "baseline"]
    baseline: bool
    method: str
    backbone: str
    image_size: int
    pool: str | None = None
    composition: str | None = None
    source: str | None = None
    budget_images: int | None = None  # C
    unique_images: int | None = None  # N
    epochs: float | None = None  # E = C / N
    diversity: float | None = None  # D = N / C
    normalization: Literal["compute", "epoch"] | None = None
    seed: int
    # the evaluation and the setting this number is for
    eval: Literal["knn", "linear", "finetune"]
    task: str
    split: Literal["id", "ood"]
    label_fraction: float | None = None
    k: int | None = None
    eval_point: int | None = None
    # the number (``value`` null: a metric undefined on this split)
    metric: Metric
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    # measured per run, and where the evaluation is
    steps: int | None = None
    images_seen: int | None = None
    flops_per_image: float | None = None
    total_flops: float | None = None
    wall_seconds: float | None = None
    images_per_second: float | None = None
    eval_id: str
    eval_step: int | None = None


def _numeric(annotation: Any) -> bool:
    args = typing.get_args(annotation) or (annotation,)
    return any(a in (int, float) for a in args)


RESULT_COLUMNS: tuple[str, ...] = tuple(ResultRecord.model_fields)
REQUIRED_COLUMNS: tuple[str, ...] = tuple(
    n for n, f in ResultRecord.model_fields.items() if f.is_required()
)
NUMERIC_COLUMNS: tuple[str, ...] = tuple(
    n for n, f in ResultRecord.model_fields.items() if _numeric(f.annotation)
)
SCORE_METRICS: tuple[str, ...] = typing.get_args(Metric)
# Columns of the number itself; per-run measurements (they differ between seeds of a condition).
VALUE_COLUMNS = ("value", "ci_low", "ci_high", "n")
RUN_MEASURED = (
    "run",
    "steps",
    "images_seen",
    "wall_seconds",
    "images_per_second",
    "flops_per_image",
    "total_flops",
    "status",
    "eval_step",
    "eval_id",
)


# ---------------------------------------------------------------------------------- records


def _scalar(value: Any) -> Any:
    """Factor values as table cells: scalars stay, lists/dicts become JSON text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True)


def run_columns(
    job: PretrainJob | BaselineJob, summary: dict[str, Any] | None, study: str
) -> dict[str, Any]:
    """The columns describing one run (or from-scratch baseline) in every row of its records.

    Args:
        job: the job of ``plan.json``.
        summary: the run's ``summary.json`` (``None`` for baselines).
        study: study name.
    """
    if isinstance(job, BaselineJob):
        return {
            "run": job.id,
            "study": study,
            "kind": "baseline",
            "baseline": True,
            "method": "scratch",
            "backbone": job.backbone,
            "image_size": job.image_size,
            "seed": job.seed,
            "normalization": None,
            "pool": None,
            "composition": None,
            "source": None,
        }
    summary = summary or {}
    cfg = job.config
    cols: dict[str, Any] = {
        "run": job.id, "study": study, "kind": "pretrain", "baseline": False,
        "method": cfg["method"], "backbone": cfg["backbone"], "image_size": cfg["image_size"],
        "pool": job.pool, "composition": job.composition, "source": job.source,
        "budget_images": summary.get("budget_images", job.budget_images),
        "unique_images": summary.get("unique_images", job.unique_images),
        "epochs": summary.get("epochs", job.epochs),
        "diversity": summary.get("diversity", job.diversity),
        "normalization": job.normalization, "seed": cfg["seed"],
        "steps": summary.get("steps", job.steps),
        "images_seen": summary.get("images_seen"),
        "flops_per_image": summary.get("flops_per_image"),
        "total_flops": summary.get("total_flops"),
        "wall_seconds": summary.get("wall_seconds"),
        "images_per_second": summary.get("images_per_second"),
    }  # fmt: skip
    for axis, value in job.factors.items():
        if axis not in cols:
            cols[axis] = _scalar(value)
    return cols


def _metric_rows(report: dict[str, Any], split: str) -> list[dict[str, Any]]:
    rows = []
    for metric in SCORE_METRICS:
        iv = report.get(metric)
        if not isinstance(iv, dict):
            continue
        rows.append(
            {
                "split": SPLIT_NAMES[split],
                "metric": metric,
                "value": iv.get("value"),
                "ci_low": iv.get("ci_low"),
                "ci_high": iv.get("ci_high"),
                "n": iv.get("n"),
            }
        )
    return rows


def eval_rows(
    base: dict[str, Any],
    evaluation: PlannedEvaluation,
    result: dict[str, Any],
) -> list[ResultRecord]:
    """Flatten one evaluation's results dict (``run_knn``/``run_linear``/``run_finetune``).

    Args:
        base: :func:`run_columns` of the run.
        evaluation: the planned evaluation.
        result: what the evaluation function returned.

    Returns:
        Validated records, one per split x setting x metric.

    Raises:
        ConfigError: a row that does not fit :class:`ResultRecord` (naming the column).
    """
    head = {
        **base,
        "eval": evaluation.kind,
        "eval_id": evaluation.id,
        "task": evaluation.task,
        "label_fraction": None,
        "k": None,
        "eval_point": None,
        "eval_step": None,
    }
    rows: list[dict[str, Any]] = []
    if evaluation.kind == "finetune":
        for i, point in enumerate(result.get("points", [])):
            for split in SPLIT_NAMES:
                if split in point:
                    setting = {
                        "eval_point": i,
                        "eval_step": point.get("step"),
                        "label_fraction": 100.0,
                    }
                    rows += [{**head, **setting, **r} for r in _metric_rows(point[split], split)]
    else:
        for entry in result.get("results", []):
            setting = {"label_fraction": entry.get("fraction"), "k": entry.get("k")}
            for split in SPLIT_NAMES:
                if split in entry:
                    rows += [{**head, **setting, **r} for r in _metric_rows(entry[split], split)]
    return [to_record(row) for row in rows]


def to_record(row: dict[str, Any]) -> ResultRecord:
    """Validate one results row.

    Raises:
        ConfigError: naming the column that does not fit the schema.
    """
    try:
        return ResultRecord.model_validate(row)
    except ValidationError as exc:
        err = exc.errors()[0]
        column = ".".join(str(p) for p in err["loc"]) or "row"
        raise ConfigError(f"results.{column}", f"{err['msg']}, got {err.get('input')!r}") from None


def record_rows(records: Sequence[ResultRecord]) -> list[dict[str, Any]]:
    """Records as JSON-ready rows (schema columns first, then the grid-axis columns)."""
    return [r.model_dump(mode="json") for r in records]


# ----------------------------------------------------------------------------------- gather


def gather_rows(
    study_dir: str | Path,
    plan_doc: PlanDoc | None = None,
) -> list[dict[str, Any]]:
    """Every row of every record of the plan's jobs (records of other plans are ignored).

    Rows were validated against :class:`ResultRecord` when they were written; they are trusted.
    """
    root = Path(study_dir)
    doc = plan_doc if plan_doc is not None else read_plan(root)
    rows: list[dict[str, Any]] = []
    for job in doc.jobs:
        folder = job_dir(root, job)
        for ev in job.owed:
            path = record_path(folder, ev.id)
            if path.is_file():
                rows += read_json(path)["rows"]
    return rows


def to_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> DataFrame with numeric columns as numbers and text columns as text."""
    frame = pd.DataFrame(list(rows))
    first = [c for c in RESULT_COLUMNS if c in frame.columns]
    frame = frame[first + [c for c in frame.columns if c not in first]]
    for col in frame.columns:
        values = frame[col]
        if values.dtype == object:
            present = values.dropna()
            if len(present) and present.map(lambda v: isinstance(v, bool)).all():
                frame[col] = values.astype("boolean")
            elif (
                len(present)
                and present.map(
                    lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                ).all()
            ):
                frame[col] = pd.to_numeric(values)
            else:
                frame[col] = values.map(lambda v: None if v is None else str(v))
    return frame


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Parquet, written atomically (serialised in memory, then renamed into place)."""
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


def write_results(study_dir: str | Path, plan_doc: PlanDoc | None = None) -> pd.DataFrame:
    """Gather the plan's records into ``results.parquet`` and ``results.csv`` (atomic).

    Returns:
        The table (empty with no records).
    """
    root = Path(study_dir)
    frame = to_frame(gather_rows(root, plan_doc))
    write_parquet(frame, root / RESULTS_PARQUET)
    atomic_write_text(root / RESULTS_CSV, frame.to_csv(index=False))
    return frame


def load_results(study_dir: str | Path) -> pd.DataFrame:
    """``results.parquet`` (gathered from the records first when it is missing)."""
    root = Path(study_dir)
    path = root / RESULTS_PARQUET
    if path.is_file():
        return pd.read_parquet(path)
    return write_results(root)


# ----------------------------------------------------------------------------------- query


def parse_where(items: Sequence[str]) -> list[tuple[str, str]]:
    """``KEY=VALUE`` filters."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError("--where", f"expected KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out.append((key.strip(), value.strip()))
    return out


def _matches(column: pd.Series, value: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(column):
        if value.lower() not in ("true", "false"):
            raise ConfigError("--where", f"{column.name} is true/false, got {value!r}")
        return column == (value.lower() == "true")
    if pd.api.types.is_numeric_dtype(column):
        try:
            number = float(value)
        except ValueError:
            raise ConfigError("--where", f"{column.name} is numeric, got {value!r}") from None
        return pd.Series(
            np.isclose(column.astype(float), number, rtol=1e-9, atol=0.0), index=column.index
        )
    return column.astype(str) == value


def filter_results(frame: pd.DataFrame, where: Sequence[str]) -> pd.DataFrame:
    """Rows matching every ``KEY=VALUE`` (numbers compared as numbers).

    Raises:
        ConfigError: an unknown column (the valid ones are listed) or a mistyped value.
    """
    mask = pd.Series(True, index=frame.index)
    for key, value in parse_where(where):
        if key not in frame.columns:
            raise ConfigError("--where", f"unknown column {key!r}", list(frame.columns))
        mask &= _matches(frame[key], value)
    return frame[mask]


def group_columns(frame: pd.DataFrame) -> list[str]:
    """Columns that define a condition: everything except seeds, values and per-run numbers."""
    skip = {*VALUE_COLUMNS, *RUN_MEASURED, "seed", "study"}
    return [c for c in frame.columns if c not in skip and frame[c].notna().any()]


def summarize(frame: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Mean over seeds per condition with the sample std, n and a Student-t interval.

    Returns:
        One row per condition: the condition columns, ``mean``, ``std``, ``ci_low``,
        ``ci_high``, ``n_seeds``.
    """
    if frame.empty:
        return frame
    keys = group_columns(frame)
    out = []
    for values, group in frame.groupby(keys, dropna=False, sort=False):
        cond = dict(zip(keys, values if isinstance(values, tuple) else (values,), strict=True))
        s = seed_summary(group["value"].astype(float).to_numpy(), level)
        out.append(
            {
                **cond,
                "mean": s.mean,
                "std": s.std,
                "ci_low": s.ci_low,
                "ci_high": s.ci_high,
                "n_seeds": s.n,
            }
        )
    return pd.DataFrame(out)


def export_results(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write rows to ``.csv`` or ``.parquet`` (atomic).

    Raises:
        ConfigError: another suffix.
    """
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix == ".csv":
        atomic_write_text(out, frame.to_csv(index=False))
    elif suffix == ".parquet":
        write_parquet(frame, out)
    else:
        raise ConfigError("--export", f"unsupported file type {suffix!r}", [".csv", ".parquet"])
    return out


def format_cell(value: Any) -> str:
    """Compact text of a table cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def best_run(study_dir: Path, plan_doc: PlanDoc, frame: pd.DataFrame | None) -> str | None:
    """The run with the highest mean ID top-1 on the plan's first evaluation.

    The largest label fraction, the smallest k and the last fine-tuning point are used.
    """
    if frame is None or frame.empty:
        return None
    first = next((j.evaluations[0] for j in plan_doc.runs if j.evaluations), None)
    if first is None:
        return None
    sel = frame[
        (frame["eval_id"] == first.id)
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


def extractor_name(
    study_dir: Path, plan_doc: PlanDoc, name: str, frame: pd.DataFrame | None
) -> str:
    """The extractor a study names, with ``run:best`` / ``run:<run id>`` turned into run dirs."""
    if name == "run:best":
        run = best_run(study_dir, plan_doc, frame)
        if run is None:
            raise ConfigError("distances.extractor", "run:best needs finished evaluations")
        return f"run:{study_dir / 'runs' / run}"
    ids = {j.id for j in plan_doc.runs}
    if name.startswith("run:") and name[4:] in ids:
        return f"run:{study_dir / 'runs' / name[4:]}"
    return name
