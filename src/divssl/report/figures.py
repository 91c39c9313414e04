"""Report figures (matplotlib, Agg): paper-style plots computed from the results store.

* :func:`figure3`: bars of B ∪ A variants against the compute-normalized baseline on B (black,
  dashed) and the epoch-normalized baseline on B of the supplementary A.2 (vermillion, dashed),
  with 95% error bars (Hammoud et al. 2024, Fig. 3 and supp. Fig. 1).
* :func:`figure4`: saturation curves, score vs pretraining diversity D on a log axis, one line per
  method/backbone with its 95% band (Fig. 4).
* :func:`id_ood_figure`: fine-tuned models on logit-scaled ID and OOD axes with the baseline
  trend of models trained from scratch (:func:`~divssl.evaluate.robustness.fit_baseline`) and its
  95% OLS t-interval band (:func:`~divssl.evaluate.robustness.bootstrap_band`), effective
  robustness in the legend (Ramanujan et al. 2023; Taori et al. 2020).
* :func:`distance_figure`: distance between pretraining set and task vs downstream score, with
  Spearman's rank correlation (``scipy.stats.spearmanr``) and n in the title (paper Table 3).
* :func:`vendi_figure`: score vs N beside score vs the pretraining subset's measured diversity
  (Vendi score, Friedman & Dieng 2023), with Spearman's ρ of each, and every pool's Vendi score.

Colours are the Okabe-Ito colour-blind-safe palette, doubled by marker shapes and bar hatches;
every axis is labelled with its unit. Each figure is written as a full-resolution SVG and a PNG at
200 dpi, atomically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator
from scipy import special
from scipy.stats import spearmanr

if TYPE_CHECKING:  # type-only: matplotlib.typing is not in every supported matplotlib
    from matplotlib.typing import RcKeyType

from divssl.evaluate.robustness import Baseline, bootstrap_band, fit_baseline
from divssl.io import atomic_write_bytes, atomic_write_text
from divssl.report.tables import (
    BASELINE_LABELS,
    DISTANCE_LABELS,
    METRIC_LABELS,
    MISSING,
    StudyData,
    TableBlock,
    cell,
    condition_label,
    distance_accuracy_points,
    finetune_points,
    fmt_count,
    fmt_value,
    format_interval,
    ordered,
    primary_metric,
    primary_probe,
    records,
    robustness_block,
    robustness_table,
    row_dict,
    setting_label,
    slug,
    spec_order,
    summarize_seeds,
    wide_table,
)

# Okabe & Ito (2008) colour-blind-safe palette; black and vermillion are kept for the two
# baselines of Figure 3, so data series use the other six.
OKABE_ITO = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "green": "#009E73",
    "purple": "#CC79A7",
    "sky": "#56B4E9",
    "yellow": "#F0E442",
    "vermillion": "#D55E00",
    "black": "#000000",
}
SERIES = tuple(OKABE_ITO[c] for c in ("blue", "orange", "green", "purple", "sky", "yellow"))
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "<", ">")
HATCHES = ("", "//", "..", "xx", "\\\\", "oo")
COMPUTE_COLOR = OKABE_ITO["black"]
EPOCH_COLOR = OKABE_ITO["vermillion"]
BASELINE_COLOR = "#777777"
DPI = 200
RC: dict[RcKeyType, Any] = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "svg.fonttype": "path",
}
BASELINE_COMPOSITION = "B"  # the paper's baseline set B of Figure 3


@dataclass
class FigureBlock:
    """One figure written to disk.

    Attributes:
        key: file stem (``figure3_world_id_convnet_tiny_C50000``).
        title: heading.
        caption: what is plotted, with n and interval definitions.
        svg: path of the SVG file.
        png: path of the PNG file (200 dpi).
    """

    key: str
    title: str
    caption: str
    svg: Path
    png: Path


@dataclass
class Panel:
    """Blocks and notes produced by a figure builder."""

    blocks: list[TableBlock | FigureBlock]
    notes: list[str]


# ------------------------------------------------------------------------------------ saving


def new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure with constrained layout (no global state, Agg rendering)."""
    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Figure, out_dir: Path, key: str) -> tuple[Path, Path]:
    """Write ``key.svg`` and ``key.png`` (``DPI``) atomically; ids in the SVG are salted with
    ``key`` so several figures can share one HTML page.

    Returns:
        (svg path, png path).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    svg_path, png_path = out_dir / f"{key}.svg", out_dir / f"{key}.png"
    with matplotlib.rc_context({**RC, "svg.hashsalt": key}):
        text = io.StringIO()
        fig.savefig(text, format="svg", metadata={"Date": None}, bbox_inches="tight")
        data = io.BytesIO()
        fig.savefig(data, format="png", dpi=DPI, bbox_inches="tight")
    atomic_write_text(svg_path, text.getvalue())
    atomic_write_bytes(png_path, data.getvalue())
    return svg_path, png_path


def _pct(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64) * 100.0


def _yerr(stats: pd.DataFrame) -> np.ndarray:
    """(2, n) error-bar lengths in percent; NaN where no interval was recorded."""
    mean = stats["mean"].to_numpy(dtype=np.float64)
    lo = stats["ci_low"].to_numpy(dtype=np.float64)
    hi = stats["ci_high"].to_numpy(dtype=np.float64)
    return _pct(np.stack([mean - lo, hi - mean]))


def _zoom(ax: Axes, values: Sequence[float], min_span: float = 2.0) -> None:
    """Set y limits around the finite values (percent) with a 15% margin."""
    vals = np.asarray([v for v in values if math.isfinite(v)])
    if vals.size == 0:
        return
    lo, hi = float(vals.min()), float(vals.max())
    span = max(hi - lo, min_span)
    pad = 0.15 * span
    ax.set_ylim(max(lo - pad, 0.0), min(hi + pad, 100.0) if hi <= 100.0 else hi + pad)


def _score_label(metric: str, setting: str) -> str:
    return f"{METRIC_LABELS.get(metric, metric)} (%)\n{setting}"


def _value_ticks(
    axis: Any, values: Sequence[float] | pd.Series, label: Any, limit: int = 8
) -> None:
    """Major ticks at the data's own values (at most ``limit``), no minor ticks."""
    vals = sorted({float(v) for v in values if math.isfinite(float(v))})
    if not vals or len(vals) > limit:
        return
    axis.set_major_locator(FixedLocator(vals))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda v, _: label(v)))


