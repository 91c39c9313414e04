"""Loader throughput (images/s) for the three ways images reach the training loop.

1. ``cached``: a decoded uint8 :class:`ArrayPool` (what ``load_array_pool`` returns) gathered into
   (B, 3, S, S) batches along the budgeted stream (``divssl.pretrain.budget.stream_positions``);
2. ``folder``: an image folder of JPEGs decoded once by ``load_array_pool`` (PIL decode, resize,
   centre crop) in ``workers`` processes;
3. ``wds``: WebDataset shards of the same JPEGs streamed by ``divssl.data.stream.stream_batches``
   (tar read in the main process, decoding in DataLoader workers).

The JPEGs are smooth synthetic 256x192 images (about the size img2dataset writes), made here.
Each figure is the median of ``--repeats`` timed runs. Usage::

    python benchmarks/bench_loader.py --images 2000 --size 32 --workers 2 --out loader.json
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from divssl.data.cache import load_array_pool
from divssl.data.pool import ArrayPool, open_pool
from divssl.data.stream import stream_batches
from divssl.io import atomic_write_json
from divssl.pretrain.budget import Budget, stream_positions


def smooth_jpeg(seed: int, width: int = 256, height: int = 192) -> bytes:
    """A photo-like JPEG: bicubic-upsampled 6x8 colour noise plus mild grain."""
    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    arr = np.asarray(low.resize((width, height), Image.BICUBIC), dtype=np.int16)
    arr = np.clip(arr + rng.integers(-8, 9, arr.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_data(root: Path, n: int, shards: int) -> tuple[str, str]:
    """Write ``n`` JPEGs as a class folder and as ``shards`` tar shards; return both specs."""
    per_shard = -(-n // shards)
    for s in range(shards):
        with tarfile.open(root / f"shard-{s:03d}.tar", "w") as tar:
            for i in range(s * per_shard, min(n, (s + 1) * per_shard)):
                data = smooth_jpeg(i)
                folder = root / "folder" / f"c{i % 10}"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{i:06d}.jpg").write_bytes(data)
                for name, blob in ((f"{i:06d}.jpg", data), (f"{i:06d}.cls", f"{i % 10}".encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(blob)
                    tar.addfile(info, io.BytesIO(blob))
    return f"folder:root={root / 'folder'}", f"wds:urls={root}/shard-{{000..{shards - 1:03d}}}.tar"


def timed(fn: Callable[[], int], repeats: int) -> dict[str, float]:
    """Median images/s over ``repeats`` runs of ``fn`` (which returns images processed).

    ``images_per_cpu_second`` divides by this process's CPU time instead of wall time: with no
    worker processes it is the per-core rate, unaffected by other load on the machine.
    """
    rates, cpu_rates = [], []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        count = fn()
        rates.append(count / (time.perf_counter() - start))
        cpu_rates.append(count / max(time.process_time() - cpu, 1e-9))
    return {
        "images_per_second": statistics.median(rates),
        "images_per_cpu_second": statistics.median(cpu_rates),
        "runs": repeats,
    }


def bench_cached(n: int, size: int, batch: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    pool = ArrayPool(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
    budget = Budget(images=4 * n, unique_images=n, global_batch=batch)

    def run() -> int:
        seen = 0
        for step, b in enumerate(budget.batch_sizes):
            pos = stream_positions(n, 0, budget.images_before(step), b)
            x = torch.from_numpy(pool.images[np.sort(pos)]).permute(0, 3, 1, 2).contiguous()
            seen += len(x)
        return seen

    return timed(run, repeats)


def bench_folder(spec: str, size: int, workers: int, repeats: int) -> dict[str, float]:
    def run() -> int:
        decoded, _ = load_array_pool(open_pool(spec), size, workers=workers)
        return len(decoded)

    return timed(run, repeats)


def bench_wds(spec: str, size: int, batch: int, workers: int, repeats: int) -> dict[str, float]:
    pool = open_pool(spec)
    budget = Budget(images=2 * len(pool), unique_images=len(pool), global_batch=batch)

    def run() -> int:
        loader = stream_batches(pool, len(pool), budget.batch_sizes, 0, 0, size, workers)
        return sum(len(x) for x, _ in loader)

    return timed(run, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[str, object] = {"args": {k: str(v) for k, v in vars(args).items()}}
    results["cpu_count"] = os.cpu_count()
    results["load_average_before"] = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("DIVSSL_CACHE", str(Path(tmp) / "cache"))
        folder_spec, wds_spec = make_data(Path(tmp), args.images, args.shards)
        results["cached"] = bench_cached(20_000, args.size, args.batch, args.repeats)
        for workers in sorted({0, args.workers}):
            results[f"folder_workers{workers}"] = bench_folder(
                folder_spec, args.size, workers, args.repeats
            )
            results[f"wds_workers{workers}"] = bench_wds(
                wds_spec, args.size, args.batch, workers, args.repeats
            )
    results["load_average_after"] = os.getloadavg()
    for name, value in results.items():
        if isinstance(value, dict) and "images_per_second" in value:
            print(
                f"{name:>18}: {value['images_per_second']:>10.0f} images/s"
                f"  ({value['images_per_cpu_second']:.0f} per CPU-second of the main process)"
            )
    if args.out is not None:
        atomic_write_json(args.out, results)


if __name__ == "__main__":
    main()
