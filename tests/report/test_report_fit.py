"""The report's "data-constrained fit" section renders tables, a figure and refusal notes."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fit"))
from fit_synth import TRUE, make_study  # noqa: E402

from divssl.report import SECTIONS, build_report  # noqa: E402


@pytest.fixture(scope="module")
def fit_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = make_study(tmp_path_factory.mktemp("fit") / "study", methods=("simclr", "vicreg"))
    return root, build_report(root)


def test_fit_is_a_report_section():
    assert "fit" in SECTIONS


def test_section_has_params_figure_points_and_answers_per_family(fit_report):
    root, paths = fit_report
    html = paths["html"].read_text()
    md = paths["markdown"].read_text()
    assert "Data-constrained fit" in html and "Data-constrained fit" in md
    for method in ("simclr", "vicreg"):
        stem = f"fit_{method}_convnet_tiny_world_world_id_id"
        for kind in ("params", "points", "answers"):
            assert f"tables/{stem}_{kind}.csv" in paths
        assert f"figures/{stem}.svg" in paths and f"figures/{stem}.png" in paths
        assert paths[f"figures/{stem}.png"].stat().st_size > 10_000
        params = pd.read_csv(paths[f"tables/{stem}_params.csv"]).set_index("quantity")["value"]
        assert params["r_star"] == pytest.approx(TRUE["r_star"], rel=0.15)
        assert params["r_star_ci_low"] < params["r_star"] < params["r_star_ci_high"]
        assert params["law_loo_rmse"] < params["power_c_loo_rmse"]
        points = pd.read_csv(paths[f"tables/{stem}_points.csv"])
        assert len(points) == 20 and (points["n"] == 3).all()  # 20 conditions x 3 seeds
        assert {"mean", "ci_low", "ci_high", "predicted", "loo_rmse", "c_eff"} <= set(points)
        answers = pd.read_csv(paths[f"tables/{stem}_answers.csv"])
        assert set(answers["kind"]) == {"best_n", "repetitions"}
    assert "leave-one-run-out" in html and "cividis" in html


def test_unidentifiable_grid_leaves_a_note(tmp_path):
    root = make_study(tmp_path / "study", budgets=(30_000,), sizes=(1_000, 3_000))
    paths = build_report(root)
    md = paths["markdown"].read_text()
    note = "simclr / convnet_tiny / world / world_id: the grid (N in {1000, 3000}, C in {30000}"
    assert note in md and "does not identify R*" in md
    assert not any(k.startswith("figures/fit") for k in paths)
