"""Findings: each contrast the study declares, as a difference with its interval and a verdict.

A contrast compares the rows matching ``a`` with the rows matching ``b`` (column → value, e.g.
``{composition: B+A_in}`` vs ``{composition: B}``) on one metric (``report.contrast_metric``,
default the linear probe's top-1 on the ID split with all labels). Values are per run (one per
seed); the difference of means gets a Welch t interval (or a paired t interval over runs when
``paired: true``, e.g. ID vs OOD of the same runs). The verdict says whether the interval
excludes zero — "not resolved" is reported as plainly as a resolved effect.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from divssl.report.tables import StudyData, TableBlock

DEFAULT_METRIC = {"eval": "linear", "split": "id", "metric": "top1", "label_fraction": 100}
LEVEL = 0.95


def _select(frame: pd.DataFrame, where: dict[str, Any]) -> pd.DataFrame:
    mask = pd.Series(True, index=frame.index)
    for col, value in where.items():
        if col not in frame.columns:
            return frame.iloc[0:0]
        column = frame[col]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            mask &= pd.to_numeric(column, errors="coerce").sub(float(value)).abs() < 1e-9
        else:
            mask &= column.astype(str) == str(value)
    return frame[mask]


def contrast(frame: pd.DataFrame, spec: dict[str, Any], metric: dict[str, Any]) -> dict[str, Any]:
    """One contrast: means, difference, interval, n and verdict (values in score units).

    Keys named in ``a``/``b`` override the metric selector (so ``split: id`` vs ``split: ood``
    compares the two splits of the same rows)."""
    sides = {**spec.get("a", {}), **spec.get("b", {})}
    rows = _select(frame, {k: v for k, v in metric.items() if k not in sides})
    a = _select(rows, spec.get("a", {}))
    b = _select(rows, spec.get("b", {}))
    out: dict[str, Any] = {"contrast": spec.get("name", "a vs b"), "n_a": len(a), "n_b": len(b)}
    if len(a) < 2 or len(b) < 2:
        out["verdict"] = "no data (needs at least 2 runs per side)"
        return out
    if spec.get("paired"):
        joined = (
            a.set_index("run")["value"]
            .to_frame("a")
            .join(b.set_index("run")["value"].to_frame("b"), how="inner")
        )
        res = stats.ttest_rel(joined["a"], joined["b"])
        diff = float((joined["a"] - joined["b"]).mean())
        out["n_a"] = out["n_b"] = len(joined)
    else:
        res = stats.ttest_ind(a["value"], b["value"], equal_var=False)
        diff = float(a["value"].mean() - b["value"].mean())
    ci = res.confidence_interval(LEVEL)
    out.update(
        mean_a=float(a["value"].mean()),
        mean_b=float(b["value"].mean()),
        diff=diff,
        ci_low=float(ci.low),
        ci_high=float(ci.high),
        p=float(res.pvalue),
    )
    if np.isfinite(ci.low) and ci.low > 0:
        out["verdict"] = "resolved: a > b"
    elif np.isfinite(ci.high) and ci.high < 0:
        out["verdict"] = "resolved: a < b"
    else:
        out["verdict"] = "not resolved (the interval includes 0)"
    return out


def findings(data: StudyData) -> list[TableBlock]:
    """The findings table of the study's ``report.contrasts`` (empty when none are declared)."""
    report = data.spec.get("report") or {}
    specs = report.get("contrasts") or []
    if not specs:
        return []
    metric = {**DEFAULT_METRIC, **(report.get("contrast_metric") or {})}
    numbers = pd.DataFrame([contrast(data.results, s, metric) for s in specs])
    pct = lambda v: "—" if pd.isna(v) else f"{100 * v:.1f}"  # noqa: E731
    display = pd.DataFrame(
        {
            "contrast": numbers["contrast"],
            "a (mean %)": [pct(v) for v in numbers.get("mean_a", [np.nan] * len(numbers))],
            "b (mean %)": [pct(v) for v in numbers.get("mean_b", [np.nan] * len(numbers))],
            "a − b (points)": [
                "—" if pd.isna(d) else f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
                for d, lo, hi in zip(
                    numbers.get("diff", [np.nan] * len(numbers)),
                    numbers.get("ci_low", [np.nan] * len(numbers)),
                    numbers.get("ci_high", [np.nan] * len(numbers)),
                    strict=True,
                )
            ],
            "n (a, b)": [f"{x}, {y}" for x, y in zip(numbers["n_a"], numbers["n_b"], strict=True)],
            "verdict": numbers["verdict"],
        }
    )
    what = ", ".join(f"{k}={v}" for k, v in metric.items())
    return [
        TableBlock(
            key="findings",
            title="Findings",
            caption=(
                f"Each contrast on {what}: means over runs (seeds), the difference a − b in "
                f"points with its {LEVEL:.0%} t interval (Welch; paired over runs where marked), "
                "and whether that interval excludes zero."
            ),
            display=display,
            numbers=numbers,
            text=True,
        )
    ]
