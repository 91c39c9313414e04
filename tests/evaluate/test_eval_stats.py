"""Bootstrap intervals, seed summaries and paired tests."""

from __future__ import annotations

import math

import numpy as np
import pytest

from divssl.evaluate.stats import (
    bootstrap_ci,
    metric_report,
    paired_bootstrap,
    per_class_intervals,
    seed_summary,
)


def test_bootstrap_ci_brackets_value_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 400)
    pred = np.where(rng.random(400) < 0.7, y, (y + 1) % 3)
    ci = bootstrap_ci(y, pred, "top1", n=500, seed=3)
    assert ci.value == pytest.approx(np.mean(pred == y))
    assert ci.ci_low < ci.value < ci.ci_high
    assert ci.n == 400
    # Width close to the normal approximation 2 * 1.96 * sqrt(p (1 - p) / n).
    p = ci.value
    assert ci.ci_high - ci.ci_low == pytest.approx(2 * 1.96 * math.sqrt(p * (1 - p) / 400), rel=0.2)
    assert bootstrap_ci(y, pred, "top1", n=500, seed=3) == ci
    assert set(ci.to_dict()) == {"value", "ci_low", "ci_high", "n"}


def test_bootstrap_ci_coverage() -> None:
    # 95% intervals of the accuracy of a predictor that is right with probability 0.8 should
    # contain 0.8 in roughly 95% of independent test sets.
    rng = np.random.default_rng(0)
    hits, trials = 0, 150
    for t in range(trials):
        y = np.zeros(200, dtype=np.int64)
        pred = (rng.random(200) >= 0.8).astype(np.int64)
        ci = bootstrap_ci(y, pred, "top1", n=300, seed=t)
        hits += ci.ci_low <= 0.8 <= ci.ci_high
    assert 0.87 <= hits / trials <= 0.995


def test_seed_summary_against_t_formula() -> None:
    values = [0.61, 0.64, 0.60, 0.66, 0.63]
    s = seed_summary(values)
    mean = sum(values) / 5
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)
    half = 2.7764451051977987 * std / math.sqrt(5)  # t_{4, 0.975}
    assert (s.mean, s.std, s.n) == (pytest.approx(mean), pytest.approx(std), 5)
    assert s.ci_low == pytest.approx(mean - half)
    assert s.ci_high == pytest.approx(mean + half)
    one = seed_summary([0.5])
    assert one.n == 1 and math.isnan(one.std)
    assert one.to_dict()["std"] is None and one.to_dict()["value"] == 0.5
    with pytest.raises(ValueError):
        seed_summary([])


def test_paired_bootstrap_clear_and_null() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 5, 600)
    good = np.where(rng.random(600) < 0.9, y, (y + 1) % 5)
    bad = np.where(rng.random(600) < 0.6, y, (y + 2) % 5)
    res = paired_bootstrap(y, good, bad, "top1", n=500, seed=0)
    assert res.difference == pytest.approx(np.mean(good == y) - np.mean(bad == y))
    assert res.ci_low > 0 and res.ci_low < res.difference < res.ci_high
    assert res.p_value < 0.01
    same = paired_bootstrap(y, good, good.copy(), "macro_f1", n=300, seed=0)
    assert same.difference == 0.0 and same.p_value == 1.0
    # Two predictors of equal quality with different errors: no evidence of a difference.
    other = np.where(rng.random(600) < 0.9, y, (y + 3) % 5)
    tie = paired_bootstrap(y, good, other, "top1", n=500, seed=0)
    assert tie.ci_low < 0 < tie.ci_high or abs(tie.difference) < 0.03
    assert tie.p_value > 0.05


def test_per_class_wilson_interval_by_hand() -> None:
    # Class 0: 8 of 10 right; Wilson: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n).
    y = np.array([0] * 10 + [1] * 3)
    pred = np.array([0] * 8 + [1] * 2 + [1] * 3)
    (c0, c1, c2) = per_class_intervals(y, pred, 3)
    z, n, p = 1.959963984540054, 10, 0.8
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert c0["value"] == 0.8 and c0["n"] == 10
    assert (c0["ci_low"], c0["ci_high"]) == (
        pytest.approx(center - half),
        pytest.approx(center + half),
    )
    assert c1["value"] == 1.0 and c1["ci_high"] == pytest.approx(1.0)
    assert c2 == {"value": None, "ci_low": None, "ci_high": None, "n": 0}


def test_bootstrap_of_scores_equals_bootstrap_of_labels() -> None:
    # The compact per-sample path for scores must give the same resamples as labels do.
    rng = np.random.default_rng(5)
    y = rng.integers(0, 6, 300)
    scores = rng.random((300, 6))
    for metric in ("top1", "macro_f1"):
        a = bootstrap_ci(y, scores, metric, n=200, seed=1)
        b = bootstrap_ci(y, scores.argmax(1), metric, n=200, seed=1)
        assert a == b
    top5 = bootstrap_ci(y, scores, "top5", n=200, seed=1)

    def top5_by_argsort(t: np.ndarray, s: np.ndarray) -> float:
        return float(np.any(np.argsort(-s, 1, kind="stable")[:, :5] == t[:, None], axis=1).mean())

    ref = bootstrap_ci(y, scores, top5_by_argsort, n=200, seed=1)
    assert top5.value == pytest.approx(ref.value)
    assert (top5.ci_low, top5.ci_high) == (pytest.approx(ref.ci_low), pytest.approx(ref.ci_high))


def test_metric_report_fields() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 4, 100)
    scores = rng.random((100, 4))
    rep = metric_report(y, scores, 4, n_boot=50, seed=0)
    for name in ("top1", "top5", "macro_f1"):
        assert set(rep[name]) == {"value", "ci_low", "ci_high", "n"}
        assert rep[name]["ci_low"] <= rep[name]["value"] <= rep[name]["ci_high"]
    assert rep["top5"]["value"] == 1.0  # 4 classes: top-5 always right
    assert len(rep["per_class_accuracy"]) == 4
    for cls, entry in enumerate(rep["per_class_accuracy"]):
        mask = y == cls
        assert entry["n"] == mask.sum()
        assert entry["value"] == pytest.approx(np.mean(scores[mask].argmax(1) == cls))
        assert entry["ci_low"] <= entry["value"] <= entry["ci_high"]
    assert np.sum(rep["confusion"]) == 100
