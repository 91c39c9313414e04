"""Throughput of the procedural generators: the world and FractalDB.

Runs each case ``--repeats`` times after one warm-up and reports the median wall and CPU seconds
(CPU time shows the single-core cost when the machine is shared). numpy runs single-threaded
here, so the figures are one-core figures.

    python benchmarks/bench_generators.py [--repeats 3] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from divssl.data.fractaldb import generate_fractaldb, search_categories
from divssl.data.world import generate_world
from divssl.io import atomic_write_json


def _time(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    fn()  # warm-up: imports, allocator
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu), "n": repeats}


def _cases(quick: bool) -> list[tuple[str, int, Callable[[], Any]]]:
    scale = 10 if quick else 1
    cats = 100 // scale
    return [
        ("world 10x500 @16px", 5000, lambda: generate_world(10, 500, 16)),
        ("world 10x100 @32px", 1000, lambda: generate_world(10, 100, 32)),
        ("world ood 10x100 @32px", 1000, lambda: generate_world(10, 100, 32, split="ood")),
        (
            f"fractaldb search {cats} categories @64px, 100k pts",
            cats,
            lambda: search_categories(cats, 64, 100_000, 0.2, 0),
        ),
        (
            f"fractaldb {cats}x10 @64px, 100k pts (incl. search)",
            cats * 10,
            lambda: generate_fractaldb(cats, 10, 64, 100_000, 0.2, 0),
        ),
    ]


def main() -> None:
    """Run the benchmark and print a Markdown table (optionally write JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10x smaller FractalDB cases")
    parser.add_argument("--json", default=None, help="write results here (atomically)")
    args = parser.parse_args()
    rows = []
    print("| case | images | median wall s | median CPU s | images / CPU s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, images, fn in _cases(args.quick):
        res = _time(fn, args.repeats)
        rows.append({"case": name, "images": images, **res})
        rate = images / max(res["cpu_s"], 1e-9)
        print(f"| {name} | {images} | {res['wall_s']:.2f} | {res['cpu_s']:.2f} | {rate:,.0f} |")
    if args.json:
        atomic_write_json(
            args.json,
            {
                "results": rows,
                "numpy": np.__version__,
                "python": platform.python_version(),
                "machine": platform.processor() or platform.machine(),
            },
        )


if __name__ == "__main__":
    main()
