"""Pools -> cached features -> distance matrices (the engine behind ``divssl distance``).

:func:`pool_features` subsamples at most ``max_images`` images of a pool with a seeded choice
(the SSL-diversity paper uses 50,000 per dataset, or the whole dataset when smaller), runs the
extractor and caches the arrays under ``$DIVSSL_CACHE/distance-features`` keyed by the extractor
identity (architecture, weights hash, input size, layers), the pool's manifest hash,
``max_images``, ``seed`` and whether activations were kept. :func:`distance_matrix` computes every
(a, b) pair for each metric, reusing one feature set per pool.

The Vendi score (:func:`pool_vendi`) measures one pool, not a pair: it reuses the same cached
features (``divssl distance --metric vendi``); :func:`index_features` caches the features of an
explicit index list (a pretraining subset: the first N entries of an ordering).

VisualDNA bins every neuron over a fixed range per extractor and layer, computed once from a
declared *reference pool* (:func:`reference_ranges`: ``[1.2 min, 1.2 max]`` of its activations, as
the VisualDNA library) and cached beside the features under ``$DIVSSL_CACHE/vdna-ranges``, so every
VisualDNA distance computed with that reference is in the same units.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from divssl.cache import cache_key, cache_root, cached_arrays
from divssl.data.pool import CorruptImage, Pool
from divssl.distances.diversity import VendiResult, vendi
from divssl.distances.extractors import Extractor
from divssl.distances.metrics import (
    VDNA_RANGE_SCALE,
    frechet_distance,
    gaussian_stats,
    kid,
    vdna,
    vdna_ranges,
)
from divssl.errors import ConfigError

METRICS = ("fid", "kid", "vdna")  # between two pools
POOL_METRICS = ("vendi",)  # of one pool
ALL_METRICS = (*METRICS, *POOL_METRICS)
CACHE_NAMESPACE = "distance-features"
RANGES_NAMESPACE = "vdna-ranges"
_CACHE_VERSION = 1
_ACT_PREFIX = "act:"


@dataclass
class PoolFeatures:
    """Features of the sampled images of one pool.

    Attributes:
        features: (N, D) float32 extractor features.
        acts: layer -> (N, C) float32 pooled activations (empty unless requested).
        indices: (N,) pool indices of the images used (corrupt ones are skipped).
        requested: how many images were sampled before skipping corrupt ones.
    """

    features: np.ndarray
    acts: dict[str, np.ndarray] = field(default_factory=dict)
    indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    requested: int = 0

    @property
    def corrupt(self) -> int:
        """Number of sampled images that could not be decoded."""
        return self.requested - len(self.indices)


def sample_indices(n_total: int, max_images: int, seed: int) -> np.ndarray:
    """Seeded choice of at most ``max_images`` of ``n_total`` indices, sorted ascending.

    Args:
        n_total: pool size.
        max_images: cap (all indices when ``n_total <= max_images``).
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        int64 array of shape (min(n_total, max_images),).
    """
    if n_total <= max_images:
        return np.arange(n_total, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=max_images, replace=False)).astype(np.int64)


def _iter_images(pool: Pool, indices: np.ndarray) -> Any:
    """Yield ``(index, image)`` for the chosen indices, skipping corrupt samples."""
    if pool.streaming:
        wanted = set(indices.tolist())
        for i, image in pool.iter_samples(indices.tolist()):
            if i in wanted:
                yield i, image
        return
    for i in indices.tolist():
        try:
            yield i, pool.read(i)
        except CorruptImage:
            continue


def extract_features(
    pool: Pool,
    extractor: Extractor,
    indices: np.ndarray,
    with_acts: bool = False,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Run ``extractor`` over the images at ``indices`` (no caching).

    Returns:
        ``{"features": (N, D), "indices": (N,), "act:<layer>": (N, C) ...}`` as float32 / int64.
    """
    feats: list[np.ndarray] = []
    acts: dict[str, list[np.ndarray]] = {layer: [] for layer in extractor.layers}
    used: list[int] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        f, a = extractor(batch, with_acts=with_acts)
        feats.append(f)
        for layer, value in a.items():
            acts[layer].append(value)
        if progress is not None:
            progress(len(batch))
        batch.clear()

    for i, image in _iter_images(pool, indices):
        used.append(i)
        batch.append(image)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not used:
        raise ConfigError("pool", f"{pool.spec or type(pool).__name__}: no decodable images")
    out = {"features": np.concatenate(feats), "indices": np.asarray(used, dtype=np.int64)}
    if with_acts:
        out.update({_ACT_PREFIX + k: np.concatenate(v) for k, v in acts.items()})
    return out


