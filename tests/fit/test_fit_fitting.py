"""The fit recovers simulated laws, refuses unidentifiable grids and answers consistently."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fit_synth import TRUE, law_accuracy, simulate

from divssl.errors import ConfigError
from divssl.fit import FitSettings, fit_points, points_from_arrays
from divssl.fit.fitting import (
    best_n,
    check_identifiable,
    fit_model,
    law_model,
    repetition_table,
    seed_noise,
)
from divssl.fit.law import LawParams


@pytest.fixture(scope="module")
def outcome():
    n, c, y, seeds = simulate(noise=0.01, seed=0)
    data = points_from_arrays(n, c, y, seeds)
    return fit_points(data, FitSettings(n_boot=100, seed=0, predict=((1_000.0, 100_000.0),)))


def test_recovers_the_simulated_parameters(outcome):
    p = outcome.params
    lo, hi = outcome.r_star_interval()
    assert lo < p.r_star < hi
    assert hi / lo < 1.5  # the grid pins R* down
    assert p.r_star == pytest.approx(TRUE["r_star"], rel=0.1)
    assert p.ceiling == pytest.approx(TRUE["ceiling"], abs=0.02)
    assert p.floor == pytest.approx(TRUE["floor"], abs=0.02)
    assert p.slope == pytest.approx(TRUE["slope"], rel=0.15)
    assert p.mid == pytest.approx(TRUE["mid"], abs=0.2)
    assert outcome.law.at_bounds == []
    # the prediction's interval covers the true accuracy
    pred = outcome.predict(1_000.0, 100_000.0)
    assert pred["ci_low"] - 0.005 <= law_accuracy(1_000.0, 100_000.0) <= pred["ci_high"] + 0.005


@pytest.mark.slow
def test_r_star_intervals_cover_the_true_value():
    """95% bootstrap-over-seeds intervals of R* cover the simulated R* in most of 10 data sets
    (3 seeds per condition; an unadjusted resample of 3 seeds covers visibly less)."""
    covered = 0
    for sim in range(10):
        n, c, y, seeds = simulate(noise=0.01, seed=sim)
        out = fit_points(points_from_arrays(n, c, y, seeds), FitSettings(n_boot=60, compare=False))
        lo, hi = out.r_star_interval()
        covered += lo <= TRUE["r_star"] <= hi
    assert covered >= 8


def test_residuals_and_held_out_error_are_at_the_noise_level(outcome):
    noise, dof = seed_noise(outcome.data)
    assert dof == 40  # 20 conditions x (3 seeds - 1)
    assert 0.5 * 0.01 < noise < 1.5 * 0.01
    doc = outcome.to_dict()
    assert 0.5 * 0.01 < doc["loo_rmse"] < 1.5 * 0.01
    assert doc["rmse"] <= doc["loo_rmse"]  # in-sample error below the held-out error
    np.testing.assert_allclose(
        outcome.law.residuals,
        outcome.data.y - outcome.params.predict(outcome.data.n, outcome.data.c),
    )
    # the law beats its restricted forms and the power law in C on held-out runs
    loo = {row["model"]: row["loo_rmse"] for row in doc["comparison"]}
    assert set(loo) == {"law", "repeats_as_new", "repeats_worthless", "power_c"}
    assert loo["law"] < min(loo["repeats_as_new"], loo["repeats_worthless"], loo["power_c"])
    assert "better than the power law in C" in doc["verdict"]


def test_leave_one_out_equals_refits_without_each_run(outcome):
    data, model = outcome.data, law_model()
    for i in (0, 17, len(data.y) - 1):
        rest = data.subset([j for j in range(len(data.y)) if j != i])
        fit = fit_model(model, rest)
        want = data.y[i] - float(fit.params.predict(data.n[i], data.c[i]))
        assert outcome.loo[i] == pytest.approx(want, abs=2e-4)


def test_fixed_floor_is_kept_and_recovers_r_star():
    n, c, y, seeds = simulate(noise=0.005, seed=3)
    out = fit_points(
        points_from_arrays(n, c, y, seeds), FitSettings(floor=TRUE["floor"], n_boot=50)
    )
    assert out.params.floor == TRUE["floor"]
    assert "floor" not in out.law.model.names
    lo, hi = out.r_star_interval()
    assert lo <= TRUE["r_star"] <= hi


def test_repeats_as_good_as_new_push_r_star_up():
    """Data with C_eff = C (R* = inf) must fit a large R*, far above the other simulation's."""
    n, c, _, seeds = simulate(noise=0.0)
    p = dict(TRUE, r_star=1e6)
    y = np.array([law_accuracy(a, b, p) for a, b in zip(n, c, strict=True)])
    y += np.random.default_rng(1).normal(0.0, 0.005, len(y))
    out = fit_points(points_from_arrays(n, c, y, seeds), FitSettings(n_boot=0, compare=False))
    assert out.params.r_star > 200.0


