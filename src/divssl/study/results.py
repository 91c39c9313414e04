"""The results store: one JSON record per run x evaluation, gathered into one long table.

Every evaluation of a run writes ``STUDY_DIR/runs/<hash>/records/<eval id>.json`` (atomically)
holding rows in long format, one per (split, label fraction, k, evaluation point, metric)::

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from divssl.errors import ConfigError
from divssl.io import atomic_write_bytes, atomic_write_text, read_json

SPLIT_NAMES = {"test": "id", "ood": "ood"}
METRICS = ("top1", "top5", "macro_f1")
RESULTS_PARQUET = "results.parquet"
RESULTS_CSV = "results.csv"
# Columns that identify a measurement (everything else describes the run or is the number).
VALUE_COLUMNS = ("value", "ci_low", "ci_high", "n")
COLUMN_ORDER = (
    "study",
    "run",
    "kind",
    "baseline",
    "method",
    "backbone",
    "image_size",
    "pool",
    "composition",
    "source",
    "budget_images",
    "unique_images",
    "epochs",
    "diversity",
    "normalization",
    "seed",
    "eval",
    "task",
    "split",
    "label_fraction",
    "k",
    "eval_point",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "n",
)
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


def run_columns(job: dict[str, Any], summary: dict[str, Any] | None, study: str) -> dict[str, Any]:
    """The columns describing one run (or from-scratch baseline) in every row of its records.

    Args:
        job: the job dict of ``plan.json``.
        summary: the run's ``summary.json`` (``None`` for baselines).
        study: study name.
    """
    if job["kind"] == "baseline":
        return {
            "run": job["id"],
            "study": study,
            "kind": "baseline",
            "baseline": True,
            "method": "scratch",
            "backbone": job["backbone"],
            "image_size": job["image_size"],
            "seed": job["seed"],
            "normalization": None,
            "pool": None,
            "composition": None,
            "source": None,
        }
    summary = summary or {}
    cfg = job["config"]
    cols: dict[str, Any] = {
        "run": job["id"], "study": study, "kind": "pretrain", "baseline": False,
        "method": cfg["method"], "backbone": cfg["backbone"], "image_size": cfg["image_size"],
        "pool": job.get("pool"), "composition": job.get("composition"), "source": job["source"],
        "budget_images": summary.get("budget_images", job["budget_images"]),
        "unique_images": summary.get("unique_images", job["unique_images"]),
        "epochs": summary.get("epochs", job["epochs"]),
        "diversity": summary.get("diversity", job["diversity"]),
        "normalization": job["normalization"], "seed": cfg["seed"],
        "steps": summary.get("steps", job["steps"]),
        "images_seen": summary.get("images_seen"),
        "flops_per_image": summary.get("flops_per_image"),
        "total_flops": summary.get("total_flops"),
        "wall_seconds": summary.get("wall_seconds"),
        "images_per_second": summary.get("images_per_second"),
    }  # fmt: skip
    for axis, value in job.get("factors", {}).items():
        if axis not in cols:
            cols[axis] = _scalar(value)
    return cols


def _metric_rows(report: dict[str, Any], split: str) -> list[dict[str, Any]]:
    rows = []
    for metric in METRICS:
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
    evaluation: dict[str, Any],
    result: dict[str, Any],
) -> list[dict[str, Any]]:
    """Flatten one evaluation's results dict (``run_knn``/``run_linear``/``run_finetune``).

    Args:
        base: :func:`run_columns` of the run.
        evaluation: the evaluation dict (kind, task, id, ...).
        result: what the evaluation function returned.

    Returns:
        Long-format rows, one per split x setting x metric.
    """
    head = {
        **base,
        "eval": evaluation["kind"],
        "eval_id": evaluation["id"],
        "task": evaluation["task"],
        "label_fraction": None,
        "k": None,
        "eval_point": None,
        "eval_step": None,
    }
    rows: list[dict[str, Any]] = []
    if evaluation["kind"] == "finetune":
        for i, point in enumerate(result.get("points", [])):
            for split in SPLIT_NAMES:
                if split in point:
                    setting = {
                        "eval_point": i,
                        "eval_step": point.get("step"),
                        "label_fraction": 100.0,
                    }
                    rows += [{**head, **setting, **r} for r in _metric_rows(point[split], split)]
        return rows
    for entry in result.get("results", []):
        setting = {"label_fraction": entry.get("fraction"), "k": entry.get("k")}
        for split in SPLIT_NAMES:
            if split in entry:
                rows += [{**head, **setting, **r} for r in _metric_rows(entry[split], split)]
    return rows


def record_path(job_dir: Path, eval_id: str) -> Path:
    """``<run dir>/records/<eval id>.json``."""
    return job_dir / "records" / f"{eval_id}.json"


def job_dir(study_dir: Path, job: dict[str, Any]) -> Path:
    """Run folder (``runs/<hash>``) or baseline folder (``baselines/<hash>``) of a job."""
    sub = "baselines" if job["kind"] == "baseline" else "runs"
    return Path(study_dir) / sub / job["id"]


def job_evaluations(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The evaluations a job owes."""
    return [job["evaluation"]] if job["kind"] == "baseline" else list(job["evaluations"])


# ----------------------------------------------------------------------------------- gather


def gather_rows(
    study_dir: str | Path,
    plan_doc: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Every row of every record of the plan's jobs (records of other plans are ignored)."""
    root = Path(study_dir)
    doc = plan_doc if plan_doc is not None else read_plan(root)
    rows: list[dict[str, Any]] = []
    for job in doc["jobs"]:
        folder = job_dir(root, job)
        for ev in job_evaluations(job):
            path = record_path(folder, ev["id"])
            if path.is_file():
                rows += read_json(path)["rows"]
    return rows


def read_plan(study_dir: str | Path) -> dict[str, Any]:
    """``STUDY_DIR/plan.json``.

    Raises:
        ConfigError: not a study folder.
    """
    path = Path(study_dir) / "plan.json"
    if not path.is_file():
        raise ConfigError("STUDY_DIR", f"{study_dir} has no plan.json (run `divssl run` first)")
    return read_json(path)


def to_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> DataFrame with numeric columns as numbers and text columns as text."""
    frame = pd.DataFrame(list(rows))
    first = [c for c in COLUMN_ORDER if c in frame.columns]
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


def write_results(study_dir: str | Path, plan_doc: dict[str, Any] | None = None) -> pd.DataFrame:
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
    from divssl.evaluate.stats import seed_summary

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
