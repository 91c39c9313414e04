"""Bad study specs exit 2 naming the field, before anything is written (issue 11's table)."""

from __future__ import annotations

import sys

import pytest

from divssl import cli
from divssl.errors import ConfigError
from divssl.study.plan import build_plan
from divssl.study.spec import study_from_tree

from .conftest import BASE_TREE, tiny_tree, write_study

BASE = BASE_TREE["base"]


def _with_eval(**fields):
    item = {"kind": "knn", "task": "wt", "k": [3], "n_boot": 10}
    item.update(fields)
    return [item]


# (tree changes, field named, text in the message)
BAD_TREES = [
    ({"evaluations": _with_eval(k=[-1])}, "evaluations[0].k[0]", "greater than or equal to 1"),
    ({"evaluations": _with_eval(k=[])}, "evaluations[0].k", "at least 1"),
    (
        {"evaluations": [{"kind": "linear", "task": "wt", "fractions": [150]}]},
        "evaluations[0].fractions[0]",
        "less than or equal to 100",
    ),
    (
        {"evaluations": [{"kind": "linear", "task": "wt", "weight_decays": [0.0]}]},
        "evaluations[0].weight_decays",
        "L-BFGS",
    ),
    (
        {"evaluations": [{"kind": "finetune", "task": "wt", "base_lr": -1}]},
        "evaluations[0].base_lr",
        "greater than 0",
    ),
    (
        {"evaluations": [{"kind": "finetune", "task": "wt", "momentum": 1.0}]},
        "evaluations[0].momentum",
        "less than 1",
    ),
    ({"evaluations": _with_eval(temperature=float("nan"))}, "evaluations[0].temperature", "finite"),
    ({"evaluations": _with_eval(level=1.5)}, "evaluations[0].level", "less than 1"),
    ({"name": ".."}, "name", "not starting with '.'"),
    ({"name": "."}, "name", "not starting with '.'"),
    ({"name": "a/b"}, "name", "letters"),
    ({"out": ".."}, "out", "no study folder"),
]


# Grid and base values are checked per grid point by the plan with the pretraining config's own
# validation (`load_config`, the same as `divssl pretrain`): (changes, key named, message text).
BAD_POINTS = [
    ({"grid": {"pool": ["w"], "budget.images": [1.0e15]}}, "budget.images", "[1, 1000000000000]"),
    ({"grid": {"pool": ["w"], "budget.images": ["1e15"]}}, "budget.images", "valid integer"),
    ({"grid": {"pool": ["w"], "seed": [0, -1]}}, "seed", "[0, 4294967295]"),
    ({"grid": {"pool": ["w"], "image_size": [100000]}}, "image_size", "[1, 1024]"),
    ({"grid": {"pool": ["w"], "device": ["banana"]}}, "device", "cuda:N"),
    ({"grid": {"pool": ["w"], "optim.base_lr": [float("nan")]}}, "optim.base_lr", "finite"),
    ({"base": {**BASE, "optim.warmup_epochs": -5}}, "optim.warmup_epochs", "[0, inf)"),
    ({"base": {**BASE, "budget.images": 10**15}}, "budget.images", "[1, "),
]


@pytest.mark.parametrize(("changes", "key", "says"), BAD_POINTS)
def test_bad_grid_or_base_value_is_refused_before_the_study_folder(tmp_path, changes, key, says):
    with pytest.raises(ConfigError) as info:
        build_plan(study_from_tree(tiny_tree(**changes)), tmp_path / "s", count_flops=False)
    assert info.value.field.endswith(f"}}.{key}"), info.value.field
    assert says in str(info.value)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(("changes", "field", "says"), BAD_TREES)
def test_bad_study_tree_names_the_field(changes, field, says):
    with pytest.raises(ConfigError) as info:
        study_from_tree(tiny_tree(**changes))
    assert info.value.field == field, str(info.value)
    assert says in str(info.value)


@pytest.mark.parametrize(("changes", "field", "says"), BAD_TREES[::3] + BAD_POINTS[:1])
def test_bad_study_file_exits_2_and_writes_nothing(
    tmp_path, monkeypatch, capsys, changes, field, says
):
    spec = write_study(tmp_path / "study.yaml", tiny_tree(**changes))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["divssl", "run", str(spec), "--out", str(tmp_path / "s")])
    with pytest.raises(SystemExit) as info:
        cli.main()
    err = " ".join(capsys.readouterr().err.split())
    assert info.value.code == 2 and f"{field}:" in err and says in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["study.yaml"]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (bytes(range(256)) * 8, "not UTF-8"),
        (b"name: !!python/object/apply:os.system ['echo pwned > pwned.txt']\n", "YAML tag"),
        (b"name: [tiny\n", "not valid YAML"),
    ],
)
def test_binary_unsafe_or_broken_study_file_exits_2(tmp_path, monkeypatch, capsys, content, says):
    spec = tmp_path / "study.yaml"
    spec.write_bytes(content)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["divssl", "plan", str(spec)])
    with pytest.raises(SystemExit) as info:
        cli.main()
    err = " ".join(capsys.readouterr().err.split())
    assert info.value.code == 2 and "study:" in err and says in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["study.yaml"]


def test_the_tiny_study_still_validates():
    study = study_from_tree(tiny_tree(base={**tiny_tree()["base"], "seed": 3}))
    assert study.evaluations[0].k == [3]