# ----------------------------------------------------------------------------------- Figure 3


def figure3(data: StudyData, out_dir: Path, first_number: int = 1) -> Panel:
    """Figure 3-style bars per (task, backbone, C), one panel per method.

    Bars: compute-normalized B ∪ A compositions (mean with 95% error bars). Lines: B trained at the
    same C (compute-normalized, black dashed, 95% band shaded) and B trained for the same number
    of epochs E as the bars (epoch-normalized, supp. A.2, vermillion dashed). The numbers behind
    each figure follow it as a table.
    """
    rows = primary_probe(data.results, normalization=None)
    rows = rows[(rows["split"] == "id") & rows["composition"].notna()]
    notes: list[str] = []
    if rows.empty:
        return Panel([], ["no probe results of named compositions (grid axis `composition`)"])
    if BASELINE_COMPOSITION not in set(rows["pretrain_set"]):
        return Panel([], [f"no composition named {BASELINE_COMPOSITION!r} (the baseline set B)"])
    stats = summarize_seeds(rows, data.condition)
    stats["normalization"] = stats["normalization"].fillna("compute")
    blocks: list[TableBlock | FigureBlock] = []
    for (task, backbone), group in stats.groupby(["task", "backbone"], sort=True):
        compute = group[group["normalization"] == "compute"]
        epoch = group[
            (group["normalization"] == "epoch") & (group["pretrain_set"] == BASELINE_COMPOSITION)
        ]
        for c, sub in compute.groupby("budget_images", sort=True):
            made = _figure3_group(
                data, sub, epoch, str(task), str(backbone), float(c), out_dir, notes
            )
            blocks.extend(made)
    if not blocks:
        notes.insert(0, "no (task, backbone, C) with both B and a B ∪ A composition")
    return Panel(blocks, notes)


