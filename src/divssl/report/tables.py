"""Report inputs and paper-style tables, computed only from a study's metric files.

The results store (``STUDY_DIR/results.parquet`` or ``.csv``, written by :mod:`divssl.study`)
holds one record per run x evaluation. :func:`load_study` reads it together with the study spec
(``study.yaml``), the distances (``distances.json`` / ``.csv``) and every run's ``summary.json`` and
``config.yaml``. Repeated seeds are summarised by :func:`summarize_seeds` with
:func:`divssl.evaluate.stats.seed_summary` (mean, Student-t 95% interval, n = seeds); a cell with a
single seed keeps the record's own bootstrap interval over test images (n = test images). Every
cell therefore prints an interval and its n: ``62.1 ± 1.3 (n=3)`` or ``62.1 [60.2, 64.0] (1 seed,
n=2000)``.

Tables follow Hammoud et al. (2024): Table 1 (N/D rows x method columns at a fixed budget C),
Table 2 (pretraining sets x downstream tasks), Table 5 (label fractions of the linear probe); plus
the reviewer's experiment summary (every factor with its levels and every fixed parameter), the
effective-robustness table of the ID-OOD analysis and the distance tables.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from divssl.errors import ConfigError
from divssl.evaluate.robustness import Baseline, effective_robustness
from divssl.evaluate.stats import seed_summary
from divssl.io import read_json, read_yaml
from divssl.study.results import (
    NUMERIC_COLUMNS,
    REQUIRED_COLUMNS,
    RESULT_COLUMNS,
    SCORE_METRICS,
    VALUE_COLUMNS,
)

METRIC_LABELS = {"top1": "top-1 accuracy", "top5": "top-5 accuracy", "macro_f1": "macro-F1"}
EVAL_LABELS = {"linear": "linear probe", "knn": "kNN", "finetune": "fine-tuning"}
# Columns that identify a pretraining condition x evaluation; `seed`/`run` are what repeats.
CONDITION = (
    "method",
    "backbone",
    "pretrain_set",
    "budget_images",
    "unique_images",
    "diversity",
    "epochs",
    "normalization",
    "eval",
    "task",
    "split",
    "label_fraction",
    "k",
    "metric",
    "eval_point",
    "baseline",
)
SUMMARY_COLUMNS = ("mean", "ci_low", "ci_high", "std", "n", "n_kind")
MISSING = "—"
SEEDS_NOTE = (
    "Cells: mean ± half-width of the Student-t 95% interval over seeds (n = seeds); a cell with a "
    "single seed shows the evaluation's bootstrap 95% interval over test images (n = test images)."
)


@dataclass
class StudyData:
    """Everything a report is computed from.

    Attributes:
        study_dir: the study folder.
        results: tidy results, canonical columns plus ``pretrain_set`` (one row per record).
        results_path: the file ``results`` was read from.
        spec: the study spec (``study.yaml``), ``{}`` when absent.
        distances: rows ``a, b, metric, extractor, value`` (+ ``std``/``n`` when given), or None.
        summaries: every run's ``summary.json``.
        configs: every run's resolved ``config.yaml``.
        factors: grid-axis columns of ``results`` beyond the known ones (kept in group keys).
    """

    study_dir: Path
    results: pd.DataFrame
    results_path: Path
    spec: dict[str, Any] = field(default_factory=dict)
    distances: pd.DataFrame | None = None
    summaries: list[dict[str, Any]] = field(default_factory=list)
    configs: list[dict[str, Any]] = field(default_factory=list)
    factors: list[str] = field(default_factory=list)
    baselines: pd.DataFrame | None = None  # reference rows of baselines.json (pixels, random)
    vendi: pd.DataFrame | None = None  # vendi.csv: Vendi score per pool and per run's subset

    @property
    def condition(self) -> list[str]:
        """Group keys of a seed summary: the known condition columns plus extra grid factors."""
        return [*CONDITION, *self.factors]


@dataclass
class TableBlock:
    """One rendered table.

    Attributes:
        key: file-name-safe identifier (``table1_world_id_linear100_convnet_tiny_C50000``).
        title: heading.
        caption: what the cells are and how they were computed.
        display: formatted cells (strings), one row per table row, index not used.
        numbers: the numbers behind ``display`` (long form: keys, mean, ci_low, ci_high, n, ...).
        text: a table of text (left-aligned cells) rather than of numbers.
    """

    key: str
    title: str
    caption: str
    display: pd.DataFrame
    numbers: pd.DataFrame
    text: bool = False


# ----------------------------------------------------------------------------------- loading


def load_study(study_dir: str | Path) -> StudyData:
    """Read a study folder's results, spec, distances, run summaries and configs.

    Raises:
        ConfigError: no study folder, no results file, missing columns or invalid scores.
    """
    root = Path(study_dir)
    if not root.is_dir():
        raise ConfigError("study_dir", f"no such study folder: {root}")
    results, path = read_results(root)
    spec_path = root / "study.yaml"
    spec = read_yaml(spec_path) if spec_path.is_file() else {}
    if not isinstance(spec, dict):
        raise ConfigError("study.yaml", "must hold a mapping (the study spec)")
    factors = informative_factors(results, grid_axes(spec))
    runs = sorted(p for p in (root / "runs").glob("*") if p.is_dir())
    summaries = [read_json(p / "summary.json") for p in runs if (p / "summary.json").is_file()]
    configs = [read_yaml(p / "config.yaml") for p in runs if (p / "config.yaml").is_file()]
    return StudyData(
        study_dir=root,
        results=results,
        results_path=path,
        spec=spec,
        distances=read_distances(root),
        baselines=read_baselines(root),
        vendi=read_vendi(root),
        summaries=summaries,
        configs=[c for c in configs if isinstance(c, dict)],
        factors=factors,
    )


def informative_factors(results: pd.DataFrame, axes: Sequence[str]) -> list[str]:
    """Grid axes stored as extra result columns that split records the known condition columns
    do not already separate (``subset.fraction`` duplicates N and is dropped; an axis such as
    ``optim.base_lr`` is kept so its levels are never averaged together)."""
    known = results_known()
    candidates = [a for a in axes if a in results.columns and a not in known]
    if results.empty or not candidates:
        return []
    keys = [*CONDITION, "seed"]
    groups = results.groupby(keys, dropna=False)
    return [a for a in candidates if groups[a].nunique(dropna=False).max() > 1]


def results_known() -> set[str]:
    """Columns the report reads itself: the condition, the number, and what names a run."""
    return {*CONDITION, *VALUE_COLUMNS, "run", "study", "seed", "pool", "composition", "source"}


def read_results(study_dir: Path) -> tuple[pd.DataFrame, Path]:
    """Read ``results.parquet`` (preferred) or ``results.csv`` and normalise it.

    Raises:
        ConfigError: neither file exists.
    """
    parquet, csv = study_dir / "results.parquet", study_dir / "results.csv"
    if parquet.is_file():
        return normalize_results(pd.read_parquet(parquet)), parquet
    if csv.is_file():
        return normalize_results(pd.read_csv(csv)), csv
    raise ConfigError(
        "study_dir",
        f"no results.parquet or results.csv in {study_dir} (run `divssl run STUDY.yaml` first)",
    )


def normalize_results(frame: pd.DataFrame) -> pd.DataFrame:
    """Check the schema's columns, fill optional ones, coerce types, check scores.

    The columns are those of :class:`divssl.study.results.ResultRecord`, whose rows were
    validated when the store was written; a hand-made CSV is checked here for the required ones
    and its numbers and scores are coerced and range-checked.

    Adds ``pretrain_set``: the composition name where one is set, else the pool name. Records
    whose value is missing (an undefined metric) are left out and counted in
    ``attrs["records_without_value"]`` (shown in the report header).

    Raises:
        ConfigError: a required column is missing, or a score lies outside [0, 1].
    """
    out = frame.copy()
    if out.empty:  # no record yet (every run failed or none ran): every section notes it
        out = out.reindex(columns=list(dict.fromkeys([*out.columns, *RESULT_COLUMNS])))
    missing = [c for c in REQUIRED_COLUMNS if c not in out.columns]
    if missing:
        raise ConfigError("results", f"missing columns {missing}", list(RESULT_COLUMNS))
    for col in RESULT_COLUMNS:
        if col not in out.columns:
            out[col] = pd.NA
    for col in NUMERIC_COLUMNS:
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    out["baseline"] = out["baseline"].map(_as_bool).astype(bool)
    for col in ("normalization", "split", "eval", "metric"):
        out[col] = [v if _isna(v) else str(v).strip().lower() for v in out[col]]
    for col in ("method", "backbone", "task"):
        out[col] = [MISSING if _isna(v) else str(v) for v in out[col]]
    out["pretrain_set"] = [
        _pretrain_set(c, p) for c, p in zip(out["composition"], out["pool"], strict=True)
    ]
    missing_value = out["value"].isna()
    out = out[~missing_value]  # an undefined metric is written as null: nothing to report
    scores = out[out["metric"].isin(SCORE_METRICS)]["value"]
    bad = scores[~np.isfinite(scores) | (scores < 0) | (scores > 1)]
    if len(bad):
        raise ConfigError(
            "results.value", f"scores (top1/top5/macro_f1) must lie in [0, 1], got {bad.iloc[0]!r}"
        )
    out = out.reset_index(drop=True)
    out.attrs["records_without_value"] = int(missing_value.sum())
    return out


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value) if value is not None and not _isna(value) else False


def _isna(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _pretrain_set(composition: Any, pool: Any) -> str:
    for value in (composition, pool):
        if not _isna(value) and str(value).strip():
            return str(value)
    return MISSING


def grid_axes(spec: dict[str, Any]) -> list[str]:
    """Axis names of the spec's grid (a mapping or a list of mappings), in order, minus seed."""
    grid = spec.get("grid") or []
    grids = grid if isinstance(grid, list) else [grid]
    axes: list[str] = []
    for g in grids:
        for key in g if isinstance(g, dict) else []:
            if key not in axes and key != "seed":
                axes.append(str(key))
    return axes


