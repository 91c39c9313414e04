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
