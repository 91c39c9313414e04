"""Throughput of batched view generation (``divssl.pretrain.augment.make_views``).

Times every (preset, image size) pair on random uint8 images already on the device and prints
source images per second (each image counts once, however many views it yields) from the median
of the timed repeats, after warm-up calls; CUDA is synchronised before each clock read.

Example::

    python benchmarks/bench_augment.py --batch 256 --sizes 16 32 64
    python benchmarks/bench_augment.py --device cuda --sizes 224 --local-crops 6 --json out.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from divssl.io import atomic_write_json
from divssl.pretrain.augment import PRESETS, get_preset, make_views


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="images per call")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64], help="view sizes")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument(
        "--local-crops", type=int, default=2, help="local crops for the multi-crop presets"
    )
    parser.add_argument("--source-scale", type=float, default=1.0, help="source side / view size")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per row")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per row")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    return parser.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_one(
    preset_name: str, size: int, args: argparse.Namespace, device: torch.device
) -> dict[str, float | int | str]:
    """Median time of ``make_views`` for one preset and size; returns one table row."""
    n_local = args.local_crops if preset_name in ("dino", "swav") else 0
    preset = get_preset(preset_name, size, n_local_crops=n_local)
    source = max(size, round(size * args.source_scale))
    gen = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(
        0, 256, (args.batch, 3, source, source), dtype=torch.uint8, device=device, generator=gen
    )
    for _ in range(args.warmup):
        make_views(images, preset, gen)
    times = []
    for _ in range(args.repeats):
        _sync(device)
        start = time.perf_counter()
        make_views(images, preset, gen)
        _sync(device)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "preset": preset_name,
        "size": size,
        "views": preset.n_views,
        "batch": args.batch,
        "median_ms": 1000 * median,
        "images_per_s": args.batch / median,
        "views_per_s": args.batch * preset.n_views / median,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the grid and print the table."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [bench_one(p, s, args, device) for s in args.sizes for p in args.presets]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(
        f"device={device} ({name or platform.machine()}) threads={torch.get_num_threads()} "
        f"torch={torch.__version__} batch={args.batch} repeats={args.repeats} (median)"
    )
    header = f"{'preset':<11}{'size':>5}{'views':>6}{'ms/batch':>10}{'images/s':>11}{'views/s':>11}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['preset']:<11}{r['size']:>5}{r['views']:>6}{r['median_ms']:>10.1f}"
            f"{r['images_per_s']:>11.0f}{r['views_per_s']:>11.0f}"
        )
    if args.json:
        atomic_write_json(
            args.json,
            {"device": str(device), "threads": torch.get_num_threads(), "rows": rows},
        )


if __name__ == "__main__":
    main()
