"""Throughput of FID / KID / VisualDNA and of feature extraction, and distances vs domain shift.

Sections:

1. metrics at the paper's scale (50,000 x 2048 features per side): FID (covariances + eigh),
   beside pytorch-fid's formula (np.cov + sqrtm) with the relative difference of the values,
   KID (100 subsets of 1,000), VisualDNA (1,000 bins per neuron) (``--skip kid-vdna``: FID only);
2. feature extraction throughput (images/s) of small backbones on CPU;
3. FID / KID / VisualDNA between world pools with growing domain ``shift`` (0, 0.5, 1, 2), using a
   run's backbone as extractor (``--run DIR``) or a randomly initialised ``convnet_tiny``. The
   reference is the shift-0 train split; the compared pools are test splits, so shift 0 gives the
   finite-sample baseline.

Usage: ``python benchmarks/bench_distances.py [--n 50000] [--dim 2048] [--run DIR] [--out F]``.
Timings are wall-clock (``time.perf_counter``), medians over ``--repeats`` where cheap.
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
import torch

from divssl.distances import fid, gaussian_stats, get_extractor, kid, vdna
from divssl.distances.metrics import frechet_distance


def timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[float, Any]:
    """Median wall time of ``fn`` over ``repeats`` calls, and its last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def reference_frechet(mu1, sigma1, mu2, sigma2) -> float:
    """pytorch-fid's ``calculate_frechet_distance`` formula (``sqrtm`` of the product, eps
    offset when not finite, real part): the reference divssl's FID is compared with."""
    import scipy.linalg

    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def bench_fid(a: np.ndarray, b: np.ndarray, reference: bool) -> dict[str, Any]:
    """FID time after features: divssl's statistics (one DSYRK each) and eigh-based distance;
    with ``reference``, pytorch-fid's path (``np.cov`` + ``sqrtm``) on the same features, and the
    relative difference of the two values."""
    t_stats, (stats_a, stats_b) = timed(lambda: (gaussian_stats(a), gaussian_stats(b)))
    t_fd, value = timed(lambda: frechet_distance(*stats_a, *stats_b))
    out: dict[str, Any] = {
        "value": value, "stats_s": t_stats, "distance_s": t_fd, "total_s": t_stats + t_fd,
    }  # fmt: skip
    if reference:

        def np_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            x64 = x.astype(np.float64)
            return x64.mean(0), np.cov(x64, rowvar=False)

        t_ref_stats, (ref_a, ref_b) = timed(lambda: (np_stats(a), np_stats(b)))
        t_ref_fd, ref_value = timed(lambda: reference_frechet(*ref_a, *ref_b))
        out["pytorch_fid_formula"] = {
            "value": ref_value,
            "stats_s": t_ref_stats,
            "sqrtm_s": t_ref_fd,
            "total_s": t_ref_stats + t_ref_fd,
        }
        out["relative_difference"] = abs(value - ref_value) / abs(ref_value)
        same_stats = frechet_distance(*ref_a, *ref_b)
        out["relative_difference_same_stats"] = abs(same_stats - ref_value) / abs(ref_value)
    return out


def bench_metrics(
    n: int, dim: int, subsets: int, subset_size: int, bins: int, skip_others: bool = False
) -> dict:
    """Time each metric on two (n, dim) Gaussian feature sets (float32, like cached features);
    ``skip_others`` times FID only."""
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(dim, dim)).astype(np.float32) / np.sqrt(dim)
    a = rng.standard_normal((n, dim), dtype=np.float32) @ mix
    b = rng.standard_normal((n, dim), dtype=np.float32) @ mix + 0.1
    out: dict[str, Any] = {"n": n, "dim": dim}
    out["fid"] = bench_fid(a, b, reference=True)
    if skip_others:
        return out
    t_kid, res = timed(lambda: kid(a, b, subsets, subset_size))
    out["kid"] = {"value": res.mean, "std": res.std, "seconds": t_kid, "subsets": subsets}
    t_vdna, vres = timed(lambda: vdna({"layer": a}, {"layer": b}, bins))
    out["vdna"] = {"value": vres.mean, "seconds": t_vdna, "bins": bins, "neurons": dim}
    return out


