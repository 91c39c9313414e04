"""Every preset in studies/ plans (`divssl plan --no-measure`) against tiny stand-in data."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from divssl.study.cli import app
from divssl.study.plan import build_plan
from divssl.study.spec import load_study

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def _npz(path: Path, n_per_class: int, classes: list[str] | None, n: int = 0) -> str:
    """A tiny npz pool (8 px images); ``classes=None`` makes ``n`` unlabelled images."""
    rng = np.random.default_rng(len(str(path)))
    arrays: dict[str, np.ndarray] = {}
    if classes is None:
        arrays["images"] = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    else:
        labels = np.repeat(np.arange(len(classes)), n_per_class)
        arrays.update(
            images=rng.integers(0, 256, (len(labels), 8, 8, 3), dtype=np.uint8),
            labels=labels,
            class_names=np.array(classes),
        )
    np.savez(path, **arrays)
    return f"npz:path={path}"


def _cifar100(root: Path) -> Path:
    folder = root / "cifar-100-binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        fine = np.arange(100, dtype=np.uint8)
        records = np.concatenate(
            [(fine // 5)[:, None], fine[:, None], rng.integers(0, 256, (100, 3072), np.uint8)],
            axis=1,
        ).astype(np.uint8)
        records.tofile(folder / f"{split}.bin")
    (folder / "fine_label_names.txt").write_text("\n".join(f"f{i}" for i in range(100)))
    (folder / "coarse_label_names.txt").write_text("\n".join(f"c{i}" for i in range(20)))
    return root


def _idx(root: Path) -> str:
    """A tiny MNIST-style IDX folder (train 300 / t10k 50 grey 8 px images, 10 classes)."""
    import gzip
    import struct

    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 300), ("t10k", 50)):
        images = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            head = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
            (root / f"{prefix}-{kind}-ubyte.gz").write_bytes(gzip.compress(head + arr.tobytes()))
    return str(root)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from divssl.data.hierarchy import imagenet1k_hierarchy

    root = tmp_path_factory.mktemp("standins")
    wnids = imagenet1k_hierarchy().classes
    task = _npz(root / "task.npz", 2, [f"k{i}" for i in range(5)])
    return {
        "root": root,
        "cifar100": str(_cifar100(root / "cifar")),
        "imagenet": _npz(root / "imagenet.npz", 4, wnids),
        "in100": _npz(root / "in100.npz", 2, wnids[:100]),
        "out100": _npz(root / "out100.npz", 1, wnids[100:300]),
        "yfcc": _npz(root / "yfcc.npz", 0, None, n=1000),
        "inat": _npz(root / "inat.npz", 5, [f"species{i}" for i in range(50)]),
        "task": task,
        "idx": _idx(root / "idx"),
    }


def _sets(data: dict, name: str) -> list[str]:
    task, imagenet = data["task"], data["imagenet"]
    iwild = [f"iwildcam_train={task}", f"iwildcam_id_test={task}", f"iwildcam_ood_test={task}"]
    downstream = [
        f"{t}_{s}={task}"
        for t in ("cars", "flowers", "pets", "places", "food")
        for s in ("train", "test")
    ]
    sets = {
        "quickstart": ["per_class=20", "part_size=50", "budget=640"],
        "fashion_mnist": [f"root={data['idx']}", "budget=640"],
        "scaling_fit_world": ["per_class=40", "sizes=[50, 100, 400]", "budgets=[200, 800]"],
        "scaling_fit_fashion_mnist": [f"root={data['idx']}", "sizes=[30, 100, 300]",
                                      "budgets=[200, 600]"],
        "table1_cifar100": [f"cifar100={data['cifar100']}"],
        "table1_tinyimagenet": [f"tinyimagenet_train={task}", f"tinyimagenet_val={task}"],
        "figure3_imagenet100": [
            f"imagenet100_train={data['in100']}", f"imagenet100_val={data['in100']}",
            f"imagenet_train={imagenet}", f"web_in={data['in100']}:source=web",
            f"web_out={data['out100']}:source=web",
            f"synthetic_in={data['in100']}:source=synthetic",
            f"synthetic_out={data['out100']}:source=synthetic", "base_size=40",
        ],
        "table2_imagenet_yfcc": [f"imagenet_train={imagenet}", f"imagenet_val={task}",
                                 f"yfcc={data['yfcc']}", *downstream],
        "figure4_saturation": [f"yfcc={data['yfcc']}", f"imagenet_train={task}",
                               f"imagenet_val={task}"],
        "table4_normalization": [f"imagenet_train={imagenet}", f"imagenet_val={task}"],
        "table5_label_quantity": [f"imagenet_train={imagenet}", f"imagenet_val={task}",
                                  f"yfcc={data['yfcc']}"],
        "robustness_quantity": [f"imagenet_train={imagenet}", "sizes=[1000, 2000]", *iwild],
        "robustness_granularity": [f"imagenet_train={imagenet}", "n_images=2000", *iwild],
        "robustness_diversity": [f"imagenet_train={imagenet}", "total=1000", *iwild],
        "robustness_sources": [f"imagenet_train={imagenet}", f"inaturalist_train={data['inat']}",
                               f"fractaldb={data['out100']}:source=synthetic",
                               f"stable_diffusion={data['in100']}:source=synthetic",
                               "sizes=[100, 200]", *iwild],
    }  # fmt: skip
    return sets[name]


# FLOP counting runs a real forward/backward of each model (seconds to minutes for 224 px
# ResNet-50 / ViT-B on a CPU); it is tested against the training loop in test_study_plan.py, so
# here it is replaced by a recorder everywhere but in the quickstart (a 4-conv net at 16 px).
REAL_FLOPS = {"quickstart"}
EXPECTED_RUNS = {
    "quickstart": 20, "fashion_mnist": 21, "table1_cifar100": 21, "table1_tinyimagenet": 21,
    "figure3_imagenet100": 56, "table2_imagenet_yfcc": 20, "figure4_saturation": 16,
    "table4_normalization": 12, "table5_label_quantity": 20, "robustness_quantity": 2,
    "robustness_granularity": 6, "robustness_diversity": 4, "robustness_sources": 8,
    "scaling_fit_world": 18, "scaling_fit_fashion_mnist": 12,
}  # fmt: skip
PRESETS = sorted(p.stem for p in STUDIES.glob("*.yaml"))
# The paper presets' recipes (SSL-diversity paper, Appendix E: solo-learn's CIFAR parameters also
# for Tiny-ImageNet, its ImageNet-100 parameters, the ImageNet ones also for YFCC100M).
PAPER_RECIPES = {
    "quickstart": "small",  # not a paper preset: divssl's CPU-scale recipe (docs/benchmarks.md)
    "fashion_mnist": "small",  # real data at CPU scale, same reason
    "scaling_fit_world": "small", "scaling_fit_fashion_mnist": "small",  # same reason
    "table1_cifar100": "cifar", "table1_tinyimagenet": "cifar",
    "figure3_imagenet100": "imagenet100", "table2_imagenet_yfcc": "imagenet",
    "figure4_saturation": "imagenet", "table4_normalization": "imagenet",
    "table5_label_quantity": "imagenet", "robustness_quantity": "imagenet",
    "robustness_granularity": "imagenet", "robustness_diversity": "imagenet",
    "robustness_sources": "imagenet",
}  # fmt: skip
STEP_UNITS = {"quickstart", "fashion_mnist", "robustness_quantity", "robustness_granularity",
              "robustness_diversity", "robustness_sources", "scaling_fit_world",
              "scaling_fit_fashion_mnist"}  # fmt: skip


def test_every_preset_is_covered():
    assert set(PRESETS) == set(EXPECTED_RUNS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_plans_with_stand_in_data(name, data, tmp_path, monkeypatch):
    from divssl.study import plan as plan_mod

    counted: list[str] = []
    if name not in REAL_FLOPS:

        def recorder(cfg, classes):
            counted.append(json.dumps([plan_mod.model_settings(cfg), classes], sort_keys=True))
            return 1e9

        monkeypatch.setattr(plan_mod, "count_model_flops", recorder)
    out = tmp_path / name
    args = ["plan", str(STUDIES / f"{name}.yaml"), "--no-measure", "--out", str(out)]
    for item in _sets(data, name):
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert f"runs: {EXPECTED_RUNS[name]}" in result.output and "PFLOP" in result.output
    assert not out.exists()  # planning without --measure writes nothing
    assert len(counted) == len(set(counted))  # each distinct model is counted once
    plan = build_plan(
        load_study(STUDIES / f"{name}.yaml", _sets(data, name)), out, count_flops=False
    )
    assert len(plan.runs) == EXPECTED_RUNS[name]
    assert len(plan.models) == (len(counted) or len(plan.models))
    for run in plan.runs:
        assert run.epochs == pytest.approx(run.budget_images / run.unique_images)
        # every run names its resolved recipe (issue 10); paper presets use the paper's
        assert run.config["recipe"] == PAPER_RECIPES.get(name, "cifar")
        assert run.config["schedule"]["units"] == ("steps" if name in STEP_UNITS else "epochs")
        assert run.config["optim"]["base_lr"] is not None
    assert "recipe" in result.output  # `divssl plan` shows each run's recipe


def _matches(run, where: dict) -> bool:
    """Whether a planned run matches a contrast side of a study's report (split keys aside)."""
    for key, value in where.items():
        if key == "split":
            continue
        have = getattr(run, key) if key in ("pool", "composition", "normalization") else None
        have = run.factors.get(key) if have is None else have
        if str(have) != str(value):
            return False
    return True


