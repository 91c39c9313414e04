"""Pool inspection: counts per class and source, image sizes, corrupt files, manifest hash.

Every sample is decoded once (in ``workers`` processes), so the corrupt list is exact: zero-byte,
truncated and non-image files are all found. Array pools are not decoded (they cannot be corrupt).
For ``wds`` pools the pass also records each shard as checked, which lets later budgeted streams
resume by counting.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from rich.table import Table

from divssl.data.cache import map_pool_chunks
from divssl.data.pool import ArrayPool, CorruptImage, Pool, open_pool, parse_spec
from divssl.data.readers.wds import WdsPool

_UNKNOWN = "<unknown>"
_MAX_LISTED = 1000  # corrupt keys listed in the report (the count is always exact)


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


def inspect_pool(spec: str, workers: int = 0) -> dict[str, Any]:
    """Describe a pool.

    Args:
        spec: pool spec string.
        workers: decoding processes.

    Returns:
        A JSON-serialisable dict: ``spec``, ``reader``, ``manifest_hash``, ``num_samples``,
        ``streaming``, ``source``, ``counts_per_source``, ``num_classes``, ``counts_per_class``,
        ``image_size`` (min/median/max of ``height`` and ``width`` over decodable samples, and
        ``histogram``: the 10 most common "HxW"), ``decoded``, ``corrupt`` (``count`` and up to
        1000 ``keys``).

    Raises:
        ConfigError: a bad spec.
    """
    pool = open_pool(spec)
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
