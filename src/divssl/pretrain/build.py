"""Builders of a pretraining run, shared by the loop and the study planner.

Everything a run is made of that can be decided from its config (and N, the subset size) lives
here, so that ``divssl.pretrain.loop`` and ``divssl.study.plan`` build the same thing:

* :func:`subset_size` (N from ``subset.size`` / ``subset.fraction``) and :func:`make_budget`
  (C, N, steps);
* :func:`resolve_device`, :func:`autocast_dtype`;
* :func:`build_method` (backbone + method on the device) and :func:`build_run` (method,
  optimizer settings and optimizer, view preset, autocast dtype: :class:`RunParts`);
* the optimizer: :func:`optim_settings`, :func:`param_groups`, :func:`build_optimizer` and the
  LR / weight-decay schedules (:func:`scheduled_lr`, :func:`set_schedules`).

The dry run (FLOP counting and timing a few steps without data) is in
:mod:`divssl.pretrain.dry_run`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from divssl import distributed as dist
from divssl.data import ordering
from divssl.data.pool import Pool
from divssl.errors import ConfigError
from divssl.pretrain.augment import AugmentPreset, preset_from_config
from divssl.pretrain.backbones import build_backbone
from divssl.pretrain.budget import Budget, resolve_images, scaled_lr, warmup_cosine
from divssl.pretrain.config import Config
from divssl.pretrain.methods import Method, get_method
from divssl.pretrain.optim import LARS

# ------------------------------------------------------------------------------- N, C, steps


def subset_size(cfg: Config, pool_len: int) -> int:
    """N of a run over a pool of ``pool_len`` images: ``subset.size``, else
    ``round(subset.fraction * pool_len)`` with fraction 1 when neither is set.

    The rule itself is :func:`divssl.data.ordering.subset_size` (also behind
    ``divssl data subset``); this reads it from a config.

    Raises:
        ConfigError: N outside [1, pool_len], naming ``subset.size`` or ``subset.fraction``.
    """
    size, fraction = cfg.subset.size, cfg.subset.fraction
    if size is None and fraction is None:
        fraction = 1.0
    return ordering.subset_size(pool_len, size, fraction)


def make_budget(cfg: Config, n: int, world_size: int = 1) -> Budget:
    """The run's budget: C (``budget.images``, or ``round(N * budget.epochs)``), N, the global
    batch and a final step of at least 2 images per rank.

    Raises:
        ConfigError: C below the minimum batch.
    """
    assert cfg.batch_size is not None, "resolve_config fills batch_size"
    return Budget(
        images=resolve_images(cfg.budget.images, cfg.budget.epochs, n),
        unique_images=n,
        global_batch=cfg.batch_size,
        min_batch=2 * max(1, world_size),
    )


def num_classes_of(pool: Pool) -> int | None:
    """Label count of a pool: its class names, else the largest label + 1, else ``None``."""
    if pool.class_names:
        return len(pool.class_names)
    if pool.labels is not None and (pool.labels >= 0).any():
        return int(pool.labels.max()) + 1
    return None


# ----------------------------------------------------------------------------------- device


def resolve_device(cfg: Config) -> torch.device:
    """``device``: ``auto`` is this rank's GPU when CUDA is available, else the CPU.

    Raises:
        ConfigError: a CUDA device that torch does not see (before any data is decoded).
    """
    if cfg.device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist.local_rank())
        return torch.device("cpu")
    device = torch.device(cfg.device)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError("device", f"{cfg.device} requested but torch sees no GPU", ("cpu",))
        if device.index is not None and device.index >= count:
            choices = ["cpu", "cuda", *(f"cuda:{i}" for i in range(count))]
            raise ConfigError("device", f"{cfg.device} does not exist", choices)
    return device


def autocast_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """bf16 under ``precision=bf16`` (or ``auto`` on CUDA), else ``None`` (fp32)."""
    if cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


# ---------------------------------------------------------------------------------- optimizer


def optim_settings(cfg: Config, method: Method) -> dict[str, Any]:
    """The resolved optimizer values of a run (``resolve_config`` filled every one); the
    warm-up is a fraction of the run's steps (``method.epochs_fraction``)."""
    o = cfg.optim
    return {
        "name": o.name,
        "base_lr": o.base_lr,
        "weight_decay": o.weight_decay,
        "final_weight_decay": o.final_weight_decay,
        "warmup_fraction": method.epochs_fraction(float(o.warmup_epochs or 0.0)),
        "warmup_start_lr": o.warmup_start_lr,
    }


