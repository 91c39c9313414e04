"""Pool ``fractaldb``: FractalDB generated in memory (see :mod:`divssl.data.fractaldb`).

Spec: ``fractaldb:categories=100:instances=10:size=64:points=100000:threshold=0.2:seed=0``, plus
``color=map|gray`` and ``cache=true|false``. Generation costs a few seconds per 1,000 images, so
the arrays are cached under ``$DIVSSL_CACHE/pools`` keyed by the generator version, the numpy
version (random streams) and every argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from divssl.cache import cache_key, cached_arrays
from divssl.data.fractaldb import COLORS, generate_fractaldb
from divssl.data.pool import ArrayPool, register_pool
from divssl.errors import ConfigError, unknown_choice

GENERATOR_VERSION = 1  # bump whenever generate_fractaldb's output changes


def _int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"fractaldb.{field}", f"must be an integer, got {value!r}")
    return value


@register_pool("fractaldb")
def fractaldb_pool(
    categories: int = 100,
    instances: int = 10,
    size: int = 64,
    points: int = 100_000,
    threshold: float = 0.2,
    seed: int = 0,
    color: str = "map",
    cache: bool = True,
) -> ArrayPool:
    """Generate (or load from the cache) a FractalDB pool, labelled by category, tag ``synthetic``.

    Keys are ``"<class name>_<instance>"``, e.g. ``"fractal_0007_000003"``.

    Raises:
        ConfigError: a bad key value, naming ``fractaldb.<key>``.
    """
    args: dict[str, Any] = {
        "categories": _int("categories", categories),
        "instances": _int("instances", instances),
        "size": _int("size", size),
        "points": _int("points", points),
        "seed": _int("seed", seed),
    }
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ConfigError("fractaldb.threshold", f"must be a number, got {threshold!r}")
    if color not in COLORS:
        raise unknown_choice("fractaldb.color", str(color), COLORS)
    if not isinstance(cache, bool):
        raise ConfigError("fractaldb.cache", f"must be true or false, got {cache!r}")
    args.update(threshold=float(threshold), color=str(color))

    def compute() -> dict[str, np.ndarray]:
        images, labels, _ = generate_fractaldb(**args)
        return {"images": images, "labels": labels}

    if cache:
        key = cache_key("fractaldb", GENERATOR_VERSION, np.__version__, args)
        arrays = cached_arrays("pools", key, compute)
    else:
        arrays = compute()
    names = [f"fractal_{c:04d}" for c in range(args["categories"])]
    keys = [f"{names[c]}_{i:06d}" for c in range(args["categories"]) for i in range(instances)]
    spec = ":".join(["fractaldb", *(f"{k}={v}" for k, v in args.items())])
    return ArrayPool(
        arrays["images"], arrays["labels"], names, keys=keys, source="synthetic", spec=spec
    )