def _figure3_group(
    data: StudyData,
    sub: pd.DataFrame,
    epoch: pd.DataFrame,
    task: str,
    backbone: str,
    c: float,
    out_dir: Path,
    notes: list[str],
) -> list[TableBlock | FigureBlock]:
    methods = ordered(sub["method"], spec_order(data.spec, "method"))
    comps = [
        x
        for x in ordered(sub["pretrain_set"], spec_order(data.spec, "composition"))
        if x != BASELINE_COMPOSITION
    ]
    if not comps or not (sub["pretrain_set"] == BASELINE_COMPOSITION).any():
        return []
    metric = str(sub["metric"].iloc[0])
    setting = setting_label(sub["eval"].iloc[0], sub["label_fraction"].iloc[0], sub["k"].iloc[0])
    ncols = min(len(methods), 4)
    nrows = math.ceil(len(methods) / ncols)
    width = max(2.2 + 0.55 * len(comps), 3.4)
    fig = new_figure(width * ncols, 3.9 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    colors = {comp: SERIES[i % len(SERIES)] for i, comp in enumerate(comps)}
    hatches = {comp: HATCHES[i % len(HATCHES)] for i, comp in enumerate(comps)}
    table_rows = []
    for ax, method in zip(axes, methods, strict=False):
        ms = sub[sub["method"] == method]
        bars = ms[ms["pretrain_set"] != BASELINE_COMPOSITION]
        rank = {comp: i for i, comp in enumerate(comps)}
        bars = bars.iloc[np.argsort([rank[x] for x in bars["pretrain_set"]], kind="stable")]
        base = ms[ms["pretrain_set"] == BASELINE_COMPOSITION]
        ep = _matching_epoch(epoch[epoch["method"] == method], bars)
        if ep is None:
            notes.append(f"{task}/{backbone}/{method}: no epoch-normalized run of B")
        _draw_figure3_panel(ax, method, bars, base, ep, colors, hatches)
        ax.set_ylabel(_score_label(metric, setting))
        table_rows += [*records(bars), *records(base)]
        if ep is not None:
            table_rows.append({**ep, "pretrain_set": f"{BASELINE_COMPOSITION} (epoch-normalized)"})
    for ax in axes[len(methods) :]:
        ax.set_visible(False)
    fig.legend(
        handles=[
            Line2D(
                [],
                [],
                color=COMPUTE_COLOR,
                linestyle="--",
                label=f"B, compute-normalized: same C = {fmt_count(c)} (shaded: 95% interval)",
            ),
            Line2D(
                [],
                [],
                color=EPOCH_COLOR,
                linestyle="--",
                label="B, epoch-normalized: same E as the bars (smaller C)",
            ),
        ],
        loc="outside lower center",
        ncols=1,
        frameon=False,
    )
    fig.suptitle(f"B ∪ A vs B at C = {fmt_count(c)} images — {task}, {backbone}")
    key = slug("figure3", task, backbone, int(c))
    svg, png = save_figure(fig, out_dir, key)
    caption = (
        f"Bars: {METRIC_LABELS.get(metric, metric)} (%, {setting}) on the ID test split of {task} "
        f"after pretraining {backbone} on each B ∪ A composition for C = {int(c):,} images "
        f"(compute-normalized). Black dashed line: B at the same C (shaded: its 95% interval). "
        f"Vermillion dashed line: B trained for the same number of epochs E as the bars "
        f"(epoch-normalized, so it processes fewer images). Error bars: 95% Student-t interval "
        f"over seeds, or the bootstrap interval over test images for a single seed; n per bar "
        f"in the table below."
    )
    numbers = pd.DataFrame(table_rows)
    table = TableBlock(
        key=f"{key}_numbers",
        title=f"Numbers of the figure: {task}, {backbone}, C = {fmt_count(c)}",
        caption=f"{METRIC_LABELS.get(metric, metric)} (%), {setting}. 'B (epoch-normalized)' "
        f"was trained for the bars' E at a smaller C.",
        display=wide_table(
            numbers.sort_values(["pretrain_set"]),
            ["pretrain_set"],
            ["pretraining set"],
            "method",
            methods,
        ),
        numbers=numbers,
    )
    title = f"B ∪ A compositions vs the baseline set B ({task}, {backbone}, C = {fmt_count(c)})"
    return [FigureBlock(key, title, caption, svg, png), table]


def _matching_epoch(epoch: pd.DataFrame, bars: pd.DataFrame) -> dict[str, Any] | None:
    """The epoch-normalized B whose E is closest to the bars' median E."""
    if epoch.empty:
        return None
    target = float(np.nanmedian(bars["epochs"])) if bars["epochs"].notna().any() else math.nan
    if not math.isfinite(target) or epoch["epochs"].isna().all():
        return row_dict(epoch.iloc[0])
    pos = int(np.nanargmin((epoch["epochs"] - target).abs().to_numpy(float)))  # idxmin, by position
    return row_dict(epoch.iloc[pos])


def _draw_figure3_panel(
    ax: Axes,
    method: str,
    bars: pd.DataFrame,
    base: pd.DataFrame,
    ep: dict[str, Any] | None,
    colors: dict[str, str],
    hatches: dict[str, str],
) -> None:
    x = np.arange(len(bars))
    means = _pct(bars["mean"])
    container = ax.bar(
        x,
        means,
        width=0.7,
        yerr=_yerr(bars),
        capsize=3,
        edgecolor="black",
        linewidth=0.6,
        color=[colors[p] for p in bars["pretrain_set"]],
        error_kw={"elinewidth": 0.8},
    )
    for patch, comp in zip(container.patches, bars["pretrain_set"], strict=True):
        patch.set_hatch(hatches[comp])
    ax.set_xticks(x, [str(p) for p in bars["pretrain_set"]], rotation=30, ha="right")
    ax.set_xlabel("pretraining set (B ∪ A)")
    values = [*means, *_pct(bars["ci_low"]), *_pct(bars["ci_high"])]
    if len(base):
        b = row_dict(base.iloc[0])
        if math.isfinite(b["ci_low"]) and math.isfinite(b["ci_high"]):
            ax.axhspan(
                b["ci_low"] * 100, b["ci_high"] * 100, color=COMPUTE_COLOR, alpha=0.08, linewidth=0
            )
        values += [b["mean"] * 100, b["ci_low"] * 100, b["ci_high"] * 100]
        _baseline_line(ax, b, COMPUTE_COLOR, "B, same C")
    if ep is not None:
        values.append(ep["mean"] * 100)
        _baseline_line(ax, ep, EPOCH_COLOR, "B, same E")
    _zoom(ax, values)
    ax.set_title(method)


def _baseline_line(ax: Axes, rec: dict[str, Any], color: str, name: str) -> None:
    """Dashed horizontal line with its value, interval and n written above its right end."""
    ax.axhline(rec["mean"] * 100, color=color, linestyle="--", linewidth=1.3)
    text = format_interval(rec["mean"], rec["ci_low"], rec["ci_high"], int(rec["n"]), rec["n_kind"])
    ax.text(
        0.99,
        rec["mean"] * 100,
        f"{name}: {text}",
        color=color,
        fontsize=6.5,
        ha="right",
        va="bottom",
        transform=ax.get_yaxis_transform(),
        bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0, "pad": 0.5},
    )


