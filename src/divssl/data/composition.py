"""Compositions: pretraining sets built from parts of several pools with class priors.

Section 5.2 of the SSL-diversity paper pretrains on ``B`` (half of ImageNet-100, all classes) and on
``B ∪ A`` where ``A`` comes from the same source, the web or a diffusion model, either with a class
prior (``A_in``: classes of the downstream task) or without (``A_out``: disjoint classes). Here such
a set is declared as parts::

    parts:
      - {name: B, pool: "folder:root=/data/in100", size: 65000, prior: all, seed: 0}
      - {name: A, pool: "folder:root=/data/in100", size: 65000, prior: in, exclude: B}
      - {name: A_web, pool: "folder:root=/data/web:source=web", size: 65000, prior: out}

Part keys:

* ``pool`` (required): pool spec; ``source=web|synthetic`` in the spec sets the source tag.
* ``size``: images to draw (default: every allowed image).
* ``prior``: ``in`` (classes whose NAME is among the task's classes), ``out`` (classes not among
  them), ``all`` (default), or an explicit list of class names.
* ``num_classes``: keep only this many of the allowed classes, chosen with the part's seed (the
  paper's A_out draws 100 random non-overlapping ImageNet classes).
* ``seed``: sampling seed (default 0).
* ``exclude``: part name(s) whose images this part must not repeat.
* ``name``: part name used in keys and tags (default ``part<i>``).

Sampling inside a part is seeded and class-balanced over the allowed classes where labels exist
(the balanced ordering of :mod:`divssl.data.ordering` restricted to the allowed images). Parts drawn
from the same pool (same manifest) never share an image: a part is resolved after the parts it
excludes, and every part removes the images already taken by earlier-resolved parts of the same
pool. ``exclude`` of a part on a different pool is an error.

:func:`resolve_composition` turns the declaration into fixed index lists over versioned pools
(spec + manifest hash), saved in the run dir; :class:`ComposedPool` presents the union as one
random-access pool with keys ``"<part>/<key>"``, labels over a joint class-name list and per-sample
source tags.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from divssl.data.ordering import balanced_permutation
from divssl.data.pool import Pool, open_pool
from divssl.errors import ConfigError
from divssl.io import atomic_write_json

COMPOSITION_FORMAT = "divssl-composition/1"
PRIORS = ("in", "out", "all")
PART_KEYS = ("name", "pool", "size", "prior", "num_classes", "seed", "exclude")


@dataclass
class Part:
    """One declared part of a composition (see the module docstring for the keys)."""

    name: str
    pool: str
    size: int | None = None
    prior: str | list[str] = "all"
    num_classes: int | None = None
    seed: int = 0
    exclude: list[str] = field(default_factory=list)


@dataclass
class Composition:
    """A declared pretraining set: parts plus (optionally) the downstream task's class names."""

    parts: list[Part]
    task_classes: list[str] | None = None


# ----------------------------------------------------------------------------------- parsing