BASELINE_LABELS = {
    "pixels_knn": "raw pixels, kNN",
    "pixels_logreg": "raw pixels, logistic regression",
    "random_init": "random-init encoder",
}
BASELINE_COLUMNS = ("baseline", "eval", "task", "label_fraction", "k", "split", "metric", "value")


def read_baselines(study_dir: Path) -> pd.DataFrame | None:
    """``baselines.json`` (rows of :func:`divssl.evaluate.baselines.compute_study_baselines`,
    values as fractions); None when absent.

    Raises:
        ConfigError: rows lack one of :data:`BASELINE_COLUMNS`.
    """
    path = study_dir / "baselines.json"
    if not path.is_file():
        return None
    frame = pd.DataFrame(read_json(path))
    missing = [c for c in BASELINE_COLUMNS if c not in frame.columns]
    if frame.empty or missing:
        raise ConfigError("baselines.json", f"missing columns {missing}", BASELINE_COLUMNS)
    return frame


def baseline_table(data: StudyData) -> list[TableBlock]:
    """Reference rows beside Table 1: raw-pixel kNN / logistic regression and a random-init
    encoder on the same task split and probe setting, one table per task (top-1)."""
    if data.baselines is None:
        return []
    ref = data.baselines[data.baselines["metric"] == "top1"]
    blocks = []
    for task, sub in ref.groupby("task", sort=True):
        keys = ["baseline", "backbone", "image_size", "eval", "label_fraction", "k"]
        keys = [k for k in keys if k in sub.columns]
        wide = []
        for vals, grp in sub.groupby(keys, dropna=False, sort=False):
            rec = dict(zip(keys, vals, strict=True))
            row = {
                "reference": BASELINE_LABELS.get(rec["baseline"], rec["baseline"]),
                "input": f"{rec.get('backbone', '')} @ {fmt_value(rec.get('image_size'))} px",
                "probe": setting_label(rec["eval"], rec["label_fraction"], rec["k"]),
            }
            for split in ("id", "ood"):
                cell = grp[grp["split"] == split]
                row[f"{split.upper()} top-1 (%)"] = _ci_cell(cell.iloc[0]) if len(cell) else MISSING
            wide.append(row)
        display = pd.DataFrame(wide)
        blocks.append(
            TableBlock(
                key=slug("baselines", task),
                title=f"{task}: reference baselines (no pretraining)",
                caption=(
                    f"Top-1 accuracy (%) on {task} of probes that need no pretraining: the same "
                    "kNN / linear probe on raw pixels (the encoder's input, resized, in [0, 1]) "
                    "and on a random-init encoder (initialisation seed 0). A pretrained encoder "
                    "has learned something only where it beats these rows. Brackets: bootstrap "
                    "95% interval over test images."
                ),
                display=display,
                numbers=sub.reset_index(drop=True),
            )
        )
    return blocks