# ----------------------------------------------------------------------------------- Figure 4


def figure4(data: StudyData, out_dir: Path) -> Panel:
    """Saturation curves: score vs D (log x) per (task, C), panels per test split, one line per
    method/backbone/pretraining set with its 95% band; secondary top axis shows N = D·C."""
    rows = primary_probe(data.results)
    rows = rows[rows["composition"].isna()]
    stats = summarize_seeds(rows, data.condition)
    blocks: list[TableBlock | FigureBlock] = []
    notes: list[str] = []
    line_keys = ["method", "backbone", "pretrain_set", *data.factors]
    for group_key, group in stats.groupby(["task", "budget_images"], sort=True):
        task, c = cast(tuple[str, float], group_key)
        counts = group.groupby(line_keys + ["split"], dropna=False)["diversity"].nunique()
        if (counts < 2).all():
            notes.append(f"{task}, C = {fmt_count(c)}: fewer than two diversities D per line")
            continue
        blocks.append(_figure4_group(data, group, line_keys, str(task), float(c), out_dir))
    if not blocks and not notes:
        notes.append("no compute-normalized probe results of plain pools")
    return Panel(blocks, notes)


def _figure4_group(
    data: StudyData, group: pd.DataFrame, line_keys: list[str], task: str, c: float, out_dir: Path
) -> FigureBlock:
    splits = ordered(group["split"], ["id", "ood"])
    fig = new_figure(max(4.6 * len(splits), 6.0), 4.0)
    axes = np.atleast_1d(fig.subplots(1, len(splits), squeeze=False)).ravel()
    metric = str(group["metric"].iloc[0])
    setting = setting_label(
        group["eval"].iloc[0], group["label_fraction"].iloc[0], group["k"].iloc[0]
    )
    lines = list(dict.fromkeys(tuple(r) for r in group[line_keys].itertuples(index=False)))
    style = {ln: (SERIES[i % len(SERIES)], MARKERS[i % len(MARKERS)]) for i, ln in enumerate(lines)}
    n_sets = group["pretrain_set"].nunique()
    handles: dict[str, Line2D] = {}
    for ax, split in zip(axes, splits, strict=False):
        ss = group[group["split"] == split]
        for ln in lines:
            sel = np.logical_and.reduce([_eq(ss[k], v) for k, v in zip(line_keys, ln, strict=True)])
            pts = ss[sel].sort_values("diversity")
            if pts.empty:
                continue
            color, marker = style[ln]
            label = " / ".join(str(v) for v in (ln if n_sets > 1 else (ln[0], ln[1], *ln[3:])))
            (h,) = ax.plot(
                pts["diversity"],
                _pct(pts["mean"]),
                color=color,
                marker=marker,
                markersize=4.5,
                linewidth=1.3,
                label=label,
            )
            handles.setdefault(label, h)
            lo, hi = _pct(pts["ci_low"]), _pct(pts["ci_high"])
            ok = np.isfinite(lo) & np.isfinite(hi)
            if ok.any():
                ax.fill_between(
                    pts["diversity"][ok], lo[ok], hi[ok], color=color, alpha=0.18, linewidth=0
                )
        for label, h in reference_lines(ax, data.baselines, task, group, str(split)).items():
            handles.setdefault(label, h)
        ax.set_xscale("log")
        ax.set_xlabel("pretraining diversity D = N / C (log scale)")
        ax.set_ylabel(_score_label(metric, setting))
        ax.set_title(f"{task} — {str(split).upper()} test split")
        _value_ticks(ax.xaxis, ss["diversity"], lambda v: f"{v:.3g}")
        top = ax.secondary_xaxis("top", functions=(lambda d: d * c, lambda n: n / c))
        top.set_xlabel("N, unique images (log scale)", fontsize=7.5)
        _value_ticks(top.xaxis, ss["diversity"] * c, fmt_count)
    fig.legend(
        handles=list(handles.values()),
        loc="outside lower center",
        ncols=min(len(handles), 3),
        frameon=False,
        title="method / backbone" + (" / set" if n_sets > 1 else ""),
    )
    fig.suptitle(f"Score vs pretraining diversity at C = {fmt_count(c)} images")
    key = slug("figure4", task, int(c))
    svg, png = save_figure(fig, out_dir, key)
    caption = (
        f"{METRIC_LABELS.get(metric, metric)} (%, {setting}) on {task} vs pretraining diversity "
        f"D = N/C at a fixed budget C = {int(c):,} images (compute-normalized, plain pools). "
        f"Lines: mean over seeds; bands: 95% Student-t interval over seeds (bootstrap interval "
        f"over test images for single-seed points). Per-point n in the Table 1-style section."
    )
    return FigureBlock(
        key, f"Saturation with diversity: {task}, C = {fmt_count(c)}", caption, svg, png
    )


# Reference lines of baselines.json: grey shades and line styles, never a data series' colour.
REFERENCE_STYLES = {
    "pixels_knn": ("#555555", (0, (5, 2))),
    "pixels_logreg": ("#555555", (0, (1, 1.5))),
    "random_init": ("#999999", (0, (3, 1, 1, 1))),
}


