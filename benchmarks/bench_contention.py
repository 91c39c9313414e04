"""Throughput under CPU contention: the same pretraining and linear probe, quiet and beside one
busy process, with the old thread setting (one intra-op thread per core) and the new policy.

For each condition — ``quiet``, then ``busy`` (a spawned ``while True: pass`` Python process, not
pinned to any core) — and each thread setting — ``before`` (``threads = cores``: torch's default,
what divssl did before ``divssl.threads``; for the probe, ``ProbeConfig(threads=cores)``: that many
BLAS threads in its L-BFGS objective) and ``after`` (``threads: auto`` for pretraining, the
probe's default single-threaded solver) — it runs

* ``divssl pretrain`` (SimCLR, ``convnet_tiny``, 16 px, batch 256, C images on the default world)
  and reads the loop's steady images/s from ``summary.json``;
* the cached-feature linear probe (:func:`divssl.evaluate.linear.probe_features`, the default
  sweep of 7 weight decays, validation choice and refit) on synthetic standardised features
  (n x D, 10 classes), timed end to end;

and prints ``busy / quiet`` ratios (issue 13's goal: >= 0.45 for both). The machine's load
average at the start of each condition is recorded: a "quiet" run on a shared machine is only as
quiet as its neighbours.

Usage::

    python benchmarks/bench_contention.py                       # C = 30,000, probe 2,000 x 128
    python benchmarks/bench_contention.py --images 60000 --json contention.json
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=30_000, help="pretraining budget C")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--probe-n", type=int, default=2000, help="probe train features")
    p.add_argument("--probe-dim", type=int, default=128, help="probe feature width")
    p.add_argument("--settings", default="before,after", help="thread settings to run")
    p.add_argument("--skip", default="", help="comma list: pretrain, probe")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def busy_process() -> subprocess.Popen:
    """One spinning Python process, free to run on any core."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run_pretrain(images: int, batch: int, threads: int | str, out: Path) -> dict[str, Any]:
    """One SimCLR run; its steady images/s and the thread counts it used."""
    from divssl.io import read_json
    from divssl.pretrain.config import load_config
    from divssl.pretrain.loop import pretrain

    cfg = load_config(
        None,
        [
            "method=simclr",
            "backbone=convnet_tiny",
            "image_size=16",
            f"batch_size={batch}",
            f"budget.images={images}",
            f"threads={threads}",
            "device=cpu",
            "tracking=none",
            "checkpoint_every=100000",
            f"out={out}",
        ],
    )
    start = time.perf_counter()
    run = pretrain(cfg)
    s = read_json(run / "summary.json")
    return {
        "images_per_second": s["steady_images_per_second"],
        "wall_seconds": time.perf_counter() - start,
        "threads": s["threads"],
    }


def probe_data(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping Gaussian classes: (n, dim) float32 features and (n,) labels in [0, 10)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(10, dim)) * 0.4
    y = rng.integers(0, 10, n)
    return (centers[y] + rng.normal(size=(n, dim))).astype(np.float32), y


def run_probe(x: np.ndarray, y: np.ndarray, threads: int) -> dict[str, Any]:
    """The default cached probe (7 weight decays, choice, refit) on ``threads`` threads."""
    from divssl.evaluate.linear import ProbeConfig, probe_features

    start = time.perf_counter()
    res = probe_features(x, y, 10, ProbeConfig(threads=threads))
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "chosen_weight_decay": res.chosen.weight_decay,
        "converged": all(info.converged for info in res.fits.values()),
        "threads": threads,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every condition and setting; print the ratios; return the results."""
    args = parse_args(argv)
    from divssl.threads import cpu_cores

    cores = cpu_cores()
    settings = [s for s in args.settings.split(",") if s]
    skip = set(args.skip.split(","))
    x, y = probe_data(args.probe_n, args.probe_dim)
    results: dict[str, Any] = {
        "machine": {
            "cores": cores,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "processor": platform.processor() or platform.machine(),
        },
        "args": {k: str(v) for k, v in vars(args).items()},
        "conditions": {},
    }
    with tempfile.TemporaryDirectory(prefix="divssl-contention-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ.setdefault("DIVSSL_CACHE", str(tmp / "cache"))
        for condition in ("quiet", "busy"):
            busy = busy_process() if condition == "busy" else None
            try:
                time.sleep(1.0)  # let the scheduler see the busy process
                cond: dict[str, Any] = {"loadavg_1min": os.getloadavg()[0]}
                for setting in settings:
                    row: dict[str, Any] = {}
                    if "pretrain" not in skip:
                        threads = cores if setting == "before" else "auto"
                        row["pretrain"] = run_pretrain(
                            args.images, args.batch, threads, tmp / f"{condition}-{setting}"
                        )
                    if "probe" not in skip:
                        row["probe"] = run_probe(x, y, cores if setting == "before" else 1)
                    cond[setting] = row
                    print(condition, setting, row, flush=True)
                results["conditions"][condition] = cond
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    ratios: dict[str, Any] = {}
    quiet, loaded = results["conditions"]["quiet"], results["conditions"]["busy"]
    for setting in settings:
        r: dict[str, float] = {}
        if "pretrain" not in skip:
            q = quiet[setting]["pretrain"]["images_per_second"]
            r["pretrain"] = loaded[setting]["pretrain"]["images_per_second"] / q
        if "probe" not in skip:
            r["probe"] = quiet[setting]["probe"]["seconds"] / loaded[setting]["probe"]["seconds"]
        ratios[setting] = r
    results["ratios_busy_over_quiet"] = ratios
    print("busy / quiet throughput (goal >= 0.45):")
    for setting, r in ratios.items():
        print(f"  {setting:>6}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()))
    if args.json:
        from divssl.io import atomic_write_json

        atomic_write_json(args.json, results)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
