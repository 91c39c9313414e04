"""Pool inspection: counts per class and source, image sizes, corrupt files, manifest hash, and
the pool's measured diversity (the Vendi score, :mod:`divssl.distances.diversity`).

Every sample is decoded once (in ``workers`` processes), so the corrupt list is exact: zero-byte,
truncated and non-image files are all found. Array pools are not decoded (they cannot be corrupt).
For ``wds`` pools the pass also records each shard as checked, which lets later budgeted streams
resume by counting.

The Vendi score is computed by default on the ``pixels`` extractor (images resized to 32 px,
cosine kernel on raw pixels, as the Vendi paper's pixel score) over a seeded sample of at most
``DEFAULT_VENDI_IMAGES`` images, which keeps inspection fast (seconds) and needs no weights. A
network's features (``inception``, ``run:DIR``, ...) are opt-in (``--vendi-extractor``); the
features go to the same cache as ``divssl distance``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from rich.table import Table

from divssl.data.cache import map_pool_chunks
from divssl.data.pool import ArrayPool, CorruptImage, Pool, open_pool, parse_spec
from divssl.data.readers.wds import WdsPool
from divssl.errors import ConfigError

_UNKNOWN = "<unknown>"
_MAX_LISTED = 1000  # corrupt keys listed in the report (the count is always exact)
DEFAULT_VENDI_EXTRACTOR = "pixels"  # no network, no weights: fast by default
# Images sampled for the Vendi score: enough for a stable score (the pixel features have 3,072
# dimensions, so the covariance form needs n >= d to see the whole spectrum), small enough to
# take ~15 s on 2 busy cores (docs/benchmarks.md).
DEFAULT_VENDI_IMAGES = 5000


def probe_chunk(pool: Pool, start: int, stop: int) -> np.ndarray:
    """(H, W) of samples ``start .. stop-1``, shape (stop - start, 2); (-1, -1) when corrupt."""
    out = np.full((stop - start, 2), -1, dtype=np.int64)
    for j, index in enumerate(range(start, stop)):
        try:
            out[j] = pool.read(index).shape[:2]
        except CorruptImage:
            continue
    return out


def probe_pool(pool: Pool, workers: int = 0) -> np.ndarray:
    """Decode every sample; (H, W) per sample, shape (N, 2), (-1, -1) where corrupt."""
    if isinstance(pool, ArrayPool):
        return np.tile(np.asarray(pool.images.shape[1:3], dtype=np.int64), (len(pool), 1))
    if isinstance(pool, WdsPool):
        return pool.probe(workers)[0]
    chunks = list(map_pool_chunks(pool, probe_chunk, (), workers))
    return np.concatenate(chunks) if chunks else np.zeros((0, 2), dtype=np.int64)


def _summary(values: np.ndarray) -> dict[str, float | int | None]:
    if len(values) == 0:
        return {"min": None, "median": None, "max": None}
    return {
        "min": int(values.min()),
        "median": float(np.median(values)),
        "max": int(values.max()),
    }


def _class_counts(pool: Pool) -> dict[str, int]:
    labels = pool.labels
    if labels is None:
        return {}
    names = pool.class_names or []
    counts = Counter(int(x) for x in labels)
    out = {name: counts.get(i, 0) for i, name in enumerate(names)}
    extra = sum(n for lab, n in counts.items() if lab < 0 or lab >= len(names))
    if extra:
        out[_UNKNOWN] = extra
    return out


def _source_counts(pool: Pool) -> dict[str, int]:
    sources = getattr(pool, "sources", None)  # per-sample tags of composed pools
    if sources is not None and len(sources) == len(pool):
        return dict(sorted(Counter(str(s) for s in sources).items()))
    return {pool.source: len(pool)}


def vendi_report(
    pool: Pool, extractor: Any, max_images: int = DEFAULT_VENDI_IMAGES, seed: int = 0
) -> dict[str, Any]:
    """Vendi score (cosine kernel) of a seeded sample of a pool, per class when labelled.

    Returns:
        ``extractor`` (its identity), ``max_images``, ``seed`` and the
        :meth:`~divssl.distances.diversity.VendiResult.to_dict` fields, or ``error`` when the
        score is undefined (e.g. an all-black image under the pixels extractor).
    """
    from divssl.distances.pipeline import pool_features, pool_vendi

    out: dict[str, Any] = {"extractor": extractor.identity, "max_images": max_images, "seed": seed}
    try:  # a pool with no decodable image or an all-zero feature: reported, not fatal
        out.update(pool_vendi(pool, pool_features(pool, extractor, max_images, seed)).to_dict())
    except ValueError as exc:
        out["error"] = str(exc)
    return out


def inspect_pool(
    spec: str,
    workers: int = 0,
    vendi_extractor: str | None = DEFAULT_VENDI_EXTRACTOR,
    vendi_weights: str | None = None,
    vendi_max_images: int = DEFAULT_VENDI_IMAGES,
) -> dict[str, Any]:
    """Describe a pool.

    Args:
        spec: pool spec string.
        workers: decoding processes.
        vendi_extractor: extractor name for the Vendi score (``None``: no score).
        vendi_weights: weights file of that extractor (named and ``tv:``/``timm:`` ones).
        vendi_max_images: images sampled for the Vendi score.

    Returns:
        A JSON-serialisable dict: ``spec``, ``reader``, ``manifest_hash``, ``num_samples``,
        ``streaming``, ``source``, ``counts_per_source``, ``num_classes``, ``counts_per_class``,
        ``image_size`` (min/median/max of ``height`` and ``width`` over decodable samples, and
        ``histogram``: the 10 most common "HxW"), ``decoded``, ``corrupt`` (``count`` and up to
        1000 ``keys``) and ``vendi`` (:func:`vendi_report`; ``None`` when not asked).

    Raises:
        ConfigError: a bad spec or Vendi setting (before any image is decoded).
    """
    pool = open_pool(spec)
    extractor = None
    if vendi_extractor is not None:
        from divssl.distances.extractors import get_extractor

        if vendi_max_images < 1:
            raise ConfigError("vendi_max_images", f"must be at least 1, got {vendi_max_images}")
        extractor = get_extractor(vendi_extractor, vendi_weights)
    sizes = probe_pool(pool, workers)
    ok = sizes[:, 0] >= 0
    bad = np.flatnonzero(~ok)
    keys = pool.keys
    histogram = Counter(f"{h}x{w}" for h, w in sizes[ok].tolist())
    return {
        "spec": spec,
        "reader": parse_spec(spec)[0],
        "manifest_hash": pool.manifest_hash(),
        "num_samples": len(pool),
        "streaming": bool(pool.streaming),
        "source": pool.source,
        "counts_per_source": _source_counts(pool),
        "num_classes": len(pool.class_names or []),
        "counts_per_class": _class_counts(pool),
        "image_size": {
            "height": _summary(sizes[ok, 0]),
            "width": _summary(sizes[ok, 1]),
            "histogram": dict(histogram.most_common(10)),
        },
        "decoded": int(ok.sum()),
        "corrupt": {"count": len(bad), "keys": [keys[int(i)] for i in bad[:_MAX_LISTED]]},
        "vendi": None if extractor is None else vendi_report(pool, extractor, vendi_max_images),
    }


def render_report(report: dict[str, Any], max_classes: int = 30) -> Table:
    """A rich table of an :func:`inspect_pool` report (classes beyond ``max_classes`` summed)."""
    table = Table(title=f"pool {report['spec']}", show_header=True)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    size = report["image_size"]
    rows = [
        ("reader", report["reader"]),
        ("manifest hash", report["manifest_hash"]),
        ("samples", str(report["num_samples"])),
        ("decoded", str(report["decoded"])),
        ("corrupt", str(report["corrupt"]["count"])),
        ("streaming", str(report["streaming"])),
        ("source", ", ".join(f"{k}: {v}" for k, v in report["counts_per_source"].items())),
        ("classes", str(report["num_classes"])),
    ]
    for dim in ("height", "width"):
        s = size[dim]
        rows.append((f"{dim} min/median/max", f"{s['min']} / {s['median']} / {s['max']}"))
    rows.append(("common sizes", ", ".join(f"{k}: {v}" for k, v in size["histogram"].items())))
    rows += _vendi_rows(report.get("vendi"))
    for field, value in rows:
        table.add_row(field, value)
    counts = list(report["counts_per_class"].items())
    for name, n in counts[:max_classes]:
        table.add_row(f"class {name}", str(n))
    if len(counts) > max_classes:
        rest = sum(n for _, n in counts[max_classes:])
        table.add_row(f"({len(counts) - max_classes} more classes)", str(rest))
    for key in report["corrupt"]["keys"][:20]:
        table.add_row("corrupt", key)
    return table


def _vendi_rows(vendi: dict[str, Any] | None) -> list[tuple[str, str]]:
    if not vendi:
        return []
    name = str(vendi["extractor"]).split("|", 1)[0]
    if "error" in vendi:
        return [(f"Vendi score ({name})", f"undefined: {vendi['error']}")]
    rows = [(f"Vendi score ({name}, {vendi['n']} images)", f"{vendi['score']:.4g}")]
    if vendi.get("class_mean") is not None:
        rows.append(("Vendi per-class mean", f"{vendi['class_mean']:.4g}"))
    return rows