def _ci_cell(row: pd.Series) -> str:
    value = f"{100.0 * float(row['value']):.1f}"
    if _isna(row.get("ci_low")) or _isna(row.get("ci_high")):
        return value
    return f"{value} [{100.0 * float(row['ci_low']):.1f}, {100.0 * float(row['ci_high']):.1f}]"


def read_distances(study_dir: Path) -> pd.DataFrame | None:
    """``distances.json`` (list of rows, ``{"rows": [...]}``, or the distance command's per-metric
    ``{metric: {rows, cols, values, std}}`` form) or ``distances.csv``; None when absent.

    Raises:
        ConfigError: rows lack ``a``, ``b``, ``metric`` or ``value``.
    """
    js, csv = study_dir / "distances.json", study_dir / "distances.csv"
    if js.is_file():
        frame = pd.DataFrame(_distance_rows(read_json(js)))
    elif csv.is_file():
        frame = pd.read_csv(csv)
    else:
        return None
    if frame.empty:
        return frame
    missing = [c for c in ("a", "b", "metric", "value") if c not in frame.columns]
    if missing:
        raise ConfigError("distances", f"missing columns {missing}", ["a", "b", "metric", "value"])
    if "extractor" not in frame.columns:
        frame["extractor"] = MISSING
    frame["extractor"] = frame["extractor"].fillna(MISSING).astype(str)
    frame["metric"] = frame["metric"].astype(str).str.lower()
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    for col in ("std", "n", "n_a", "n_b"):
        if col in frame.columns:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


VENDI_COLUMNS = ("kind", "name", "run", "vendi")


def read_vendi(study_dir: Path) -> pd.DataFrame | None:
    """``vendi.csv`` (``divssl.study.diversity``): one row per pool (``kind = pool``) and per
    pretraining run (``kind = subset``, keyed by ``run``), column ``vendi``; None when absent.

    Raises:
        ConfigError: rows lack ``kind``, ``name``, ``run`` or ``vendi``.
    """
    path = study_dir / "vendi.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    missing = [c for c in VENDI_COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigError("vendi.csv", f"missing columns {missing}", VENDI_COLUMNS)
    for col in ("vendi", "vendi_class_mean", "n", "unique_images"):
        if col in frame.columns:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


def _distance_rows(obj: Any) -> list[dict[str, Any]]:
    if isinstance(obj, list):
        return obj
    if isinstance(obj, dict) and isinstance(obj.get("rows"), list):
        return obj["rows"]
    rows: list[dict[str, Any]] = []
    if isinstance(obj, dict):
        extractor = obj.get("extractor", MISSING)
        for metric, table in obj.items():
            if not (isinstance(table, dict) and {"rows", "cols", "values"} <= set(table)):
                continue
            std = table.get("std")
            for i, a in enumerate(table["rows"]):
                for j, b in enumerate(table["cols"]):
                    row = {"a": a, "b": b, "metric": metric, "extractor": extractor}
                    row["value"] = table["values"][i][j]
                    if std is not None:
                        row["std"] = std[i][j]
                    rows.append(row)
    return rows


# ------------------------------------------------------------------------- seed summaries


