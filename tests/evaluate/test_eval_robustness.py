"""Effective robustness against closed-form cases; bootstrap bands."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from divssl.errors import ConfigError
from divssl.evaluate.robustness import (
    bootstrap_band,
    effective_robustness,
    fit_baseline,
    transform_scores,
)


def logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def expit(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


SLOPE, INTERCEPT = 0.8, -0.6


def on_line(ids: np.ndarray) -> np.ndarray:
    return expit(INTERCEPT + SLOPE * logit(ids))


def test_points_on_the_logit_line_have_zero_er() -> None:
    ids = np.array([0.3, 0.45, 0.6, 0.72, 0.85])
    base = fit_baseline(ids, on_line(ids), "logit")
    assert base.slope == pytest.approx(SLOPE)
    assert base.intercept == pytest.approx(INTERCEPT)
    np.testing.assert_allclose(effective_robustness(ids, on_line(ids), base), 0.0, atol=1e-12)
    # A model 0.05 above the line at ID 0.5 has ER 0.05; vectorised over models.
    expected_ood = expit(INTERCEPT + SLOPE * 0.0)
    assert effective_robustness(0.5, expected_ood + 0.05, base) == pytest.approx(0.05)
    er = effective_robustness(np.array([0.5, 0.5]), np.array([0.2, 0.4]), base)
    np.testing.assert_allclose(er, [0.2 - expected_ood, 0.4 - expected_ood])
    assert isinstance(effective_robustness(0.5, 0.3, base), float)


def test_probit_closed_form() -> None:
    ids = np.array([0.2, 0.5, 0.7, 0.9])
    oods = norm.cdf(0.1 + 1.2 * norm.ppf(ids))
    base = fit_baseline(ids, oods, "probit")
    assert (base.slope, base.intercept) == (pytest.approx(1.2), pytest.approx(0.1))
    target = norm.cdf(0.1 + 1.2 * norm.ppf(0.6))
    assert effective_robustness(0.6, target - 0.03, base) == pytest.approx(-0.03)


def test_clipping_keeps_extremes_finite() -> None:
    t = transform_scores(np.array([0.0, 1.0]))
    np.testing.assert_allclose(t, [logit(1e-4), logit(1 - 1e-4)])
    base = fit_baseline(np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.4, 1.0]))
    assert math.isfinite(base.slope) and math.isfinite(base.intercept)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        fit_baseline(np.array([0.5, 0.5]), np.array([0.3, 0.4]))
    with pytest.raises(ValueError):
        fit_baseline(np.array([0.5, 1.5]), np.array([0.3, 0.4]))
    with pytest.raises(ConfigError, match="probit"):
        fit_baseline(np.array([0.2, 0.5]), np.array([0.3, 0.4]), "log")


def _noisy_models(m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.uniform(0.3, 0.9, m)
    oods = expit(INTERCEPT + SLOPE * logit(ids) + rng.normal(0, 0.15, m))
    return ids, oods


def test_bootstrap_band_contains_true_line_and_narrows() -> None:
    grid = np.linspace(0.35, 0.85, 11)
    truth = on_line(grid)
    ids, oods = _noisy_models(20, 0)
    band = bootstrap_band(ids, oods, grid, n_resamples=1000, seed=0, method="percentile")
    assert np.all(band.low <= band.center) and np.all(band.center <= band.high)
    assert np.mean((band.low <= truth) & (truth <= band.high)) >= 0.9
    ids_big, oods_big = _noisy_models(400, 1)
    big = bootstrap_band(ids_big, oods_big, grid, n_resamples=1000, seed=0, method="percentile")
    assert np.all((big.low <= truth + 0.01) & (truth - 0.01 <= big.high))
    assert np.mean(big.high - big.low) < 0.5 * np.mean(band.high - band.low)
    assert band.n_resamples == 1000


def test_bootstrap_band_drops_degenerate_resamples() -> None:
    band = bootstrap_band(
        np.array([0.4, 0.8]), np.array([0.3, 0.6]), np.array([0.5]), 400, 0, method="percentile"
    )
    # With two models, about half of the resamples repeat one model and have no line.
    assert 120 < band.n_resamples < 280
    assert band.low[0] == pytest.approx(band.high[0])


def _t_band_reference(
    ids: np.ndarray, oods: np.ndarray, grid: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Textbook OLS mean-response interval, written with the design matrix X = [1, x]:
    var(yhat0) = s^2 x0^T (X^T X)^-1 x0 (Montgomery et al., Sec. 2.4.2, matrix form)."""
    x, y, g = logit(ids), logit(oods), logit(grid)
    design = np.stack([np.ones_like(x), x], axis=1)
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    dof = len(x) - 2
    s2 = np.sum((y - design @ beta) ** 2) / dof
    x0 = np.stack([np.ones_like(g), g], axis=1)
    var = s2 * np.einsum("gi,ij,gj->g", x0, np.linalg.inv(design.T @ design), x0)
    from scipy.stats import t as student_t

    half = student_t.ppf(0.5 + level / 2, dof) * np.sqrt(var)
    return expit(x0 @ beta - half), expit(x0 @ beta + half)