def test_quickstart_contrasts_compare_distinct_conditions_with_four_seeds(data, tmp_path):
    """Issue 12: every contrast of the quickstart has its 4 seeds on each side (the power stated in
    docs/benchmarks.md assumes n = 4), the two sides are different runs, and the grid trains no
    condition twice (an earlier design trained the whole world pool as both `N = 100%` and
    `B + A_in`)."""
    study = load_study(STUDIES / "quickstart.yaml", _sets(data, "quickstart"))
    plan = build_plan(study, tmp_path, count_flops=False)
    assert len(study.report.contrasts) == 5
    for c in study.report.contrasts:
        a = {r.id for r in plan.runs if _matches(r, c["a"])}
        b = {r.id for r in plan.runs if _matches(r, c["b"])}
        if c.get("paired"):
            assert a == b and len(a) == len(plan.runs), c["name"]
        else:
            assert len(a) == len(b) == 4 and not a & b, (c["name"], len(a), len(b))
    conditions = [
        (r.composition, r.pool, r.normalization, r.budget_images, r.unique_images)
        for r in plan.runs
        if r.factors["seed"] == 0
    ]
    assert len(conditions) == len(set(conditions)) == len(plan.runs) // 4
    sets = [(r.pool, r.factors.get("subset.fraction")) for r in plan.runs if r.pool is not None]
    assert set(sets) == {("world", 0.1)}  # N = 100% of the world is the B + A_in composition


def test_preset_defaults_point_at_real_data_and_fail_cleanly(tmp_path):
    from divssl.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        build_plan(load_study(STUDIES / "table1_cifar100.yaml"), tmp_path, count_flops=False)
    assert "cifar" in str(err.value).lower() and "/data/cifar100" in str(err.value)


def test_quickstart_is_packaged_verbatim():
    from divssl.study.cli import quickstart_spec

    assert filecmp.cmp(quickstart_spec(), STUDIES / "quickstart.yaml", shallow=False)