def reference_lines(
    ax: Axes, baselines: pd.DataFrame | None, task: str, group: pd.DataFrame, split: str
) -> dict[str, Line2D]:
    """Horizontal reference lines for the baselines that match a panel's probe setting.

    A baseline row matches when its task, evaluation kind, label fraction, k, metric and split
    equal the panel's (``group`` holds one probe setting and metric).

    Returns:
        legend label -> line handle.
    """
    if baselines is None or group.empty:
        return {}
    first = group.iloc[0]
    sel = (baselines["task"] == task) & (baselines["split"] == split)
    sel &= (baselines["eval"] == first["eval"]) & (baselines["metric"] == first["metric"])
    for col in ("label_fraction", "k"):
        sel &= _eq(baselines[col], None if pd.isna(first[col]) else first[col])
    out = {}
    for name, rows in baselines[sel].groupby("baseline", sort=True):
        color, dash = REFERENCE_STYLES.get(str(name), ("#777777", "--"))
        for _, row in rows.iterrows():
            what = "" if name != "random_init" else f" {row.get('backbone', '')}"
            label = f"{BASELINE_LABELS.get(str(name), name)}{what} @ {row['image_size']} px"
            out[label] = ax.axhline(
                100.0 * float(row["value"]), color=color, linestyle=dash, linewidth=1.1, label=label
            )
    return out


def _eq(series: pd.Series, value: Any) -> np.ndarray:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return series.isna().to_numpy()
    return (series == value).to_numpy()


# ---------------------------------------------------------------------------------- ID vs OOD


def id_ood(data: StudyData, out_dir: Path, n_resamples: int = 1000) -> Panel:
    """ID-OOD scatter and effective-robustness table per fine-tuning task."""
    res = data.results
    ft = res[res["eval"] == "finetune"]
    if ft.empty:
        return Panel([], ["no fine-tuning results (evaluation kind `finetune`)"])
    blocks: list[TableBlock | FigureBlock] = []
    notes: list[str] = []
    for task in ordered(ft["task"]):
        metric = primary_metric(ft[ft["task"] == task], ("macro_f1", "top1", "top5"))
        points = finetune_points(data, str(task), str(metric))
        base = points[points["baseline"].astype(bool)] if len(points) else points
        if len(points) == 0:
            notes.append(f"{task}: no paired ID and OOD scores")
            continue
        if len(base) < 2 or base["id"].nunique() < 2:
            notes.append(
                f"{task}: the baseline trend needs at least two from-scratch models "
                f"(baseline=True) with distinct ID scores, found {len(base)}"
            )
            continue
        baseline = fit_baseline(base["id"].to_numpy(), base["ood"].to_numpy())
        er = robustness_table(points, baseline, data.factors)
        blocks.append(
            id_ood_figure(
                points, baseline, er, str(task), str(metric), out_dir, n_resamples, data.factors
            )
        )
        if not er.empty:
            blocks.append(robustness_block(er, str(task), str(metric), baseline))
    return Panel(blocks, notes)


def _logit_ticks(lo: float, hi: float, most: int = 7) -> list[float]:
    """Round scores in [lo, hi] for a logit axis, thinned evenly in logit space to ``most``."""
    candidates = [0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.07]
    candidates += [round(v, 2) for v in np.arange(0.1, 0.91, 0.05)]
    candidates += [0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999]
    ticks = [t for t in candidates if lo <= t <= hi]
    if len(ticks) < 2:
        return [lo, hi]
    if len(ticks) > most:
        targets = np.linspace(special.logit(ticks[0]), special.logit(ticks[-1]), most)
        logits = special.logit(np.asarray(ticks))
        ticks = sorted({ticks[int(np.abs(logits - t).argmin())] for t in targets})
    return ticks


