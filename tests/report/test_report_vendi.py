"""The report's measured-diversity section: score vs N and vs the Vendi score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_synth import make_study
from scipy import stats as sps

from divssl.errors import ConfigError
from divssl.report import build_report


def _expected_points(root: Path) -> pd.DataFrame:
    """Independent reference: linear probe at 100% labels, ID top-1 on world_id, C = 60k,
    joined to vendi.csv by run, averaged over seeds with pandas."""
    res = pd.read_parquet(root / "results.parquet")
    vendi = pd.read_csv(root / "vendi.csv")
    sel = res[
        (res["eval"] == "linear")
        & (res["task"] == "world_id")
        & (res["split"] == "id")
        & (res["metric"] == "top1")
        & (res["label_fraction"] == 100.0)
        & (res["normalization"] == "compute")
    ]
    sel = sel.merge(vendi[vendi["kind"] == "subset"][["run", "vendi"]], on="run")
    sel = sel.assign(set=sel["composition"].fillna(sel["pool"]))
    keys = ["method", "set", "unique_images"]
    return sel.groupby(keys, as_index=False).agg(mean=("value", "mean"), vendi=("vendi", "mean"))


def test_vendi_section_figure_numbers_and_spearman(full_report) -> None:
    root, paths = full_report
    out = root / "report"
    assert "figures/vendi_world_id_60000.svg" in paths
    numbers = pd.read_csv(out / "tables" / "vendi_world_id_60000_numbers.csv")
    want = _expected_points(root)
    got = numbers.assign(set=numbers["pretrain_set"]).sort_values(
        ["method", "set", "unique_images"]
    )
    want = want.sort_values(["method", "set", "unique_images"])
    assert len(got) == len(want) == 2 * (3 + 3)  # methods x (3 subsets + 3 compositions)
    np.testing.assert_allclose(got["mean"], want["mean"], rtol=1e-12)
    np.testing.assert_allclose(got["vendi"], want["vendi"], rtol=1e-12)
    md = paths["markdown"].read_text()
    rho_n = sps.spearmanr(want["unique_images"], want["mean"]).statistic
    rho_v = sps.spearmanr(want["vendi"], want["mean"]).statistic
    assert f"vs N ρ = {rho_n:+.2f}" in md and f"vs Vendi ρ = {rho_v:+.2f}" in md
    pools = pd.read_csv(out / "tables" / "vendi_pools.csv")
    assert pools["name"].tolist() == ["world"] and pools["vendi"].tolist() == [41.5]
    assert "Accuracy vs measured diversity (Vendi score)" in md


def test_vendi_section_skipped_without_vendi_csv(tmp_path: Path) -> None:
    root = make_study(tmp_path / "s", finetune=False, vendi=False, sections=["vendi"])
    md = build_report(root)["markdown"].read_text()
    assert "Skipped: no vendi.csv in the study folder" in md


def test_vendi_rows_without_matching_runs_are_noted(tmp_path: Path) -> None:
    root = make_study(tmp_path / "s", finetune=False, sections=["vendi"])
    vendi = pd.read_csv(root / "vendi.csv")
    vendi.loc[vendi["kind"] == "subset", "run"] = "other-study-run"
    vendi.to_csv(root / "vendi.csv", index=False)
    paths = build_report(root)
    md = paths["markdown"].read_text()
    assert "no ID probe result of a run whose subset has a Vendi score" in md
    assert "Vendi score of every pool" in md  # the pool table still stands
    assert not [k for k in paths if k.endswith(".svg")]


def test_bad_vendi_csv_is_refused(tmp_path: Path) -> None:
    root = make_study(tmp_path / "s", finetune=False, sections=["vendi"])
    pd.DataFrame({"name": ["world"], "vendi": [3.0]}).to_csv(root / "vendi.csv", index=False)
    with pytest.raises(ConfigError) as err:
        build_report(root)
    assert err.value.field == "vendi.csv"
    assert not (root / "report").exists()
