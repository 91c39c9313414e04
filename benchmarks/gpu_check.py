"""Device check of the GPU paths, in one run that writes one JSON (``benchmarks/gpu_check.sh``).

Sections (each timed and recorded; a failing section records its error and the rest still run):

1. ``throughput``: ``divssl pretrain`` of SimCLR / ResNet-50 at 224 px, bf16 autocast,
   ``channels_last``, on a world pool: steady images/s and MFU from the run's ``summary.json``
   (the loop's own numbers: first step excluded, CUDA synchronised before the clock is read);
2. ``throughput_compiled``: the same with ``compile: true``;
3. ``ddp_equivalence``: a short fp32 run as one DDP rank under ``torchrun`` on the device against
   the same run in-process on the CPU; the exported backbones' largest relative difference;
4. ``jpeg_decode``: images/s of :func:`divssl.data.gpu_decode.decode_resize_batch` on the device
   against the CPU PIL path, on synthetic 500 x 375 JPEGs, and of
   :func:`divssl.data.gpu_decode.decode_store_blobs` (whole images at storage resolution, the
   path pretraining on folder and wds pools uses).

On one H100/H200 the whole check takes well under 10 minutes. ``--smoke`` runs every section
tiny on the CPU (a tiny backbone, 32 px, few steps, gloo for DDP), to check the script itself
where no GPU is lent.

Usage::

    python benchmarks/gpu_check.py --out gpu_check.json            # on a GPU machine
    python benchmarks/gpu_check.py --smoke --out /tmp/smoke.json   # anywhere
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="everything tiny on the CPU")
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="JSON output")
    p.add_argument("--backbone", default=None, help="throughput backbone (default resnet50)")
    p.add_argument("--size", type=int, default=None, help="throughput image side (default 224)")
    p.add_argument("--batch", type=int, default=None, help="throughput global batch (256)")
    p.add_argument("--steps", type=int, default=None, help="throughput steps (40)")
    p.add_argument("--jpegs", type=int, default=None, help="JPEGs to decode (1024)")
    p.add_argument("--skip", default="", help="comma list of sections to skip")
    return p.parse_args(argv)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """Sizes of every section: the real check, or tiny ones for ``--smoke``."""
    if args.smoke:
        base = {"device": "cpu", "backbone": "convnet_tiny", "size": 32, "batch": 16, "steps": 4,
                "jpegs": 16, "pool_per_class": 8, "precision": "fp32"}  # fmt: skip
    else:
        base = {"device": "cuda", "backbone": "resnet50", "size": 224, "batch": 256, "steps": 40,
                "jpegs": 1024, "pool_per_class": 100, "precision": "bf16"}  # fmt: skip
    for key in ("backbone", "size", "batch", "steps", "jpegs"):
        if getattr(args, key) is not None:
            base[key] = getattr(args, key)
    return base


def _section(results: dict[str, Any], name: str, skip: set[str], fn: Callable[[], Any]) -> None:
    if name in skip:
        results[name] = {"skipped": True}
        return
    start = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as exc:  # a failed section is a result too; the others still run
        results[name] = {"error": repr(exc), "traceback": traceback.format_exc()[-3000:]}
    results[name]["section_seconds"] = time.perf_counter() - start
    print(name, json.dumps(results[name], indent=1, default=str)[:2000], flush=True)


def _pretrain_summary(overrides: list[str]) -> dict[str, Any]:
    from divssl.io import read_json
    from divssl.pretrain.config import load_config
    from divssl.pretrain.loop import pretrain

    run = pretrain(load_config(None, overrides))
    return read_json(run / "summary.json")


def throughput(s: dict[str, Any], tmp: Path, compiled: bool) -> dict[str, Any]:
    """SimCLR pretraining throughput and MFU of the real loop (one run)."""
    images = s["batch"] * (s["steps"] + 1)
    name = "compiled" if compiled else "eager"
    overrides = [
        "method=simclr",
        f"backbone={s['backbone']}",
        f"image_size={s['size']}",
        f"batch_size={s['batch']}",
        f"data.pool=world:classes=10:per_class={s['pool_per_class']}:size={s['size']}:seed=0",
        f"budget.images={images}",
        f"precision={s['precision']}",
        f"device={s['device']}",
        "channels_last=true",
        f"compile={str(compiled).lower()}",
        f"log_every={max(1, s['steps'] // 4)}",
        "checkpoint_every=100000",
        "tracking=none",
        f"out={tmp / ('throughput-' + name)}",
    ]
    summary = _pretrain_summary(overrides)
    keys = ("steady_images_per_second", "mfu", "peak_flops", "flops_per_image", "images_seen",
            "wall_seconds", "images_per_second", "precision", "device", "compile", "threads",
            "status")  # fmt: skip
    return {"config": overrides, **{k: summary.get(k) for k in keys}}


def _ddp_config(s: dict[str, Any], device: str, out: Path) -> list[str]:
    return [
        "method=simclr",
        "backbone=convnet_tiny",
        "image_size=16",
        "batch_size=32",
        "data.pool=world:classes=4:per_class=16:size=16:seed=0",
        "budget.images=96",  # 3 steps
        "precision=fp32",
        f"device={device}",
        "optim.name=sgd",
        "log_every=1",
        "tracking=none",
        f"out={out}",
    ]


def ddp_equivalence(s: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """One torchrun DDP rank on the device vs the same steps in-process on the CPU."""
    import yaml

    from divssl.io import read_json
    from divssl.pretrain.config import config_to_dict, load_config
    from divssl.pretrain.loop import pretrain
    from divssl.study.ddp import ddp_command

    ref_run = pretrain(load_config(None, _ddp_config(s, "cpu", tmp / "ddp-ref")))
    dev_cfg = load_config(None, _ddp_config(s, s["device"], tmp / "ddp-dev"))
    cfg_path = tmp / "ddp-dev.yaml"
    cfg_path.write_text(yaml.safe_dump(config_to_dict(dev_cfg)))
    start = time.perf_counter()
    proc = subprocess.run(
        ddp_command(cfg_path, 1), capture_output=True, text=True, timeout=300, check=False
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun failed ({proc.returncode}): {proc.stderr[-2000:]}")
    ref = torch.load(ref_run / "backbone.pt", map_location="cpu", weights_only=True)
    dev = torch.load(tmp / "ddp-dev" / "backbone.pt", map_location="cpu", weights_only=True)
    worst_rel, worst_abs = 0.0, 0.0
    for key, value in ref.items():
        if not value.is_floating_point():
            continue
        diff = (dev[key].float() - value.float()).abs().max().item()
        scale = value.float().abs().max().item() or 1.0
        worst_abs, worst_rel = max(worst_abs, diff), max(worst_rel, diff / scale)
    s_ref = read_json(ref_run / "summary.json")
    s_dev = read_json(tmp / "ddp-dev" / "summary.json")
    return {
        "steps": s_dev["steps"],
        "world_size": s_dev["world_size"],
        "device": s_dev["device"],
        "final_loss_device": s_dev["final_loss"],
        "final_loss_cpu": s_ref["final_loss"],
        "max_abs_weight_diff": worst_abs,
        "max_rel_weight_diff": worst_rel,
        # fp32 on both sides (TF32 off): differences are kernel round-off, far below 1e-3.
        "equivalent": worst_rel < 1e-3,
        "torchrun_seconds": seconds,
    }


def _synthetic_jpegs(n: int, rng: np.random.Generator) -> list[bytes]:
    from PIL import Image

    yy, xx = np.mgrid[0:375, 0:500]
    blobs = []
    for _ in range(n):
        phase = rng.uniform(0, 6.28, 3)
        arr = np.stack([127 + 120 * np.sin(xx / 40 + p + yy / 57) for p in phase], -1)
        arr = np.clip(arr + rng.normal(0, 8, arr.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=90)
        blobs.append(buf.getvalue())
    return blobs


def jpeg_decode(s: dict[str, Any]) -> dict[str, Any]:
    """Decode + resize(224 or --size) images/s: batched on the device vs PIL on the CPU."""
    from divssl.data.cache import decode_resized
    from divssl.data.gpu_decode import decode_resize_batch

    rng = np.random.default_rng(0)
    blobs = _synthetic_jpegs(s["jpegs"], rng)
    size = s["size"]
    dev = torch.device(s["device"])
    decode_resize_batch(blobs[:8], size, dev)  # warm-up (nvJPEG handles, kernels)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    start = time.perf_counter()
    batch = 256
    for lo in range(0, len(blobs), batch):
        res = decode_resize_batch(blobs[lo : lo + batch], size, dev)
    device_s = time.perf_counter() - start
    # the pretraining path: whole images at storage resolution (folder and wds pools)
    from divssl.data.cache import default_store_size
    from divssl.data.gpu_decode import decode_store_blobs

    store_size = default_store_size(size)
    keys = [str(i) for i in range(len(blobs))]
    start = time.perf_counter()
    for lo in range(0, len(blobs), batch):
        decode_store_blobs(blobs[lo : lo + batch], keys[lo : lo + batch], store_size, dev)
    store_s = time.perf_counter() - start
    cpu_n = min(len(blobs), 128)
    start = time.perf_counter()
    for b in blobs[:cpu_n]:
        decode_resized(b, size)
    cpu_s = time.perf_counter() - start
    return {
        "images": len(blobs),
        "source": "500x375 JPEG q90",
        "size": size,
        "device": str(dev),
        "device_images_per_second": len(blobs) / device_s,
        "store_size": store_size,
        "device_store_images_per_second": len(blobs) / store_s,
        "cpu_pil_images_per_second_one_process": cpu_n / cpu_s,
        "last_batch_on_device": len(res.on_device),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every section and write the JSON; returns it."""
    args = parse_args(argv)
    s = _settings(args)
    if s["device"] == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --smoke")
    skip = set(filter(None, args.skip.split(",")))
    results: dict[str, Any] = {
        "settings": s,
        "smoke": args.smoke,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cpu_count": os.cpu_count(),
        },
    }
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="divssl-gpu-check-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ.setdefault("DIVSSL_CACHE", str(tmp / "cache"))
        _section(results, "throughput", skip, lambda: throughput(s, tmp, compiled=False))
        _section(results, "throughput_compiled", skip, lambda: throughput(s, tmp, compiled=True))
        _section(results, "ddp_equivalence", skip, lambda: ddp_equivalence(s, tmp))
        _section(results, "jpeg_decode", skip, lambda: jpeg_decode(s))
    results["total_seconds"] = time.perf_counter() - start
    from divssl.io import atomic_write_json

    atomic_write_json(args.out, results)
    print(f"wrote {args.out} ({results['total_seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
