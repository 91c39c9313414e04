"""Findings: contrasts with Welch / paired t intervals and an honest verdict."""

import numpy as np
import pandas as pd
from scipy import stats

from divssl.report.findings import contrast


def _frame():
    rows = []
    rng = np.random.default_rng(0)
    for seed in range(4):
        for comp, shift in (("B", 0.0), ("B+A_in", 0.05), ("B+A_out", 0.0)):
            run = f"{comp}-{seed}"
            value = 0.7 + shift + rng.normal(0, 0.01)
            for split, drop in (("id", 0.0), ("ood", 0.1)):
                rows.append(
                    {
                        "run": run,
                        "composition": comp,
                        "eval": "linear",
                        "split": split,
                        "metric": "top1",
                        "label_fraction": 100.0,
                        "seed": seed,
                        "value": value - drop,
                    }
                )
    return pd.DataFrame(rows)


METRIC = {"eval": "linear", "split": "id", "metric": "top1", "label_fraction": 100}


def test_welch_interval_matches_hand_formula_and_resolves_a_real_effect():
    frame = _frame()
    out = contrast(
        frame, {"name": "in", "a": {"composition": "B+A_in"}, "b": {"composition": "B"}}, METRIC
    )
    a = frame.query("composition == 'B+A_in' and split == 'id'")["value"].to_numpy()
    b = frame.query("composition == 'B' and split == 'id'")["value"].to_numpy()
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.975, dof) * np.sqrt(va + vb)
    diff = a.mean() - b.mean()
    assert out["diff"] == np.float64(diff).item() or abs(out["diff"] - diff) < 1e-12
    assert abs(out["ci_low"] - (diff - half)) < 1e-9 and abs(out["ci_high"] - (diff + half)) < 1e-9
    assert out["verdict"] == "resolved: a > b"


def test_no_effect_is_reported_not_resolved():
    out = contrast(_frame(), {"a": {"composition": "B+A_out"}, "b": {"composition": "B"}}, METRIC)
    assert out["ci_low"] < 0 < out["ci_high"]
    assert out["verdict"].startswith("not resolved")


def test_paired_split_contrast_overrides_the_metric_split():
    out = contrast(_frame(), {"a": {"split": "id"}, "b": {"split": "ood"}, "paired": True}, METRIC)
    assert out["n_a"] == out["n_b"] == 12
    assert abs(out["diff"] - 0.1) < 1e-9
    assert out["verdict"] == "resolved: a > b"


def test_missing_side_says_no_data():
    out = contrast(_frame(), {"a": {"composition": "nope"}, "b": {"composition": "B"}}, METRIC)
    assert out["verdict"].startswith("no data")
