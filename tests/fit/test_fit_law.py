"""The law's formulas against the paper's definitions (Muennighoff et al. 2023, eq. 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fit_synth import TRUE, law_accuracy

from divssl.fit.law import (
    LawParams,
    PowerLawParams,
    effective_images,
    repetition_value,
    unique_and_repetitions,
)


def _direct(n: float, c: float, r_star: float) -> float:
    u, r = min(n, c), max(c / n - 1.0, 0.0)
    return u + u * r_star * (1.0 - math.exp(-r / r_star))


@pytest.mark.parametrize("r_star", [0.5, 3.0, 15.0, 400.0])
def test_effective_images_matches_the_formula(r_star):
    n = np.array([100.0, 300.0, 1_000.0, 5_000.0, 20_000.0])
    c = np.array([10_000.0, 10_000.0, 3_000.0, 5_000.0, 10_000.0])
    want = [_direct(a, b, r_star) for a, b in zip(n, c, strict=True)]
    np.testing.assert_allclose(effective_images(n, c, r_star), want, rtol=1e-12)


def test_effective_images_limits_and_invariants():
    n, c = np.array([100.0, 1_000.0, 4_000.0]), np.array([10_000.0, 10_000.0, 10_000.0])
    u, r = unique_and_repetitions(n, c)
    np.testing.assert_allclose(u, n)
    np.testing.assert_allclose(r, c / n - 1.0)
    # R* -> inf: repeats as good as fresh images (C_eff = C); R* -> 0: worthless (C_eff = U)
    np.testing.assert_allclose(effective_images(n, c, math.inf), c)
    np.testing.assert_allclose(effective_images(n, c, 1e9), c, rtol=1e-6)
    np.testing.assert_allclose(effective_images(n, c, 0.0), n)
    np.testing.assert_allclose(effective_images(n, c, 1e-9), n, rtol=1e-6)
    # U <= C_eff <= C, growing with C at fixed N and with R*
    ceff = effective_images(n, c, 5.0)
    assert np.all(ceff >= n) and np.all(ceff <= c)
    assert np.all(np.diff(effective_images(100.0, np.array([1e3, 1e4, 1e5]), 5.0)) > 0)
    assert effective_images(100.0, 1e4, 2.0) < effective_images(100.0, 1e4, 20.0)
    # N >= C: a run sees C unique images once
    assert effective_images(20_000.0, 10_000.0, 5.0) == pytest.approx(10_000.0)


def test_repetition_values_add_up_to_effective_images():
    u, r_star = 1_000.0, 6.0
    for reps in (1, 5, 40):
        total = u + u * repetition_value(np.arange(1, reps + 1), r_star).sum()
        assert total == pytest.approx(_direct(u, u * (reps + 1), r_star), rel=1e-12)
    # half-life: after R* ln 2 more repetitions an image is worth half as much
    ratio = repetition_value(1 + r_star * math.log(2.0), r_star) / repetition_value(1, r_star)
    assert float(ratio) == pytest.approx(0.5)
    assert LawParams(r_star, 1, 0, 1, 0).half_life == pytest.approx(r_star * math.log(2.0))


def test_logistic_accuracy_matches_the_reference_and_its_midpoint():
    p = LawParams(**TRUE)
    for n, c in [(300, 10_000), (3_000, 100_000), (30_000, 30_000), (50_000, 10_000)]:
        assert float(p.predict(n, c)) == pytest.approx(law_accuracy(n, c), rel=1e-12)
    mid = float(p.accuracy_at(math.exp(TRUE["mid"])))
    assert mid == pytest.approx((TRUE["floor"] + TRUE["ceiling"]) / 2.0)


def test_power_law_ignores_n():
    p = PowerLawParams(ceiling=0.8, scale=5.0, alpha=0.5)
    got = p.predict(np.array([10.0, 1e4]), np.array([1e4, 1e4]))
    assert got[0] == got[1] == pytest.approx(0.8 - 5.0 * 1e4**-0.5)