def pool_features(
    pool: Pool,
    extractor: Extractor,
    max_images: int = 50000,
    seed: int = 0,
    with_acts: bool = False,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> PoolFeatures:
    """Cached features (and activations) of a seeded subsample of ``pool``.

    Args:
        pool: any pool; streaming pools are read in order.
        extractor: from :func:`~divssl.distances.extractors.get_extractor`.
        max_images: images sampled per pool (the paper: 50,000).
        seed: sampling seed.
        with_acts: also keep the hooked layers' activations (needed by VisualDNA).
        batch_size: images per forward pass.
        progress: called with the number of images done after each batch (on a cache miss).
    """
    indices = sample_indices(len(pool), max_images, seed)
    manifest = pool.manifest_hash()

    def key_for(acts: bool) -> str:
        parts = (_CACHE_VERSION, extractor.identity, manifest, max_images, seed, acts)
        return cache_key(CACHE_NAMESPACE, *parts)

    key = key_for(with_acts)
    if not with_acts and (cache_root() / CACHE_NAMESPACE / f"{key_for(True)}.npz").is_file():
        key = key_for(True)  # an entry with activations also holds the features
    arrays = cached_arrays(
        CACHE_NAMESPACE,
        key,
        lambda: extract_features(pool, extractor, indices, with_acts, batch_size, progress),
    )
    acts = {k[len(_ACT_PREFIX) :]: v for k, v in arrays.items() if k.startswith(_ACT_PREFIX)}
    return PoolFeatures(arrays["features"], acts, arrays["indices"], len(indices))


def index_features(
    pool: Pool,
    extractor: Extractor,
    indices: np.ndarray,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> PoolFeatures:
    """Cached features of the images at an explicit, ordered index list (e.g. a subset).

    The cache key holds the extractor identity, the pool's manifest hash and a hash of the
    indices in their order, so a subset's features are computed once per extractor.

    Args:
        pool: any random-access pool.
        extractor: the feature extractor.
        indices: (N,) pool indices, in the order wanted (corrupt ones are skipped).
        batch_size: images per forward pass.
        progress: called with the number of images done after each batch (on a cache miss).
    """
    idx = np.ascontiguousarray(indices, dtype=np.int64)
    digest = hashlib.sha256(idx.tobytes()).hexdigest()[:24]
    parts = (_CACHE_VERSION, extractor.identity, pool.manifest_hash(), "indices", digest)
    key = cache_key(CACHE_NAMESPACE, *parts)
    arrays = cached_arrays(
        CACHE_NAMESPACE,
        key,
        lambda: extract_features(pool, extractor, idx, False, batch_size, progress),
    )
    return PoolFeatures(arrays["features"], {}, arrays["indices"], len(idx))


def pool_vendi(
    pool: Pool,
    feats: PoolFeatures,
    kernel: str = "cosine",
    bandwidth: float | None = None,
    seed: int = 0,
) -> VendiResult:
    """Vendi score of a pool's sampled features, per class when the pool has labels.

    Args:
        pool: the pool the features came from (labels and class names).
        feats: from :func:`pool_features` or :func:`index_features`.
        kernel: ``cosine`` or ``rbf`` (:func:`~divssl.distances.diversity.vendi`).
        bandwidth: rbf σ (``None``: median heuristic).
        seed: rbf: seed of the median heuristic and the Nyström landmarks.
    """
    labels = None
    if pool.labels is not None:
        labels = np.asarray(pool.labels, dtype=np.int64)[feats.indices]
    return vendi(
        feats.features,
        labels,
        kernel,
        class_names=pool.class_names,
        bandwidth=bandwidth,
        seed=seed,
    )


def reference_ranges(
    pool: Pool,
    extractor: Extractor,
    max_images: int = 50000,
    seed: int = 0,
    batch_size: int = 64,
    scale: float = VDNA_RANGE_SCALE,
    quantile: float = 0.0,
) -> dict[str, np.ndarray]:
    """Fixed VisualDNA ranges of ``extractor``'s layers on a reference pool (cached).

    The activations come from :func:`pool_features` (same sample and cache); the ranges are
    :func:`~divssl.distances.metrics.vdna_ranges` of them, stored under ``vdna-ranges`` keyed by
    the extractor identity, the pool's manifest hash, ``max_images``, ``seed``, ``scale`` and
    ``quantile``.

    Returns:
        layer -> (2, C) float64 lower / upper edges.
    """
    key = cache_key(
        RANGES_NAMESPACE,
        _CACHE_VERSION,
        extractor.identity,
        pool.manifest_hash(),
        max_images,
        seed,
        scale,
        quantile,
    )

    def compute() -> dict[str, np.ndarray]:
        feats = pool_features(pool, extractor, max_images, seed, True, batch_size)
        return vdna_ranges(feats.acts, scale, quantile)

    return cached_arrays(RANGES_NAMESPACE, key, compute)


# --------------------------------------------------------------------------- matrices


@dataclass
class DistanceTable:
    """One metric between every a-pool (rows) and b-pool (columns).

    Attributes:
        metric: ``fid``, ``kid`` or ``vdna``.
        rows: a-pool specs.
        cols: b-pool specs.
        values: (len(rows), len(cols)) distances (KID: the mean over subsets).
        std: KID's standard deviation over subsets, else ``None``.
        per_layer: VisualDNA's per-layer mean EMD matrices, else empty.
        params: the metric's settings (subsets, bins, ...).
    """

    metric: str
    rows: list[str]
    cols: list[str]
    values: np.ndarray
    std: np.ndarray | None = None
    per_layer: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (nested lists)."""
        out: dict[str, Any] = {
            "rows": self.rows,
            "cols": self.cols,
            "values": self.values.tolist(),
            "params": self.params,
        }
        if self.std is not None:
            out["std"] = self.std.tolist()
        if self.per_layer:
            out["per_layer"] = {k: v.tolist() for k, v in self.per_layer.items()}
        return out


def parse_metrics(text: str | Sequence[str], allowed: Sequence[str] = METRICS) -> list[str]:
    """``"fid,kid"`` (or a list of such strings) -> validated, de-duplicated metric names.

    Args:
        text: comma-separated names.
        allowed: valid names (default: the pair metrics; the CLI also allows ``vendi``).

    Raises:
        ConfigError: empty or unknown metric.
    """
    parts = [text] if isinstance(text, str) else list(text)
    names: list[str] = []
    for part in parts:
        for name in part.split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in allowed:
                raise ConfigError("metric", f"unknown metric {name!r}", allowed)
            if name not in names:
                names.append(name)
    if not names:
        raise ConfigError("metric", "no metric given", allowed)
    return names


def distance_matrix(
    a: dict[str, PoolFeatures],
    b: dict[str, PoolFeatures],
    metrics: Sequence[str],
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    vdna_bins: int = 1000,
    seed: int = 0,
    vdna_fixed_ranges: dict[str, np.ndarray] | None = None,
    vdna_reference: str | None = None,
) -> dict[str, DistanceTable]:
    """Every metric between every (a, b) pair of pool feature sets.

    Args:
        a: row pools, spec -> features.
        b: column pools, spec -> features.
        metrics: names from ``METRICS``; ``vdna`` needs features computed ``with_acts``.
        kid_subsets: KID subsets.
        kid_subset_size: KID subset size (clipped to the smaller pool).
        vdna_bins: VisualDNA histogram bins per neuron.
        seed: KID subset seed.
        vdna_fixed_ranges: fixed VisualDNA ranges (:func:`reference_ranges`); ``None`` computes them
            from the first row pool's activations (the declared reference then is that pool).
        vdna_reference: name of the reference pool, recorded in the table's ``params``.

    Returns:
        metric -> :class:`DistanceTable`.
    """
    rows, cols = list(a), list(b)
    shape = (len(rows), len(cols))
    tables: dict[str, DistanceTable] = {}
    if "fid" in metrics:
        stats = {s: gaussian_stats(f.features) for s, f in {**a, **b}.items()}
        values = np.array([[frechet_distance(*stats[r], *stats[c]) for c in cols] for r in rows])
        tables["fid"] = DistanceTable("fid", rows, cols, values.reshape(shape))
    if "kid" in metrics:
        res = [
            [kid(a[r].features, b[c].features, kid_subsets, kid_subset_size, seed) for c in cols]
            for r in rows
        ]
        tables["kid"] = DistanceTable(
            "kid",
            rows,
            cols,
            np.array([[x.mean for x in row] for row in res]).reshape(shape),
            std=np.array([[x.std for x in row] for row in res]).reshape(shape),
            params={"subsets": kid_subsets, "subset_size": kid_subset_size, "seed": seed},
        )
    if "vdna" in metrics:
        ranges = vdna_fixed_ranges
        if ranges is None:
            if not rows:
                raise ConfigError("vdna_reference", "VisualDNA needs a reference pool")
            ranges, vdna_reference = vdna_ranges(a[rows[0]].acts), rows[0]
        res_v = [[vdna(a[r].acts, b[c].acts, vdna_bins, ranges) for c in cols] for r in rows]
        layers = list(res_v[0][0].per_layer) if rows and cols else []
        tables["vdna"] = DistanceTable(
            "vdna",
            rows,
            cols,
            np.array([[x.mean for x in row] for row in res_v]).reshape(shape),
            per_layer={
                k: np.array([[x.per_layer[k] for x in row] for row in res_v]) for k in layers
            },
            params={"bins": vdna_bins, "reference": vdna_reference},
        )
    return {m: tables[m] for m in metrics}


def tables_to_csv(
    tables: dict[str, DistanceTable], vendi_scores: dict[str, VendiResult] | None = None
) -> str:
    """Long-format CSV: ``metric,a,b,value,std`` (std empty except for KID).

    Vendi scores (one pool each) are rows ``vendi,<pool>,,<score>,`` and, for labelled pools,
    ``vendi_class_mean,<pool>,,<mean>,``.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["metric", "a", "b", "value", "std"])
    for table in tables.values():
        for i, r in enumerate(table.rows):
            for j, c in enumerate(table.cols):
                std = "" if table.std is None else repr(float(table.std[i, j]))
                writer.writerow([table.metric, r, c, repr(float(table.values[i, j])), std])
    for spec, res in (vendi_scores or {}).items():
        writer.writerow(["vendi", spec, "", repr(res.score), ""])
        if res.class_mean is not None:
            writer.writerow(["vendi_class_mean", spec, "", repr(res.class_mean), ""])
    return buf.getvalue()
