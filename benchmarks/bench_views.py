"""Cost of views from whole images: batch gathering and view generation, square vs whole.

For each view size, builds two stored pools of random images: *square* (every image stored as a
``store x store`` square, the old centre-crop layout) and *whole* (aspect ratios drawn
log-uniformly in [3/4, 16/9], landscape or portrait, shorter side ``store``, packed with
per-image extents). It times :meth:`~divssl.data.cache.StoredPool.gather` (host, padded batch)
and :func:`~divssl.pretrain.augment.make_views` with the preset on the device (extents for the whole
pool), and prints source images per second from the median of the timed repeats after warm-up
calls; CUDA is synchronised before each clock read. It also prints the stored bytes per million
images of each layout.

Example::

    python benchmarks/bench_views.py --sizes 32 224 --batch 256
    python benchmarks/bench_views.py --device cuda --sizes 224 --preset byol --json out.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from divssl.data.cache import StoredPool, default_store_size
from divssl.io import atomic_write_json
from divssl.pretrain.augment import PRESETS, get_preset, make_views


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="images per call")
    parser.add_argument("--pool", type=int, default=1024, help="images per stored pool")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224], help="view sizes")
    parser.add_argument("--preset", default="simclr", choices=list(PRESETS))
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per row")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per row")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    return parser.parse_args(argv)


def make_pool(n: int, store: int, whole: bool, seed: int = 0) -> StoredPool:
    """Random stored pool: squares, or whole images of random aspect (shorter side ``store``)."""
    rng = np.random.default_rng(seed)
    shapes = []
    for _ in range(n):
        if whole:
            aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(16 / 9))))
            long = int(store * max(aspect, 1 / aspect))
            shapes.append((store, long) if rng.random() < 0.7 else (long, store))
        else:
            shapes.append((store, store))
    sizes = [h * w * 3 for h, w in shapes]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pixels = rng.integers(0, 256, int(sum(sizes)), dtype=np.uint8)
    return StoredPool(pixels, offsets, np.asarray(shapes))


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int, device: str) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_row(args: argparse.Namespace, size: int, whole: bool) -> dict[str, object]:
    """One (view size, layout) row."""
    store = default_store_size(size)
    pool = make_pool(args.pool, store, whole)
    rng = np.random.default_rng(1)
    idx = rng.choice(len(pool), args.batch, replace=False)
    preset = get_preset(args.preset, size)
    device = torch.device(args.device)
    array, extents = pool.gather(idx)
    images = torch.from_numpy(array).permute(0, 3, 1, 2).contiguous().to(device)
    ext = torch.from_numpy(extents).to(device) if whole else None
    gen = torch.Generator(device=device)
    gen.manual_seed(0)
    t_gather = median_seconds(lambda: pool.gather(idx), args.repeats, args.warmup, "cpu")
    t_views = median_seconds(
        lambda: make_views(images, preset, gen, extents=ext), args.repeats, args.warmup, args.device
    )
    per_million = pool.nbytes / len(pool) * 1e6
    return {
        "view_size": size,
        "store_size": store,
        "layout": "whole" if whole else "square",
        "padded_batch_hw": list(array.shape[1:3]),
        "gather_images_per_s": args.batch / t_gather,
        "views_images_per_s": args.batch / t_views,
        "gb_per_million_images": per_million / 1e9,
    }


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    """Run every row, print a table, optionally write JSON."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows = [bench_row(args, s, whole) for s in args.sizes for whole in (False, True)]
    print(f"preset={args.preset} batch={args.batch} device={args.device} {platform.processor()}")
    print("view store layout  padded     gather img/s  views img/s  GB/1M images")
    for r in rows:
        print(
            f"{r['view_size']:>4} {r['store_size']:>5} {r['layout']:<7}"
            f"{str(r['padded_batch_hw']):<11}{r['gather_images_per_s']:>13.0f}"
            f"{r['views_images_per_s']:>13.0f}{r['gb_per_million_images']:>14.1f}"
        )
    if args.json:
        atomic_write_json(args.json, {"args": vars(args), "rows": rows})
    return rows


if __name__ == "__main__":
    main()
