"""Downstream tasks: labelled datasets with train / test splits and optional OOD and val splits.

A task is named by either

* a YAML file with ``name``, ``train``, ``test`` and optionally ``ood`` and ``val``, each a pool
  spec (like iWildCam-WILDS, whose ID test split is ``id_test`` and OOD test split ``test``)::

      name: iwildcam
      train: "folder:root=/data/iwildcam/train"
      test: "folder:root=/data/iwildcam/id_test"
      ood: "folder:root=/data/iwildcam/test"

* or a pool spec whose reader takes a ``split`` key, e.g.
  ``world:classes=10:per_class=200:size=16``: the splits are the spec with ``split=train``,
  ``split=test`` and, when the reader accepts it, ``split=ood``.

Labels of every split are expressed in the train split's class ids: when the pools carry class
names, a split's labels are mapped by name (an OOD split may lack some classes; a class unknown to
the train split is an error).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from divssl.data.pool import Pool, open_pool, parse_spec
from divssl.errors import ConfigError

SPLITS = ("train", "test", "ood", "val")
REQUIRED_SPLITS = ("train", "test")
_YAML_KEYS = ("name", *SPLITS)


@dataclass
class Task:
    """A labelled downstream task.

    Attributes:
        name: task name (YAML ``name``, or the pool spec).
        specs: split name -> pool spec; always has ``train`` and ``test``.
        origin: the spec string or YAML path the task was opened from.
        missing: split name -> why it is absent (for pool-spec tasks whose reader rejects it).
    """

    name: str
    specs: dict[str, str]
    origin: str
    missing: dict[str, str] = field(default_factory=dict)
    _pools: dict[str, Pool] = field(default_factory=dict, repr=False)

    def has(self, split: str) -> bool:
        """Whether the task declares ``split``."""
        return split in self.specs

    @property
    def slug(self) -> str:
        """File-name-safe name for results files (long names keep a hash for uniqueness)."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self.name).strip("-") or "task"
        if len(slug) > 60:
            digest = hashlib.sha256(self.name.encode()).hexdigest()[:8]
            slug = f"{slug[:48]}-{digest}"
        return slug

    def pool(self, split: str) -> Pool:
        """The pool of ``split`` (opened once, then reused).

        Raises:
            ConfigError: the task has no such split.
        """
        if split not in self.specs:
            reason = self.missing.get(split, "not declared")
            raise ConfigError(
                f"task.{split}", f"task {self.name!r} has no {split!r} split ({reason})", self.specs
            )
        if split not in self._pools:
            self._pools[split] = _open_labelled(self.specs[split], f"task.{split}")
        return self._pools[split]

    @property
    def class_names(self) -> list[str] | None:
        """Class names of the train split (the task's label space), if the pool has them."""
        return self.pool("train").class_names

    @property
    def num_classes(self) -> int:
        """K: the train split's class count (or the largest label of train/test + 1)."""
        names = self.class_names
        if names is not None:
            return len(names)
        tops = [int(np.max(self.pool(s).labels)) for s in ("train", "test")]  # type: ignore[arg-type]
        return max(tops) + 1

    def label_map(self, split: str) -> np.ndarray | None:
        """Map from a split's label ids to the train split's, by class name (``None``: identity).

        Raises:
            ConfigError: the split has a class the train split lacks.
        """
        train_names, names = self.class_names, self.pool(split).class_names
        if train_names is None or names is None or names == train_names:
            return None
        index = {c: i for i, c in enumerate(train_names)}
        unknown = [c for c in names if c not in index]
        if unknown:
            raise ConfigError(
                f"task.{split}", f"classes {unknown[:5]} are not in the train split", index
            )
        return np.array([index[c] for c in names], dtype=np.int64)

    def align_labels(self, split: str, labels: np.ndarray) -> np.ndarray:
        """Express a split's labels in the train split's class ids.

        Args:
            split: split name.
            labels: (N,) labels as the split's pool numbers them.

        Returns:
            (N,) int64 labels in ``[0, num_classes)``.

        Raises:
            ConfigError: the split has a class the train split lacks, or labels out of range.
        """
        labels = np.asarray(labels, dtype=np.int64)
        mapping = self.label_map(split)
        if mapping is not None:
            labels = mapping[labels]
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ConfigError(
                f"task.{split}", f"labels outside [0, {self.num_classes}) in {self.specs[split]!r}"
            )
        return labels

    def describe(self) -> dict[str, object]:
        """JSON form: name, origin, split specs, absent splits."""
        return {
            "name": self.name,
            "origin": self.origin,
            "splits": dict(self.specs),
            "missing": dict(self.missing),
        }


