"""Shared tiny studies: a 4-class world, 2 optimizer steps per run, kNN with few resamples."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

POOL = "world:classes=4:per_class=16:size=16:seed=0"
OTHER = "world:classes=4:per_class=16:size=16:seed=0:class_offset=4"
TASK = "world:classes=4:per_class=8:size=16:seed=0"

BASE_TREE: dict[str, Any] = {
    "name": "tiny",
    "pools": {"w": POOL, "w_other": OTHER},
    "tasks": {"wt": TASK},
    "base": {
        "backbone": "convnet_tiny",
        "image_size": 16,
        "batch_size": 32,
        "log_every": 1,
        "checkpoint_every": 1,
        "tracking": "none",
        "budget.images": 64,
        "optim.name": "sgd",  # spares worker processes the timm import that LARS needs
    },
    "grid": {"pool": ["w"], "subset.fraction": [0.5, 1.0], "seed": [0]},
    "evaluations": [{"kind": "knn", "task": "wt", "k": [3], "n_boot": 10}],
}


def tiny_tree(**changes: Any) -> dict[str, Any]:
    """A copy of the tiny study with top-level keys replaced."""
    tree = copy.deepcopy(BASE_TREE)
    tree.update(copy.deepcopy(changes))
    return tree


def write_study(path: Path, tree: dict[str, Any]) -> Path:
    """Write a study tree as YAML and return the file."""
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


@pytest.fixture
def quiet_console() -> Any:
    """A rich console writing to a buffer (not a terminal: plain progress lines)."""
    import io

    from rich.console import Console

    return Console(file=io.StringIO(), force_terminal=False, width=200)


def planned_knn(task: str = "t", **settings: Any) -> Any:
    """A planned kNN evaluation of task ``task`` (its id is the settings' hash)."""
    from divssl.study.jobs import PlannedEvaluation
    from divssl.study.spec import KnnEval

    return PlannedEvaluation.of(KnnEval(task=task, **settings), f"spec-of-{task}")


def pretrain_job(job_id: str, evaluations: list[Any] | None = None, **fields: Any) -> Any:
    """A typed pretraining job of a 16 px SimCLR run (``fields`` replace the defaults)."""
    from divssl.study.jobs import PretrainJob

    values: dict[str, Any] = {
        "id": job_id, "factors": {}, "pool": "w", "composition": None, "source": "source",
        "budget_images": 64, "unique_images": 32, "epochs": 2.0, "diversity": 0.5, "steps": 2,
        "global_batch": 32, "normalization": "compute", "model": "m",
        "config": {"method": "simclr", "backbone": "convnet_tiny", "image_size": 16, "seed": 0,
                   "cifar_stem": False, "out": f"runs/{job_id}"},
        "evaluations": evaluations or [],
    }  # fmt: skip
    values.update(fields)
    return PretrainJob(**values)


def plan_doc(jobs: list[Any], study: str = "tiny", study_dir: str = ".") -> Any:
    """A typed ``plan.json`` holding ``jobs``."""
    from divssl.study.jobs import PlanDoc

    return PlanDoc(study=study, study_dir=study_dir, jobs=jobs)
