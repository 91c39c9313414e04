"""Streaming WebDataset decode throughput: whole images at storage resolution vs square crops.

Writes synthetic shards of 500 x 375 JPEGs (q90, the ImageNet-like case) and times the budgeted
stream (``divssl.data.stream.stream_batches``) that pretraining reads, images/s end to end (tar
reading, decoding, resizing, batch assembly), for

* ``square``: the former path, decoded to the view size (shorter side, centre crop), PIL;
* ``store``: whole images, shorter side ``store_size`` (aspect kept, padded batches), PIL;
* ``store_device``: the same with batched ``decode_jpeg`` on ``--device`` (``cuda`` on a GPU
  machine; ``cpu`` runs torchvision's CPU decoder through the same code).

Each mode runs with ``--workers`` decode processes (device decoding always runs in the main
process). Timings on a shared machine are "under load"; rerun on a quiet one.

Usage::

    python benchmarks/bench_wds_decode.py --images 512 --workers 2 --out wds_decode.json
    python benchmarks/bench_wds_decode.py --images 4096 --device cuda --out wds_decode_gpu.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=512, help="images streamed per mode")
    p.add_argument("--unique", type=int, default=256, help="distinct JPEGs in the shards")
    p.add_argument("--size", type=int, default=224, help="view size (square mode)")
    p.add_argument("--store-size", type=int, default=256, help="storage shorter side")
    p.add_argument("--batch", type=int, default=64, help="images per step")
    p.add_argument("--workers", type=int, default=0, help="PIL decode processes")
    p.add_argument("--device", default="cpu", help="device of the store_device mode")
    p.add_argument("--modes", default="square,store,store_device", help="comma list")
    p.add_argument("--out", type=Path, default=None, help="JSON output")
    return p.parse_args(argv)


def write_shards(root: Path, n: int, per_shard: int = 64) -> str:
    """Shards of ``n`` synthetic 500 x 375 JPEGs (smooth waves plus noise, quality 90)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:375, 0:500]
    root.mkdir(parents=True, exist_ok=True)
    shards = (n + per_shard - 1) // per_shard
    for s in range(shards):
        with tarfile.open(root / f"{s:06d}.tar", "w") as tar:
            for i in range(s * per_shard, min(n, (s + 1) * per_shard)):
                phase = rng.uniform(0, 6.28, 3)
                arr = np.stack([127 + 120 * np.sin(xx / 40 + p + yy / 57) for p in phase], -1)
                arr = np.clip(arr + rng.normal(0, 8, arr.shape), 0, 255).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(arr).save(buf, format="JPEG", quality=90)
                for name, data in ((f"{i:08d}.jpg", buf.getvalue()), (f"{i:08d}.cls", b"0")):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return f"wds:urls={root}/{{000000..{shards - 1:06d}}}.tar:buffer=64"


def run_mode(spec: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Stream ``args.images`` images in one mode; images/s after the first batch."""
    from divssl.data.pool import open_pool
    from divssl.data.stream import stream_batches

    pool = open_pool(spec)
    sizes = [args.batch] * (args.images // args.batch + 1)  # +1: the warm-up batch
    store = None if mode == "square" else args.store_size
    device = args.device if mode == "store_device" else None
    loader = stream_batches(
        pool, len(pool), sizes, 0, size=args.size, workers=args.workers, store_size=store,
        device=device,
    )  # fmt: skip
    if device is not None:  # stream_batches decodes on the device only for CUDA: force it here
        loader.device = device
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    shape = None
    for batch in it:
        shape = tuple(batch[0].shape)
    seconds = time.perf_counter() - start
    return {
        "images": args.images,
        "seconds": seconds,
        "images_per_second": args.images / seconds,
        "last_batch_shape": shape,
        "decode_device": device,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the modes and print (and optionally write) the JSON."""
    args = parse_args(argv)
    results: dict[str, Any] = {
        "settings": vars(args) | {"out": str(args.out)},
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "modes": {},
    }
    with tempfile.TemporaryDirectory(prefix="divssl-wds-bench-") as tmp:
        os.environ.setdefault("DIVSSL_CACHE", str(Path(tmp) / "cache"))
        spec = write_shards(Path(tmp) / "shards", args.unique)
        for mode in filter(None, args.modes.split(",")):
            results["modes"][mode] = run_mode(spec, mode, args)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out is not None:
        from divssl.io import atomic_write_json

        atomic_write_json(args.out, results)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