def make_run_dir(root: Path, backbone: str, image_size: int) -> Path:
    """A run dir holding a randomly initialised backbone (seed 0)."""
    from divssl.io import atomic_write_yaml
    from divssl.pretrain.backbones import build_backbone, export_backbone

    torch.manual_seed(0)
    model, _ = build_backbone(backbone, image_size)
    root.mkdir(parents=True, exist_ok=True)
    export_backbone(model, root / "backbone.pt")
    atomic_write_yaml(
        root / "config.yaml",
        {"backbone": backbone, "image_size": image_size, "cifar_stem": False, "seed": 0},
    )
    return root


def bench_extraction(tmp: Path, images: int, repeats: int) -> dict:
    """Images/s of feature extraction (features only, and with VisualDNA activations)."""
    out = {}
    for backbone, size in (("convnet_tiny", 16), ("resnet18", 32)):
        extractor = get_extractor(f"run:{make_run_dir(tmp / backbone, backbone, size)}")
        batch = np.random.default_rng(0).integers(0, 256, (images, size, size, 3), np.uint8)
        extractor(batch[:8])  # warm-up
        t_feat, _ = timed(lambda e=extractor, x=batch: e(x), repeats)
        t_acts, _ = timed(lambda e=extractor, x=batch: e(x, with_acts=True), repeats)
        out[f"{backbone}@{size}px"] = {
            "images_per_s": images / t_feat,
            "images_per_s_with_acts": images / t_acts,
            "batch": images,
        }
    return out


def bench_shift(run: Path | None, tmp: Path, per_class: int, shifts: list[float]) -> dict:
    """Distances from world train@shift=0 to world test@shift for each shift."""
    from divssl.data import open_pool
    from divssl.distances import pool_features
    from divssl.distances.metrics import vdna_ranges

    run = run or make_run_dir(tmp / "shift_run", "convnet_tiny", 16)
    extractor = get_extractor(f"run:{run}")
    base = f"world:classes=10:per_class={per_class}:size=16:seed=0"
    ref = pool_features(open_pool(f"{base}:split=train:shift=0"), extractor, with_acts=True)
    ranges = vdna_ranges(ref.acts)  # one fixed range from the reference: every row in its units
    rows = []
    for shift in shifts:
        other = pool_features(
            open_pool(f"{base}:split=test:shift={shift}"), extractor, with_acts=True
        )
        res_kid = kid(ref.features, other.features, 100, 1000)
        rows.append(
            {
                "shift": shift,
                "fid": fid(ref.features, other.features),
                "kid": res_kid.mean,
                "kid_std": res_kid.std,
                "vdna": vdna(ref.acts, other.acts, 1000, ranges).mean,
            }
        )
    return {"extractor": extractor.identity, "reference": f"{base}:split=train", "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50000, help="features per side")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--kid-subsets", type=int, default=100)
    parser.add_argument("--kid-subset-size", type=int, default=1000)
    parser.add_argument("--bins", type=int, default=1000)
    parser.add_argument("--extract-images", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run", type=Path, default=None, help="run dir used as extractor")
    parser.add_argument("--per-class", type=int, default=200, help="world images per class")
    parser.add_argument("--shifts", default="0,0.5,1,2")
    parser.add_argument("--skip", default="", help="comma list of sections to skip")
    parser.add_argument("--out", type=Path, default=None, help="also write the results JSON")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
        }
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["DIVSSL_CACHE"] = str(tmp / "cache")  # measure extraction, not cache hits
        if "metrics" not in skip:
            results["metrics"] = bench_metrics(
                args.n, args.dim, args.kid_subsets, args.kid_subset_size, args.bins,
                skip_others="kid-vdna" in skip,
            )  # fmt: skip
            print(json.dumps(results["metrics"], indent=2))
        if "extract" not in skip:
            results["extraction"] = bench_extraction(tmp, args.extract_images, args.repeats)
            print(json.dumps(results["extraction"], indent=2))
        if "shift" not in skip:
            shifts = [float(s) for s in args.shifts.split(",")]
            results["shift"] = bench_shift(args.run, tmp, args.per_class, shifts)
            print(f"{'shift':>6} {'FID':>10} {'KID':>10} {'VDNA':>8}")
            for row in results["shift"]["rows"]:
                print(
                    f"{row['shift']:>6.2f} {row['fid']:>10.4g} "
                    f"{row['kid']:>10.4g} {row['vdna']:>8.4g}"
                )
    if args.out:
        from divssl.io import atomic_write_json

        atomic_write_json(args.out, results)


if __name__ == "__main__":
    main()