def id_ood_figure(
    points: pd.DataFrame,
    baseline: Baseline,
    er: pd.DataFrame,
    task: str,
    metric: str,
    out_dir: Path,
    n_resamples: int = 1000,
    factors: Sequence[str] = (),
) -> FigureBlock:
    """Scatter of ID vs OOD scores on logit axes with the baseline trend and its t-interval band.

    Args:
        points: from :func:`~divssl.report.tables.finetune_points` (id, ood in [0, 1]).
        baseline: trend fitted on the baseline points.
        er: from :func:`~divssl.report.tables.robustness_table` (legend entries).
        task: task name.
        metric: score name.
        out_dir: figure folder.
        n_resamples: bootstrap resamples (only for a percentile band; the default t band has none).
        factors: extra grid factors that name conditions.
    """
    clip = 1e-3
    xs = np.clip(points[["id", "ood"]].to_numpy(dtype=np.float64), clip, 1 - clip)
    t = special.logit(xs)
    pad = 0.25 * max(float(np.ptp(t)), 0.5)
    lo, hi = special.expit(t.min() - pad), special.expit(t.max() + pad)
    base = points[points["baseline"].astype(bool)]
    grid = special.expit(np.linspace(special.logit(lo), special.logit(hi), 120))
    # The t-interval needs m - 2 >= 1 degrees of freedom: with two baseline models only the
    # line is drawn (the caption says so).
    band = (
        bootstrap_band(
            base["id"].to_numpy(),
            base["ood"].to_numpy(),
            grid,
            n_resamples=n_resamples,
            seed=0,
            transform=baseline.transform,
        )
        if len(base) >= 3
        else None
    )
    fig = new_figure(8.0, 4.6)
    ax = fig.subplots()
    ax.set_xscale("logit")
    ax.set_yscale("logit")
    if band is not None:
        ax.fill_between(
            band.grid,
            band.low,
            band.high,
            color=BASELINE_COLOR,
            alpha=0.25,
            linewidth=0,
            label=f"baseline trend, {band.describe()}",
        )
    ax.plot(
        grid,
        baseline.predict(grid),
        color=COMPUTE_COLOR,
        linewidth=1.3,
        label=f"baseline trend ({baseline.transform} fit, n={baseline.n_models} points)",
    )
    ax.plot(
        [lo, hi],
        [lo, hi],
        color=BASELINE_COLOR,
        linestyle=":",
        linewidth=0.9,
        label="y = x (no drop under shift)",
    )
    ax.scatter(
        np.clip(base["id"], clip, 1 - clip),
        np.clip(base["ood"], clip, 1 - clip),
        marker="x",
        s=22,
        color=BASELINE_COLOR,
        linewidths=1.0,
        label=f"from scratch (baseline models, {len(base)} points)",
    )
    er_text = (
        {
            r["label"]: format_interval(
                r["er"],
                r["er_low"],
                r["er_high"],
                int(r["n"]),
                r["n_kind"],
                signed=True,
                unit=" pp",
            )
            for r in records(er)
        }
        if len(er)
        else {}
    )
    pre = points[~points["baseline"].astype(bool)].copy()
    pre["label"] = [condition_label(r, factors) for _, r in pre.iterrows()]
    for i, label in enumerate(ordered(pre["label"])):
        sel = pre[pre["label"] == label]
        ax.scatter(
            np.clip(sel["id"], clip, 1 - clip),
            np.clip(sel["ood"], clip, 1 - clip),
            marker=MARKERS[i % len(MARKERS)],
            s=26,
            color=SERIES[i % len(SERIES)],
            edgecolors="black",
            linewidths=0.4,
            label=f"{label}: ER {er_text.get(label, MISSING)}",
        )
    ticks = _logit_ticks(lo, hi)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(FixedLocator(ticks))
        axis.set_minor_locator(NullLocator())
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v * 100:g}"))
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    name = METRIC_LABELS.get(metric, metric)
    ax.set_xlabel(f"ID test {name} (%, logit scale)")
    ax.set_ylabel(f"OOD test {name} (%, logit scale)")
    ax.set_title(f"Fine-tuning on {task}: ID vs OOD")
    fig.legend(loc="outside right upper", fontsize=6.5)
    key = slug("id_ood", task, metric)
    svg, png = save_figure(fig, out_dir, key)
    caption = (
        f"Each point is one evaluation point of one fine-tuning run on {task} ({name}, both axes "
        f"logit-scaled). Grey crosses: models fine-tuned from scratch, which define the baseline "
        f"trend (least-squares line in {baseline.transform} space, n = {baseline.n_models} "
        f"points) and "
        + (
            f"its pointwise {band.describe()} (m - 2 degrees of freedom). Legend: "
            if band is not None
            else "no band (a band needs at least 3 baseline models). Legend: "
        )
        + "effective robustness (ER, percentage points above the trend) per pretraining "
        "condition, mean ± 95% interval over runs with n = runs."
    )
    return FigureBlock(key, f"ID vs OOD after fine-tuning: {task} ({name})", caption, svg, png)


# ---------------------------------------------------------------------------------- distances