def _int(value: Any, fld: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(fld, f"must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _str_list(value: Any, fld: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(fld, f"must be a name or a list of names, got {value!r}")
    return list(value)


def _parse_prior(value: Any, fld: str) -> str | list[str]:
    if isinstance(value, str):
        if value not in PRIORS:
            hint = f"unknown prior {value!r} (or give a list of class names)"
            raise ConfigError(fld, hint, PRIORS)
        return value
    names = _str_list(value, fld)
    if not names:
        raise ConfigError(fld, "an explicit class list must not be empty")
    if len(set(names)) != len(names):
        raise ConfigError(fld, "the class list repeats a name")
    return names


def _parse_part(obj: Any, i: int) -> Part:
    base = f"composition.parts[{i}]"
    if not isinstance(obj, dict):
        raise ConfigError(base, f"must be a mapping with keys {', '.join(PART_KEYS)}")
    for key in obj:
        if key not in PART_KEYS:
            raise ConfigError(f"{base}.{key}", "unknown key", PART_KEYS)
    if not isinstance(obj.get("pool"), str) or not obj["pool"]:
        raise ConfigError(f"{base}.pool", "a pool spec string is required")
    name = obj.get("name", f"part{i}")
    if not isinstance(name, str) or not name or "/" in name:
        raise ConfigError(f"{base}.name", f"must be a non-empty name without '/', got {name!r}")
    size = obj.get("size")
    num_classes = obj.get("num_classes")
    return Part(
        name=name,
        pool=obj["pool"],
        size=None if size is None else _int(size, f"{base}.size", 1),
        prior=_parse_prior(obj.get("prior", "all"), f"{base}.prior"),
        num_classes=None if num_classes is None else _int(num_classes, f"{base}.num_classes", 1),
        seed=_int(obj.get("seed", 0), f"{base}.seed", 0),
        exclude=_str_list(obj.get("exclude", []), f"{base}.exclude"),
    )


def parse_composition(obj: dict[str, Any] | list[Any]) -> Composition:
    """Validate a composition given as ``{"parts": [...], "task_classes": [...]}`` or a part list.

    Raises:
        ConfigError: naming the field, e.g. ``composition.parts[1].prior``.
    """
    if isinstance(obj, dict):
        for key in obj:
            if key not in ("parts", "task_classes"):
                raise ConfigError(f"composition.{key}", "unknown key", ["parts", "task_classes"])
        parts_obj = obj.get("parts")
        task = obj.get("task_classes")
        task_classes = None if task is None else _str_list(task, "composition.task_classes")
    else:
        parts_obj, task_classes = obj, None
    if not isinstance(parts_obj, list) or not parts_obj:
        raise ConfigError("composition.parts", "must be a non-empty list of parts")
    parts = [_parse_part(p, i) for i, p in enumerate(parts_obj)]
    names = [p.name for p in parts]
    for i, part in enumerate(parts):
        if part.name in names[:i]:
            raise ConfigError(f"composition.parts[{i}].name", f"duplicate part name {part.name!r}")
        for ex in part.exclude:
            if ex not in names or ex == part.name:
                others = [n for n in names if n != part.name]
                raise ConfigError(f"composition.parts[{i}].exclude", f"no part {ex!r}", others)
    _resolution_order(parts)
    return Composition(parts, task_classes)


def _resolution_order(parts: list[Part]) -> list[int]:
    """Declaration order, except that a part comes after the parts it excludes."""
    index = {p.name: i for i, p in enumerate(parts)}
    order: list[int] = []
    state: dict[int, str] = {}

    def visit(i: int) -> None:
        if state.get(i) == "done":
            return
        if state.get(i) == "active":
            raise ConfigError(f"composition.parts[{i}].exclude", "parts exclude each other")
        state[i] = "active"
        for ex in parts[i].exclude:
            visit(index[ex])
        state[i] = "done"
        order.append(i)

    for i in range(len(parts)):
        visit(i)
    return order


# --------------------------------------------------------------------------------- resolving


@dataclass
class ResolvedPart:
    """A part turned into a fixed index list over a versioned pool.

    Attributes:
        name: part name.
        pool: pool spec.
        manifest: pool manifest hash at resolution time.
        source: source tag of the part's images.
        prior: the declared prior.
        classes: allowed class names actually used (``None`` for unlabelled pools).
        seed: sampling seed.
        indices: int64 array of shape (size,), pool indices in sampled order.
    """

    name: str
    pool: str
    manifest: str
    source: str
    prior: str | list[str]
    classes: list[str] | None
    seed: int
    indices: np.ndarray

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (indices as a list)."""
        return {
            "name": self.name,
            "pool": self.pool,
            "manifest": self.manifest,
            "source": self.source,
            "prior": self.prior,
            "classes": self.classes,
            "seed": self.seed,
            "size": len(self.indices),
            "indices": [int(i) for i in self.indices],
        }


def _composition_hash(parts: list[ResolvedPart], task_classes: list[str] | None) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(task_classes).encode())
    for p in parts:
        h.update(f"\n{p.name}\n{p.pool}\n{p.manifest}\n{p.source}\n".encode())
        h.update(np.ascontiguousarray(p.indices, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


@dataclass
class ResolvedComposition:
    """Fixed index lists of every part; saved in the run dir and reloaded by later commands."""

    parts: list[ResolvedPart]
    task_classes: list[str] | None
    hash: str = ""

    def __post_init__(self) -> None:
        if not self.hash:
            self.hash = _composition_hash(self.parts, self.task_classes)

    def __len__(self) -> int:
        return sum(len(p.indices) for p in self.parts)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict with every part's pool, manifest, source and index list."""
        return {
            "format": COMPOSITION_FORMAT,
            "hash": self.hash,
            "size": len(self),
            "task_classes": self.task_classes,
            "parts": [p.to_json() for p in self.parts],
        }

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_json` atomically."""
        atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> ResolvedComposition:
        """Read a saved composition and verify its hash.

        Raises:
            ConfigError: missing file, wrong format or a hash that does not match the content.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError("composition", f"no such file: {path}")
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict) or doc.get("format") != COMPOSITION_FORMAT:
            raise ConfigError("composition", f"{path}: not a resolved composition file")
        parts = [
            ResolvedPart(
                name=p["name"],
                pool=p["pool"],
                manifest=p["manifest"],
                source=p["source"],
                prior=p["prior"],
                classes=p["classes"],
                seed=int(p["seed"]),
                indices=np.asarray(p["indices"], dtype=np.int64),
            )
            for p in doc["parts"]
        ]
        out = cls(parts, doc.get("task_classes"))
        if out.hash != doc.get("hash"):
            raise ConfigError("composition", f"{path}: stored hash does not match its content")
        return out

    def open(self, pools: dict[str, Pool] | None = None) -> ComposedPool:
        """Open the parts' pools (checking their manifests) and present the union as one pool."""
        return ComposedPool(self, pools)


def _allowed_classes(part: Part, pool: Pool, task: list[str] | None, fld: str) -> list[str] | None:
    names = pool.class_names
    if names is None or pool.labels is None:
        if part.prior != "all":
            raise ConfigError(f"{fld}.prior", f"pool {part.pool!r} has no class names", ["all"])
        return None
    if isinstance(part.prior, list):
        missing = [c for c in part.prior if c not in names]
        if missing:
            raise ConfigError(f"{fld}.prior", f"classes not in pool {part.pool!r}: {missing[:5]}")
        allowed = [c for c in names if c in set(part.prior)]
    elif part.prior == "all":
        allowed = list(names)
    else:
        if task is None:
            raise ConfigError(
                "composition.task_classes",
                f"prior {part.prior!r} of {fld} needs the downstream task's class names",
            )
        in_task = set(task)
        allowed = [c for c in names if (c in in_task) == (part.prior == "in")]
    if part.num_classes is not None:
        if part.num_classes > len(allowed):
            raise ConfigError(
                f"{fld}.num_classes",
                f"asks for {part.num_classes} classes but prior {part.prior!r} allows "
                f"{len(allowed)}",
            )
        rng = np.random.default_rng([part.seed, 1])  # class choice: its own stream of the seed
        keep = set(rng.choice(len(allowed), part.num_classes, replace=False).tolist())
        allowed = [c for i, c in enumerate(allowed) if i in keep]
    if not allowed:
        raise ConfigError(f"{fld}.prior", f"prior {part.prior!r} leaves no class of {part.pool!r}")
    return allowed


def _sample_part(
    part: Part, pool: Pool, allowed: list[str] | None, taken: np.ndarray, fld: str
) -> np.ndarray:
    """Seeded, class-balanced draw of ``part.size`` pool indices outside ``taken``."""
    n = len(pool)
    mask = np.ones(n, dtype=bool)
    mask[taken] = False
    labels = None if allowed is None else np.asarray(pool.labels, dtype=np.int64)
    if labels is not None and (part.prior != "all" or part.num_classes is not None):
        label_of = {name: i for i, name in enumerate(pool.class_names or [])}
        mask &= np.isin(labels, [label_of[c] for c in allowed or []])
    candidates = np.flatnonzero(mask)
    size = len(candidates) if part.size is None else part.size
    if size > len(candidates):
        raise ConfigError(
            f"{fld}.size",
            f"asks for {size} images but only {len(candidates)} are available in {part.pool!r} "
            "after the class prior and exclusions",
        )
    if size == 0:
        raise ConfigError(f"{fld}.size", f"no image of {part.pool!r} is available")
    if labels is None:
        order = np.random.default_rng(part.seed).permutation(len(candidates))
    else:
        order = balanced_permutation(labels[candidates], part.seed)
    return candidates[order[:size]].astype(np.int64)


def resolve_composition(
    comp: Composition,
    task_class_names: Sequence[str] | None = None,
    pools: dict[str, Pool] | None = None,
) -> ResolvedComposition:
    """Draw every part's images.

    Args:
        comp: from :func:`parse_composition`.
        task_class_names: class names of the downstream task (for priors ``in`` / ``out``);
            overrides ``comp.task_classes``.
        pools: already opened pools by spec; pools opened here are added to it.

    Returns:
        The resolved composition (index lists over versioned pools).

    Raises:
        ConfigError: bad pools, priors that need task classes, sizes beyond what is available,
            exclusions across different pools.
    """
    task = list(task_class_names) if task_class_names is not None else comp.task_classes
    opened: dict[str, Pool] = pools if pools is not None else {}
    taken: dict[str, np.ndarray] = {}  # pool manifest -> indices used so far
    resolved: dict[int, ResolvedPart] = {}
    for i in _resolution_order(comp.parts):
        part, fld = comp.parts[i], f"composition.parts[{i}]"
        if part.pool not in opened:
            opened[part.pool] = open_pool(part.pool, field=f"{fld}.pool")
        pool = opened[part.pool]
        if pool.streaming:
            raise ConfigError(f"{fld}.pool", "compositions need random-access pools")
        manifest = pool.manifest_hash()
        for ex in part.exclude:
            other = next(r for r in resolved.values() if r.name == ex)
            if other.manifest != manifest:
                raise ConfigError(
                    f"{fld}.exclude",
                    f"part {ex!r} is drawn from another pool ({other.pool!r}); exclusion only "
                    "applies to parts of the same pool",
                )
        allowed = _allowed_classes(part, pool, task, fld)
        used = taken.get(manifest, np.empty(0, dtype=np.int64))
        indices = _sample_part(part, pool, allowed, used, fld)
        taken[manifest] = np.concatenate([used, indices])
        resolved[i] = ResolvedPart(
            name=part.name,
            pool=part.pool,
            manifest=manifest,
            source=pool.source,
            prior=part.prior,
            classes=allowed,
            seed=part.seed,
            indices=indices,
        )
    return ResolvedComposition([resolved[i] for i in range(len(comp.parts))], task)


# ------------------------------------------------------------------------------ composed pool


class ComposedPool(Pool):
    """The union of a resolved composition's parts as one random-access pool.

    Samples are ordered part by part, each part in its sampled order. Keys are
    ``"<part>/<pool key>"``; labels index :attr:`class_names`, the union of the parts' class names
    in order of first appearance (``-1`` for unlabelled samples); :attr:`sources` holds each
    sample's source tag and :attr:`part_ids` its part index. ``source`` is the common tag of all
    parts, or ``"mixed"``. ``spec`` is ``"composition:hash=<hash>"`` (provenance only; reopen a
    saved composition with :meth:`ResolvedComposition.load` and :meth:`ResolvedComposition.open`).

    Args:
        resolved: the resolved composition.
        pools: already opened pools by spec (opened with ``open_pool`` otherwise).

    Raises:
        ConfigError: a pool whose manifest changed since the composition was resolved.
    """

    def __init__(self, resolved: ResolvedComposition, pools: dict[str, Pool] | None = None) -> None:
        self.resolved = resolved
        self._pools: list[Pool] = []
        opened: dict[str, Pool] = pools if pools is not None else {}
        for i, part in enumerate(resolved.parts):
            if part.pool not in opened:
                opened[part.pool] = open_pool(part.pool, field=f"composition.parts[{i}].pool")
            pool = opened[part.pool]
            if pool.manifest_hash() != part.manifest:
                raise ConfigError(
                    f"composition.parts[{i}].pool",
                    f"pool {part.pool!r} changed since the composition was resolved "
                    f"(manifest {pool.manifest_hash()} != {part.manifest})",
                )
            self._pools.append(pool)
        self._build_index()
        tags = sorted({p.source for p in resolved.parts})
        self.source = tags[0] if len(tags) == 1 else "mixed"
        self.spec = f"composition:hash={resolved.hash}"

    def _build_index(self) -> None:
        parts = self.resolved.parts
        self.part_ids = np.concatenate(
            [np.full(len(p.indices), i, dtype=np.int64) for i, p in enumerate(parts)]
        )
        self.local_indices = np.concatenate([p.indices for p in parts]).astype(np.int64)
        self.sources = np.concatenate([np.full(len(p.indices), p.source) for p in parts])
        self._keys = [
            f"{p.name}/{pool.keys[int(j)]}"
            for p, pool in zip(parts, self._pools, strict=True)
            for j in p.indices
        ]
        joint: list[str] = []
        for pool in self._pools:
            for name in pool.class_names or []:
                if name not in joint:
                    joint.append(name)
        self.class_names = joint if joint else None
        pos = {name: i for i, name in enumerate(joint)}
        labels = []
        for p, pool in zip(parts, self._pools, strict=True):
            if pool.labels is None or pool.class_names is None:
                labels.append(np.full(len(p.indices), -1, dtype=np.int64))
                continue
            remap = np.array([pos[n] for n in pool.class_names] + [-1], dtype=np.int64)
            local = np.asarray(pool.labels, dtype=np.int64)[p.indices]
            labels.append(remap[np.where(local < 0, len(pool.class_names), local)])
        self._labels = np.concatenate(labels) if joint else None

    def __len__(self) -> int:
        return len(self.local_indices)

    @property
    def keys(self) -> Sequence[str]:
        return self._keys

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    def read(self, index: int) -> np.ndarray:
        """Decode sample ``index`` from its part's pool; shape (H, W, 3) uint8."""
        return self._pools[int(self.part_ids[index])].read(int(self.local_indices[index]))

    def content_fingerprint(self) -> bytes:
        return self.resolved.hash.encode()

    def source_counts(self) -> dict[str, int]:
        """Images per source tag."""
        tags, counts = np.unique(self.sources, return_counts=True)
        return {str(t): int(c) for t, c in zip(tags, counts, strict=True)}


def compose(
    obj: dict[str, Any] | list[Any], task_class_names: Sequence[str] | None = None
) -> ComposedPool:
    """Parse, resolve and open a composition in one call."""
    opened: dict[str, Pool] = {}
    resolved = resolve_composition(parse_composition(obj), task_class_names, opened)
    return ComposedPool(resolved, opened)


__all__ = [
    "PRIORS",
    "ComposedPool",
    "Composition",
    "Part",
    "ResolvedComposition",
    "ResolvedPart",
    "compose",
    "parse_composition",
    "resolve_composition",
]
