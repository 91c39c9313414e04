"""Orderings: saved, seeded permutations of a pool whose prefixes are nested subsets.

An :class:`Ordering` lists a pool's sample keys in a seeded order; the subset of size N is the first
N entries, so subsets of growing N are nested (the 5K ... 150K quantity experiments of the
robustness paper, the N sweeps of the SSL paper). With ``balanced=True`` the order interleaves
per-class seeded permutations round-robin (class order itself seeded), so every prefix is as
class-balanced as possible: while classes still have images, per-class counts differ by at most one.

The ordering is tied to the pool it was made from through the pool's manifest hash and carries its
own hash (sha256 over the key order, seed, balanced flag and manifest), checked on load. It is the
*subset* seed; the sample order inside training (``divssl.pretrain.budget.stream_positions``) and
augmentation use separate seeds.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from divssl.data.pool import Pool
from divssl.errors import ConfigError
from divssl.io import atomic_write, atomic_write_json

ORDERING_FORMAT = "divssl-ordering/1"


@dataclass
class Ordering:
    """A seeded permutation of a pool.

    Attributes:
        keys: pool keys in permuted order, length = pool size.
        positions: int64 array of shape (pool size,), the pool indices of ``keys``.
        seed: subset seed.
        balanced: whether prefixes are class-balanced.
        pool_manifest: manifest hash of the pool the ordering was made from.
        hash: sha256 hex[:16] over keys order + seed + balanced + manifest.
        pool_spec: spec string of that pool (provenance only, not hashed).
    """

    keys: list[str]
    positions: np.ndarray
    seed: int
    balanced: bool
    pool_manifest: str
    hash: str
    pool_spec: str = ""

    def __len__(self) -> int:
        return len(self.keys)


def ordering_hash(keys: list[str], seed: int, balanced: bool, pool_manifest: str) -> str:
    """sha256 hex[:16] over the key order, seed, balanced flag and pool manifest."""
    h = hashlib.sha256()
    h.update("\n".join(keys).encode())
    h.update(f"\nseed={seed}\nbalanced={bool(balanced)}\nmanifest={pool_manifest}".encode())
    return h.hexdigest()[:16]


def balanced_permutation(labels: np.ndarray, seed: int) -> np.ndarray:
    """Class-balanced, seeded order of positions ``0 .. len(labels)-1``.

    Each class's positions are shuffled with the seeded generator (classes visited in sorted
    label order), the class order is a seeded permutation, and the result takes the r-th image of
    every class (in class order) before any class's (r+1)-th image. Unlabelled positions
    (label ``-1``) follow all labelled ones, in seeded order.

    Args:
        labels: int array of shape (n,), ``-1`` for unknown.
        seed: non-negative seed.

    Returns:
        int64 array of shape (n,), a permutation of ``arange(n)``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels[labels >= 0])
    class_rank = np.empty(len(classes), dtype=np.int64)
    class_rank[rng.permutation(len(classes))] = np.arange(len(classes))
    by_class = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[by_class], classes, side="left")
    ends = np.searchsorted(labels[by_class], classes, side="right")
    positions, rounds, ranks = [], [], []
    for c, (lo, hi) in enumerate(zip(bounds, ends, strict=True)):
        positions.append(rng.permutation(by_class[lo:hi]))
        rounds.append(np.arange(hi - lo, dtype=np.int64))
        ranks.append(np.full(hi - lo, class_rank[c], dtype=np.int64))
    unlabelled = rng.permutation(np.flatnonzero(labels < 0))
    if not positions:
        return unlabelled.astype(np.int64)
    pos = np.concatenate(positions)
    order = np.lexsort((np.concatenate(ranks), np.concatenate(rounds)))
    return np.concatenate([pos[order], unlabelled]).astype(np.int64)


