"""Typed jobs: plan.json holds job models that workers read back as the same objects."""

from __future__ import annotations

import json

import pytest

from divssl.errors import ConfigError
from divssl.io import atomic_write_json
from divssl.study.jobs import (
    BaselineJob,
    PlanDoc,
    PlannedEvaluation,
    PretrainJob,
    job_dir,
    read_plan,
    record_path,
)
from divssl.study.plan import build_plan
from divssl.study.spec import FinetuneEval, LinearEval, study_from_tree

from .conftest import pretrain_job, tiny_tree


def test_planned_evaluation_is_flat_in_json_and_typed_in_python():
    ev = LinearEval(task="wt", fractions=[10, 100], weight_decays=[1e-3])
    planned = PlannedEvaluation.of(ev, "world:classes=4")
    flat = planned.model_dump(mode="json")
    # the plan's flat form: the study's settings plus id and task_spec
    assert flat == {
        **ev.model_dump(mode="json"),
        "id": ev.eval_id(),
        "task_spec": "world:classes=4",
    }
    back = PlannedEvaluation.model_validate(flat)
    assert back == planned and isinstance(back.settings, LinearEval)
    assert back.kind == "linear" and back.task == "wt" and back.settings.eval_id() == back.id


def test_eval_ids_ignore_settings_added_at_their_old_behaviour():
    ev = LinearEval(task="wt")
    assert ev.eval_id() == LinearEval(task="wt", standardize=True).eval_id()
    assert ev.eval_id() != LinearEval(task="wt", standardize=False).eval_id()


def test_plan_json_round_trips_and_workers_get_objects(tmp_path):
    tree = tiny_tree(
        evaluations=[
            {"kind": "knn", "task": "wt", "k": [3], "n_boot": 10},
            {"kind": "finetune", "task": "wt", "epochs": 1, "scratch_seeds": [0]},
        ]
    )
    plan = build_plan(study_from_tree(tree), tmp_path / "s", count_flops=False)
    doc = plan.to_doc()
    atomic_write_json(tmp_path / "s" / "plan.json", doc.model_dump(mode="json"))
    back = read_plan(tmp_path / "s")
    assert back.jobs == doc.jobs and back.pools == doc.pools  # (models hold NaN FLOPs here)
    assert [type(j) for j in back.jobs] == [PretrainJob, PretrainJob, BaselineJob]
    run, baseline = back.jobs[0], back.jobs[2]
    assert isinstance(baseline.evaluation.settings, FinetuneEval) and baseline.owed == [
        baseline.evaluation
    ]
    assert [e.kind for e in run.owed] == ["knn", "finetune"]
    assert job_dir(tmp_path, run) == tmp_path / "runs" / run.id
    assert job_dir(tmp_path, baseline) == tmp_path / "baselines" / baseline.id
    assert record_path(tmp_path, "x") == tmp_path / "records" / "x.json"
    assert back.job(run.id) is back.jobs[0]
    with pytest.raises(ConfigError, match="no job"):
        back.job("nope")


def test_a_bad_plan_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match="no plan.json"):
        read_plan(tmp_path)
    doc = PlanDoc(study="t", study_dir=str(tmp_path), jobs=[pretrain_job("r0")])
    data = doc.model_dump(mode="json")
    data["jobs"][0]["budget_images"] = "many"
    (tmp_path / "plan.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError) as err:
        read_plan(tmp_path)
    assert err.value.field.startswith("plan.json.jobs[0]") and "budget_images" in err.value.field
