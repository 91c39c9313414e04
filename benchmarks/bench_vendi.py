"""Time of the Vendi score (``divssl.distances.diversity``) at the paper's feature scale.

Sections:

1. ``scale``: the cosine-kernel Vendi score of 50,000 x 2048 float32 features (synthetic,
   correlated, like cached Inception features) by the covariance form (one chunked DSYRK + one
   2048² ``eigvalsh``), without and with 10 class labels (the per-class scores add ten more
   2048² eigen-decompositions or Gram forms); the rbf kernel by Nyström (1,000 landmarks).
2. ``agreement``: on the first ``--check-n`` rows, the covariance form against the direct
   O(n²) definition (eigenvalues of the n x n cosine-similarity matrix / n), value and time.
3. ``inspect``: ``divssl data inspect``'s default Vendi score (pixels extractor at 32 px, 5,000
   seeded images) on the Fashion-MNIST IDX files when they are installed (``--fashion-mnist``).
4. ``nested``: pixel Vendi score of nested subsets of Fashion-MNIST train (the first N entries of
   a seeded ordering, as a study's subsets) for ``--nested-sizes``: measured vs counted diversity.

Usage: ``python benchmarks/bench_vendi.py [--n 50000] [--dim 2048] [--repeats 3] [--out F]``.
Wall-clock times (``time.perf_counter``), medians over ``--repeats``; BLAS threads follow
``divssl.threads`` (the cores other processes leave free), so record the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg

from divssl.distances.diversity import entropy_score, vendi

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[float, Any]:
    """Median wall time of ``fn`` over ``repeats`` calls, and its last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def features(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) float32 correlated Gaussian features shifted per class, and 10-class labels."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(dim, dim)).astype(np.float32) / np.sqrt(dim)
    labels = rng.integers(0, 10, n)
    centres = rng.normal(size=(10, dim)).astype(np.float32)
    x = rng.standard_normal((n, dim), dtype=np.float32) @ mix + centres[labels]
    return x, labels


def direct_score(x: np.ndarray) -> float:
    """The definition: eigenvalues of the n x n cosine-similarity matrix / n."""
    xn = x.astype(np.float64)
    xn /= np.linalg.norm(xn, axis=1, keepdims=True)
    return entropy_score(scipy.linalg.eigvalsh(xn @ xn.T / len(x)))


def bench_scale(n: int, dim: int, repeats: int, landmarks: int) -> dict[str, Any]:
    x, labels = features(n, dim)
    t_all, res = timed(lambda: vendi(x), repeats)
    t_cls, res_cls = timed(lambda: vendi(x, labels), repeats)
    t_rbf, res_rbf = timed(lambda: vendi(x, kernel="rbf", landmarks=landmarks), 1)
    return {
        "n": n,
        "dim": dim,
        "cosine": {"seconds": t_all, "value": res.score, "form": res.form},
        "cosine_per_class": {
            "seconds": t_cls,
            "value": res_cls.score,
            "class_mean": res_cls.class_mean,
            "classes": len(res_cls.per_class),
        },
        "rbf_nystrom": {
            "seconds": t_rbf,
            "value": res_rbf.score,
            "form": res_rbf.form,
            "landmarks": landmarks,
            "bandwidth": res_rbf.params.get("bandwidth"),
        },
    }


def bench_agreement(n: int, dim: int, check_n: int) -> dict[str, Any]:
    x = features(n, dim)[0][:check_n]
    t_fast, fast = timed(lambda: vendi(x))
    t_direct, direct = timed(lambda: direct_score(x))
    return {
        "n": check_n,
        "covariance_form": {"seconds": t_fast, "value": fast.score, "form": fast.form},
        "direct_definition": {"seconds": t_direct, "value": direct},
        "relative_difference": abs(fast.score - direct) / direct,
    }


def bench_inspect(root: Path) -> dict[str, Any]:
    from divssl.data.inspect import DEFAULT_VENDI_IMAGES, vendi_report
    from divssl.data.pool import open_pool
    from divssl.distances.extractors import get_extractor

    pool = open_pool(f"idx:root={root}")
    ext = get_extractor("pixels")
    t, report = timed(lambda: vendi_report(pool, ext, DEFAULT_VENDI_IMAGES))
    return {"pool": str(root), "seconds_cold_cache": t, **report}


def bench_nested(root: Path, sizes: list[int]) -> dict[str, Any]:
    from divssl.data.ordering import make_ordering
    from divssl.data.pool import open_pool
    from divssl.distances.extractors import get_extractor
    from divssl.distances.pipeline import index_features, pool_vendi

    pool = open_pool(f"idx:root={root}")
    positions = make_ordering(pool, seed=0).positions
    ext = get_extractor("pixels")
    t_extract, feats = timed(lambda: index_features(pool, ext, positions[: max(sizes)]))
    rows = []
    for n in sizes:
        sub = type(feats)(feats.features[:n], {}, feats.indices[:n], n)
        t, res = timed(lambda sub=sub: pool_vendi(pool, sub))
        rows.append({"n": n, "vendi": res.score, "class_mean": res.class_mean, "seconds": t})
    return {"pool": str(root), "extract_seconds": t_extract, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--landmarks", type=int, default=1000)
    parser.add_argument("--check-n", type=int, default=4000, help="rows of the O(n²) check")
    parser.add_argument("--fashion-mnist", type=Path, default=FASHION_MNIST)
    parser.add_argument("--nested-sizes", default="500,1000,2000,5000,10000,20000")
    parser.add_argument("--skip", default="", help="comma list of sections to skip")
    parser.add_argument("--out", type=Path, default=None, help="also write the results JSON")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "processor": platform.processor() or platform.machine(),
            "load_average": os.getloadavg(),
        }
    }
    if "scale" not in skip:
        results["scale"] = bench_scale(args.n, args.dim, args.repeats, args.landmarks)
        print(json.dumps(results["scale"], indent=2))
    if "agreement" not in skip:
        results["agreement"] = bench_agreement(args.n, args.dim, args.check_n)
        print(json.dumps(results["agreement"], indent=2))
    if "inspect" not in skip and args.fashion_mnist.is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["DIVSSL_CACHE"] = tmp  # measure extraction, not a cache hit
            results["inspect"] = bench_inspect(args.fashion_mnist)
        summary = {k: v for k, v in results["inspect"].items() if k != "per_class"}
        print(json.dumps(summary, indent=2))
    if "nested" not in skip and args.fashion_mnist.is_dir():
        sizes = [int(v) for v in args.nested_sizes.split(",")]
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["DIVSSL_CACHE"] = tmp
            results["nested"] = bench_nested(args.fashion_mnist, sizes)
        print(json.dumps(results["nested"], indent=2))
    if args.out:
        from divssl.io import atomic_write_json

        atomic_write_json(args.out, results)


if __name__ == "__main__":
    main()
