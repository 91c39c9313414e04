"""From a study's results table to one point per run (N, C, accuracy).

This module is the fit's only dependency on the results store's column names (:data:`COL`); the
table itself is read with the store's public functions (:func:`divssl.study.results.load_results`,
:func:`divssl.study.results.filter_results`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from divssl.errors import ConfigError
from divssl.fit.fitting import FitData

# The results store's names for what the fit reads (divssl.study.results, one row per record).
COL = {
    "run": "run",
    "seed": "seed",
    "n": "unique_images",
    "c": "budget_images",
    "value": "value",
    "baseline": "baseline",
    "eval": "eval",
    "task": "task",
    "split": "split",
    "metric": "metric",
    "label_fraction": "label_fraction",
    "k": "k",
    "eval_point": "eval_point",
}
# Columns that may differ between the fitted runs: N and C, their aliases (E, D, the grid's
# subset/budget keys, normalization), the seed and per-run measurements. Any other column that
# varies means the runs are not one family (e.g. two methods), which one law cannot describe.
MAY_VARY = {
    COL["run"],
    COL["seed"],
    COL["n"],
    COL["c"],
    COL["value"],
    "ci_low",
    "ci_high",
    "n",
    "epochs",
    "diversity",
    "normalization",
    "subset.size",
    "subset.fraction",
    "budget.images",
    "budget.epochs",
    "steps",
    "images_seen",
    "flops_per_image",
    "total_flops",
    "wall_seconds",
    "images_per_second",
    "status",
    "eval_step",
    "eval_id",
    "study",
}
EVAL_ORDER = ("linear", "knn", "finetune")  # the default evaluation: the first present


@dataclass(frozen=True)
class Selection:
    """Which records the fit uses (``None`` = the default, resolved by :func:`select_points`).

    Attributes:
        eval: ``linear``, ``knn`` or ``finetune`` (default: the first of these present).
        task: downstream task (default: the only one).
        split: ``id`` or ``ood`` (default ``id``).
        metric: ``top1``, ``top5`` or ``macro_f1`` (default ``top1``).
        label_fraction: linear-probe label fraction in percent (default: the largest).
        k: kNN neighbours (default: the smallest).
        where: ``KEY=VALUE`` filters applied first (e.g. ``method=simclr``).
    """

    eval: str | None = None
    task: str | None = None
    split: str | None = None
    metric: str | None = None
    label_fraction: float | None = None
    k: int | None = None
    where: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_contrast_metric(cls, spec: dict[str, Any]) -> Selection:
        """The study spec's ``report.contrast_metric`` ({eval, split, metric, label_fraction,
        k, task}) as a selection."""
        cm = ((spec.get("report") or {}).get("contrast_metric") or {}) if spec else {}
        return cls(
            eval=cm.get("eval"),
            task=cm.get("task"),
            split=cm.get("split"),
            metric=cm.get("metric"),
            label_fraction=cm.get("label_fraction"),
            k=cm.get("k"),
        )


def load_study_results(study_dir: str | Path) -> pd.DataFrame:
    """The study's results table through the store's public reader.

    Raises:
        ConfigError: not a study folder (no plan.json and no results file).
    """
    from divssl.study.results import load_results

    root = Path(study_dir)
    if not root.is_dir():
        raise ConfigError("STUDY_DIR", f"no such study folder: {root}")
    return load_results(root)


def _choose(
    frame: pd.DataFrame, key: str, option: str, wanted: Any, default: Any
) -> tuple[pd.DataFrame, Any]:
    """Keep rows whose column ``COL[key]`` equals ``wanted`` (or ``default``); check it exists."""
    col = COL[key]
    present = frame[col].dropna().unique().tolist() if col in frame.columns else []
    if not present:
        return frame, None
    value = wanted if wanted is not None else default(present)
    if isinstance(value, str):
        keep = (frame[col].astype(str) == value).to_numpy()
    else:
        keep = np.isclose(frame[col].astype(float), float(value), rtol=0.0, atol=1e-9)
    if not keep.any():
        raise ConfigError(option, f"no records with {col} = {value!r}", [str(p) for p in present])
    return frame[keep], value


def _default_eval(present: list[Any]) -> str:
    return next(e for e in (*EVAL_ORDER, *sorted(map(str, present))) if e in present)


def _default_task(present: list[Any]) -> str:
    if len(present) > 1:
        raise ConfigError("--task", "the study has several tasks: choose one", map(str, present))
    return str(present[0])


def select_points(frame: pd.DataFrame, sel: Selection) -> tuple[FitData, dict[str, Any]]:
    """One point (N, C, accuracy) per pretraining run.

    Args:
        frame: the results table (long format, one row per record).
        sel: which records.

    Returns:
        (points, the resolved selection as a dict, e.g. ``{"eval": "linear", ...}``).

    Raises:
        ConfigError: an unknown filter column or value, no pretraining records, runs that are not
            one family (a column other than N, C and the seed differs: pass ``--where``), or a
            run with several records left.
    """
    from divssl.study.results import filter_results

    rows = filter_results(frame, list(sel.where)) if sel.where else frame
    if COL["baseline"] in rows.columns:
        rows = rows[~rows[COL["baseline"]].fillna(False).astype(bool)]
    rows = rows[rows[COL["n"]].notna() & rows[COL["c"]].notna()]
    if rows.empty:
        raise ConfigError("STUDY_DIR", "no records of pretraining runs (with N and C) to fit")
    resolved: dict[str, Any] = {"where": list(sel.where)}
    rows, resolved["eval"] = _choose(rows, "eval", "--eval", sel.eval, _default_eval)
    rows, resolved["task"] = _choose(rows, "task", "--task", sel.task, _default_task)
    rows, resolved["split"] = _choose(rows, "split", "--split", sel.split, lambda p: "id")
    rows, resolved["metric"] = _choose(rows, "metric", "--metric", sel.metric, lambda p: "top1")
    rows, resolved["label_fraction"] = _choose(
        rows, "label_fraction", "--label-fraction", sel.label_fraction, max
    )
    rows, resolved["k"] = _choose(rows, "k", "--k", sel.k, min)
    rows, resolved["eval_point"] = _choose(rows, "eval_point", "--eval-point", None, max)
    _check_one_family(rows)
    per_run = rows.groupby(COL["run"]).size()
    if (per_run > 1).any():
        raise ConfigError(
            "--where",
            f"run {per_run.idxmax()} has {int(per_run.max())} records after the selection; "
            "narrow it with --where KEY=VALUE",
        )
    rows = rows.sort_values([COL["c"], COL["n"], COL["seed"], COL["run"]])
    data = FitData(
        n=rows[COL["n"]].to_numpy(dtype=np.float64),
        c=rows[COL["c"]].to_numpy(dtype=np.float64),
        y=rows[COL["value"]].to_numpy(dtype=np.float64),
        runs=tuple(str(r) for r in rows[COL["run"]]),
        seeds=rows[COL["seed"]].to_numpy(dtype=np.float64),
    )
    _check_values(data)
    resolved = {k: _plain(v) for k, v in resolved.items()}
    for key in ("method", "backbone", "pool", "composition"):
        if key in rows.columns and rows[key].notna().any():
            resolved[key] = _plain(rows[key].dropna().iloc[0])
    return data, resolved


def _check_one_family(rows: pd.DataFrame) -> None:
    varying = []
    for col in rows.columns:
        if col in MAY_VARY:
            continue
        values = rows[col].dropna().unique().tolist()
        if len(values) > 1:
            varying.append(f"{col} ({', '.join(sorted(map(str, values))[:6])})")
    if varying:
        raise ConfigError(
            "--where",
            "the selected runs are not one family, they differ in " + "; ".join(varying) + ": "
            "fit one at a time, e.g. --where method=simclr",
        )


def _check_values(data: FitData) -> None:
    bad = ~(np.isfinite(data.n) & np.isfinite(data.c) & (data.n > 0) & (data.c > 0))
    if bad.any():
        raise ConfigError("results", f"run {data.runs[int(np.argmax(bad))]}: N and C must be > 0")
    if not np.all(np.isfinite(data.y)) or data.y.min() < 0.0 or data.y.max() > 1.0:
        raise ConfigError("results.value", "the fitted scores must lie in [0, 1]")


def _plain(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return None if math.isnan(v) else v
    if isinstance(value, np.integer):
        return int(value)
    return value


def points_from_arrays(
    n: Sequence[float], c: Sequence[float], y: Sequence[float], seeds: Sequence[int] | None = None
) -> FitData:
    """Points from plain arrays (runs named ``r0, r1, ...``), e.g. for simulations."""
    m = len(y)
    return FitData(
        n=np.asarray(n, dtype=np.float64),
        c=np.asarray(c, dtype=np.float64),
        y=np.asarray(y, dtype=np.float64),
        runs=tuple(f"r{i}" for i in range(m)),
        seeds=np.asarray(seeds if seeds is not None else np.zeros(m), dtype=np.float64),
    )
