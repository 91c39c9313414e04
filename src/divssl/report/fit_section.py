"""The report's "data-constrained fit" section (``report.sections: [..., fit]``).

For each family of runs (method x backbone x pretraining set) whose grid identifies the law, the
section fits :mod:`divssl.fit` on the probe score the study's ``report.contrast_metric`` names
(else the first of linear / kNN, ID split, top-1) and shows:

* a table of the fitted parameters (R* with its 95% bootstrap-over-seeds interval) and of the
  models compared (RMSE and leave-one-run-out RMSE, with the pooled seed noise);
* a figure: left, measured accuracy (mean over seeds, 95% Student-t interval) against effective
  images C_eff with the fitted curve; right, the fitted surface as iso-accuracy contours over
  (N, C) on log axes, the measured points, the line E = 1 (N = C) and the predicted best-N line
  (the smallest N within epsilon of the best at each C);
* a table of the measured points (per condition: mean and interval, prediction, LOO error);
* a table of the smallest N within epsilon of the best at each C and the accuracy lost by each
  extra repetition at the largest C.

Colours: the cividis map (perceptually uniform, readable with colour-vision deficiencies) for the
contours and Okabe-Ito colours doubled by marker shapes for the points.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from divssl.errors import ConfigError
from divssl.fit.analysis import FitOutcome, FitSettings, fit_points
from divssl.fit.fitting import UnidentifiableGrid, best_n
from divssl.fit.law import effective_images
from divssl.fit.select import Selection, select_points
from divssl.report.figures import (
    MARKERS,
    OKABE_ITO,
    SERIES,
    FigureBlock,
    Panel,
    new_figure,
    save_figure,
)
from divssl.report.tables import (
    MISSING,
    StudyData,
    TableBlock,
    fmt_count,
    format_interval,
    records,
    setting_label,
    slug,
    summarize_seeds,
)

FAMILY = ("method", "backbone", "pretrain_set", "task")
BEST_N_COLOR = OKABE_ITO["vermillion"]
REPORT_SETTINGS = FitSettings(n_boot=200, seed=0, epsilon=0.01, max_epochs=10)


def fit_section(data: StudyData, out_dir: Path, settings: FitSettings = REPORT_SETTINGS) -> Panel:
    """Blocks of the data-constrained fit, one group of tables and a figure per family of runs.

    Args:
        data: the loaded study.
        out_dir: figure folder.
        settings: fit settings (bootstrap size, epsilon, ...).

    Returns:
        The blocks, and notes for families the fit refuses (with the reason).
    """
    rows = data.results
    rows = rows[~rows["baseline"]] if "baseline" in rows.columns else rows
    blocks: list[TableBlock | FigureBlock] = []
    notes: list[str] = []
    if rows.empty:
        return Panel(blocks, ["no results of pretraining runs"])
    base = Selection.from_contrast_metric(data.spec)
    for keys, group in rows.groupby(list(FAMILY), dropna=False, sort=True):
        family = dict(zip(FAMILY, keys, strict=True))
        name = " / ".join(str(v) for v in keys)
        try:
            points, resolved = select_points(group, base)
            outcome = fit_points(points, settings, resolved)
        except UnidentifiableGrid as exc:
            notes.append(f"{name}: the grid ({exc.grid}) does not identify R*")
            continue
        except ConfigError as exc:
            notes.append(f"{name}: {exc}")
            continue
        blocks += _family_blocks(outcome, family, out_dir)
    return Panel(blocks, notes)


def _family_blocks(
    outcome: FitOutcome, family: dict[str, Any], out_dir: Path
) -> list[TableBlock | FigureBlock]:
    sel = outcome.selection
    name = " / ".join(str(v) for v in family.values())
    setting = setting_label(sel.get("eval"), sel.get("label_fraction"), sel.get("k"))
    what = f"{sel.get('metric')} ({setting}) on {sel.get('task')}, {sel.get('split')} split"
    key = slug("fit", *family.values(), sel.get("split"))
    points = _condition_table(outcome)
    return [
        _params_block(outcome, key, name, what),
        _figure(outcome, points, key, name, what, out_dir),
        _points_block(points, key, name, what),
        _answers_block(outcome, key, name),
    ]


def _pp(value: float) -> str:
    return MISSING if not math.isfinite(value) else f"{100 * value:.2f}"


def _params_block(outcome: FitOutcome, key: str, name: str, what: str) -> TableBlock:
    doc = outcome.to_dict()
    p = doc["params"]
    lo, hi = outcome.r_star_interval()
    r_star = f"{p['r_star']:.3g}" + (
        f" [{lo:.3g}, {hi:.3g}]" if math.isfinite(lo) else " (no interval: one seed)"
    )
    rows = [
        ("R* (repetitions)", r_star, "repetition decay; 95% bootstrap over seeds"),
        ("half-life (repetitions)", f"{p['half_life_repetitions']:.3g}", "R* ln 2"),
        ("ceiling (%)", f"{100 * p['ceiling']:.1f}", "accuracy as C_eff -> infinity"),
        ("floor (%)", f"{100 * p['floor']:.1f}", outcome.to_dict()["settings"]["floor"]),
        ("slope", f"{p['slope']:.3g}", "per unit of ln C_eff"),
        ("mid (C_eff)", fmt_count(math.exp(p["mid"])), "C_eff at the curve's midpoint"),
    ]
    for row in doc["comparison"]:
        rows.append(
            (
                f"{row['label']}: RMSE / LOO RMSE (pp)",
                f"{_pp(row['rmse'])} / {_pp(row['loo_rmse'])}",
                f"{row['params']} parameters",
            )
        )
    noise = doc["seed_noise_std"]
    rows.append(("seed noise (pp)", _pp(noise if noise is not None else math.nan), "pooled std"))
    display = pd.DataFrame(rows, columns=["quantity", "value", "note"])
    numbers = pd.DataFrame(
        [
            {"quantity": k, "value": v}
            for k, v in {
                "r_star": p["r_star"],
                "r_star_ci_low": lo,
                "r_star_ci_high": hi,
                "half_life": p["half_life_repetitions"],
                "ceiling": p["ceiling"],
                "floor": p["floor"],
                "slope": p["slope"],
                "mid": p["mid"],
                "seed_noise_std": noise,
                **{f"{r['model']}_rmse": r["rmse"] for r in doc["comparison"]},
                **{f"{r['model']}_loo_rmse": r["loo_rmse"] for r in doc["comparison"]},
            }.items()
        ]
    )
    caption = (
        f"Fit of {what} over {doc['runs']} runs ({doc['conditions']} (N, C) conditions): "
        f"{doc['law']}. RMSE: residuals of the fit on all runs; LOO: leave-one-run-out "
        f"prediction error; both in accuracy percentage points. Verdict: {doc['verdict']}."
    )
    return TableBlock(
        f"{key}_params", f"Data-constrained law: {name}", caption, display, numbers, text=True
    )


def _condition_table(outcome: FitOutcome) -> pd.DataFrame:
    """Per (N, C): mean over seeds with its interval, C_eff, prediction and the LOO RMSE."""
    d = outcome.data
    p = outcome.params
    per_run = pd.DataFrame(
        {
            "unique_images": d.n,
            "budget_images": d.c,
            "value": d.y,
            "ci_low": math.nan,
            "ci_high": math.nan,
            "n": math.nan,
            "loo_error": outcome.loo,
        }
    )
    keys = ["unique_images", "budget_images"]
    stats = summarize_seeds(per_run, keys)
    loo = per_run.groupby(keys)["loo_error"].apply(lambda e: float(np.sqrt(np.mean(e**2))))
    stats["epochs"] = stats["budget_images"] / stats["unique_images"]
    stats["c_eff"] = effective_images(stats["unique_images"], stats["budget_images"], p.r_star)
    stats["predicted"] = p.predict(stats["unique_images"], stats["budget_images"])
    stats["loo_rmse"] = [
        loo[(n, c)] for n, c in zip(stats["unique_images"], stats["budget_images"], strict=True)
    ]
    return stats.sort_values(["budget_images", "unique_images"]).reset_index(drop=True)


def _points_block(points: pd.DataFrame, key: str, name: str, what: str) -> TableBlock:
    display = pd.DataFrame(
        {
            "C": [f"{int(c):,}" for c in points["budget_images"]],
            "N": [f"{int(n):,}" for n in points["unique_images"]],
            "E = C/N": [f"{e:.3g}" for e in points["epochs"]],
            "C_eff": [fmt_count(v) for v in points["c_eff"]],
            "measured (%)": [
                format_interval(r["mean"], r["ci_low"], r["ci_high"], int(r["n"]), r["n_kind"])
                for r in records(points)
            ],
            "predicted (%)": [f"{100 * v:.1f}" for v in points["predicted"]],
            "LOO RMSE (pp)": [_pp(v) for v in points["loo_rmse"]],
        }
    )
    caption = (
        f"Measured {what} per condition (mean ± half-width of the 95% Student-t interval over "
        "seeds, n = seeds; a single seed shows its bootstrap interval over test images), the law's "
        "prediction, C_eff = effective images at the fitted R*, and the leave-one-run-out error "
        "of the condition's runs."
    )
    title = f"Measured points and the law: {name}"
    return TableBlock(f"{key}_points", title, caption, display, points)


def _answers_block(outcome: FitOutcome, key: str, name: str) -> TableBlock:
    eps = outcome.settings.epsilon
    rows = []
    numbers = []
    for best in (outcome.best_n(c) for c in outcome.budgets()):
        lo, hi = best["n_ci_low"], best["n_ci_high"]
        ci = f"[{fmt_count(lo)}, {fmt_count(hi)}]" if math.isfinite(lo) else MISSING
        rows.append(
            {
                "C": f"{int(best['c']):,}",
                "smallest N": f"{fmt_count(best['n'])} {ci}",
                "E = C/N": f"{best['epochs']:.3g}",
                "predicted (%)": f"{100 * best['accuracy']:.1f}",
                "best (%)": f"{100 * best['best_accuracy']:.1f}",
            }
        )
        numbers.append({"kind": "best_n", **best})
    c_top = max(outcome.budgets())
    doc_rows = outcome.to_dict()["repetitions"]
    reps = next(iter(v for k, v in doc_rows.items() if float(k) == c_top))
    lost = ", ".join(f"E {int(r['epochs'])}: {100 * r['lost_vs_previous']:+.2f}" for r in reps[1:])
    numbers += [{"kind": "repetitions", "c": c_top, **r} for r in reps]
    caption = (
        f"Smallest N whose predicted accuracy is within {100 * eps:.1f} points of the best at "
        "each budget C (95% bootstrap-over-seeds interval of N), and the accuracy (pp) lost at "
        f"C = {fmt_count(c_top)} by each extra repetition (N = C / E, E epochs): {lost}."
    )
    return TableBlock(
        f"{key}_answers",
        f"How many unique images a budget needs: {name}",
        caption,
        pd.DataFrame(rows),
        pd.DataFrame(numbers),
    )


def _figure(
    outcome: FitOutcome, points: pd.DataFrame, key: str, name: str, what: str, out_dir: Path
) -> FigureBlock:
    p = outcome.params
    fig = new_figure(10.0, 4.2)
    ax_curve, ax_map = fig.subplots(1, 2)
    budgets = sorted(points["budget_images"].unique())
    style = {c: (SERIES[i % len(SERIES)], MARKERS[i % len(MARKERS)]) for i, c in enumerate(budgets)}
    # left: accuracy vs effective images, fitted curve
    lo, hi = float(points["c_eff"].min()), float(points["c_eff"].max())
    xs = np.geomspace(lo / 2.0, hi * 2.0, 200)
    ax_curve.plot(xs, 100 * p.accuracy_at(xs), color=OKABE_ITO["black"], lw=1.3, label="fit")
    for c in budgets:
        sub = points[points["budget_images"] == c]
        color, marker = style[c]
        lo_ci, hi_ci = sub["ci_low"].clip(0.0, 1.0), sub["ci_high"].clip(0.0, 1.0)  # scores
        err = np.stack([sub["mean"] - lo_ci, hi_ci - sub["mean"]]) * 100
        err = np.where(np.isfinite(err), err, 0.0)
        ax_curve.errorbar(
            sub["c_eff"], 100 * sub["mean"], yerr=err, fmt=marker, color=color, ms=5,
            capsize=2, lw=1, label=f"C = {fmt_count(c)}",
        )  # fmt: skip
    ax_curve.set_ylim(0.0, 100.0)  # 2-seed Student-t intervals are wide: clipped to scores
    ax_curve.set_xscale("log")
    ax_curve.set_xlabel(f"effective images C_eff (log scale), R* = {p.r_star:.3g}")
    ax_curve.set_ylabel(f"{what} (%)")
    ax_curve.legend(frameon=False, fontsize=7)
    ax_curve.set_title("Measured (mean, 95% CI over seeds) and fitted")
    # right: iso-accuracy contours over (N, C), measured points, E = 1 and the best-N line
    n_lo = float(points["unique_images"].min()) / 2.0
    c_lo, c_hi = float(min(budgets)) / 2.0, float(max(budgets)) * 2.0
    n_hi = max(float(points["unique_images"].max()) * 2.0, c_hi)
    ng, cg = np.meshgrid(np.geomspace(n_lo, n_hi, 120), np.geomspace(c_lo, c_hi, 120))
    acc = 100 * p.predict(ng, cg)
    filled = ax_map.contourf(cg, ng, acc, levels=12, cmap="cividis")
    lines = ax_map.contour(cg, ng, acc, levels=filled.levels[1::2], colors="white", linewidths=0.6)
    ax_map.clabel(lines, fmt="%.0f", fontsize=6.5)
    fig.colorbar(filled, ax=ax_map, label="predicted accuracy (%)")
    cs = np.geomspace(c_lo, c_hi, 40)
    best = _best_line(outcome, cs)
    eps_label = f"smallest N within {100 * outcome.settings.epsilon:.0f} pt of best"
    ax_map.plot(cs, best, color=BEST_N_COLOR, lw=1.6, ls="--", label=eps_label)
    ax_map.plot(cs, cs, color="white", lw=1.0, ls=":", label="E = 1 (N = C)")
    for c in budgets:
        sub = points[points["budget_images"] == c]
        color, marker = style[c]
        ax_map.scatter(sub["budget_images"], sub["unique_images"], marker=marker, s=28,
                       color=color, edgecolors="white", linewidths=0.6, zorder=3)  # fmt: skip
    ax_map.set_xscale("log")
    ax_map.set_yscale("log")
    ax_map.set_xlim(c_lo, c_hi)
    ax_map.set_ylim(n_lo, n_hi)
    ax_map.set_xlabel("budget C, images processed (log scale)")
    ax_map.set_ylabel("N, unique images (log scale)")
    ax_map.set_title("Iso-accuracy curves of the fitted law")
    ax_map.legend(frameon=True, fontsize=6.5, loc="upper left")
    fig.suptitle(f"Data-constrained fit: {name}")
    svg, png = save_figure(fig, out_dir, key)
    caption = (
        f"Left: {what} against effective images C_eff = U + U R* (1 - exp(-R/R*)) at the fitted "
        f"R* = {p.r_star:.3g}; points: mean over seeds with 95% Student-t intervals, one colour "
        "and marker per budget C; line: the fitted logistic. Right: the fitted accuracy over "
        "(C, N) as filled iso-accuracy contours (cividis), the measured conditions, the line "
        "E = 1 (N = C; above it runs see fewer than N images) and the predicted best-N line "
        f"(smallest N within {100 * outcome.settings.epsilon:.1f} points of the best at each C)."
    )
    return FigureBlock(key, f"Data-constrained fit: {name}", caption, svg, png)


def _best_line(outcome: FitOutcome, budgets: np.ndarray) -> list[float]:

    return [best_n(outcome.params, float(c), outcome.settings.epsilon)["n"] for c in budgets]