@pytest.mark.parametrize(
    ("budgets", "sizes", "says"),
    [
        ((30_000,), (1_000,), "two values of N and two of C"),
        ((30_000,), (300, 1_000, 3_000, 10_000, 30_000), "two values of N and two of C"),
        ((10_000, 30_000), (30_000, 60_000, 90_000), "no run repeats data"),
        ((10_000, 20_000), (10_000, 20_000), "one repetition level"),
        ((10_000, 30_000), (1_000, 3_000), "for 5 parameters"),
    ],
)
def test_unidentifiable_grids_are_refused(budgets, sizes, says):
    n, c, y, seeds = simulate(budgets=budgets, sizes=sizes)
    data = points_from_arrays(n, c, y, seeds)
    with pytest.raises(ConfigError, match=says) as err:
        fit_points(data, FitSettings(n_boot=10))
    assert err.value.field == "grid"
    with pytest.raises(ConfigError):
        check_identifiable(data, law_model().n_params)


def test_best_n_is_the_smallest_n_within_epsilon():
    p = LawParams(**TRUE)
    c, eps = 100_000.0, 0.01
    ans = best_n(p, c, eps)
    # independent search on an integer grid
    grid = np.arange(1, int(c) + 1, 7, dtype=float)
    acc = np.array([law_accuracy(a, c) for a in grid[::50]])
    best = max(acc.max(), law_accuracy(c, c))
    assert ans["best_accuracy"] == pytest.approx(best, abs=1e-4)
    assert ans["accuracy"] >= ans["best_accuracy"] - eps - 1e-12
    assert law_accuracy(ans["n"] * 0.995, c) < ans["best_accuracy"] - eps
    assert ans["epochs"] == pytest.approx(c / ans["n"])
    # a looser tolerance needs fewer unique images
    assert best_n(p, c, 0.05)["n"] < ans["n"]


def test_repetition_table_matches_predictions():
    p = LawParams(**TRUE)
    rows = repetition_table(p, 60_000.0, 6)
    assert [r["epochs"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[0]["accuracy"] == pytest.approx(law_accuracy(60_000.0, 60_000.0))
    assert math.isnan(rows[0]["lost_vs_previous"])
    for a, b in zip(rows, rows[1:], strict=False):
        assert b["n"] == pytest.approx(60_000.0 / b["epochs"])
        assert b["lost_vs_previous"] == pytest.approx(a["accuracy"] - b["accuracy"])
        assert b["lost_vs_previous"] > 0  # each repetition loses accuracy at a fixed C
    assert rows[1]["image_value"] == pytest.approx(
        TRUE["r_star"] * (1.0 - math.exp(-1.0 / TRUE["r_star"]))
    )


def test_seed_noise_is_the_pooled_within_condition_std():
    data = points_from_arrays([1, 1, 1, 2, 2], [5, 5, 5, 5, 5], [0.1, 0.2, 0.3, 0.5, 0.7])
    ss = ((np.array([0.1, 0.2, 0.3]) - 0.2) ** 2).sum() + ((np.array([0.5, 0.7]) - 0.6) ** 2).sum()
    noise, dof = seed_noise(data)
    assert dof == 3 and noise == pytest.approx(math.sqrt(ss / 3))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"floor": 1.5}, "--floor"),
        ({"n_boot": 3}, "--n-boot"),
        ({"epsilon": -0.1}, "--epsilon"),
        ({"max_epochs": 0}, "--max-epochs"),
        ({"predict": ((0.0, 10.0),)}, "--predict"),
        ({"best_n_at": (0.0,)}, "--best-n-at"),
    ],
)
def test_bad_settings_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as err:
        FitSettings(**kwargs)
    assert err.value.field == field
