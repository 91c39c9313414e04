"""Plans: grid expansion, content hashes, C/N/E/D, epoch normalization, errors, FLOPs, timing."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch

from divssl.errors import ConfigError
from divssl.pretrain.config import Config
from divssl.study import plan as plan_mod
from divssl.study.plan import build_plan, measure_plan
from divssl.study.runner import prepare_study
from divssl.study.spec import study_from_tree

from .conftest import POOL, tiny_tree

B = [{"name": "B", "pool": "w", "size": 16}]
B_IN = [*B, {"name": "A", "pool": "w", "size": 16, "prior": "in", "exclude": "B"}]
B_OUT = [*B, {"name": "A", "pool": "w_other", "size": 16, "prior": "out"}]


def _hash_reference(config: dict, study_dir) -> str:
    """The documented run id, computed independently: sha256 of the sorted-JSON config without
    `out`, with the study folder written as ${study_dir}; first 12 hex digits."""
    body = {k: v for k, v in config.items() if k != "out"}
    text = json.dumps(body, sort_keys=True, default=str).replace(str(study_dir), "${study_dir}")
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def test_grid_product_hashes_and_budget_numbers(tmp_path):
    tree = tiny_tree(grid={"subset.fraction": [0.25, 1.0], "seed": [0, 1], "pool": ["w"]})
    plan = build_plan(study_from_tree(tree), tmp_path / "s", count_flops=False)
    assert len(plan.runs) == 4 and not (tmp_path / "s").exists()  # planning writes nothing
    ids = [r.id for r in plan.runs]
    assert len(set(ids)) == 4 and all(len(i) == 12 for i in ids)
    for run in plan.runs:
        assert run.id == _hash_reference(run.config, plan.study_dir)
        assert run.run_dir == plan.study_dir / "runs" / run.id
        n_expected = round(run.factors["subset.fraction"] * 64)  # the pool has 4 x 16 images
        assert run.unique_images == n_expected and run.budget_images == 64
        assert math.isclose(run.epochs, 64 / n_expected)
        assert math.isclose(run.diversity, n_expected / 64)
        assert run.steps == 2  # 64 images in global batches of 32
        assert run.config["data"]["pool"] == POOL and run.config["seed"] == run.factors["seed"]
    moved = build_plan(study_from_tree(tree), tmp_path / "elsewhere", count_flops=False)
    assert [r.id for r in moved.runs] == ids  # the study folder does not enter the hash
    tree["base"]["batch_size"] = 16
    changed = build_plan(study_from_tree(tree), tmp_path / "s", count_flops=False)
    assert not set(r.id for r in changed.runs) & set(ids)


def test_epoch_normalization_uses_the_reference_points_epochs(tmp_path):
    grid = [
        {"composition": {"B": B, "B+A_in": B_IN, "B+A_out": B_OUT}, "budget.images": [128]},
        {"composition": {"B": B}, "normalization": ["epoch"], "budget.images": [128]},
    ]
    tree = tiny_tree(grid=grid, epoch_reference={"composition": "B+A_in"})
    plan = build_plan(study_from_tree(tree), tmp_path / "s", count_flops=False)
    by_name = {(r.composition, r.normalization): r for r in plan.runs}
    assert len(plan.runs) == 4
    assert by_name[("B", "compute")].budget_images == 128
    assert by_name[("B+A_in", "compute")].unique_images == 32
    e_ref = 128 / 32  # C / N of the reference B+A_in
    epoch_b = by_name[("B", "epoch")]
    assert epoch_b.config["budget"] == {"images": None, "epochs": e_ref}
    assert epoch_b.budget_images == 16 * e_ref and math.isclose(epoch_b.epochs, e_ref)
    assert by_name[("B+A_out", "compute")].source == "source"
    assert by_name[("B+A_in", "compute")].config["data"]["task"] == tree["tasks"]["wt"]


def test_duplicate_points_share_one_run(tmp_path):
    grid = [{"pool": ["w"], "seed": [0]}, {"pool": ["w"], "seed": [0, 1]}]
    plan = build_plan(study_from_tree(tiny_tree(grid=grid)), tmp_path, count_flops=False)
    assert len(plan.runs) == 2 and plan.duplicates == 1


def test_every_invalid_point_is_reported_with_its_grid_values(tmp_path):
    tree = tiny_tree(grid={"pool": ["w"], "subset.size": [8, 100, 200], "seed": [0]})
    with pytest.raises(ConfigError) as err:
        build_plan(study_from_tree(tree), tmp_path / "s", count_flops=False)
    text = str(err.value)
    assert "2 grid point(s) are invalid" in text
    assert "subset.size=100" in text and "subset.size=200" in text and "subset.size=8," not in text
    assert (
        err.value.field.startswith("grid{pool=w, subset.size=100") and not (tmp_path / "s").exists()
    )
    tree = tiny_tree(grid={"pool": ["w"], "batch_size": [32, 0]})
    with pytest.raises(ConfigError) as err:
        build_plan(study_from_tree(tree), tmp_path / "s", count_flops=False)
    assert err.value.field == "grid{pool=w, batch_size=0}.batch_size"


def test_derived_relabel_pool_is_planned_and_materialised(tmp_path):
    hierarchy = tmp_path / "h.json"
    chains = {f"c{i:03d}": ["left" if i < 2 else "right", "root"] for i in range(4)}
    hierarchy.write_text(json.dumps(chains))
    tree = tiny_tree(grid={"pool": ["coarse"], "method": ["supervised"]})
    tree["pools"]["coarse"] = {"pool": "w", "relabel": {"hierarchy": str(hierarchy), "count": 2}}
    plan = build_plan(study_from_tree(tree), tmp_path / "s", count_flops=False)
    (run,) = plan.runs
    info = plan.derived["coarse"]
    assert info["format"] == "npz" and info["classes"] == 2 and run.unique_images == 64
    assert run.config["data"]["pool"] == info["spec"]
    assert plan.models[run.model].num_classes == 2
    prepare_study(plan)
    from divssl.data.pool import open_pool

    base, derived = open_pool(POOL), open_pool(info["spec"])
    assert derived.class_names == ["left", "right"]
    want = np.array([0 if base.class_names[y] in ("c000", "c001") else 1 for y in base.labels])
    assert np.array_equal(derived.labels, want)
    assert np.array_equal(derived.images, base.images)


def test_flops_are_counted_once_per_distinct_model(tmp_path, monkeypatch):
    calls = []

    def fake(cfg, classes):
        calls.append((cfg.method, cfg.backbone))
        return 1e9

    monkeypatch.setattr(plan_mod, "count_model_flops", fake)
    tree = tiny_tree(grid={"pool": ["w"], "method": ["simclr", "byol"], "seed": [0, 1, 2]})
    plan = build_plan(study_from_tree(tree), tmp_path, count_flops=True)
    assert sorted(calls) == [("byol", "convnet_tiny"), ("simclr", "convnet_tiny")]
    assert plan.total_flops == pytest.approx(6 * 64 * 1e9)


def test_real_flop_count_matches_the_training_loop(tmp_path):
    from divssl.pretrain.augment import get_preset
    from divssl.pretrain.build import build_method
    from divssl.pretrain.dry_run import count_flops_per_image

    plan = build_plan(study_from_tree(tiny_tree()), tmp_path)
    cfg = Config.model_validate(plan.runs[0].config)
    torch.manual_seed(0)
    method = build_method(cfg, None, torch.device("cpu"))
    want = count_flops_per_image(method, get_preset("simclr", 16), 16, torch.device("cpu"))
    assert plan.models[plan.runs[0].model].flops_per_image == pytest.approx(want)


def test_measurement_is_cached_in_the_study_folder(tmp_path, monkeypatch):
    calls = []

    def fake(cfg, classes, device, batch, steps, warmup):
        calls.append(batch)
        return 100.0, [batch / 100.0] * steps

    monkeypatch.setattr(plan_mod, "measure_throughput", fake)
    study = study_from_tree(tiny_tree())
    plan = build_plan(study, tmp_path / "s", count_flops=False)
    measure_plan(plan, "cpu", steps=3, warmup=1)
    assert calls == [32] and sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "throughput.json"
    ]
    assert plan.estimated_seconds(plan.runs[0]) == pytest.approx(64 / 100.0)
    assert plan.total_seconds == pytest.approx(2 * 64 / 100.0)
    assert plan.total_device_seconds == pytest.approx(2 * 64 / 100.0)
    plan.gpus_per_run = 4  # a DDP run shares its device time between its GPUs
    assert plan.estimated_seconds(plan.runs[0]) == pytest.approx(64 / 100.0 / 4)
    assert plan.total_device_seconds == pytest.approx(2 * 64 / 100.0)
    again = build_plan(study, tmp_path / "s", count_flops=False)
    measure_plan(again, "cpu", steps=3, warmup=1)
    assert calls == [32]  # served from throughput.json
    measure_plan(again, "cpu", steps=3, warmup=1, batch=8)
    assert calls == [32, 8]