def distance_figure(data: StudyData, out_dir: Path) -> Panel:
    """Distance (pretraining set ↔ task) vs probe score, one panel per (metric, extractor),
    Spearman's ρ and n in each panel title."""
    pts = distance_accuracy_points(data)
    if pts.empty:
        return Panel([], ["no distance row links a pretraining set to an evaluated task"])
    panels = list(pts.groupby(["distance_metric", "extractor"], sort=True))
    fig = new_figure(4.2 * len(panels) + 2.4, 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)).ravel()
    series = ordered(zip(pts["method"], pts["backbone"], strict=True))
    style = {s: (SERIES[i % len(SERIES)], MARKERS[i % len(MARKERS)]) for i, s in enumerate(series)}
    handles: dict[str, Any] = {}
    stats_rows: list[dict[str, Any]] = []
    for ax, ((metric, extractor), sub) in zip(axes, panels, strict=False):
        for s in series:
            sel = sub[(sub["method"] == s[0]) & (sub["backbone"] == s[1])]
            if sel.empty:
                continue
            color, marker = style[s]
            h = ax.errorbar(
                sel["distance"],
                _pct(sel["mean"]),
                yerr=_yerr(sel),
                fmt=marker,
                color=color,
                markersize=5,
                capsize=2,
                elinewidth=0.8,
                markeredgecolor="black",
                markeredgewidth=0.4,
                label=f"{s[0]} / {s[1]}",
            )
            handles.setdefault(f"{s[0]} / {s[1]}", h)
            several = sub["task"].nunique() > 1
            for r in sel.itertuples():
                text = f"{r.pretrain_set}→{r.task}" if several else str(r.pretrain_set)
                ax.annotate(
                    text,
                    (r.distance, r.mean * 100),
                    textcoords="offset points",
                    xytext=(4, 3),
                    fontsize=6,
                )
        rho, p, n = _spearman(sub["distance"].to_numpy(), sub["mean"].to_numpy())
        stats_rows.append({"metric": metric, "extractor": extractor, "rho": rho, "p": p, "n": n})
        name = DISTANCE_LABELS.get(str(metric), str(metric))
        rho_text = (
            f"Spearman ρ = {rho:+.2f} (p = {p:.2g}, n = {n})"
            if math.isfinite(rho)
            else f"Spearman ρ undefined (n = {n}{', constant input' if n >= 3 else ''})"
        )
        ax.set_title(f"{name} ({extractor})\n{rho_text}")
        ax.set_xlabel(f"{name} between pretraining set and task\n(lower = closer)")
        ax.xaxis.set_major_locator(MaxNLocator(5))
        metric0 = str(sub["metric"].iloc[0])
        setting = setting_label(
            sub["eval"].iloc[0], sub["label_fraction"].iloc[0], sub["k"].iloc[0]
        )
        ax.set_ylabel(_score_label(metric0, setting))
    fig.legend(handles=list(handles.values()), loc="outside right upper", title="method / backbone")
    fig.suptitle("Distribution distance vs downstream score")
    svg, png = save_figure(fig, out_dir, "distance_vs_score")
    rho_rows = "; ".join(
        f"{DISTANCE_LABELS.get(str(r['metric']), r['metric'])} ({r['extractor']}): ρ = "
        f"{r['rho']:+.2f}, n = {r['n']}"
        if math.isfinite(r["rho"])
        else f"{r['metric']} ({r['extractor']}): ρ undefined, n = {r['n']}"
        for r in stats_rows
    )
    caption = (
        "Each point: the distance between a pretraining set and a task (pool a ↔ pool b) against "
        "the primary probe score of models pretrained on that set (its largest subset N) and "
        "evaluated on that task (mean over seeds, 95% error bars). Spearman's rank correlation "
        f"over the points of each panel (scipy.stats.spearmanr): {rho_rows}. A negative ρ "
        "means that closer pretraining data scores higher."
    )
    block = FigureBlock("distance_vs_score", "Distance vs downstream score", caption, svg, png)
    return Panel([block], [])


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    n = int(len(x))
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, n
    res = spearmanr(x, y)
    return float(res.statistic), float(res.pvalue), n


# ------------------------------------------------------------------------ measured diversity


def vendi_figure(data: StudyData, out_dir: Path) -> Panel:
    """Score vs N next to score vs measured diversity (Vendi score), per (task, C).

    Reads ``data.vendi`` (``vendi.csv`` of :mod:`divssl.study.diversity`): a table of every
    pool's Vendi score, then per task and budget C one figure with two panels sharing the score
    axis: the primary probe score (ID split, mean over seeds with 95% intervals) against the
    number of unique images N (log scale) and against the Vendi score of the run's pretraining
    subset (mean over the seeds' subsets), one line per method / backbone / pretraining set,
    with Spearman's ρ of each panel in its title. The numbers follow as a table.
    """
    if data.vendi is None:
        return Panel([], [])
    blocks: list[TableBlock | FigureBlock] = []
    pools = data.vendi[data.vendi["kind"] == "pool"]
    if not pools.empty:
        blocks.append(_vendi_pool_table(pools))
    subsets = data.vendi[(data.vendi["kind"] == "subset") & data.vendi["vendi"].notna()]
    rows = primary_probe(data.results)
    rows = rows[rows["split"] == "id"].merge(subsets[["run", "vendi"]], on="run", how="inner")
    if rows.empty:
        return Panel(blocks, ["no ID probe result of a run whose subset has a Vendi score"])
    stats = summarize_seeds(rows, data.condition)
    # The same groups in the same (sorted) order: the mean Vendi score of each point's runs.
    stats["vendi"] = summarize_seeds(rows.assign(value=rows["vendi"]), data.condition)["mean"]
    line_keys = ["method", "backbone", "pretrain_set", *data.factors]
    notes: list[str] = []
    for group_key, group in stats.groupby(["task", "budget_images"], sort=True):
        task, c = cast(tuple[str, float], group_key)
        if len(group) < 2:
            notes.append(f"{task}, C = {fmt_count(c)}: fewer than two points")
            continue
        blocks += _vendi_group(group, line_keys, str(task), float(c), out_dir)
    return Panel(blocks, notes)


def _vendi_pool_table(pools: pd.DataFrame) -> TableBlock:
    numbers = pools.reset_index(drop=True)

    def column(name: str) -> list[Any]:
        return numbers[name].tolist() if name in numbers else [math.nan] * len(numbers)

    display = pd.DataFrame(
        {
            "pool": [str(v) for v in column("name")],
            "images scored": [fmt_value(v) for v in column("n")],
            "Vendi score": [_fmt_vendi(v) for v in column("vendi")],
            "per-class mean": [_fmt_vendi(v) for v in column("vendi_class_mean")],
        }
    )
    extractors = ", ".join(sorted({str(v) for v in column("extractor")}))
    return TableBlock(
        key="vendi_pools",
        title="Vendi score of every pool",
        caption=(
            "Vendi score (Friedman & Dieng 2023): exp of the Shannon entropy of the eigenvalues "
            "of K/n, K the cosine-similarity matrix of the images' features "
            f"({extractors} features), i.e. the effective number of distinct images, from 1 (all "
            "alike) to n (all dissimilar); per-class mean: the mean of the classes' own scores. "
            "Scored on a seeded sample of each pool (images scored)."
        ),
        display=display,
        numbers=numbers,
    )


