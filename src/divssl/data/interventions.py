"""Label and image interventions on a pool (the fine-tuning-robustness paper, Section 4).

* **Granularity**: coarsen labels through a class hierarchy (:func:`superclasses_at_depth`,
  :func:`superclasses_for_count` -- ImageNet's 1000 classes to 5, 17, 37, 85 or 232 superclasses)
  and :func:`relabel` the pool; :func:`relabel_report` gives the resulting count and sizes.
* **Semantics**: keep classes chosen by their place in the hierarchy (:func:`descendants_of`, e.g.
  the animal classes of ImageNet, :func:`select_classes`) with :func:`subset_by_classes`.
* **Image diversity at fixed quantity**: :func:`diversity_subset` trades classes against images
  per class (a quarter of the classes with four times the images each) with the total fixed.

Each intervention returns a :class:`ViewPool`, a random-access view of the original pool (same
images, a subset of indices and/or new labels) that the training loop uses like any pool.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from divssl.data.hierarchy import (
    Hierarchy,
    descendants_of,
    imagenet1k_hierarchy,
    load_hierarchy,
    select_classes,
    superclasses_at_depth,
    superclasses_for_count,
)
from divssl.data.pool import Pool
from divssl.errors import ConfigError


class ViewPool(Pool):
    """A random-access view of ``base``: the samples at ``indices``, optionally relabelled.

    Args:
        base: a random-access pool.
        indices: int array of shape (n,), base indices kept, in order.
        labels: int array of shape (n,) over ``class_names`` (``-1`` unknown), or ``None`` to keep
            the base labels.
        class_names: names of the new labels (required with ``labels``).
        intervention: description of how the view was made (recorded for provenance).

    Attributes:
        indices: the base indices of the view's samples.
        intervention: the description above.

    ``spec`` and ``source`` are the base pool's (the spec names where the images come from; the
    view itself is recorded by ``intervention`` and its own manifest hash).
    """

    def __init__(
        self,
        base: Pool,
        indices: np.ndarray,
        labels: np.ndarray | None = None,
        class_names: list[str] | None = None,
        intervention: dict[str, Any] | None = None,
    ) -> None:
        if base.streaming:
            raise ConfigError("data.pool", "interventions need a random-access pool")
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        if labels is None:
            base_labels = base.labels
            self._labels = None if base_labels is None else np.asarray(base_labels)[self.indices]
            self.class_names = base.class_names
        else:
            self._labels = np.asarray(labels, dtype=np.int64)
            self.class_names = class_names
        base_keys = base.keys
        self._keys = [base_keys[int(i)] for i in self.indices]
        self.source = base.source
        self.spec = base.spec
        self.intervention = dict(intervention or {})

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def keys(self) -> Sequence[str]:
        return self._keys

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    def read(self, index: int) -> np.ndarray:
        """Decode sample ``index`` of the view; shape (H, W, 3) uint8."""
        return self.base.read(int(self.indices[index]))

    def content_fingerprint(self) -> bytes:
        return (self.base.manifest_hash() + repr(sorted(self.intervention.items()))).encode()


def _require_labels(pool: Pool, fld: str) -> tuple[np.ndarray, list[str]]:
    if pool.labels is None or pool.class_names is None:
        raise ConfigError(fld, f"pool {pool.spec!r} has no class labels")
    return np.asarray(pool.labels, dtype=np.int64), list(pool.class_names)


# -------------------------------------------------------------------------------- granularity


@dataclass
class RelabelReport:
    """Outcome of a relabelling.

    Attributes:
        count: number of superclasses.
        sizes: superclass -> number of images.
        members: superclass -> original class names.
        names: superclass -> readable name (from the hierarchy when given).
    """

    count: int
    sizes: dict[str, int]
    members: dict[str, list[str]]
    names: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "count": self.count,
            "sizes": self.sizes,
            "members": self.members,
            "names": self.names,
        }


def relabel(pool: Pool, mapping: Mapping[str, str]) -> ViewPool:
    """Replace each sample's class by its superclass.

    Args:
        pool: a labelled random-access pool.
        mapping: pool class name -> superclass name, covering every class of the pool.

    Returns:
        A view with the same samples; ``class_names`` are the sorted superclasses.

    Raises:
        ConfigError: unlabelled pool, or pool classes missing from the mapping.
    """
    labels, names = _require_labels(pool, "granularity")
    missing = [c for c in names if c not in mapping]
    if missing:
        raise ConfigError("granularity.mapping", f"no superclass for classes {missing[:5]}")
    supers = sorted({mapping[c] for c in names})
    position = {s: i for i, s in enumerate(supers)}
    remap = np.array([position[mapping[c]] for c in names] + [-1], dtype=np.int64)
    new_labels = remap[np.where(labels < 0, len(names), labels)]
    return ViewPool(
        pool,
        np.arange(len(pool)),
        new_labels,
        supers,
        {"kind": "relabel", "superclasses": len(supers)},
    )


def relabel_report(
    pool: Pool, mapping: Mapping[str, str], hierarchy: Hierarchy | None = None
) -> RelabelReport:
    """Count and per-superclass sizes of :func:`relabel` applied to ``pool``."""
    labels, names = _require_labels(pool, "granularity")
    missing = [c for c in names if c not in mapping]
    if missing:
        raise ConfigError("granularity.mapping", f"no superclass for classes {missing[:5]}")
    counts = Counter(int(x) for x in labels if x >= 0)
    sizes: dict[str, int] = {}
    members: dict[str, list[str]] = {}
    for i, cls in enumerate(names):
        sup = mapping[cls]
        sizes[sup] = sizes.get(sup, 0) + counts.get(i, 0)
        members.setdefault(sup, []).append(cls)
    readable = {s: hierarchy.name(s) if hierarchy is not None else s for s in sizes}
    return RelabelReport(len(sizes), dict(sorted(sizes.items())), members, readable)


def pool_superclasses(
    pool: Pool, h: Hierarchy, count: int | None = None, depth: int | None = None
) -> dict[str, str]:
    """Superclass mapping for a pool's classes: a cut of ``h`` restricted to those classes.

    Pool class names are matched to hierarchy classes by id or unique readable name.

    Raises:
        ConfigError: neither or both of ``count`` / ``depth``, or unknown classes.
    """
    _, names = _require_labels(pool, "granularity")
    if (count is None) == (depth is None):
        raise ConfigError("granularity", "give exactly one of granularity.count or .depth")
    match = h.match_classes(names, "granularity.hierarchy")
    classes = sorted(set(match.values()))
    if count is not None:
        cut = superclasses_for_count(h, count, classes)
    else:
        assert depth is not None
        cut = superclasses_at_depth(h, depth, classes)
    return {name: cut[match[name]] for name in names}


# ---------------------------------------------------------------------------------- semantics


def subset_by_classes(pool: Pool, classes: Sequence[str]) -> ViewPool:
    """Keep the samples of the given classes; labels renumbered in the pool's class order.

    Raises:
        ConfigError: unlabelled pool, empty list or classes the pool does not have.
    """
    labels, names = _require_labels(pool, "semantics.classes")
    wanted = set(classes)
    if not wanted:
        raise ConfigError("semantics.classes", "no classes given")
    missing = sorted(wanted - set(names))
    if missing:
        choices = names if len(names) <= 50 else None
        raise ConfigError("semantics.classes", f"not in the pool: {missing[:5]}", choices)
    kept = [c for c in names if c in wanted]
    old_ids = np.array([names.index(c) for c in kept], dtype=np.int64)
    remap = np.full(len(names) + 1, -1, dtype=np.int64)
    remap[old_ids] = np.arange(len(kept))
    indices = np.flatnonzero(np.isin(labels, old_ids))
    return ViewPool(
        pool,
        indices,
        remap[labels[indices]],
        kept,
        {"kind": "classes", "classes": len(kept)},
    )


# ------------------------------------------------------------------------------ image diversity


def _choose_classes(
    names: list[str], class_fraction: float, rng: np.random.Generator, groups: Mapping[str, str]
) -> list[str]:
    """Seeded choice of round(fraction * n) classes, stratified within each group."""
    by_group: dict[str, list[str]] = {}
    for c in names:
        by_group.setdefault(groups[c], []).append(c)
    chosen: list[str] = []
    for group in sorted(by_group):
        members = by_group[group]
        k = max(1, int(round(class_fraction * len(members))))
        chosen += [members[i] for i in sorted(rng.choice(len(members), k, replace=False))]
    return [c for c in names if c in set(chosen)]


def diversity_subset(
    pool: Pool,
    class_fraction: float,
    total: int,
    seed: int = 0,
    mapping: Mapping[str, str] | None = None,
) -> ViewPool:
    """Fixed-quantity subset trading classes for images per class.

    ``round(class_fraction * K)`` classes are drawn with ``seed`` and each contributes
    ``total // k`` images (the first ``total % k`` classes in seeded order one more), drawn with
    ``seed``; ``class_fraction=0.25`` gives a quarter of the classes with four times the images
    each, compared with ``class_fraction=1`` at the same ``total``.

    With ``mapping`` (class -> superclass) the class choice is stratified: every superclass keeps
    ``round(class_fraction * its classes)`` (at least one) of its classes, and samples are labelled
    by superclass, i.e. the same label set with fewer subclasses per superclass.

    Args:
        pool: labelled random-access pool.
        class_fraction: fraction of classes kept, in (0, 1].
        total: total number of images (held fixed across fractions).
        seed: seed of the class and image choice.
        mapping: optional class -> superclass mapping.

    Returns:
        The subset view (labels over the kept classes, or the superclasses).

    Raises:
        ConfigError: bad fraction or total, or a class with fewer images than its quota.
    """
    labels, names = _require_labels(pool, "diversity")
    if not 0.0 < class_fraction <= 1.0:
        raise ConfigError("diversity.class_fraction", f"must be in (0, 1], got {class_fraction}")
    if isinstance(total, bool) or int(total) != total or total < 1:
        raise ConfigError("diversity.total", f"must be a positive integer, got {total!r}")
    if mapping is not None:
        missing = [c for c in names if c not in mapping]
        if missing:
            raise ConfigError("diversity.mapping", f"no superclass for classes {missing[:5]}")
    rng = np.random.default_rng(seed)
    groups = mapping if mapping is not None else {c: "" for c in names}
    chosen = _choose_classes(names, class_fraction, rng, groups)
    k = len(chosen)
    if total < k:
        raise ConfigError("diversity.total", f"{total} images cannot cover {k} classes")
    extra = set(rng.permutation(k)[: total % k].tolist())
    picked: list[np.ndarray] = []
    for j, cls in enumerate(chosen):
        quota = total // k + (j in extra)
        members = np.flatnonzero(labels == names.index(cls))
        if len(members) < quota:
            raise ConfigError(
                "diversity.total",
                f"class {cls!r} has {len(members)} images but needs {quota} "
                f"({total} images over {k} classes)",
            )
        picked.append(rng.choice(members, quota, replace=False))
    indices = np.sort(np.concatenate(picked))
    new_names = sorted({groups[c] for c in chosen}) if mapping is not None else chosen
    position = {n: i for i, n in enumerate(new_names)}
    key_of = (lambda c: groups[c]) if mapping is not None else (lambda c: c)
    remap = np.array([position.get(key_of(c), -1) for c in names], dtype=np.int64)
    return ViewPool(
        pool,
        indices,
        remap[labels[indices]],
        new_names,
        {
            "kind": "diversity",
            "class_fraction": class_fraction,
            "total": int(total),
            "seed": seed,
            "classes": k,
        },
    )


__all__ = [
    "Hierarchy",
    "RelabelReport",
    "ViewPool",
    "descendants_of",
    "diversity_subset",
    "imagenet1k_hierarchy",
    "load_hierarchy",
    "pool_superclasses",
    "relabel",
    "relabel_report",
    "select_classes",
    "subset_by_classes",
    "superclasses_at_depth",
    "superclasses_for_count",
]