def test_t_band_matches_the_matrix_form_reference() -> None:
    ids, oods = _noisy_models(12, 3)
    grid = np.linspace(0.2, 0.95, 9)
    band = bootstrap_band(ids, oods, grid)
    assert band.method == "t" and band.n_resamples == 0
    low, high = _t_band_reference(ids, oods, grid, 0.95)
    np.testing.assert_allclose(band.low, low, rtol=1e-10)
    np.testing.assert_allclose(band.high, high, rtol=1e-10)
    assert np.all(band.low < band.center) and np.all(band.center < band.high)
    # Narrowest at the mean of the link-space ID scores, wider away from it.
    width = logit(band.high) - logit(band.low)
    assert width.argmin() == np.abs(logit(grid) - logit(ids).mean()).argmin()
    assert band.to_dict()["method"] == "t"


def _coverage(m: int, method: str, reps: int, seed: int) -> float:
    """Fraction of (replicate, grid point) pairs whose band holds the true line."""
    rng = np.random.default_rng(seed)
    grid = np.array([0.4, 0.6, 0.8])
    truth = on_line(grid)
    hits = 0
    for _ in range(reps):
        ids = expit(rng.uniform(logit(0.3), logit(0.9), m))
        oods = expit(INTERCEPT + SLOPE * logit(ids) + rng.normal(0, 0.2, m))
        band = bootstrap_band(
            ids, oods, grid, n_resamples=400, seed=int(rng.integers(1 << 30)), method=method
        )
        hits += int(np.sum((band.low <= truth) & (truth <= band.high)))
    return hits / (reps * len(grid))


@pytest.mark.parametrize("m", [10, 25])
def test_t_band_covers_at_the_nominal_level_with_few_models(m: int) -> None:
    # 3000 replicates x 3 points: the binomial standard error of 0.95 is about 0.004 per point.
    assert _coverage(m, "t", 3000, seed=m) == pytest.approx(0.95, abs=0.012)


@pytest.mark.slow
def test_percentile_band_under_covers_with_ten_models() -> None:
    # Why the default changed: the percentile bootstrap over 10 models misses the true line
    # clearly more often than 5% of the time (issue 10 measured 0.88-0.91).
    assert _coverage(10, "percentile", 600, seed=7) < 0.93


def test_t_band_needs_three_models_and_a_known_method() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        bootstrap_band(np.array([0.4, 0.8]), np.array([0.3, 0.6]), np.array([0.5]))
    with pytest.raises(ConfigError, match="percentile"):
        bootstrap_band(
            np.array([0.4, 0.6, 0.8]), np.array([0.3, 0.5, 0.6]), np.array([0.5]), method="bca"
        )
