"""Study specs: ${param} substitution, --set, and errors that name the field."""

from __future__ import annotations

import pytest

from divssl.errors import ConfigError
from divssl.study.spec import KnnEval, load_study, study_from_tree

from .conftest import tiny_tree, write_study


def test_params_are_substituted_typed_and_overridable(tmp_path):
    tree = tiny_tree(params={"root": "/data/x", "c": 64, "k": 3})
    tree["pools"]["f"] = "folder:root=${root}/train"
    tree["base"]["budget.images"] = "${c}"
    tree["evaluations"][0]["k"] = ["${k}"]
    study = study_from_tree(tree, ["root=/other", "c=128"])
    assert study.pools["f"] == "folder:root=/other/train"
    assert study.base["budget.images"] == 128  # a whole placeholder keeps the value's type
    assert study.evaluations[0].k == [3]
    assert study.params["root"] == "/other"


def test_unknown_parameter_and_unknown_set_name(tmp_path):
    tree = tiny_tree()
    tree["pools"]["f"] = "folder:root=${nowhere}"
    with pytest.raises(ConfigError) as err:
        study_from_tree(tree)
    assert err.value.field == "pools.f"
    with pytest.raises(ConfigError) as err:
        study_from_tree(tiny_tree(params={"root": "/x"}), ["rot=/y"])
    assert err.value.field == "--set rot" and err.value.choices == ["root"]


def test_unknown_method_names_its_position():
    tree = tiny_tree(grid={"method": ["simclr", "byol", "simclr2"], "seed": [0]})
    with pytest.raises(ConfigError) as err:
        study_from_tree(tree)
    assert err.value.field == "grid.method[2]"
    assert "simclr2" in str(err.value) and "vicreg" in err.value.choices


def test_unknown_backbone_axis_and_top_level_key():
    with pytest.raises(ConfigError) as err:
        study_from_tree(tiny_tree(grid={"backbone": ["resnet19"]}))
    assert err.value.field == "grid.backbone[0]" and "resnet18" in err.value.choices
    with pytest.raises(ConfigError) as err:
        study_from_tree(tiny_tree(grid={"subset.fractoin": [0.5]}))
    assert err.value.field == "grid.subset.fractoin" and "composition" in err.value.choices
    with pytest.raises(ConfigError) as err:
        study_from_tree(tiny_tree(colour="red"))
    assert err.value.field == "colour" and "grid" in err.value.choices
    with pytest.raises(ConfigError) as err:
        study_from_tree(tiny_tree(grid=[{"seed": [0]}, {"normalization": ["epochs"]}]))
    assert err.value.field == "grid[1].normalization[0]"


def test_evaluation_errors_name_the_entry():
    with pytest.raises(ConfigError) as err:
        study_from_tree(tiny_tree(evaluations=[{"kind": "svm", "task": "wt"}]))
    assert err.value.field == "evaluations[0].kind" and err.value.choices == [
        "finetune",
        "knn",
        "linear",
    ]
    bad_k = [{"kind": "knn", "task": "wt"}, {"kind": "knn", "task": "wt", "k": ["many"]}]
    with pytest.raises(ConfigError) as err:
        study_from_tree(tiny_tree(evaluations=bad_k))
    assert err.value.field == "evaluations[1].k[0]"
    with pytest.raises(ConfigError) as err:
        study_from_tree(tiny_tree(evaluations=[{"kind": "knn", "task": "nope"}]))
    assert err.value.field == "evaluations[0].task" and err.value.choices == ["wt"]
    with pytest.raises(ConfigError) as err:
        study_from_tree(tiny_tree(evaluations=[{"kind": "linear", "task": "wt", "kk": 1}]))
    assert err.value.field == "evaluations[0].kk" and "fractions" in err.value.choices


def test_composition_errors_are_prefixed_with_the_composition_name():
    parts = [{"name": "B", "pool": "w", "prior": "inside"}]
    with pytest.raises(ConfigError) as err:
        study_from_tree(tiny_tree(grid={"composition": {"B": parts}}))
    assert err.value.field == "grid.composition.B.composition.parts[0].prior"
    assert err.value.choices == ["all", "in", "out"]


def test_epoch_normalization_needs_a_reference_and_derived_pools_one_step():
    with pytest.raises(ConfigError) as err:
        study_from_tree(tiny_tree(grid={"normalization": ["epoch"]}))
    assert err.value.field == "epoch_reference"
    tree = tiny_tree()
    tree["pools"]["coarse"] = {"pool": "w"}
    with pytest.raises(ConfigError) as err:
        study_from_tree(tree)
    assert err.value.field == "pools.coarse"
    tree["pools"]["coarse"] = {"pool": "w", "relabel": {"count": 2, "colour": 1}}
    with pytest.raises(ConfigError) as err:
        study_from_tree(tree)
    assert err.value.field == "pools.coarse.relabel.colour"


def test_load_study_reads_yaml_and_rejects_bad_files(tmp_path):
    path = write_study(tmp_path / "s.yaml", tiny_tree())
    study = load_study(path)
    assert study.name == "tiny" and study.grid == [tiny_tree()["grid"]]
    with pytest.raises(ConfigError) as err:
        load_study(tmp_path / "missing.yaml")
    assert err.value.field == "study"
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(ConfigError):
        load_study(tmp_path / "bad.yaml")


def test_eval_id_is_stable_and_changes_with_settings():
    a = KnnEval(task="wt", k=[20])
    assert a.eval_id() == KnnEval(task="wt", k=[20]).eval_id()
    assert a.eval_id().startswith("knn-wt-")
    assert a.eval_id() != KnnEval(task="wt", k=[200]).eval_id()


def test_report_sections_are_checked_against_the_report():
    pytest.importorskip("divssl.report")
    with pytest.raises(ConfigError) as err:
        study_from_tree(tiny_tree(report={"sections": ["summary", "table9"]}))
    assert err.value.field == "report.sections[1]" and "table1" in err.value.choices