def _open_labelled(spec: str, field_name: str) -> Pool:
    pool = open_pool(spec, field_name)
    if pool.streaming:
        raise ConfigError(field_name, f"evaluation needs a random-access pool, {spec!r} streams")
    labels = pool.labels
    if labels is None or (len(labels) and int(np.min(labels)) < 0):
        raise ConfigError(field_name, f"pool {spec!r} is not fully labelled (labels of -1/None)")
    if len(pool) == 0:
        raise ConfigError(field_name, f"pool {spec!r} is empty")
    return pool


def _task_from_yaml(path: Path) -> Task:
    from divssl.io import read_yaml

    try:
        doc = read_yaml(path)
    except Exception as exc:  # yaml.YAMLError and decoding errors alike are bad user input
        raise ConfigError("task", f"cannot read task file {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError("task", f"task file {path} must hold a mapping")
    unknown = [k for k in doc if k not in _YAML_KEYS]
    if unknown:
        raise ConfigError(f"task.{unknown[0]}", "unknown key in task file", _YAML_KEYS)
    for split in REQUIRED_SPLITS:
        if not doc.get(split):
            raise ConfigError(f"task.{split}", f"task file {path} has no {split!r} split")
    specs = {s: str(doc[s]) for s in SPLITS if doc.get(s)}
    task = Task(name=str(doc.get("name") or path.stem), specs=specs, origin=str(path))
    for split in specs:
        task.label_map(split)
    return task


def _task_from_pool_spec(spec: str) -> Task:
    _, kwargs = parse_spec(spec, "task")
    if "split" in kwargs:
        raise ConfigError("task", f"leave 'split' out of a task spec; got {spec!r}")
    task = Task(name=spec, specs={}, origin=spec)
    for split in ("train", "test"):
        task.specs[split] = f"{spec}:split={split}"
        try:
            task.pool(split)
        except ConfigError as exc:
            if exc.field == f"task.{split}.split":  # open_pool's "unknown key" error
                raise ConfigError(
                    "task",
                    f"pool reader of {spec!r} takes no 'split' key; name the splits in a task "
                    "YAML file (train/test/ood/val pool specs)",
                ) from exc
            raise
    ood = f"{spec}:split=ood"
    try:
        task._pools["ood"] = _open_labelled(ood, "task.ood")
        task.specs["ood"] = ood
    except (ConfigError, ValueError) as exc:
        task.missing["ood"] = f"reader rejects split=ood: {exc}"
    return task


def open_task(spec: str) -> Task:
    """Open a task from a YAML file path or a pool spec whose reader takes ``split``.

    Args:
        spec: ``path/to/task.yaml`` or e.g. ``world:classes=10:per_class=200:size=16``.

    Raises:
        ConfigError: unreadable file, unknown key, missing train/test split, unlabelled pool, or
            a reader without a ``split`` key.
    """
    if not spec:
        raise ConfigError("task", "empty task spec")
    if spec.endswith((".yaml", ".yml")):
        path = Path(spec)
        if not path.is_file():
            raise ConfigError("task", f"no task file at {spec}")
        return _task_from_yaml(path)
    return _task_from_pool_spec(spec)
