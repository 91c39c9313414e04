"""Linear-probe cost: the cached-feature L-BFGS sweep against the SGD-on-images protocol.

On a world task, extracts (and caches) the frozen features once, then times

* ``cached``: the full sweep of weight decays (all heads in one L-BFGS run), the validation choice
  and the refit, on cached features;
* ``cached (hit)``: reading the cached features back;
* ``sgd``: solo-learn's protocol, E epochs of SGD on augmented images through the frozen backbone
  (one setting, so no sweep or refit: the cheapest case of that protocol).

Each row reports the median of ``--repeats`` timed runs after one untimed warm-up (CUDA is
synchronised before each clock read) and the test top-1 of the resulting probe. The backbone is
a random-init ``convnet_tiny`` unless ``--run DIR`` names a pretraining run.

Example::

    python benchmarks/bench_probe.py --classes 10 --per-class 500 --size 16 --epochs 10
    python benchmarks/bench_probe.py --device cuda --json out.json
"""

from __future__ import annotations

import argparse
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=10, help="world classes K")
    parser.add_argument("--per-class", type=int, default=500, help="train images per class")
    parser.add_argument("--size", type=int, default=16, help="image side")
    parser.add_argument("--run", type=Path, default=None, help="run dir (default: random init)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the SGD protocol")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    return parser.parse_args(argv)


def _timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, Any]:
    """Median seconds of ``fn`` over ``repeats`` runs after one warm-up, and its last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark, print a table and return its rows."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("DIVSSL_CACHE", tempfile.mkdtemp(prefix="divssl-bench-"))
    from divssl.evaluate.features import (
        load_encoder,
        load_split_images,
        resolve_device,
        split_features,
    )
    from divssl.evaluate.linear import ProbeConfig, probe_features, probe_images
    from divssl.evaluate.tasks import open_task
    from divssl.io import atomic_write_json

    device = resolve_device(args.device)
    task = open_task(f"world:classes={args.classes}:per_class={args.per_class}:size={args.size}")
    if args.run is not None:
        enc = load_encoder(args.run)
    else:
        enc = load_encoder(init="random", backbone="convnet_tiny", image_size=args.size)
    start = time.perf_counter()
    train = split_features(enc, task, "train", device)
    test = split_features(enc, task, "test", device)
    extract_s = time.perf_counter() - start
    hit_s, _ = _timed(lambda: split_features(enc, task, "train", device), device, args.repeats)
    k = task.num_classes

    def top1(probe: Any) -> float:
        return float(np.mean(probe.predict(test.features).argmax(1) == test.labels))

    cached_cfg = ProbeConfig(seed=0)
    cached_s, cached = _timed(
        lambda: probe_features(train.features, train.labels, k, cached_cfg, device),
        device,
        args.repeats,
    )
    images, labels, _ = load_split_images(task, "train", enc.image_size)
    sgd_cfg = ProbeConfig(protocol="sgd", epochs=args.epochs, seed=0)
    sgd_s, sgd = _timed(
        lambda: probe_images(
            enc.model,
            images,
            np.arange(len(labels)),
            labels,
            train.features,
            k,
            enc.feat_dim,
            enc.image_size,
            sgd_cfg,
            device,
        ),  # fmt: skip
        device,
        max(1, args.repeats - 2),
    )
    n = len(train.labels)
    rows = [
        {"row": "extract (train+test)", "seconds": extract_s, "images": n + len(test.labels)},
        {"row": "cached (hit, train)", "seconds": hit_s, "images": n},
        {
            "row": f"cached L-BFGS sweep x{len(cached_cfg.settings())} + refit",
            "seconds": cached_s,
            "images": n,
            "top1": top1(cached),
            "chosen_wd": cached.chosen.weight_decay,
        },
        {
            "row": f"sgd protocol, {args.epochs} epochs",
            "seconds": sgd_s,
            "images": n * args.epochs,
            "top1": top1(sgd),
        },
    ]
    print(
        f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
        f"python={platform.python_version()} N_train={n} D={enc.feat_dim} K={k}"
    )
    print(f"{'row':<36} {'seconds':>9} {'images':>9} {'top1':>7}")
    for row in rows:
        acc = f"{100 * row['top1']:.1f}" if "top1" in row else "-"
        print(f"{row['row']:<36} {row['seconds']:>9.3f} {row['images']:>9} {acc:>7}")
    if args.json:
        atomic_write_json(args.json, {"device": str(device), "rows": rows})
    return rows


if __name__ == "__main__":
    main()