def _fmt_vendi(value: Any) -> str:
    return MISSING if value is None or not math.isfinite(float(value)) else f"{float(value):.4g}"


def _vendi_group(
    group: pd.DataFrame, line_keys: list[str], task: str, c: float, out_dir: Path
) -> list[TableBlock | FigureBlock]:
    fig = new_figure(9.6, 4.0)
    ax_n, ax_v = fig.subplots(1, 2, sharey=True)
    metric = str(group["metric"].iloc[0])
    setting = setting_label(
        group["eval"].iloc[0], group["label_fraction"].iloc[0], group["k"].iloc[0]
    )
    lines = list(dict.fromkeys(tuple(r) for r in group[line_keys].itertuples(index=False)))
    handles: dict[str, Any] = {}
    for i, ln in enumerate(lines):
        sel = np.logical_and.reduce([_eq(group[k], v) for k, v in zip(line_keys, ln, strict=True)])
        pts = group[sel]
        color, marker = SERIES[i % len(SERIES)], MARKERS[i % len(MARKERS)]
        label = " / ".join(str(v) for v in ln if not (isinstance(v, float) and math.isnan(v)))
        for ax, x in ((ax_n, "unique_images"), (ax_v, "vendi")):
            p = pts.sort_values(x)
            h = ax.errorbar(
                p[x],
                _pct(p["mean"]),
                yerr=_yerr(p),
                color=color,
                marker=marker,
                markersize=4.5,
                linewidth=1.3,
                capsize=2,
                elinewidth=0.8,
                label=label,
            )
            handles.setdefault(label, h)
    rho_text = {}
    for x, name in (("unique_images", "N"), ("vendi", "Vendi")):
        rho, p, n = _spearman(group[x].to_numpy(float), group["mean"].to_numpy(float))
        rho_text[name] = (
            f"ρ = {rho:+.2f} (p = {p:.2g}, n = {n})"
            if math.isfinite(rho)
            else f"ρ undefined (n = {n})"
        )
    ax_n.set_xscale("log")
    ax_n.set_xlabel("N, unique images in the pretraining set (log scale)")
    _value_ticks(ax_n.xaxis, group["unique_images"], fmt_count)
    ax_n.set_title(f"counted: score vs N\nSpearman {rho_text['N']}")
    ax_v.set_xlabel("Vendi score of the pretraining set\n(effective number of distinct images)")
    ax_v.xaxis.set_major_locator(MaxNLocator(5))
    ax_v.set_title(f"measured: score vs Vendi score\nSpearman {rho_text['Vendi']}")
    ax_n.set_ylabel(_score_label(metric, setting))
    fig.legend(
        handles=list(handles.values()),
        loc="outside lower center",
        ncols=min(len(handles), 3),
        frameon=False,
        title="method / backbone / set",
    )
    fig.suptitle(f"{task}: score vs counted and measured diversity at C = {fmt_count(c)} images")
    key = slug("vendi", task, int(c))
    svg, png = save_figure(fig, out_dir, key)
    caption = (
        f"{METRIC_LABELS.get(metric, metric)} (%, {setting}) on the ID test split of {task} at a "
        f"fixed budget C = {int(c):,} images, against the number of unique images N (left) and "
        "against the Vendi score of the run's pretraining subset (right; mean over the seeds' "
        "subsets). Points: mean over seeds; error bars: 95% Student-t interval over seeds "
        "(bootstrap interval over test images for single-seed points). Spearman's rank "
        f"correlation over all points: vs N {rho_text['N']}, vs Vendi {rho_text['Vendi']}. "
        "Nested subsets of one ordering rank the same on both axes unless the Vendi score "
        "saturates or compositions differ in measured diversity at equal N."
    )
    numbers = group.reset_index(drop=True)
    display = pd.DataFrame(
        {
            "method / backbone / set": [
                " / ".join(str(r[k]) for k in line_keys[:3]) for r in records(numbers)
            ],
            "N": [fmt_count(v) for v in numbers["unique_images"]],
            "Vendi score": [_fmt_vendi(v) for v in numbers["vendi"]],
            "score (%)": [cell(r) for r in records(numbers)],
        }
    )
    table = TableBlock(
        key=f"{key}_numbers",
        title=f"Numbers behind the Vendi figure: {task}, C = {fmt_count(c)}",
        caption="Each point of the figure: N, the mean Vendi score of its runs' subsets and the "
        "score (mean ± half-width of the 95% interval, n).",
        display=display,
        numbers=numbers,
    )
    title = f"Score vs N and vs measured diversity: {task}, C = {fmt_count(c)}"
    return [FigureBlock(key, title, caption, svg, png), table]
