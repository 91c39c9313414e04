"""Dry runs of the pretraining stage: FLOPs per image and timed steps, without data or files.

The study planner (``divssl plan``) calls these to put a cost on every grid point before anything
runs; the training loop counts FLOPs with :func:`count_flops_per_image` too, so a plan's FLOPs and
a run's ``summary.json`` are the same number.

* :func:`count_flops_per_image`: ``torch.utils.flop_counter`` over one training step of a copy of
  a built method (all views, forward + backward), per source image;
* :func:`count_model_flops`: the same for a config, on the CPU, cached per model
  (:func:`model_settings`);
* :func:`measure_throughput`: times real training steps of a config's model (views on the
  device, forward, backward, optimizer step) on random images, synchronised, warm-up excluded.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from typing import Any

import torch

from divssl.pretrain.augment import AugmentPreset, make_views
from divssl.pretrain.build import build_method, build_run
from divssl.pretrain.config import Config, resolve_config
from divssl.pretrain.methods import Method

DRY_RUN_CLASSES = 10  # label count of a dry run of a pool without labels (supervised head)


def count_flops_per_image(
    method: Method, preset: AugmentPreset, image_size: int, device: torch.device
) -> float:
    """FLOPs of one source image's training step (all views, forward + backward), counted with
    ``torch.utils.flop_counter`` on a copy of the method (the real one is not touched)."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(method).to(device).train()
    b = 4
    g = torch.Generator(device=device)
    g.manual_seed(0)
    images = torch.randint(
        0, 256, (b, 3, image_size, image_size), dtype=torch.uint8, generator=g, device=device
    )
    views = make_views(images, preset, g)
    labels = torch.zeros(b, dtype=torch.long, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        out = probe.training_step(views, labels, 0, 10)
        out.loss.backward()
    return counter.get_total_flops() / b


def model_settings(cfg: Config) -> dict[str, Any]:
    """What determines a run's per-image cost: model, views and method settings."""
    return {
        "method": cfg.method,
        "backbone": cfg.backbone,
        "image_size": cfg.image_size,
        "cifar_stem": cfg.cifar_stem,
        "recipe": cfg.recipe,
        "augment": cfg.augment.model_dump(mode="json"),
        "method_args": cfg.method_args,
        "channels_last": cfg.channels_last,
    }


_FLOPS_CACHE: dict[str, float] = {}  # per process: presets share their big models


def count_model_flops(cfg: Config, num_classes: int | None) -> float:
    """FLOPs per source image (all views, forward + backward) on CPU, counted once per model.

    Args:
        cfg: a resolved config.
        num_classes: label count (``None``: :data:`DRY_RUN_CLASSES`).
    """
    from divssl.pretrain.augment import preset_from_config

    key = json.dumps([model_settings(cfg), num_classes], sort_keys=True)
    if key not in _FLOPS_CACHE:
        device = torch.device("cpu")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            method = build_method(cfg, num_classes or DRY_RUN_CLASSES, device)
        flops = count_flops_per_image(method, preset_from_config(cfg), cfg.image_size, device)
        _FLOPS_CACHE[key] = float(flops)
    return _FLOPS_CACHE[key]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_throughput(
    cfg: Config,
    num_classes: int | None,
    device: torch.device,
    batch: int,
    steps: int = 5,
    warmup: int = 2,
) -> tuple[float, list[float]]:
    """Time real training steps of a config's model: views on the device, forward, backward,
    optimizer step; synchronised before every clock read, warm-up steps excluded.

    The model, optimizer, views and precision come from :func:`divssl.pretrain.build.build_run`,
    as in the training loop; images are random uint8 (b, 3, S, S) on the device.

    Args:
        cfg: the run config (model, views, optimizer, precision).
        num_classes: label count for supervised pretraining.
        device: where to train.
        batch: images per step (the per-device batch).
        steps: timed steps.
        warmup: untimed steps first (allocation, cuDNN autotuning).

    Returns:
        Images per second (batch / median step time) and the timed step seconds.
    """
    cfg = resolve_config(cfg)  # idempotent: a Config built in Python gets its recipe values
    classes = num_classes or DRY_RUN_CLASSES
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        parts = build_run(cfg, classes, device)
        method, opt, amp = parts.method, parts.optimizer, parts.amp_dtype
        gen = torch.Generator(device=device).manual_seed(0)
        size = cfg.image_size
        times: list[float] = []
        method.train()
        for step in range(warmup + steps):
            images = torch.randint(
                0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=gen, device=device
            )
            labels = torch.randint(0, classes, (batch,), generator=gen, device=device)
            _sync(device)
            t0 = time.perf_counter()
            views = make_views(images, parts.preset, gen)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                out = method(views, labels, step, warmup + steps)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            _sync(device)
            if step >= warmup:
                times.append(time.perf_counter() - t0)
    return batch / statistics.median(times), times