def summarize_seeds(frame: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """One row per group of ``by``: mean, interval and n over the group's records (seeds).

    Groups with several records use :func:`seed_summary` (mean, sample std, Student-t 95%
    interval, ``n`` = records, ``n_kind = "seeds"``); a single record keeps its own bootstrap
    interval and test-sample count (``n_kind = "test"``).

    Args:
        frame: tidy results (one row per record).
        by: group columns (missing values form their own group).

    Returns:
        Columns ``by`` + mean, ci_low, ci_high, std, n, n_kind, sorted by ``by``.
    """
    by = list(by)
    rows: list[dict[str, Any]] = []
    if frame.empty:
        return pd.DataFrame(columns=[*by, *SUMMARY_COLUMNS])
    for keys, group in frame.groupby(by, dropna=False, sort=True):
        rows.append({**dict(zip(by, keys, strict=True)), **_summary(group)})
    return pd.DataFrame(rows, columns=[*by, *SUMMARY_COLUMNS])


def _summary(group: pd.DataFrame) -> dict[str, Any]:
    values = group["value"].to_numpy(dtype=np.float64)
    if len(values) == 1:
        rec = group.iloc[0]
        n = int(rec["n"]) if not _isna(rec["n"]) else 1
        return {
            "mean": float(values[0]),
            "ci_low": _float(rec["ci_low"]),
            "ci_high": _float(rec["ci_high"]),
            "std": math.nan,
            "n": n,
            "n_kind": "test",
        }
    s = seed_summary(values)
    return {
        "mean": s.mean,
        "ci_low": s.ci_low,
        "ci_high": s.ci_high,
        "std": s.std,
        "n": s.n,
        "n_kind": "seeds",
    }


def _float(value: Any) -> float:
    return math.nan if _isna(value) else float(value)


def format_interval(
    mean: float,
    ci_low: float,
    ci_high: float,
    n: int,
    n_kind: str = "seeds",
    scale: float = 100.0,
    digits: int = 1,
    signed: bool = False,
    unit: str = "",
) -> str:
    """A number with its interval and n.

    ``62.1 ± 1.3 (n=3)`` for a seed interval (symmetric), ``62.1 [60.2, 64.0] (1 seed, n=2000)``
    for a single run's bootstrap interval, ``62.1 (n=1, no interval)`` when none was recorded.
    ``unit`` (e.g. ``" pp"``) is written before the n.
    """
    if not math.isfinite(mean):
        return MISSING
    sign = "+" if signed else ""
    m = f"{mean * scale:{sign}.{digits}f}"
    finite = math.isfinite(ci_low) and math.isfinite(ci_high)
    if n_kind == "seeds" and finite:
        return f"{m} ± {(ci_high - ci_low) * scale / 2:.{digits}f}{unit} (n={n})"
    if finite:
        lo, hi = ci_low * scale, ci_high * scale
        where = "1 seed, " if n_kind == "test" else ""
        return f"{m} [{lo:{sign}.{digits}f}, {hi:{sign}.{digits}f}]{unit} ({where}n={n})"
    return f"{m}{unit} (n={n}, no interval)"


def cell(rec: dict[str, Any], scale: float = 100.0, digits: int = 1) -> str:
    """:func:`format_interval` of a summary row."""
    return format_interval(
        rec["mean"], rec["ci_low"], rec["ci_high"], int(rec["n"]), rec["n_kind"], scale, digits
    )


def fmt_count(value: float) -> str:
    """``50000`` -> ``"50k"``, ``1.28e6`` -> ``"1.28M"`` (images)."""
    if _isna(value):
        return MISSING
    v = float(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= limit:
            return f"{v / limit:.3g}{suffix}"
    return f"{v:.3g}"


def fmt_value(value: Any) -> str:
    """Plain display of a key value (NaN -> em dash, 1.0 -> 1)."""
    if _isna(value):
        return MISSING
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:.4g}"
    return str(value)


def slug(*parts: Any) -> str:
    """File-name-safe identifier from parts."""
    text = "_".join(fmt_value(p) for p in parts if not _isna(p))
    return "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in text).strip("_")


# --------------------------------------------------------------------------- eval settings


def metric_label(metric: str | None) -> str:
    """Readable name of a score metric (``top1`` -> ``top-1 accuracy``); the name itself else."""
    return str(metric) if metric is None else METRIC_LABELS.get(metric, metric)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """``frame.to_dict("records")`` typed with str keys (every report frame has str columns)."""
    return cast(list[dict[str, Any]], frame.to_dict("records"))


def row_dict(row: pd.Series) -> dict[str, Any]:
    """``row.to_dict()`` of a frame row, typed with str keys (the frame's str column names)."""
    return cast(dict[str, Any], row.to_dict())


def primary_metric(frame: pd.DataFrame, order: Sequence[str] = SCORE_METRICS) -> str | None:
    """First metric of ``order`` present in ``frame``."""
    present = set(frame["metric"].dropna())
    return next((m for m in order if m in present), None)


def probe_rows(
    frame: pd.DataFrame, all_fractions: bool = False, normalization: str | None = "compute"
) -> pd.DataFrame:
    """Frozen-backbone probe records (linear, kNN) of pretrained models.

    Args:
        frame: tidy results.
        all_fractions: keep every label fraction of the linear probe (Table 5); otherwise keep
            only the largest fraction per task (Tables 1 and 2, figures).
        normalization: keep records of this normalization (missing counts as ``compute``);
            None keeps all.
    """
    rows = frame[frame["eval"].isin(["linear", "knn"]) & ~frame["baseline"]]
    if normalization is not None:
        norm = rows["normalization"].fillna("compute")
        rows = rows[norm == normalization]
    if all_fractions or rows.empty:
        return rows
    linear = rows["eval"] == "linear"
    top = rows[linear].groupby("task")["label_fraction"].max()
    fraction = rows["label_fraction"]
    keep = ~linear | fraction.isna() | fraction.eq(rows["task"].map(top))
    return rows[keep]


def primary_probe(frame: pd.DataFrame, normalization: str | None = "compute") -> pd.DataFrame:
    """The probe setting figures use, per task: the linear probe at its largest label fraction,
    else kNN at the smallest k; primary metric (top-1, else macro-F1, else top-5)."""
    rows = probe_rows(frame, normalization=normalization)
    parts = []
    for _, sub in rows.groupby("task", sort=True):
        if (sub["eval"] == "linear").any():
            sub = sub[sub["eval"] == "linear"]
        else:
            sub = sub[sub["k"] == sub["k"].min()]
            top = sub["label_fraction"].max()
            sub = sub[sub["label_fraction"].isna() | (sub["label_fraction"] == top)]
        metric = primary_metric(sub)
        parts.append(sub[sub["metric"] == metric])
    return pd.concat(parts) if parts else rows.iloc[0:0]


def setting_label(eval_kind: Any, label_fraction: Any, k: Any) -> str:
    """``"linear probe, 100% labels"``, ``"kNN, k=20"``."""
    name = EVAL_LABELS.get(str(eval_kind), str(eval_kind))
    if eval_kind == "linear" and not _isna(label_fraction):
        return f"{name}, {float(label_fraction):g}% labels"
    if eval_kind == "knn" and not _isna(k):
        text = f"{name}, k={int(k)}"
        return text + (
            f", {float(label_fraction):g}% labels" if _fraction_note(label_fraction) else ""
        )
    return name


def _fraction_note(label_fraction: Any) -> bool:
    return not _isna(label_fraction) and float(label_fraction) != 100.0


def ordered(values: Iterable[Any], preferred: Sequence[Any] = ()) -> list[Any]:
    """Distinct values: those in ``preferred`` first (in its order), then the rest sorted."""
    distinct = list(dict.fromkeys(v for v in values if not _isna(v)))
    first = [p for p in preferred if p in distinct]
    rest = sorted((v for v in distinct if v not in first), key=lambda v: (str(type(v)), v))
    return first + rest


def spec_order(spec: dict[str, Any], axis: str) -> list[Any]:
    """Values of a grid axis in the spec's order (composition: its names)."""
    grid = spec.get("grid") or []
    out: list[Any] = []
    for g in grid if isinstance(grid, list) else [grid]:
        values = g.get(axis, []) if isinstance(g, dict) else []
        for v in values.keys() if isinstance(values, dict) else values:
            if v not in out:
                out.append(v)
    return out


# ------------------------------------------------------------------------------ wide tables


def wide_table(
    stats: pd.DataFrame,
    index: Sequence[str],
    index_labels: Sequence[str],
    column: str,
    column_order: Sequence[Any],
    column_label: Callable[[Any], str] = str,
    index_format: dict[str, Callable[[Any], str]] | None = None,
) -> pd.DataFrame:
    """Pivot summary rows into display strings: ``index`` rows x ``column`` values.

    Missing cells print an em dash. ``stats`` must be sorted by ``index``.
    """
    fmts = index_format or {}
    cells: dict[tuple[Any, Any], str] = {}
    row_keys: list[tuple[Any, ...]] = []
    for rec in records(stats):
        rk = tuple(_key(rec[c]) for c in index)
        if rk not in row_keys:
            row_keys.append(rk)
        cells[(rk, _key(rec[column]))] = cell(rec)
    body = []
    for rk in row_keys:
        labels = [
            fmts.get(c, fmt_value)(math.nan if v is None else v)
            for c, v in zip(index, rk, strict=True)
        ]
        body.append([*labels, *(cells.get((rk, _key(c)), MISSING) for c in column_order)])
    headers = [*index_labels, *(column_label(c) for c in column_order)]
    return pd.DataFrame(body, columns=headers)


def _key(value: Any) -> Any:
    return None if _isna(value) else value


def _row_index(stats: pd.DataFrame, base: Sequence[str], factors: Sequence[str]) -> list[str]:
    """``base`` plus any extra factor that varies within the table (so no two cells collide)."""
    return [*base, *(f for f in factors if f in stats and stats[f].nunique(dropna=False) > 1)]


def _nd_formats() -> dict[str, Callable[[Any], str]]:
    return {
        "unique_images": lambda v: f"{int(v):,}" if not _isna(v) else MISSING,
        "diversity": lambda v: f"{float(v):.3g}" if not _isna(v) else MISSING,
        "budget_images": lambda v: f"{int(v):,}" if not _isna(v) else MISSING,
    }


def _labels(columns: Sequence[str]) -> list[str]:
    names = {
        "pretrain_set": "pretraining set",
        "unique_images": "N",
        "diversity": "D = N/C",
        "backbone": "backbone",
        "method": "method",
        "budget_images": "C",
    }
    return [names.get(c, c) for c in columns]


# ----------------------------------------------------------------------------- paper tables


def table1(data: StudyData) -> list[TableBlock]:
    """Table 1-style: N/D rows x method columns at fixed C, one table per task, probe setting,
    backbone and C (in-distribution split, plain pools; compositions are Figure 3's)."""
    rows = probe_rows(data.results)
    rows = rows[(rows["split"] == "id") & rows["composition"].isna()]
    metric = primary_metric(rows)
    rows = rows[rows["metric"] == metric]
    stats = summarize_seeds(rows, data.condition)
    methods = ordered(stats["method"], spec_order(data.spec, "method"))
    blocks = []
    group_keys = ["task", "eval", "label_fraction", "k", "backbone", "budget_images"]
    tasks = ordered(stats["task"], list(data.spec.get("tasks") or {}))
    groups = sorted(
        stats.groupby(group_keys, dropna=False, sort=True),
        key=lambda g: (tasks.index(g[0][0]), g[0][1] != "linear"),
    )
    for keys, sub in groups:
        task, ev, frac, k, backbone, c = cast(tuple[str, str, float, float, str, float], keys)
        index = _row_index(sub, ["pretrain_set", "unique_images", "diversity"], data.factors)
        sub = sub.sort_values(index, na_position="last")
        display = wide_table(
            sub,
            index,
            _labels(index),
            "method",
            [m for m in methods if m in set(sub["method"])],
            index_format=_nd_formats(),
        )
        setting = setting_label(ev, frac, k)
        blocks.append(
            TableBlock(
                key=slug("table1", task, ev, frac, k, backbone, c),
                title=f"{task}: {setting}, {backbone}, C = {fmt_count(c)} images",
                caption=(
                    f"{metric_label(metric)} (%) on the ID test split of {task} for "
                    f"each pretraining diversity D = N/C at a fixed budget C = {int(c):,} "
                    f"images (compute-normalized; E = C/N epochs). {SEEDS_NOTE}"
                ),
                display=display,
                numbers=sub.reset_index(drop=True),
            )
        )
    return blocks


def table2(data: StudyData) -> list[TableBlock]:
    """Table 2-style: pretraining sets (rows) x downstream tasks (columns), per method, backbone
    and C; each task at its primary probe setting. Needs at least two task columns."""
    rows = primary_probe(data.results)
    rows = rows.assign(
        column=[_task_column(t, s) for t, s in zip(rows["task"], rows["split"], strict=True)]
    )
    if rows["column"].nunique() < 2:
        return []
    stats = summarize_seeds(rows, [*data.condition, "column"])
    columns = ordered(stats["column"], [t for t in (data.spec.get("tasks") or {})])
    blocks = []
    for group_key, sub in stats.groupby(["method", "backbone", "budget_images"]):
        method, backbone, c = cast(tuple[str, str, float], group_key)
        index = _row_index(sub, ["pretrain_set", "unique_images", "diversity"], data.factors)
        sub = sub.sort_values(index, na_position="last")
        settings = sorted(
            {
                f"{t}: {setting_label(e, f, k)}"
                for t, e, f, k in sub[["column", "eval", "label_fraction", "k"]].itertuples(
                    index=False
                )
            }
        )
        blocks.append(
            TableBlock(
                key=slug("table2", method, backbone, c),
                title=f"{method}, {backbone}, C = {fmt_count(c)} images",
                caption=(
                    f"Downstream score (%) of each pretraining set at a fixed budget "
                    f"C = {int(c):,} images; columns are tasks (OOD splits marked). Settings: "
                    f"{'; '.join(settings)}; metric {', '.join(sorted(set(sub['metric'])))}. "
                    f"{SEEDS_NOTE}"
                ),
                display=wide_table(
                    sub,
                    index,
                    _labels(index),
                    "column",
                    [c_ for c_ in columns if c_ in set(sub["column"])],
                    index_format=_nd_formats(),
                ),
                numbers=sub.reset_index(drop=True),
            )
        )
    return blocks


def _task_column(task: Any, split: Any) -> str:
    return str(task) if split in ("id", None) or _isna(split) else f"{task} [{str(split).upper()}]"


def table5(data: StudyData) -> list[TableBlock]:
    """Table 5-style: linear-probe score at each label fraction (columns) per method, task and C;
    rows are backbone x pretraining set x N/D. Needs at least two label fractions."""
    rows = probe_rows(data.results, all_fractions=True)
    rows = rows[(rows["eval"] == "linear") & (rows["split"] == "id")]
    rows = rows[rows["label_fraction"].notna()]
    metric = primary_metric(rows)
    rows = rows[rows["metric"] == metric]
    if rows["label_fraction"].nunique() < 2:
        return []
    stats = summarize_seeds(rows, data.condition)
    blocks = []
    for group_key, sub in stats.groupby(["method", "task", "budget_images"]):
        method, task, c = cast(tuple[str, str, float], group_key)
        if sub["label_fraction"].nunique() < 2:
            continue
        base = ["backbone", "pretrain_set", "unique_images", "diversity"]
        index = _row_index(sub, base, data.factors)
        sub = sub.sort_values(index, na_position="last")
        fractions = sorted(set(sub["label_fraction"]))
        blocks.append(
            TableBlock(
                key=slug("table5", method, task, c),
                title=f"{method} on {task}, C = {fmt_count(c)} images",
                caption=(
                    f"Linear-probe {metric_label(metric)} (%) on the ID test split "
                    f"of {task} when the probe is trained on a class-stratified fraction of the "
                    f"labelled train split (columns). {SEEDS_NOTE}"
                ),
                display=wide_table(
                    sub,
                    index,
                    _labels(index),
                    "label_fraction",
                    fractions,
                    column_label=lambda f: f"{float(f):g}% labels",
                    index_format=_nd_formats(),
                ),
                numbers=sub.reset_index(drop=True),
            )
        )
    return blocks


# ------------------------------------------------------------------------ experiment summary


def experiment_summary(data: StudyData) -> list[TableBlock]:
    """The reviewer's summary: every factor with its levels, and every fixed parameter."""
    return [factor_table(data), fixed_table(data)]


def factor_table(data: StudyData) -> TableBlock:
    """Grid axes with their levels, plus the derived C, N, E, D and evaluation factors."""
    rows: list[dict[str, Any]] = []
    grid = data.spec.get("grid") or []
    for gi, g in enumerate(grid if isinstance(grid, list) else [grid]):
        for axis, values in (g or {}).items():
            rows.append(_factor_row(axis, values, "grid" if len(grid) <= 1 else f"grid[{gi}]"))
    res = data.results
    pretrained = res[~res["baseline"]]
    derived = [
        ("budget_images", "C (images processed)"),
        ("unique_images", "N (unique images)"),
        ("epochs", "E = C/N (epochs)"),
        ("diversity", "D = N/C (diversity)"),
        ("pretrain_set", "pretraining set"),
        ("task", "downstream task"),
        ("eval", "evaluation"),
        ("label_fraction", "label fraction (%)"),
        ("k", "kNN k"),
        ("metric", "metric"),
        ("split", "test split"),
    ]
    per_run = ("budget_images", "unique_images", "epochs", "diversity", "pretrain_set")
    for col, label in derived:
        values = ordered((pretrained if col in per_run else res)[col])
        if values:
            rows.append(
                {"factor": label, "levels": len(values), "values": _join(values), "from": "results"}
            )
    seeds = ordered(res["seed"]) if "seed" in res else []
    if seeds:
        rows.append(
            {"factor": "seed", "levels": len(seeds), "values": _join(seeds), "from": "results"}
        )
    display = pd.DataFrame(rows, columns=["factor", "levels", "values", "from"])
    return TableBlock(
        key="summary_factors",
        title="Factors (what varies)",
        caption=(
            "Every axis of the study grid with its levels (as written in study.yaml), and the "
            "levels actually present in the results: C, N, E = C/N, D = N/C, tasks, evaluations, "
            "metrics and seeds. Counts (levels) are the n of distinct values."
        ),
        display=display,
        numbers=display.copy(),
        text=True,
    )


def _factor_row(axis: str, values: Any, source: str) -> dict[str, Any]:
    if isinstance(values, dict):  # compositions: name -> parts
        text = "; ".join(f"{name} = {_parts(parts)}" for name, parts in values.items())
        return {"factor": axis, "levels": len(values), "values": text, "from": source}
    vals = values if isinstance(values, list) else [values]
    return {"factor": axis, "levels": len(vals), "values": _join(vals), "from": source}


def _parts(parts: Any) -> str:
    if not isinstance(parts, list):
        return str(parts)
    out = []
    for p in parts:
        if isinstance(p, dict):
            bits = [str(p.get("pool", p.get("name", "?")))]
            bits += [f"{k}={p[k]}" for k in ("size", "prior", "seed") if k in p]
            out.append("(" + ", ".join(bits) + ")")
        else:
            out.append(str(p))
    return " ∪ ".join(out)


def _join(values: Sequence[Any], limit: int = 12) -> str:
    text = [fmt_value(v) for v in values[:limit]]
    more = f", … (+{len(values) - limit})" if len(values) > limit else ""
    return ", ".join(text) + more


def _flatten(tree: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys of a nested mapping (``pandas.json_normalize``); lists kept as values."""
    if not tree:
        return {}
    return row_dict(pd.json_normalize(tree, sep=".").iloc[0])


EXCLUDED_FIXED = ("out",)  # per-run output paths
SUMMARY_FIXED = (
    "global_batch",
    "views_per_image",
    "flops_per_image",
    "precision",
    "device",
    "world_size",
    "torch_version",
    "divssl_version",
)


def fixed_table(data: StudyData) -> TableBlock:
    """Parameters with a single value across the study.

    Resolved run configs (``runs/*/config.yaml``) give every pretraining key with one value over
    all runs (an unset key takes the method's default, shown as such); without them the spec's
    ``base`` is listed. Then one row per evaluation of ``study.yaml`` with every resolved setting,
    the pools and tasks, and constant run-summary fields (batch, views, FLOPs per image,
    precision, device, versions).
    """
    rows: list[tuple[str, str, str]] = []
    if data.configs:
        flat = [_flatten(c) for c in data.configs]
        source = f"resolved run configs (n={len(flat)})"
        for key in ordered({k for f in flat for k in f}):
            if key in EXCLUDED_FIXED or key.startswith(tuple(f"{e}." for e in EXCLUDED_FIXED)):
                continue
            if len({repr(f.get(key)) for f in flat}) == 1:
                rows.append((key, _setting(flat[0].get(key)), source))
    else:
        for key, value in _flatten(data.spec.get("base") or {}).items():
            rows.append((key, _setting(value), "study.yaml base"))
    for i, ev in enumerate(data.spec.get("evaluations") or []):
        if isinstance(ev, dict):
            settings = "; ".join(f"{k}={_setting(v)}" for k, v in _flatten(ev).items())
            rows.append((f"evaluations[{i}] ({ev.get('kind', '?')})", settings, "study.yaml"))
    for section in ("pools", "tasks"):
        for name, value in (data.spec.get(section) or {}).items():
            rows.append((f"{section}.{name}", _setting(value), "study.yaml"))
    for key in SUMMARY_FIXED if data.summaries else ():
        values = [s[key] for s in data.summaries if key in s]
        if values and len({repr(v) for v in values}) == 1:
            rows.append((key, _setting(values[0]), f"run summaries (n={len(data.summaries)})"))
    display = pd.DataFrame(rows, columns=["parameter", "value", "from"])
    return TableBlock(
        key="summary_fixed",
        title="Fixed parameters (what is held constant)",
        caption=(
            "Every parameter with a single value across the study: resolved pretraining configs "
            "(or the spec's base when no run config is present), evaluation settings, pool and "
            "task specs, and constant fields of the run summaries. 'default' marks a key left "
            "unset, which takes the method's own default."
        ),
        display=display,
        numbers=display.copy(),
        text=True,
    )


def _setting(value: Any) -> str:
    return "default" if value is None else fmt_value(value)


def report_header(data: StudyData) -> list[tuple[str, str]]:
    """Provenance lines for the report header, all read from the metric and summary files."""
    res, sums = data.results, data.summaries
    name = data.spec.get("name") or _first(res["study"]) or data.study_dir.name
    mtime = dt.datetime.fromtimestamp(data.results_path.stat().st_mtime, tz=dt.timezone.utc)
    finished = [s["finished_at"] for s in sums if s.get("finished_at")]
    runs = res["run"].nunique()
    status = pd.Series([s.get("status", MISSING) for s in sums]).value_counts()
    skipped = res.attrs.get("records_without_value", 0)
    lines = [
        ("study", str(name)),
        (
            "results",
            f"{data.results_path.name}: {len(res)} records from {runs} runs"
            + (f" ({skipped} records without a value left out)" if skipped else ""),
        ),
        ("results written", mtime.strftime("%Y-%m-%d %H:%M UTC")),
    ]
    if finished:
        lines.append(("last run finished", max(finished)))
    lines += [
        (
            "run summaries",
            ", ".join(f"{v} {k}" for k, v in status.items()) if sums else "none found under runs/",
        ),
        ("device", _distinct(sums, "device", res)),
        ("precision", _distinct(sums, "precision", res)),
        ("torch version", _distinct(sums, "torch_version", res)),
        ("divssl version", _distinct(sums, "divssl_version", res)),
        (
            "budget C (images)",
            _join([f"{int(c):,}" for c in ordered(res["budget_images"])]) or MISSING,
        ),
    ]
    if sums:
        images = sum(float(s.get("images_seen") or 0) for s in sums)
        flops = sum(float(s.get("total_flops") or 0) for s in sums)
        wall = sum(float(s.get("wall_seconds") or 0) for s in sums)
        lines += [
            ("images processed", f"{int(images):,} (sum over {len(sums)} runs)"),
            ("training compute", f"{flops / 1e15:.3g} PFLOP (sum over {len(sums)} runs)"),
            ("training wall time", f"{wall / 3600:.3g} h (sum over {len(sums)} runs)"),
        ]
    return lines


def _first(series: pd.Series) -> Any:
    values = series.dropna()
    return values.iloc[0] if len(values) else None


def _distinct(summaries: list[dict[str, Any]], key: str, results: pd.DataFrame) -> str:
    values = [s[key] for s in summaries if s.get(key) is not None]
    if not values and key in results.columns:
        values = list(results[key].dropna())
    if not values:
        return "not recorded in the run summaries"
    counts = pd.Series([str(v) for v in values]).value_counts()
    return ", ".join(f"{k} ({v} runs)" if len(counts) > 1 else str(k) for k, v in counts.items())


# ---------------------------------------------------------------------------- ID-OOD analysis


def finetune_points(data: StudyData, task: str, metric: str) -> pd.DataFrame:
    """ID/OOD score pairs of every fine-tuning evaluation point of ``task``.

    Returns:
        One row per (run, eval_point): condition columns, seed, ``baseline``, ``id``, ``ood``.
    """
    res = data.results
    rows = res[(res["eval"] == "finetune") & (res["task"] == task) & (res["metric"] == metric)]
    rows = rows[rows["split"].isin(["id", "ood"])]
    if rows.empty:
        return pd.DataFrame(columns=["run", "eval_point", "id", "ood"])
    keys = ["run", "eval_point"]
    scores = rows.pivot_table(
        index=keys, columns="split", values="value", aggfunc="mean", dropna=False
    )
    info_cols = [
        "method",
        "backbone",
        "pretrain_set",
        "budget_images",
        "unique_images",
        "diversity",
        "normalization",
        "seed",
        "baseline",
        *data.factors,
    ]
    info = rows.drop_duplicates("run").set_index("run")[info_cols]
    points = scores.reset_index().join(info, on="run")
    points = points.dropna(subset=[c for c in ("id", "ood") if c in points])
    if not {"id", "ood"} <= set(points.columns):
        return pd.DataFrame(columns=["run", "eval_point", "id", "ood"])
    return points.reset_index(drop=True)


def condition_label(rec: dict[str, Any] | pd.Series, factors: Sequence[str] = ()) -> str:
    """Short legend label of a pretraining condition: ``simclr · world · N=5k``."""
    if bool(rec["baseline"]):
        return f"from scratch · {rec['backbone']}"
    parts = [str(rec["method"]), str(rec["pretrain_set"]), f"N={fmt_count(rec['unique_images'])}"]
    parts += [f"{f}={fmt_value(rec[f])}" for f in factors if f in rec and not _isna(rec[f])]
    return " · ".join(parts)


def robustness_table(
    points: pd.DataFrame, baseline: Baseline, factors: Sequence[str] = ()
) -> pd.DataFrame:
    """Effective robustness per pretraining condition.

    ER of each evaluation point is ``ood - baseline.predict(id)``
    (:func:`divssl.evaluate.robustness.effective_robustness`); each run's ER is the mean over its
    evaluation points, and the condition's ER is summarised over runs (seeds) with
    :func:`seed_summary` (n = runs).

    Returns:
        One row per condition: label, points, id_mean, ood_mean, er (mean), er_low, er_high,
        n (runs), n_kind.
    """
    pts = points[~points["baseline"].astype(bool)].copy()
    if pts.empty:
        return pd.DataFrame()
    pts["er"] = np.asarray(
        effective_robustness(pts["id"].to_numpy(), pts["ood"].to_numpy(), baseline)
    )
    pts["label"] = [condition_label(r, factors) for _, r in pts.iterrows()]
    rows = []
    for label, sub in pts.groupby("label", sort=True):
        per_run = sub.groupby("run")["er"].mean().to_numpy()
        if len(per_run) > 1:
            s = seed_summary(per_run)
            mean, lo, hi, kind = s.mean, s.ci_low, s.ci_high, "seeds"
        else:
            mean, lo, hi, kind = float(per_run[0]), math.nan, math.nan, "runs"
        rows.append(
            {
                "label": label,
                "points": len(sub),
                "id_mean": float(sub["id"].mean()),
                "ood_mean": float(sub["ood"].mean()),
                "er": mean,
                "er_low": lo,
                "er_high": hi,
                "n": len(per_run),
                "n_kind": kind,
            }
        )
    return pd.DataFrame(rows)


def robustness_block(er: pd.DataFrame, task: str, metric: str, baseline: Baseline) -> TableBlock:
    """Display table of :func:`robustness_table`."""
    name = METRIC_LABELS.get(metric, metric)
    display = pd.DataFrame(
        {
            "pretraining condition": er["label"],
            "points": er["points"],
            f"mean ID {name} (%)": [f"{v * 100:.1f}" for v in er["id_mean"]],
            f"mean OOD {name} (%)": [f"{v * 100:.1f}" for v in er["ood_mean"]],
            "effective robustness": [
                format_interval(
                    r["er"],
                    r["er_low"],
                    r["er_high"],
                    int(r["n"]),
                    r["n_kind"],
                    signed=True,
                    unit=" pp",
                )
                for r in records(er)
            ],
        }
    )
    return TableBlock(
        key=slug("robustness", task, metric),
        title=f"Effective robustness on {task} ({METRIC_LABELS.get(metric, metric)})",
        caption=(
            f"Effective robustness = OOD score minus the OOD score the baseline trend predicts "
            f"at the same ID score; the trend is a least-squares line in {baseline.transform} "
            f"space over {baseline.n_models} evaluation points of models fine-tuned from scratch "
            f"(slope {baseline.slope:.3f}, intercept {baseline.intercept:.3f}). Each run's ER is "
            f"the mean over its evaluation points; the cell is the mean ± Student-t 95% "
            f"half-width over runs (n = runs, the seeds); 'no interval' when n = 1. Mean ID/OOD "
            f"columns average all points of the condition (the 'points' column)."
        ),
        display=display,
        numbers=er.reset_index(drop=True),
    )


# ----------------------------------------------------------------------------------- distances


DISTANCE_FORMAT = {"fid": ".2f", "kid": ".4f", "vdna": ".3f"}
DISTANCE_LABELS = {"fid": "FID", "kid": "KID", "vdna": "VisualDNA EMD"}


def distance_tables(data: StudyData) -> list[TableBlock]:
    """One a x b table per (metric, extractor); KID cells carry ± std over subsets."""
    frame = data.distances
    if frame is None or frame.empty:
        return []
    blocks = []
    for group_key, sub in frame.groupby(["metric", "extractor"], sort=True):
        metric, extractor = cast(tuple[str, str], group_key)
        fmt = DISTANCE_FORMAT.get(metric, ".4g")
        cols = ordered(sub["b"])
        body = []
        for a in ordered(sub["a"]):
            row = [str(a)]
            for b in cols:
                hit = sub[(sub["a"] == a) & (sub["b"] == b)]
                row.append(_distance_cell(hit.iloc[0], fmt) if len(hit) else MISSING)
            body.append(row)
        has_std = "std" in sub and sub["std"].notna().any()
        has_n = any(c in sub and sub[c].notna().any() for c in ("n", "n_a"))
        note = (
            " ± std over KID subsets."
            if has_std
            else " Point estimates: the distance file records no interval for this metric."
        )
        note += " n = images of pool a / pool b." if has_n else ""
        blocks.append(
            TableBlock(
                key=slug("distances", metric, extractor),
                title=f"{DISTANCE_LABELS.get(metric, metric)} ({extractor} features) ↓",
                caption=f"Distance between pool a (rows) and pool b (columns); lower is "
                f"closer.{note}",
                display=pd.DataFrame(body, columns=["a \\ b", *map(str, cols)]),
                numbers=sub.reset_index(drop=True),
            )
        )
    return blocks


def _distance_cell(rec: pd.Series, fmt: str) -> str:
    text = format(float(rec["value"]), fmt)
    if "std" in rec and not _isna(rec["std"]):
        text += f" ± {format(float(rec['std']), fmt)}"
    if "n_a" in rec and "n_b" in rec and not (_isna(rec["n_a"]) or _isna(rec["n_b"])):
        text += f" (n={int(rec['n_a'])}/{int(rec['n_b'])})"
    elif "n" in rec and not _isna(rec["n"]):
        text += f" (n={int(rec['n'])})"
    return text


def distance_accuracy_points(data: StudyData) -> pd.DataFrame:
    """Join distances with the primary probe score of models pretrained on one side and
    evaluated on the other (``a``/``b`` = pretraining set and task, either way round;
    ``task:split`` names select that split).

    A distance describes a whole pool, so of the subsets of one pretraining set only the largest
    N is kept.

    Returns:
        One row per (distance metric, extractor, method, backbone, C, pretraining set, task,
        split): distance, mean, ci_low, ci_high, n, n_kind.
    """
    if data.distances is None or data.distances.empty:
        return pd.DataFrame()
    probe = primary_probe(data.results)
    stats = summarize_seeds(probe, data.condition)
    rows = []
    for d in data.distances.itertuples(index=False):
        for pre, other in ((d.a, d.b), (d.b, d.a)):
            task, _, split = str(other).partition(":")
            hit = stats[(stats["pretrain_set"] == str(pre)) & (stats["task"] == task)]
            hit = hit[hit["split"] == (split or "id")]
            for rec in records(hit):
                rows.append(
                    {
                        **rec,
                        "distance": float(cast(float, d.value)),
                        "distance_metric": d.metric,
                        "extractor": d.extractor,
                        "a": d.a,
                        "b": d.b,
                    }
                )
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    keys = ["distance_metric", "extractor", *data.condition]
    out = out.drop_duplicates(subset=[k for k in keys if k in out])
    # A distance describes the whole pool: keep the model pretrained on its largest subset N.
    group = [k for k in keys if k not in ("unique_images", "diversity", "epochs")]
    largest = out.groupby(group, dropna=False)["unique_images"].transform("max")
    keep = out["unique_images"].eq(largest) | largest.isna()
    return out[keep].reset_index(drop=True)
