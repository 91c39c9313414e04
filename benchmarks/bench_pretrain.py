"""Pretraining throughput: the full pipeline versus the compute ceiling on pre-made views.

For each (method, backbone, image size, batch) it times optimizer steps of

* ``pipeline``: the real loop's work per step — take the step's images from the decoded uint8
  pool, make views on the device, forward/backward, hooks, optimizer step;
* ``ceiling``: the same model and step on views made once before timing (no data work).

Step times are medians after warm-up, with the device synchronised before each clock read.
The pipeline overhead is ``1 - pipeline_ips / ceiling_ips``.

    python benchmarks/bench_pretrain.py --method simclr --backbone convnet_tiny --size 16 \
        --batch 256 --steps 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from divssl.pretrain.augment import make_views
from divssl.pretrain.build import build_run
from divssl.pretrain.config import load_config
from divssl.pretrain.dry_run import count_flops_per_image
from divssl.pretrain.loop import prepare, step_batch, view_generator
from divssl.threads import single_thread


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(step_fn, steps: int, warmup: int, device: torch.device) -> float:
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        step_fn(i)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(
    method: str,
    backbone: str,
    size: int,
    batch: int,
    steps: int,
    warmup: int,
    device: torch.device,
    precision: str,
    pool: str,
) -> dict[str, float | str]:
    """Median images/s of the pipeline and the ceiling for one configuration."""
    cfg = load_config(
        None,
        [
            f"method={method}",
            f"backbone={backbone}",
            f"image_size={size}",
            f"batch_size={batch}",
            f"data.pool={pool}",
            f"budget.images={batch * (steps + warmup + 1)}",
            f"precision={precision}",
        ],
    )
    prep, _ = prepare(cfg)
    torch.manual_seed(0)
    parts = build_run(cfg, prep.num_classes, device, prep.budget)  # as the training loop builds
    model, opt, preset = parts.method.train(), parts.optimizer, parts.preset
    amp = torch.bfloat16 if precision == "bf16" else None
    total = prep.budget.steps

    def train_on(views, labels, step):
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = model.training_step(views, labels, step, total)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        model.on_before_optimizer_step(step, total)
        opt.step()
        model.on_after_optimizer_step(step, total)

    def pipeline_step(i: int) -> None:
        images, labels, extents = step_batch(prep, i, device)
        with single_thread(device):
            views = make_views(images, preset, view_generator(0, i, device), extents=extents)
        train_on(views, labels, i)

    images, labels, extents = step_batch(prep, 0, device)
    fixed_views = make_views(images, preset, view_generator(0, 0, device), extents=extents)

    def ceiling_step(i: int) -> None:
        train_on(fixed_views, labels, i)

    t_ceiling = _time_steps(ceiling_step, steps, warmup, device)
    t_pipeline = _time_steps(pipeline_step, steps, warmup, device)
    flops = count_flops_per_image(model, preset, size, device)
    return {
        "method": method,
        "backbone": backbone,
        "size": size,
        "batch": batch,
        "ceiling_ips": batch / t_ceiling,
        "pipeline_ips": batch / t_pipeline,
        "overhead": 1 - t_ceiling / t_pipeline,
        "gflop_per_image": flops / 1e9,
        "achieved_tflops": flops * batch / t_pipeline / 1e12,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", nargs="+", default=["simclr"])
    parser.add_argument("--backbone", default="convnet_tiny")
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="device peak (dense) for MFU, e.g. 989 for H100 bf16",
    )
    parser.add_argument("--pool", default=None, help="pool spec (default: a world at --size)")
    args = parser.parse_args()
    device = torch.device(args.device)
    pool = args.pool or f"world:classes=10:per_class=200:size={args.size}:seed=0"
    print(
        "| method | backbone | size | batch | ceiling img/s | pipeline img/s | overhead |"
        " GFLOP/img | TFLOP/s | MFU |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for method in args.method:
        r = bench(
            method,
            args.backbone,
            args.size,
            args.batch,
            args.steps,
            args.warmup,
            device,
            args.precision,
            pool,
        )
        mfu = f"{r['achieved_tflops'] / args.peak_tflops:.1%}" if args.peak_tflops else "—"
        print(
            f"| {r['method']} | {r['backbone']} | {r['size']} | {r['batch']} | "
            f"{r['ceiling_ips']:.0f} | {r['pipeline_ips']:.0f} | {r['overhead']:.1%} | "
            f"{r['gflop_per_image']:.4f} | {r['achieved_tflops']:.3f} | {mfu} |"
        )


if __name__ == "__main__":
    main()
