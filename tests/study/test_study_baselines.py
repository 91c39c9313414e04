"""``report.baselines: true``: the runner writes baselines.json once, the report shows it."""

from __future__ import annotations

import pytest

from divssl.io import read_json
from divssl.study.plan import build_plan
from divssl.study.runner import run_study
from divssl.study.spec import study_from_tree

from .conftest import tiny_tree


@pytest.mark.slow
def test_study_with_baselines_writes_reference_rows_once(tmp_path, quiet_console):
    from divssl.report import build_report

    tree = tiny_tree(grid={"pool": ["w"]}, report={"baselines": True})
    plan = build_plan(study_from_tree(tree), tmp_path / "s", count_flops=False)
    outcome = run_study(plan, console=quiet_console)
    assert outcome.results[0]["status"] == "done"
    path = tmp_path / "s" / "baselines.json"
    rows = read_json(path)
    top1 = {(r["baseline"], r["split"]) for r in rows if r["metric"] == "top1"}
    # the tiny task is a world spec: test (id) and ood splits, kNN with k = 3
    assert top1 == {(b, s) for b in ("pixels_knn", "random_init") for s in ("id", "ood")}
    assert {r["k"] for r in rows} == {3} and {r["image_size"] for r in rows} == {16}
    stamp = path.stat().st_mtime_ns
    run_study(plan, console=quiet_console)  # everything done: nothing is recomputed
    assert path.stat().st_mtime_ns == stamp
    md = build_report(tmp_path / "s")["markdown"].read_text()
    assert "reference baselines (no pretraining)" in md and "raw pixels, kNN" in md


def test_baselines_default_off(tmp_path):
    tree = tiny_tree(grid={"pool": ["w"]})
    plan = build_plan(study_from_tree(tree), tmp_path / "s", count_flops=False)
    assert plan.study.report.baselines is False
