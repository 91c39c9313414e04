"""benchmarks/quickstart_variance.py: its statistics against independent references.

The power statement in docs/benchmarks.md (the smallest difference each quickstart contrast
resolves) comes from these functions, so each is checked against the formula written out here,
against a simulation, or against scipy's own Welch interval.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quickstart_variance.py"


@pytest.fixture(scope="module")
def qv():
    spec = importlib.util.spec_from_file_location("quickstart_variance", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module's annotations there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _run(qv, cell: dict, seed: int, score: float, correct: np.ndarray | None = None):
    run = qv.Run("r", Path("."), cell, seed, "task", {})
    run.scores["sk_fixed"] = {"test": score}
    if correct is not None:
        run.correct["sk_fixed"] = {"test": correct}
    return run


def test_resolution_is_the_welch_half_width_of_equal_groups(qv) -> None:
    # Two groups of n with equal sample sd s: scipy's Welch interval has half-width
    # t(0.975, 2n - 2) * s * sqrt(2 / n), the number the docs quote.
    for n, s in [(3, 2.28), (4, 2.28), (8, 1.0)]:
        z = np.linspace(-1.0, 1.0, n)
        a = 10.0 + s * z / z.std(ddof=1)
        b = 3.0 + s * z[::-1] / z.std(ddof=1)
        ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
        assert qv.resolution(s, n, paired=False) == pytest.approx((ci.high - ci.low) / 2)
    assert qv.resolution(2.28, 4, paired=False) == pytest.approx(3.94, abs=0.01)
    # paired: t(0.975, n - 1) * s_d / sqrt(n)
    assert qv.resolution(1.7, 20, paired=True) == pytest.approx(
        stats.t.ppf(0.975, 19) * 1.7 / math.sqrt(20)
    )


def test_resolution_at_80_percent_power_has_that_power_by_simulation(qv) -> None:
    rng = np.random.default_rng(0)
    n, s = 4, 1.0
    delta = qv.resolution(s, n, paired=False, power=0.80)
    hits = 0
    trials = 4000
    for _ in range(trials):
        a = rng.normal(delta, s, n)
        b = rng.normal(0.0, s, n)
        hits += stats.ttest_ind(a, b).confidence_interval(0.95).low > 0
    assert 0.74 < hits / trials < 0.86  # the t approximation of power, within simulation error


def test_pooled_within_variance_and_df(qv) -> None:
    groups = {"x": [1.0, 2.0, 3.0], "y": [10.0, 14.0], "z": [5.0]}
    var, df = qv.pooled_within(groups)
    ss = (1 + 0 + 1) + (4 + 4)  # squared deviations from each group's mean
    assert df == 3 and var == pytest.approx(ss / 3)


def test_test_set_variance_is_half_the_variance_of_paired_image_differences(qv) -> None:
    c_a = np.array([1, 1, 0, 1, 0, 1, 1, 0], dtype=bool)
    c_b = np.array([1, 0, 0, 1, 1, 1, 0, 0], dtype=bool)
    runs = [_run(qv, {"pool": "w"}, 0, 0.6, c_a), _run(qv, {"pool": "w"}, 1, 0.5, c_b)]
    d = c_a.astype(float) - c_b
    expected = np.mean((d - d.mean()) ** 2) / (2 * len(d))
    assert qv.test_set_variance({"w": runs}, "sk_fixed") == pytest.approx(expected)


def test_data_variance_is_the_random_effects_anova_estimate(qv) -> None:
    rng = np.random.default_rng(1)
    runs, by_subset = [], {}
    for subset in range(4):
        for seed in range(3):
            score = 0.7 + 0.02 * subset + rng.normal(0, 0.01)
            runs.append(_run(qv, {"pool": "w", "subset.seed": subset}, seed, score))
            by_subset.setdefault(subset, []).append(score)
    means = np.array([np.mean(v) for v in by_subset.values()])
    ms_between = 3 * np.var(means, ddof=1)
    ms_within = np.mean([np.var(v, ddof=1) for v in by_subset.values()])
    est, groups = qv.data_variance(runs, "sk_fixed")
    assert groups == 4 and est == pytest.approx((ms_between - ms_within) / 3)
    # a study whose subsets never vary has no data estimate (fixed by design)
    fixed = [_run(qv, {"pool": "w", "subset.seed": 0}, s, 0.7 + 0.01 * s) for s in range(3)]
    assert qv.data_variance(fixed, "sk_fixed") is None


def test_contrast_sides_match_like_the_report(qv) -> None:
    cell = {"pool": "world", "subset.fraction": 0.1, "normalization": "compute"}
    assert qv.matches(cell, {"pool": "world", "subset.fraction": 0.1})
    assert not qv.matches(cell, {"pool": "world", "subset.fraction": 1.0})
    assert qv.matches({"composition": "B"}, {"composition": "B", "normalization": "compute"})
    assert not qv.matches({"composition": "B", "normalization": "epoch"}, {"composition": "B",
                          "normalization": "compute"})  # fmt: skip
    assert qv.matches(cell, {"split": "ood"})  # splits select scores, not runs
