"""Measured diversity of a study's pools and pretraining subsets: the Vendi score.

The SSL-diversity paper counts diversity (D = N / C, N unique images); the Vendi score
(Friedman & Dieng 2023, :mod:`divssl.distances.diversity`) measures it, as the effective number
of distinct images under a similarity kernel on features. A study with a ``vendi:`` block gets, in
``STUDY_DIR/vendi.json`` and ``vendi.csv``, one row per pool of ``plan.json`` (``kind = pool``: a
seeded sample of at most ``max_images`` images) and one row per pretraining run (``kind =
subset``: the run's pretraining set, i.e. the first N entries of the ordering its config makes,
capped at the first ``max_images`` of them, a uniform sample of the subset because the ordering
is a seeded permutation). The report joins the subset rows to the results by ``run``.

Everything is computed once: features are cached per (extractor, pool manifest, index list) by
:func:`divssl.distances.pipeline.index_features` (one extraction per ordering, at its largest
prefix; smaller nested subsets use its first rows), and scores per (features, kernel, settings)
in ``$DIVSSL_CACHE/vendi-scores``.

The subset of a run is rebuilt exactly as pretraining builds it (same pool or composition, same
ordering file or seed and ``balanced`` flag); corrupt images are skipped, so the score may use a
few images fewer than N when the pool has corrupt files (``n`` records how many were used).
Streaming (``wds``) pools have no index list and get a row with ``error`` instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from divssl.cache import cache_key, cached_arrays
from divssl.data.ordering import check_ordering, load_ordering, make_ordering
from divssl.data.pool import open_pool
from divssl.distances import get_extractor
from divssl.distances.pipeline import PoolFeatures, index_features, pool_features, pool_vendi
from divssl.errors import ConfigError
from divssl.io import atomic_write_json, atomic_write_text
from divssl.pretrain.config import config_from_tree
from divssl.pretrain.loop import open_training_pool
from divssl.study.jobs import PlanDoc, PretrainJob, read_plan
from divssl.study.results import extractor_name

VENDI_JSON = "vendi.json"
VENDI_CSV = "vendi.csv"
SCORES_NAMESPACE = "vendi-scores"
_SCORE_VERSION = 1
COLUMNS = (
    "kind",
    "name",
    "run",
    "pool",
    "composition",
    "unique_images",
    "n",
    "vendi",
    "vendi_class_mean",
    "classes",
    "extractor",
    "extractor_name",
    "kernel",
    "ordering",
    "error",
)


def cached_score(feats: Any, pool: Any, extractor: Any, kernel: str, seed: int) -> dict[str, Any]:
    """Vendi score of a feature set, cached by content.

    Args:
        feats: :class:`~divssl.distances.pipeline.PoolFeatures`.
        pool: the pool the features came from (labels, class names).
        extractor: the extractor (its identity keys the cache).
        kernel: ``cosine`` or ``rbf``.
        seed: rbf seed (median heuristic, landmarks).

    Returns:
        ``{"vendi", "vendi_class_mean", "n", "classes", "per_class"}``.
    """

    digest = hashlib.sha256(np.ascontiguousarray(feats.indices).tobytes()).hexdigest()[:24]
    parts = (_SCORE_VERSION, extractor.identity, pool.manifest_hash(), digest, kernel, seed)
    key = cache_key(SCORES_NAMESPACE, *parts)

    def compute() -> dict[str, np.ndarray]:
        res = pool_vendi(pool, feats, kernel, seed=seed)
        names = list(res.per_class)
        return {
            "score": np.array([res.score]),
            "n": np.array([res.n]),
            "class_names": np.array(names, dtype=str),
            "class_scores": np.array([res.per_class[c] for c in names], dtype=np.float64),
        }

    arrays = cached_arrays(SCORES_NAMESPACE, key, compute)
    per_class = dict(
        zip(arrays["class_names"].tolist(), arrays["class_scores"].tolist(), strict=True)
    )
    return {
        "vendi": float(arrays["score"][0]),
        "vendi_class_mean": float(np.mean(arrays["class_scores"])) if per_class else None,
        "n": int(arrays["n"][0]),
        "classes": len(per_class),
        "per_class": per_class,
    }


def _score_or_error(compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return compute()
    except ValueError as exc:  # ConfigError (bad data) or an undefined score (all-zero features)
        if isinstance(exc, ConfigError) and exc.field not in ("pool", "subset.size"):
            raise
        return {"error": str(exc)}


def _subset_positions(job: PretrainJob) -> tuple[Any, Any, np.ndarray]:
    """(raw pool, ordering, positions of the first N ordering entries) of a pretraining job.

    The pool and ordering are built as :func:`divssl.pretrain.loop.prepare` builds them.
    """

    cfg = config_from_tree(job.config)
    raw_pool, _ = open_training_pool(cfg)
    if raw_pool.streaming:
        raise ConfigError("pool", "a streaming (wds) pool has no index list to score")
    if cfg.subset.ordering is not None:
        ordering = load_ordering(cfg.subset.ordering)
        check_ordering(ordering, raw_pool)
    else:
        ordering = make_ordering(raw_pool, seed=cfg.subset.seed, balanced=cfg.subset.balanced)
    n = int(job.unique_images)
    return raw_pool, ordering, np.asarray(ordering.positions[:n], dtype=np.int64)


def compute_vendi(
    study_dir: str | Path, study: Any, frame: Any = None, plan_doc: PlanDoc | None = None
) -> list[dict[str, Any]]:
    """The Vendi score of every pool and pretraining subset of a study -> ``vendi.json`` / csv.

    Args:
        study_dir: the study folder (holding ``plan.json``).
        study: the validated study spec (its ``vendi`` block).
        frame: the results table (for ``extractor: run:best``).
        plan_doc: ``plan.json`` (read from ``study_dir`` when ``None``).

    Returns:
        One row per pool and per pretraining run (columns :data:`COLUMNS`, ``per_class`` too).

    Raises:
        ConfigError: no ``vendi`` block, or a bad extractor / weights (before any feature).
    """

    spec = study.vendi
    if spec is None:
        raise ConfigError("vendi", "the study declares no vendi block")
    root = Path(study_dir)
    plan_doc = plan_doc or read_plan(root)
    ext_name = extractor_name(root, plan_doc, spec.extractor, frame)
    ext = get_extractor(ext_name, spec.weights)
    common = {"extractor": spec.extractor, "extractor_name": ext_name, "kernel": spec.kernel}
    rows: list[dict[str, Any]] = []
    for name, pspec in plan_doc.pools.items():

        def pool_score(pspec: str = str(pspec)) -> dict[str, Any]:
            pool = open_pool(pspec, field="vendi")
            feats = pool_features(pool, ext, spec.max_images, spec.seed, False, spec.batch_size)
            return cached_score(feats, pool, ext, spec.kernel, spec.seed)

        base = {"kind": "pool", "name": name, "pool": name, **common}
        rows.append({**base, **_score_or_error(pool_score)})
    # One extraction per (pool, ordering), at the largest prefix any of its runs needs.
    largest: dict[tuple[str, str], Any] = {}
    subsets: list[tuple[dict[str, Any], Any]] = []
    for job in plan_doc.runs:
        base = {
            "kind": "subset",
            "name": job.id,
            "run": job.id,
            "pool": job.pool,
            "composition": job.composition,
            "unique_images": int(job.unique_images),
            **common,
        }
        try:
            pool, ordering, positions = _subset_positions(job)
        except ConfigError as exc:
            if exc.field not in ("pool", "subset.size"):
                raise
            rows.append({**base, "error": str(exc)})
            continue
        m = min(len(positions), spec.max_images)
        key = (pool.manifest_hash(), ordering.hash)
        if key not in largest or largest[key][2] < m:
            largest[key] = (pool, positions[:m], m)
        subsets.append(({**base, "ordering": ordering.hash}, (key, positions[:m])))
    feats_of: dict[tuple[str, str], PoolFeatures] = {}
    for key, (pool, prefix, _) in largest.items():
        feats_of[key] = index_features(pool, ext, prefix, spec.batch_size)
    for base, (key, prefix) in subsets:
        pool, full = largest[key][0], feats_of[key]
        count = int(np.isin(full.indices, prefix).sum())  # extraction keeps the ordering's order
        feats = PoolFeatures(full.features[:count], {}, full.indices[:count], len(prefix))

        def subset_score(feats: PoolFeatures = feats, pool: Any = pool) -> dict[str, Any]:
            return cached_score(feats, pool, ext, spec.kernel, spec.seed)

        rows.append({**base, **_score_or_error(subset_score)})
    atomic_write_json(root / VENDI_JSON, rows)
    table = pd.DataFrame([{c: r.get(c) for c in COLUMNS} for r in rows], columns=list(COLUMNS))
    atomic_write_text(root / VENDI_CSV, table.to_csv(index=False))
    return rows