def param_groups(
    model: nn.Module, weight_decay: float, exclude_bias_norm: bool = True
) -> list[dict[str, Any]]:
    """Parameter groups: decayed weights, and biases/normalisation parameters (1-D) which, with
    ``exclude_bias_norm`` (solo-learn's ``exclude_bias_n_norm``), get neither decay nor LARS
    adaptation; without it every parameter is decayed and adapted (SwAV's LARC, torchvision)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        excluded = exclude_bias_norm and (p.ndim <= 1 or name.endswith(".bias"))
        (no_decay if excluded else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "decays": True, "lars_adapt": True}]
    if no_decay:
        groups.append(
            {"params": no_decay, "weight_decay": 0.0, "decays": False, "lars_adapt": False}
        )
    return groups


def build_optimizer(
    model: nn.Module, cfg: Config, settings: dict[str, Any]
) -> torch.optim.Optimizer:
    """SGD, LARS (``divssl.pretrain.optim.LARS``, LARC clipping per ``optim.lars_clip``) or
    AdamW."""
    o = cfg.optim
    groups = param_groups(model, settings["weight_decay"], bool(o.exclude_bias_norm))
    assert cfg.batch_size is not None
    lr = scaled_lr(settings["base_lr"], cfg.batch_size)
    name = settings["name"]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(o.momentum or 0.0))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return LARS(
        groups,
        lr=lr,
        momentum=float(o.momentum or 0.0),
        eta=float(o.lars_eta or 0.0),
        clip=bool(o.lars_clip),
    )


def scheduled_lr(step: int, total: int, cfg: Config, settings: dict[str, Any]) -> float:
    """LR at ``step``: linear warm-up from ``warmup_start_lr`` (solo-learn's
    ``LinearWarmupCosineAnnealingLR``; 0 starts at ``peak / warmup_steps``), then cosine to
    ``peak * final_lr_fraction``."""
    assert cfg.batch_size is not None
    peak = scaled_lr(settings["base_lr"], cfg.batch_size)
    final = peak * float(cfg.optim.final_lr_fraction or 0.0)
    warm = settings["warmup_fraction"]
    start = float(settings["warmup_start_lr"] or 0.0)
    warmup_steps = int(round(warm * total))
    if start > 0 and step < warmup_steps:
        return start + (peak - start) * step / warmup_steps
    return warmup_cosine(step, total, peak, final, warm)


def set_schedules(
    opt: torch.optim.Optimizer, step: int, total: int, cfg: Config, settings: dict[str, Any]
) -> tuple[float, float]:
    """Set the step's LR and weight decay (cosine from ``weight_decay`` to
    ``final_weight_decay``) on every parameter group; returns ``(lr, wd)``."""
    lr = scheduled_lr(step, total, cfg, settings)
    wd0 = settings["weight_decay"]
    wd1 = settings["final_weight_decay"]
    wd = (
        wd0
        if wd1 is None or wd1 == wd0
        else wd1 - (wd1 - wd0) * (1 + math.cos(math.pi * step / max(1, total - 1))) / 2
    )
    for group in opt.param_groups:
        group["lr"] = lr
        if group.get("decays", True):
            group["weight_decay"] = wd
    return lr, wd


def schedule_epochs(cfg: Config, budget: Budget) -> float:
    """Epochs the run's steps stand for: E = C / N with ``schedule.units=epochs`` (the paper's
    max_epochs), the recipe's reference epochs with ``schedule.units=steps``."""
    if cfg.schedule.units == "epochs":
        return budget.epochs
    assert cfg.schedule.reference_epochs is not None
    return float(cfg.schedule.reference_epochs)


# ------------------------------------------------------------------------------------ models


def build_method(cfg: Config, num_classes: int | None, device: torch.device) -> Method:
    """Backbone + method of a resolved config on ``device`` (channels-last when asked).

    Args:
        cfg: a resolved config.
        num_classes: label count (``supervised`` needs it; the others ignore it).
        device: where the parameters live.
    """
    method_cls = get_method(cfg.method)
    backbone, feat_dim = build_backbone(cfg.backbone, cfg.image_size, cfg.cifar_stem)
    method = method_cls(backbone, feat_dim, method_cls.Config(**cfg.method_args), num_classes)
    method = method.to(device)
    if cfg.channels_last:
        method = method.to(memory_format=torch.channels_last)
    return method


@dataclass
class RunParts:
    """What a run trains with, built from its config.

    Attributes:
        method: backbone + heads + loss on the device (SyncBatchNorm under DDP when asked).
        settings: resolved optimizer values (:func:`optim_settings`).
        optimizer: the optimizer over ``method``'s parameters.
        preset: the view preset (global views, then local crops).
        amp_dtype: autocast dtype (``None``: fp32).
    """

    method: Method
    settings: dict[str, Any]
    optimizer: torch.optim.Optimizer
    preset: AugmentPreset
    amp_dtype: torch.dtype | None


def build_run(
    cfg: Config, num_classes: int | None, device: torch.device, budget: Budget | None = None
) -> RunParts:
    """Method, optimizer and views of a run, exactly as the training loop uses them.

    Args:
        cfg: a resolved config (``divssl.pretrain.config.resolve_config``).
        num_classes: label count of the pretraining pool (``None``: unlabelled).
        device: the training device.
        budget: the run's budget; it sets the epochs the steps stand for (warm-ups and other
            epoch-valued settings, :func:`schedule_epochs`). Without it the method keeps its
            default (a dry run).

    Returns:
        The parts; the caller seeds torch beforehand for reproducible initialisation.
    """
    method = build_method(cfg, num_classes, device)
    if budget is not None:
        method.schedule_epochs = schedule_epochs(cfg, budget)
    if dist.is_dist() and cfg.sync_batchnorm:
        from divssl.pretrain.syncbn import convert_sync_batchnorm

        method = convert_sync_batchnorm(method, device)  # type: ignore[assignment]
    settings = optim_settings(cfg, method)
    return RunParts(
        method=method,
        settings=settings,
        optimizer=build_optimizer(method, cfg, settings),
        preset=preset_from_config(cfg),
        amp_dtype=autocast_dtype(cfg, device),
    )
