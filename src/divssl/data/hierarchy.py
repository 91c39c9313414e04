"""Class hierarchies for label interventions: loading, depth cuts and count-targeted cuts.

A hierarchy maps each class to its chain of ancestors, nearest first:
``{class: [parent, grandparent, ..., root]}``. The chains must form a tree (every node has one
parent), which is what makes a *cut* well defined: a set of nodes such that each class is mapped to
the deepest cut node on its root-to-class path, its *superclass*.

Two cuts are provided (the robustness paper coarsens ImageNet's 1000 labels to 5, 17, 37, 85 and
232 superclasses):

* :func:`superclasses_at_depth` -- every class goes to its ancestor ``depth`` steps below the root
  (a class shallower than ``depth`` is its own superclass);
* :func:`superclasses_for_count` -- the cut whose size is as close as possible to a requested count
  ``k``, by a documented greedy rule: start from the deepest depth cut with at most ``k``
  superclasses, then repeatedly split the superclass covering the most classes (ties: smallest node
  id) among those whose split does not overshoot ``k``; finally keep whichever of this result and
  the next deeper depth cut is closer to ``k`` (ties keep the greedy result).

The shipped ImageNet-1k hierarchy (:func:`imagenet1k_hierarchy`) was built from WordNet 3.0 by
``scripts/build_imagenet_hierarchy.py``; see that script for the rule used for classes with several
hypernym paths.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from divssl.errors import ConfigError

IMAGENET1K_RESOURCE = "imagenet1k_hierarchy.json"
HIERARCHY_FORMAT = "divssl-hierarchy/1"


@dataclass(frozen=True)
class Hierarchy:
    """A class tree given by ancestor chains.

    Attributes:
        chains: class id -> tuple of ancestor ids, nearest first, root last (may be empty when the
            class is itself a root).
        names: node id -> readable name (e.g. ``"n00015388" -> "animal"``); optional.
        synsets: node id -> WordNet synset name (``"animal.n.01"``); optional.
        meta: provenance of the file (source, build rule, ...).
    """

    chains: dict[str, tuple[str, ...]]
    names: dict[str, str] = field(default_factory=dict)
    synsets: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        """Class ids, sorted."""
        return sorted(self.chains)

    def path(self, cls: str) -> tuple[str, ...]:
        """Root-to-class path ``(root, ..., parent, cls)``."""
        return (*reversed(self.chains[cls]), cls)

    def name(self, node: str) -> str:
        """Readable name of a node, falling back to its id."""
        return self.names.get(node, node)

    def resolve_node(self, query: str, field_name: str = "hierarchy.node") -> str:
        """Find a node by id, synset name (``animal.n.01``) or unique readable name (``animal``).

        Raises:
            ConfigError: no node or several nodes match.
        """
        nodes = self.nodes()
        if query in nodes:
            return query
        by_synset = [n for n, s in self.synsets.items() if s == query and n in nodes]
        if len(by_synset) == 1:
            return by_synset[0]
        by_name = sorted(n for n, s in self.names.items() if s == query and n in nodes)
        if len(by_name) == 1:
            return by_name[0]
        if len(by_name) > 1:
            hint = ", ".join(f"{n} ({self.synsets.get(n, self.names[n])})" for n in by_name)
            raise ConfigError(field_name, f"{query!r} names several nodes: {hint}; use an id")
        raise ConfigError(field_name, f"no node {query!r} in the hierarchy (give an id or name)")

    def nodes(self) -> set[str]:
        """All node ids: classes and their ancestors."""
        out = set(self.chains)
        for chain in self.chains.values():
            out.update(chain)
        return out

    def match_classes(self, names: Sequence[str], field_name: str = "hierarchy") -> dict[str, str]:
        """Map a pool's class names onto hierarchy classes (by id, else by unique readable name).

        Args:
            names: class names of a pool (ImageNet folder names are WordNet ids).
            field_name: field named in errors.

        Returns:
            pool class name -> hierarchy class id.

        Raises:
            ConfigError: some names match no hierarchy class.
        """
        by_name: dict[str, list[str]] = {}
        for cls in self.chains:
            by_name.setdefault(self.names.get(cls, cls), []).append(cls)
        out: dict[str, str] = {}
        missing: list[str] = []
        for name in names:
            if name in self.chains:
                out[name] = name
            elif len(by_name.get(name, [])) == 1:
                out[name] = by_name[name][0]
            else:
                missing.append(name)
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise ConfigError(field_name, f"classes not in the hierarchy: {shown}{more}")
        return out


# ------------------------------------------------------------------------------------ loading


def _validate(chains: dict[str, tuple[str, ...]], source: str) -> None:
    """Check that chains are acyclic and agree on every node's parent (so they form a tree)."""
    parent: dict[str, str | None] = {}
    for cls, chain in chains.items():
        path = (cls, *chain)
        if len(set(path)) != len(path):
            raise ConfigError("hierarchy", f"{source}: chain of {cls!r} repeats a node: {path}")
        for child, par in zip(path, (*path[1:], None), strict=True):
            if parent.setdefault(child, par) != par:
                raise ConfigError(
                    "hierarchy",
                    f"{source}: node {child!r} has two parents ({parent[child]!r} and {par!r}); "
                    "chains must form a tree (pick one path per class)",
                )


