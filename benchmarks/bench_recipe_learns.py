"""Does each method's recipe learn on the world? kNN top-1 of a recipe run against random init.

For every method (or ``--methods``), pretrains ``convnet_tiny`` at 16 px on the default world with
the method's resolved recipe (``recipe=auto`` -> ``cifar``) for C = ``--budget`` images, plus any
``--set KEY=VALUE`` overrides (e.g. ``optim.lars_clip=false`` for an ablation), then scores kNN
(k = 20) on the world task's ID test split, next to a random-init encoder. Prints one row per
method with the wall time of the pretraining; ``--json`` writes the rows.

Example::

    python benchmarks/bench_recipe_learns.py --budget 100000
    python benchmarks/bench_recipe_learns.py --methods simclr --budget 15000 \
        --set optim.lars_clip=false
    python benchmarks/bench_recipe_learns.py --methods simclr vicreg byol --budget 15000 \
        --set recipe=small
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from divssl.evaluate.knn import run_knn
from divssl.pretrain.config import load_config
from divssl.pretrain.loop import pretrain
from divssl.pretrain.methods import method_names

POOL = "world:classes=10:per_class=1000:size=16:seed=0"
TASK = "world:classes=10:per_class=200:size=16:seed=0"


def _top1(result: dict[str, Any]) -> float:
    return float(result["results"][0]["test"]["top1"]["value"])


def main() -> None:
    """Run the comparison and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", default=method_names())
    parser.add_argument("--budget", type=int, default=30_000, help="C, images per run")
    parser.add_argument("--set", action="append", default=[], help="extra KEY=VALUE overrides")
    parser.add_argument("--out", type=Path, default=None, help="runs folder (default: temp)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="divssl-recipes-"))
    rnd = run_knn(
        None,
        TASK,
        ks=[20],
        n_boot=100,
        write=False,
        init="random",
        backbone="convnet_tiny",
        image_size=16,
        out_dir=root / "random",
    )
    rows = [{"method": "random init", "knn_top1": _top1(rnd), "seconds": 0.0}]
    for method in args.methods:
        overrides = [f"data.pool={POOL}", f"method={method}", f"budget.images={args.budget}"]
        overrides += ["tracking=none", f"out={root / method}", *args.set]
        t0 = time.perf_counter()
        run = pretrain(load_config(None, overrides))
        seconds = time.perf_counter() - t0
        knn = run_knn(run, TASK, ks=[20], n_boot=100, write=False)
        rows.append({"method": method, "knn_top1": _top1(knn), "seconds": seconds})
    print(f"C = {args.budget:,}, overrides: {args.set or 'none'}")
    print("| method | kNN top-1 (ID test) | pretrain s |")
    print("| --- | --- | --- |")
    for row in rows:
        print(f"| {row['method']} | {100 * row['knn_top1']:.1f}% | {row['seconds']:.0f} |")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
