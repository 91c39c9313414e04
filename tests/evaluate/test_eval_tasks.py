"""Tasks from pool specs and YAML files; split errors; label alignment by class name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from divssl.data.pool import ArrayPool, register_pool
from divssl.errors import ConfigError
from divssl.evaluate.tasks import open_task


@register_pool("h4toy")
def _toy_pool(names: str = "a-b-c", split: str = "train", n: int = 4) -> ArrayPool:
    """A tiny labelled pool with train/test splits only (no ood)."""
    if split not in ("train", "test"):
        raise ConfigError("h4toy.split", f"unknown split {split!r}", ("train", "test"))
    classes = names.split("-")
    labels = np.repeat(np.arange(len(classes)), n)
    offset = 0 if split == "train" else 100
    images = np.full((len(labels), 4, 4, 3), offset, dtype=np.uint8) + labels[:, None, None, None]
    return ArrayPool(images.astype(np.uint8), labels, classes)


@register_pool("h4nosplit")
def _no_split_pool(n: int = 3) -> ArrayPool:
    return ArrayPool(np.zeros((n, 4, 4, 3), np.uint8), np.zeros(n, np.int64), ["a"])


@register_pool("h4trainonly")
def _train_only_pool(split: str = "train") -> ArrayPool:
    if split != "train":
        raise ConfigError("h4trainonly.split", f"unknown split {split!r}", ("train",))
    return ArrayPool(np.zeros((2, 4, 4, 3), np.uint8), np.zeros(2, np.int64), ["a"])


def test_world_spec_task_has_ood() -> None:
    task = open_task("world:classes=3:per_class=4:size=8")
    assert set(task.specs) == {"train", "test", "ood"}
    assert task.specs["ood"].endswith("split=ood")
    assert task.num_classes == 3 and task.class_names == ["c000", "c001", "c002"]
    assert task.slug == "world-classes-3-per_class-4-size-8"
    assert task.pool("train").manifest_hash() != task.pool("test").manifest_hash()


def test_pool_spec_without_ood_records_why() -> None:
    task = open_task("h4toy:n=2")
    assert set(task.specs) == {"train", "test"}
    assert "ood" in task.missing
    with pytest.raises(ConfigError, match="no 'ood' split") as err:
        task.pool("ood")
    assert err.value.field == "task.ood"


def test_reader_without_split_key() -> None:
    with pytest.raises(ConfigError, match="takes no 'split' key"):
        open_task("h4nosplit")
    with pytest.raises(ConfigError, match="unknown split 'test'") as err:
        open_task("h4trainonly")
    assert err.value.field == "h4trainonly.split"
    with pytest.raises(ConfigError, match="leave 'split' out"):
        open_task("h4toy:split=train")
    with pytest.raises(ConfigError, match="valid choices"):
        open_task("nosuchpool:x=1")


def test_yaml_task_and_label_alignment(tmp_path: Path) -> None:
    spec = {
        "name": "toy task",
        "train": "h4toy:names=a-b-c:split=train",
        "test": "h4toy:names=a-b-c:split=test",
        "ood": "h4toy:names=a-c:split=test",
    }
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(spec))
    task = open_task(str(path))
    assert task.name == "toy task" and task.slug == "toy-task"
    ood_labels = task.pool("ood").labels
    assert ood_labels is not None
    np.testing.assert_array_equal(task.align_labels("ood", ood_labels), [0] * 4 + [2] * 4)
    np.testing.assert_array_equal(task.align_labels("test", np.array([0, 1, 2])), [0, 1, 2])


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"name": "x", "test": "h4toy:split=test"}, "task.train"),
        ({"train": "h4toy:split=train"}, "task.test"),
        ({"train": "h4toy", "test": "h4toy", "extra": 1}, "task.extra"),
        (
            {"train": "h4toy:names=a-b", "test": "h4toy:names=a-z:split=test"},
            "task.test",
        ),
    ],
)
def test_yaml_task_errors(tmp_path: Path, doc: dict, field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as err:
        open_task(str(path))
    assert err.value.field == field


def test_missing_yaml_file() -> None:
    with pytest.raises(ConfigError, match="no task file"):
        open_task("/nonexistent/task.yaml")