def _chains_from_mapping(obj: Any, source: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(obj, dict) or not obj:
        raise ConfigError("hierarchy", f"{source}: expected a non-empty {{class: [ancestors]}}")
    chains: dict[str, tuple[str, ...]] = {}
    for cls, chain in obj.items():
        if not isinstance(chain, list) or not all(isinstance(x, str) and x for x in chain):
            raise ConfigError("hierarchy", f"{source}: chain of {cls!r} must be a list of names")
        chains[str(cls)] = tuple(chain)
    return chains


def _load_json(path: Path) -> Hierarchy:
    obj = json.loads(path.read_text())
    if isinstance(obj, dict) and isinstance(obj.get("chains"), dict):
        chains = _chains_from_mapping(obj["chains"], str(path))
        names = {str(k): str(v) for k, v in obj.get("names", {}).items()}
        synsets = {str(k): str(v) for k, v in obj.get("synsets", {}).items()}
        meta = {k: v for k, v in obj.items() if k not in ("chains", "names", "synsets")}
        return Hierarchy(chains, names, synsets, meta)
    return Hierarchy(_chains_from_mapping(obj, str(path)))


def _load_csv(path: Path) -> Hierarchy:
    chains: dict[str, tuple[str, ...]] = {}
    with open(path, newline="") as fh:
        for row_no, row in enumerate(csv.reader(fh), start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            if row_no == 1 and [c.strip() for c in row[:2]] == ["class", "parent_chain"]:
                continue
            if len(row) != 2 or not row[0].strip():
                raise ConfigError("hierarchy", f"{path}:{row_no}: expected 'class,parent_chain'")
            chain = tuple(x.strip() for x in row[1].split(">") if x.strip())
            chains[row[0].strip()] = chain
    if not chains:
        raise ConfigError("hierarchy", f"{path}: no classes")
    return Hierarchy(chains)


def load_hierarchy(path: str | Path) -> Hierarchy:
    """Read a hierarchy file.

    Formats: JSON ``{class: [parent, grandparent, ..., root]}`` (or the richer
    ``{"chains": {...}, "names": {...}, "synsets": {...}, ...}`` of the shipped resource), or CSV
    rows ``class,parent_chain`` with a ``>``-separated chain (``goldfinch,finch>bird>animal``), an
    optional header row ``class,parent_chain``.

    Raises:
        ConfigError: missing file, unknown extension, malformed content, or chains that do not
            form a tree.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("hierarchy", f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            h = _load_json(path)
        except json.JSONDecodeError as exc:
            raise ConfigError("hierarchy", f"{path}: invalid JSON: {exc}") from exc
    elif suffix == ".csv":
        h = _load_csv(path)
    else:
        raise ConfigError("hierarchy", f"unsupported file type {suffix!r}", [".json", ".csv"])
    _validate(h.chains, str(path))
    return h


def imagenet1k_hierarchy_path() -> Path:
    """Path of the shipped ImageNet-1k WordNet hierarchy (package data)."""
    return Path(str(resources.files("divssl").joinpath("resources").joinpath(IMAGENET1K_RESOURCE)))


def imagenet1k_hierarchy() -> Hierarchy:
    """The shipped ImageNet-1k hierarchy: 1000 WordNet ids, chains ending at ``entity``."""
    return load_hierarchy(imagenet1k_hierarchy_path())


def resolve_hierarchy(name_or_path: str | Path) -> Hierarchy:
    """``"imagenet1k"`` for the shipped hierarchy, else a path for :func:`load_hierarchy`."""
    if str(name_or_path) == "imagenet1k":
        return imagenet1k_hierarchy()
    return load_hierarchy(name_or_path)


# ---------------------------------------------------------------------------------------- cuts


def _selected(h: Hierarchy, classes: Iterable[str] | None, field_name: str) -> list[str]:
    if classes is None:
        return h.classes
    chosen = sorted(set(classes))
    missing = [c for c in chosen if c not in h.chains]
    if missing:
        raise ConfigError(field_name, f"classes not in the hierarchy: {missing[:5]}")
    if not chosen:
        raise ConfigError(field_name, "no classes selected")
    return chosen


def _deepest_on_path(path: tuple[str, ...], cut: set[str]) -> str:
    for node in reversed(path):
        if node in cut:
            return node
    raise AssertionError(f"cut does not cover {path[-1]!r}")  # every cut covers all classes


def superclasses_at_depth(
    h: Hierarchy, depth: int, classes: Iterable[str] | None = None
) -> dict[str, str]:
    """Map each class to its ancestor at ``depth`` (root = depth 0).

    Args:
        h: the hierarchy.
        depth: number of steps below the root; a class whose path is shorter is its own superclass.
        classes: restrict to these classes (e.g. the classes of an ImageNet-100 pool).

    Returns:
        class -> superclass node id.

    Raises:
        ConfigError: negative depth or unknown classes (field ``granularity.depth``).
    """
    if depth < 0:
        raise ConfigError("granularity.depth", f"must be >= 0, got {depth}")
    out: dict[str, str] = {}
    for cls in _selected(h, classes, "granularity.classes"):
        path = h.path(cls)
        out[cls] = path[min(depth, len(path) - 1)]
    return out


def depth_counts(h: Hierarchy, classes: Iterable[str] | None = None) -> list[int]:
    """Number of superclasses of :func:`superclasses_at_depth` for depth 0 .. max depth."""
    chosen = _selected(h, classes, "granularity.classes")
    max_depth = max(len(h.path(c)) for c in chosen) - 1
    return [len(set(superclasses_at_depth(h, d, chosen).values())) for d in range(max_depth + 1)]


@dataclass
class _Tree:
    """The tree induced by a set of classes: children lists and class counts per node."""

    children: dict[str, list[str]]
    size: dict[str, int]
    is_class: set[str]

    def branch_point(self, node: str) -> str:
        """Walk down single-child chains (splitting those changes nothing) to a branching node."""
        while len(self.children.get(node, ())) == 1 and node not in self.is_class:
            node = self.children[node][0]
        return node

    def split_gain(self, node: str) -> int:
        """Superclasses added by replacing ``node`` with its children (and itself, if a class)."""
        b = self.branch_point(node)
        return len(self.children.get(b, ())) + (b in self.is_class) - 1


def _tree(h: Hierarchy, classes: list[str]) -> _Tree:
    children: dict[str, set[str]] = {}
    size: dict[str, int] = {}
    for cls in classes:
        path = h.path(cls)
        for par, child in zip(path[:-1], path[1:], strict=True):
            children.setdefault(par, set()).add(child)
        for node in path:
            size[node] = size.get(node, 0) + 1
    return _Tree({k: sorted(v) for k, v in children.items()}, size, set(classes))


def _greedy_split(tree: _Tree, cut: set[str], k: int) -> set[str]:
    """Split the largest superclass whose split does not overshoot ``k``, until none fits."""
    cut = set(cut)
    count = len(cut)
    while count < k:
        fits = [n for n in cut if 0 < tree.split_gain(n) <= k - count]
        if not fits:
            break
        node = min(fits, key=lambda n: (-tree.size[n], n))
        gain = tree.split_gain(node)
        b = tree.branch_point(node)
        cut.remove(node)
        cut.update(tree.children[b])
        if b in tree.is_class:
            cut.add(b)
        count += gain
    return cut


def superclasses_for_count(
    h: Hierarchy, k: int, classes: Iterable[str] | None = None
) -> dict[str, str]:
    """Choose a cut of the hierarchy with (as close as possible to) ``k`` superclasses.

    Greedy rule (see the module docstring): deepest depth cut with at most ``k`` superclasses,
    then split the largest superclass that does not overshoot, until ``k`` is reached or no split
    fits; the next deeper depth cut wins only when strictly closer to ``k``.

    Args:
        h: the hierarchy.
        k: requested number of superclasses, 1 <= k <= number of classes.
        classes: restrict to these classes.

    Returns:
        class -> superclass node id (``len(set(values))`` is the count reached).

    Raises:
        ConfigError: ``k`` out of range (field ``granularity.count``).
    """
    chosen = _selected(h, classes, "granularity.classes")
    if not 1 <= k <= len(chosen):
        raise ConfigError("granularity.count", f"must be in [1, {len(chosen)}], got {k}")
    counts = depth_counts(h, chosen)
    depth = max(d for d, c in enumerate(counts) if c <= k)
    cut = set(superclasses_at_depth(h, depth, chosen).values())
    cut = _greedy_split(_tree(h, chosen), cut, k)
    if depth + 1 < len(counts) and abs(counts[depth + 1] - k) < abs(len(cut) - k):
        return superclasses_at_depth(h, depth + 1, chosen)
    return {cls: _deepest_on_path(h.path(cls), cut) for cls in chosen}


# ----------------------------------------------------------------------------------- semantics


def select_classes(h: Hierarchy, predicate: Callable[[str, tuple[str, ...]], bool]) -> list[str]:
    """Classes for which ``predicate(class_id, ancestor_chain)`` holds, sorted."""
    return [cls for cls in h.classes if predicate(cls, h.chains[cls])]


def descendants_of(h: Hierarchy, node: str) -> list[str]:
    """Classes below ``node`` (id, synset name or unique readable name), including ``node``.

    Example: ``descendants_of(imagenet1k_hierarchy(), "animal")`` lists the animal classes.
    """
    target = h.resolve_node(node, "semantics.node")
    return select_classes(h, lambda cls, chain: cls == target or target in chain)
