"""Plan estimates beyond pretraining: evaluation seconds and the study's wall time."""

from __future__ import annotations

import pytest

from divssl.evaluate.linear import DEFAULT_WEIGHT_DECAYS
from divssl.study import plan as plan_mod
from divssl.study.estimate import EvalRates, evaluation_seconds, task_shape
from divssl.study.jobs import PlannedEvaluation
from divssl.study.plan import build_plan, measure_plan, plan_summary
from divssl.study.spec import FinetuneEval, KnnEval, LinearEval, study_from_tree

from .conftest import TASK, tiny_tree

SIZES = {"train": 1000, "test": 200, "ood": 100}
RATES = EvalRates(gemm_flops=1e9, probe_row_seconds={64: 2e-6})


def _planned(ev):
    return PlannedEvaluation.of(ev, "spec")


def test_knn_seconds_count_its_similarity_gemms():
    ev = _planned(KnnEval(task="t", k=[20], fractions=[10, 100]))
    # 2 * queries (test + ood) * bank rows * D per fraction, at the GEMM rate
    want = sum(2 * 300 * 1000 * f / 100 * 64 for f in (10, 100)) / 1e9
    assert evaluation_seconds(ev, SIZES, 64, 10, RATES) == pytest.approx(want)


def test_linear_seconds_are_the_iteration_cap_of_every_solve():
    ev = _planned(LinearEval(task="t", fractions=[1, 100], max_iter=50, val_fraction=0.2))
    lambdas = len(DEFAULT_WEIGHT_DECAYS)
    fit_rows = 1000 * 0.01 * 0.8 + 1000 * 0.8  # each lambda on the fitting rows of a fraction
    refit_rows = 1000 * 0.01 + 1000  # one refit on all rows of the fraction
    want = 2e-6 * 50 * (lambdas * fit_rows + refit_rows)
    assert evaluation_seconds(ev, SIZES, 64, 10, RATES) == pytest.approx(want)
    # 20 classes: twice the logits and gradient columns
    assert evaluation_seconds(ev, SIZES, 64, 20, RATES) == pytest.approx(2 * want)
    three = _planned(LinearEval(task="t", fractions=[1, 100], max_iter=50, val_fraction=0.2,
                                weight_decays=[1e-3, 1e-2, 1e-1]))  # fmt: skip
    assert evaluation_seconds(three, SIZES, 64, 10, RATES) == pytest.approx(
        2e-6 * 50 * (3 * fit_rows + refit_rows)
    )


def test_fine_tuning_and_sgd_probes_are_not_estimated():
    assert evaluation_seconds(_planned(FinetuneEval(task="t")), SIZES, 64, 10, RATES) is None
    sgd = _planned(LinearEval(task="t", solver="sgd"))
    assert evaluation_seconds(sgd, SIZES, 64, 10, RATES) is None


def test_task_shape_counts_every_split():
    sizes, classes = task_shape(TASK)
    assert classes == 4 and sizes["train"] == 32 and sizes["test"] > 0
    assert set(sizes) <= {"train", "val", "test", "ood"}


def test_measured_plan_adds_evaluations_and_shares_the_wall_time(tmp_path, monkeypatch):
    monkeypatch.setattr(
        plan_mod, "measure_throughput", lambda cfg, k, dev, b, s, w: (100.0, [b / 100.0] * s)
    )
    tree = tiny_tree(resources={"workers": 2})
    tree["evaluations"].append({"kind": "linear", "task": "wt", "max_iter": 20, "n_boot": 10})
    plan = build_plan(study_from_tree(tree), tmp_path / "s", count_flops=False)
    measure_plan(plan, "cpu", steps=2, warmup=0)
    assert plan.workers == 2 and plan.eval_estimates is not None
    assert all(e.seconds is not None and e.seconds > 0 for e in plan.eval_estimates)
    evals = sum(e.seconds for e in plan.eval_estimates)  # type: ignore[misc]
    assert plan.total_eval_seconds == pytest.approx(evals)
    assert plan.wall_seconds == pytest.approx((2 * 64 / 100.0 + evals) / 2)
    text = "\n".join(plan_summary(plan))
    assert "estimated study wall time with 2 workers" in text
    assert "estimated evaluations" in text


def test_a_run_without_evaluations_costs_nothing_and_an_unopened_task_is_listed():
    from divssl.study.estimate import estimate_run_evaluations

    from .conftest import planned_knn, pretrain_job

    rates = EvalRates(
        forward_ips={("convnet_tiny", 16, False): 1000.0},
        feature_dim={("convnet_tiny", 16, False): 64},
        gemm_flops=1e9,
    )
    none = estimate_run_evaluations(pretrain_job("a"), rates, {}, {})
    assert none.seconds == 0.0 and none.not_estimated == []
    knn = planned_knn(k=[20])
    unopened = estimate_run_evaluations(pretrain_job("b", [knn]), rates, {}, {})
    assert unopened.seconds is None and unopened.not_estimated == [knn.id]
    sizes = {knn.task_spec: SIZES}
    opened = estimate_run_evaluations(pretrain_job("c", [knn]), rates, sizes, {})
    features = sum(SIZES.values()) / 1000.0  # one forward pass per image of every split
    assert opened.seconds == pytest.approx(features + 2 * 300 * 1000 * 64 / 1e9)
