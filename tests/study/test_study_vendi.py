"""Measured diversity in studies: the Vendi score of every pool and pretraining subset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from divssl.data.ordering import make_ordering
from divssl.data.pool import open_pool
from divssl.distances import diversity
from divssl.distances import pipeline as pipeline_module
from divssl.distances.extractors import get_extractor
from divssl.errors import ConfigError
from divssl.io import read_json
from divssl.study.diversity import VENDI_CSV, VENDI_JSON, compute_vendi
from divssl.study.plan import build_plan
from divssl.study.runner import prepare_study
from divssl.study.spec import study_from_tree

from .conftest import OTHER, POOL, tiny_tree


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIVSSL_CACHE", str(tmp_path / "cache"))


def _planned(root: Path, **vendi: object) -> tuple[object, object]:
    study = study_from_tree(tiny_tree(vendi={"extractor": "pixels", **vendi}))
    plan = build_plan(study, root)
    prepare_study(plan)  # plan.json: all the Vendi scores need (no run is trained)
    return plan, study


def _direct_score(spec: str, indices: np.ndarray) -> diversity.VendiResult:
    """Pixel features of the given images read one by one, then the Vendi score."""
    pool = open_pool(spec)
    ext = get_extractor("pixels")
    feats = np.concatenate([ext([pool.read(int(i))])[0] for i in indices])
    return diversity.vendi(feats, pool.labels[indices], class_names=pool.class_names)


def test_every_pool_and_subset_is_scored_and_saved(tmp_path: Path) -> None:
    plan, study = _planned(tmp_path / "s")
    rows = compute_vendi(plan.study_dir, study)
    pools = {r["name"]: r for r in rows if r["kind"] == "pool"}
    subsets = {r["run"]: r for r in rows if r["kind"] == "subset"}
    assert set(pools) == {"w", "w_other"} and set(subsets) == {r.id for r in plan.runs}
    for name, spec in (("w", POOL), ("w_other", OTHER)):
        want = _direct_score(spec, np.arange(64))
        assert pools[name]["vendi"] == pytest.approx(want.score, rel=1e-9)
        assert pools[name]["vendi_class_mean"] == pytest.approx(want.class_mean, rel=1e-9)
        assert pools[name]["n"] == 64 and pools[name]["classes"] == 4
    ordering = make_ordering(open_pool(POOL), seed=0)
    for run in plan.runs:
        row = subsets[run.id]
        assert row["unique_images"] == row["n"] == run.unique_images
        want = _direct_score(POOL, ordering.positions[: run.unique_images])
        assert row["vendi"] == pytest.approx(want.score, rel=1e-9)
        assert row["per_class"] == pytest.approx(want.per_class, rel=1e-9)
        assert row["ordering"] == ordering.hash and row["pool"] == "w"
    full = next(r for r in plan.runs if r.unique_images == 64)
    # The N = 64 subset is the whole pool in another order: the same score.
    assert subsets[full.id]["vendi"] == pytest.approx(pools["w"]["vendi"], rel=1e-9)
    saved = read_json(plan.study_dir / VENDI_JSON)
    assert [r["vendi"] for r in saved] == [r["vendi"] for r in rows]
    table = pd.read_csv(plan.study_dir / VENDI_CSV)
    assert {"kind", "run", "vendi", "vendi_class_mean", "n"} <= set(table.columns)
    assert len(table) == 4


def test_nested_subsets_are_extracted_once_and_scores_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan, study = _planned(tmp_path / "s", max_images=24)
    calls: list[int] = []
    real = pipeline_module.extract_features

    def counting(pool, extractor, indices, *args, **kwargs):
        calls.append(len(indices))
        return real(pool, extractor, indices, *args, **kwargs)

    monkeypatch.setattr(pipeline_module, "extract_features", counting)
    rows = compute_vendi(plan.study_dir, study)
    # Two pools (24 sampled each) and one extraction for both nested subsets (their first 24).
    assert sorted(calls) == [24, 24, 24]
    subsets = [r for r in rows if r["kind"] == "subset"]
    assert [r["n"] for r in subsets] == [24, 24]
    ordering = make_ordering(open_pool(POOL), seed=0)
    want = _direct_score(POOL, ordering.positions[:24]).score
    assert all(r["vendi"] == pytest.approx(want, rel=1e-9) for r in subsets)
    scored: list[int] = []
    monkeypatch.setattr("divssl.distances.pipeline.vendi", lambda *a, **k: scored.append(1) or None)
    again = compute_vendi(plan.study_dir, study)
    assert len(calls) == 3 and scored == []  # features and scores served from the caches
    assert [r["vendi"] for r in again] == [r["vendi"] for r in rows]


def test_bad_vendi_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        study_from_tree(tiny_tree(vendi={"kernel": "poly"}))
    assert "vendi" in str(err.value) and "kernel" in str(err.value)
    with pytest.raises(ConfigError) as err:
        study_from_tree(tiny_tree(vendi={"max_images": 1}))
    assert "max_images" in str(err.value)
    with pytest.raises(ConfigError) as err:
        study_from_tree(tiny_tree(vendi={"extractor": "sift"}))  # refused when the spec loads
    assert err.value.field == "vendi.extractor" and "pixels" in str(err.value)
    plan, study = _planned(tmp_path / "s", extractor="tv:resnet18")  # no weights file
    with pytest.raises(ConfigError) as err:
        compute_vendi(plan.study_dir, study)
    assert err.value.field in ("weights", "extractor")
    assert not (plan.study_dir / VENDI_JSON).exists()
    with pytest.raises(ConfigError) as err:
        compute_vendi(plan.study_dir, study_from_tree(tiny_tree()))
    assert err.value.field == "vendi"


@pytest.mark.slow
def test_run_study_writes_vendi_and_the_report_plots_it(tmp_path: Path, quiet_console) -> None:
    from divssl.report import build_report
    from divssl.study.runner import run_study

    study = study_from_tree(tiny_tree(vendi={"extractor": "pixels", "max_images": 32}))
    plan = build_plan(study, tmp_path / "s")
    outcome = run_study(plan, console=quiet_console)
    assert outcome.count("done") == 2 and outcome.vendi_error is None
    table = pd.read_csv(plan.study_dir / VENDI_CSV)
    assert set(table[table["kind"] == "subset"]["run"]) == {r.id for r in plan.runs}
    paths = build_report(plan.study_dir)
    assert any(k.startswith("figures/vendi_") and k.endswith(".svg") for k in paths)
    assert "Vendi score of every pool" in paths["markdown"].read_text()


def test_run_study_records_a_bad_vendi_extractor(tmp_path: Path, quiet_console) -> None:
    from divssl.study.runner import run_study

    study = study_from_tree(tiny_tree(vendi={"extractor": "tv:resnet18"}, grid={"pool": ["w"]}))
    plan = build_plan(study, tmp_path / "s")
    outcome = run_study(plan, console=quiet_console)
    assert outcome.vendi_error is not None and "weights" in outcome.vendi_error
    assert not (plan.study_dir / VENDI_JSON).exists()