def _check_seed(seed: int, field: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(field, f"must be a non-negative integer, got {seed!r}")
    return int(seed)


def make_ordering(pool: Pool, seed: int = 0, balanced: bool = False) -> Ordering:
    """A seeded permutation of the pool's keys; its first N entries are the subset of size N.

    Args:
        pool: a random-access pool (streaming pools use ``divssl.data.stream.shard_ordering``).
        seed: subset seed (non-negative).
        balanced: interleave per-class permutations so every prefix is class-balanced (needs
            labels).

    Raises:
        ConfigError: negative seed, empty or streaming pool, ``balanced`` without labels.
    """
    seed = _check_seed(seed, "subset.seed")
    if pool.streaming:
        raise ConfigError("data.pool", "orderings need a random-access pool, not a streaming one")
    n = len(pool)
    if n == 0:
        raise ConfigError("data.pool", f"pool {pool.spec!r} is empty")
    if balanced:
        labels = pool.labels
        if labels is None or not np.any(np.asarray(labels) >= 0):
            raise ConfigError("subset.balanced", f"pool {pool.spec!r} has no labels")
        positions = balanced_permutation(np.asarray(labels), seed)
    else:
        positions = np.random.default_rng(seed).permutation(n).astype(np.int64)
    all_keys = pool.keys
    keys = [all_keys[int(i)] for i in positions]
    manifest = pool.manifest_hash()
    return Ordering(
        keys=keys,
        positions=positions,
        seed=seed,
        balanced=bool(balanced),
        pool_manifest=manifest,
        hash=ordering_hash(keys, seed, bool(balanced), manifest),
        pool_spec=pool.spec,
    )


def _meta(ordering: Ordering) -> dict[str, Any]:
    return {
        "format": ORDERING_FORMAT,
        "seed": ordering.seed,
        "balanced": ordering.balanced,
        "pool_manifest": ordering.pool_manifest,
        "pool_spec": ordering.pool_spec,
        "hash": ordering.hash,
        "size": len(ordering.keys),
    }


def save_ordering(ordering: Ordering, path: str | Path) -> None:
    """Write an ordering atomically: ``.npz`` (compact, for large pools) or JSON (any other suffix).

    Both hold the keys, positions and metadata (seed, balanced, pool manifest and spec, hash).
    """
    path = Path(path)
    if path.suffix.lower() == ".npz":
        # Any values: numpy's savez stub types **kwds against its allow_pickle: bool keyword.
        arrays: dict[str, Any] = {
            "keys": np.asarray(ordering.keys, dtype=str),
            "positions": np.asarray(ordering.positions, dtype=np.int64),
            "meta": np.asarray(json.dumps(_meta(ordering))),
        }

        def write(fh: Any) -> None:
            np.savez_compressed(fh, **arrays)

        atomic_write(path, write, mode="wb")
    else:
        doc = _meta(ordering)
        doc["keys"] = list(ordering.keys)
        doc["positions"] = [int(i) for i in ordering.positions]
        atomic_write_json(path, doc)


def _read(path: Path) -> tuple[dict[str, Any], list[str], np.ndarray]:
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as data:
            missing = {"keys", "positions", "meta"} - set(data.files)
            if missing:
                raise ConfigError("ordering", f"{path}: missing arrays {sorted(missing)}")
            meta = json.loads(str(data["meta"]))
            return meta, [str(k) for k in data["keys"]], np.asarray(data["positions"], np.int64)
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or "keys" not in doc or "positions" not in doc:
        raise ConfigError("ordering", f"{path}: not an ordering file")
    return doc, [str(k) for k in doc["keys"]], np.asarray(doc["positions"], dtype=np.int64)


def load_ordering(path: str | Path) -> Ordering:
    """Read an ordering written by :func:`save_ordering` and verify its hash.

    Raises:
        ConfigError: missing or malformed file, or a stored hash that does not match the content.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("ordering", f"no such file: {path}")
    try:
        meta, keys, positions = _read(path)
    except (ValueError, KeyError) as exc:
        raise ConfigError("ordering", f"{path}: unreadable ordering file: {exc}") from exc
    if meta.get("format") != ORDERING_FORMAT:
        raise ConfigError("ordering", f"{path}: unknown format {meta.get('format')!r}")
    if len(keys) != len(positions):
        raise ConfigError("ordering", f"{path}: {len(keys)} keys but {len(positions)} positions")
    seed, balanced, manifest = int(meta["seed"]), bool(meta["balanced"]), str(meta["pool_manifest"])
    expected = ordering_hash(keys, seed, balanced, manifest)
    if meta.get("hash") != expected:
        raise ConfigError(
            "ordering",
            f"{path}: stored hash {meta.get('hash')!r} does not match its content ({expected}); "
            "the file was modified",
        )
    return Ordering(keys, positions, seed, balanced, manifest, expected, str(meta.get("pool_spec")))


def check_ordering(ordering: Ordering, pool: Pool) -> None:
    """Raise ``ConfigError`` unless ``ordering`` was made from this exact pool content."""
    manifest = pool.manifest_hash()
    if manifest != ordering.pool_manifest:
        raise ConfigError(
            "ordering",
            f"made for pool manifest {ordering.pool_manifest} ({ordering.pool_spec!r}) but pool "
            f"{pool.spec!r} has manifest {manifest}; rebuild the ordering",
        )
    if len(ordering) != len(pool):
        raise ConfigError("ordering", f"has {len(ordering)} entries, pool has {len(pool)}")


def subset_size(n_total: int, size: int | None = None, fraction: float | None = None) -> int:
    """Resolve ``subset.size`` / ``subset.fraction`` (N = round(fraction * n_total)) into N.

    Raises:
        ConfigError: both or neither given, or N outside [1, n_total].
    """
    if (size is None) == (fraction is None):
        raise ConfigError("subset", "give exactly one of subset.size or subset.fraction")
    if size is not None:
        if isinstance(size, bool) or int(size) != size:
            raise ConfigError("subset.size", f"must be an integer, got {size!r}")
        n, field = int(size), "subset.size"
    else:
        assert fraction is not None
        if not 0.0 < float(fraction) <= 1.0:
            raise ConfigError("subset.fraction", f"must be in (0, 1], got {fraction}")
        n, field = int(round(float(fraction) * n_total)), "subset.fraction"
    if n < 1:
        raise ConfigError(field, f"gives N={n} images; N must be >= 1")
    if n > n_total:
        raise ConfigError(field, f"gives N={n} images but the pool has only {n_total}")
    return n


def subset_positions(
    ordering: Ordering, size: int | None = None, fraction: float | None = None
) -> np.ndarray:
    """Pool indices of the subset: the first N entries of the ordering.

    Args:
        ordering: from :func:`make_ordering` or :func:`load_ordering`.
        size: N.
        fraction: N = round(fraction * pool size).

    Returns:
        int64 array of shape (N,).

    Raises:
        ConfigError: naming ``subset.size`` / ``subset.fraction`` (see :func:`subset_size`).
    """
    n = subset_size(len(ordering), size, fraction)
    return np.array(ordering.positions[:n], dtype=np.int64)


def class_counts(pool: Pool, positions: np.ndarray) -> dict[str, int]:
    """Images per class name among ``positions`` (``"<unlabelled>"`` for label -1)."""
    labels = pool.labels
    if labels is None:
        return {"<unlabelled>": len(positions)}
    names = pool.class_names
    counts = Counter(int(x) for x in np.asarray(labels)[positions])
    out: dict[str, int] = {}
    for label, count in sorted(counts.items()):
        if label < 0:
            name = "<unlabelled>"
        else:
            name = names[label] if names is not None and label < len(names) else str(label)
        out[name] = count
    return out
