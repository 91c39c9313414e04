"""Full fine-tuning of a pretrained (or randomly initialised) backbone with a linear head.

The protocol of the fine-tuning-robustness study (Ramanujan et al. 2023): every backbone weight
and the new linear head are trained on the task's train split with SGD (momentum, cosine learning
rate per 256 images, L2 weight decay) on augmented views (``get_preset("supervised", S)``: random
resized crop + flip, drawn from a seeded generator), and the model is evaluated on the ID test
split and the OOD split at ``eval_points`` checkpoints spaced evenly through training. Each run
therefore traces several points on the ID-OOD plane, and the effective robustness of a family of
runs is read off against a baseline trend (:mod:`divssl.evaluate.robustness`). Accuracy and
macro-F1 (the robustness paper's metric on iWildCam-WILDS) are recorded with bootstrap intervals
at every point. ``init="random"`` trains the same network from scratch, the paper's baseline.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from divssl.errors import ConfigError, RunFailed
from divssl.evaluate.features import EvalGeometry, eval_geometry
from divssl.evaluate.settings import (
    FinetuneFit,
    FinetuneSettings,
    RunOptions,
    Seed,
    settings_error,
    split_settings,
)
from divssl.pretrain.budget import scaled_lr, warmup_cosine


class FinetuneConfig(FinetuneFit):
    """Settings of one fine-tuning: :class:`~divssl.evaluate.settings.FinetuneFit` (epochs,
    batch_size (the last partial batch of an epoch is dropped), base_lr (per 256 images, scaled
    linearly with the batch), weight_decay (all parameters, as ``torch.optim.SGD`` applies it),
    momentum, warmup_fraction (linear warm-up before the cosine decay), eval_points (spaced
    evenly, the last at the end); their defaults and ranges live there) plus:

    Attributes:
        seed: seed of the head initialisation, sample order and augmentation (``run_finetune``
            passes the settings' ``eval_seed``).

    Invalid values raise :class:`~divssl.errors.ConfigError` naming the field.
    """

    seed: Seed = 0

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise settings_error(exc) from None


def eval_steps(total_steps: int, points: int) -> list[int]:
    """Completed-step counts after which to evaluate: ``ceil(j * T / P)`` for j = 1..P, deduped.

    The last point is always ``T`` (the end of training).
    """
    return sorted({max(1, math.ceil(j * total_steps / points)) for j in range(1, points + 1)})


class Classifier(nn.Module):
    """Backbone followed by a linear head: (B, 3, S, S) -> (B, K) logits."""

    def __init__(self, backbone: nn.Module, feat_dim: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feat_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, K)."""
        return self.head(self.backbone(x))


def _evaluate(
    net: nn.Module,
    data: dict[str, tuple[np.ndarray, np.ndarray]],
    image_size: int,
    num_classes: int,
    device: torch.device,
    batch_size: int,
    n_boot: int,
    seed: int,
    level: float,
    geometry: EvalGeometry,
) -> dict[str, Any]:
    from divssl.evaluate.features import forward_batches
    from divssl.evaluate.stats import metric_report

    out: dict[str, Any] = {}
    for split, (images, labels) in data.items():
        logits = forward_batches(
            net, images, image_size, device, batch_size, geometry.recipe, geometry.norm
        )
        probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
        out[split] = metric_report(labels, probs, num_classes, n_boot, seed, level)
    return out


def finetune(
    backbone: nn.Module,
    feat_dim: int,
    images: np.ndarray,
    labels: np.ndarray,
    eval_data: dict[str, tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    image_size: int,
    cfg: FinetuneConfig,
    device: torch.device,
    n_boot: int = 1000,
    level: float = 0.95,
    eval_batch_size: int = 256,
    geometry: EvalGeometry | None = None,
) -> list[dict[str, Any]]:
    """Fine-tune ``backbone`` plus a new linear head, evaluating at evenly spaced points.

    Args:
        backbone: the network to train (modified in place; pass a copy to keep the original).
        feat_dim: D.
        images: (N, H, W, 3) uint8 train images.
        labels: (N,) train labels.
        eval_data: split name -> (images (M, H, W, 3) uint8, labels (M,)), e.g. test and ood.
        num_classes: K.
        image_size: crop side S.
        cfg: fine-tuning settings.
        device: compute device.
        n_boot: bootstrap resamples per interval.
        level: interval coverage.
        eval_batch_size: images per evaluation batch.
        geometry: the run's evaluation transform (:func:`~divssl.evaluate.features.
            run_eval_geometry`): its geometry for the evaluations, its normalisation for the
            training views too; ``None``: :func:`~divssl.evaluate.features.eval_geometry` of S.

    Returns:
        One record per evaluation point: step, epoch, images seen, learning rate, mean train loss
        since the previous point, and the metrics of each evaluated split.

    Raises:
        RunFailed: a non-finite loss.
    """
    from divssl.evaluate.features import autocast
    from divssl.pretrain.augment import get_preset, make_views

    n = len(images)
    if n < 2:
        raise ConfigError("task.train", "fine-tuning needs at least two train images")
    batch = min(cfg.batch_size, n)
    steps_per_epoch = n // batch
    total = cfg.epochs * steps_per_epoch
    points = set(eval_steps(total, cfg.eval_points))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = Classifier(backbone, feat_dim, num_classes).to(device)
    peak = scaled_lr(cfg.base_lr, batch)
    opt = torch.optim.SGD(
        net.parameters(), lr=peak, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    if geometry is None:
        geometry = eval_geometry(image_size)
    preset = get_preset("supervised", image_size, norm=geometry.norm)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 0xF1E])
    y_all = torch.as_tensor(labels, dtype=torch.long)
    records: list[dict[str, Any]] = []
    losses: list[float] = []
    order = rng.permutation(n)
    for step in range(total):
        within = step % steps_per_epoch
        if within == 0 and step > 0:
            order = rng.permutation(n)
        idx = np.sort(order[within * batch : (within + 1) * batch])
        x = torch.from_numpy(np.ascontiguousarray(images[idx])).to(device)
        (view,) = make_views(x.permute(0, 3, 1, 2), preset, gen)
        lr = warmup_cosine(step, total, peak, 0.0, cfg.warmup_fraction)
        for group in opt.param_groups:
            group["lr"] = lr
        net.train()
        with autocast(device):
            loss = F.cross_entropy(net(view).float(), y_all[idx].to(device))
        if not torch.isfinite(loss):
            raise RunFailed(f"fine-tuning loss is {loss.item()} at step {step} (lr {lr:.3g})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step + 1 in points:
            record = {
                "step": step + 1,
                "epoch": (step + 1) / steps_per_epoch,
                "images_seen": (step + 1) * batch,
                "lr": lr,
                "train_loss": float(np.mean(losses)),
            }
            record.update(
                _evaluate(
                    net,
                    eval_data,
                    image_size,
                    num_classes,
                    device,
                    eval_batch_size,
                    n_boot,
                    cfg.seed,
                    level,
                    geometry,
                )  # fmt: skip
            )
            records.append(record)
            losses = []
    return records


def run_finetune(
    run_dir: str | Path | None,
    task_spec: str,
    settings: FinetuneSettings | None = None,
    options: RunOptions | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Fine-tune a run's backbone (or a random init: training from scratch) on a task.

    Args:
        run_dir: the pretraining run (``None`` only with ``init="random"`` and ``out_dir``).
        task_spec: task YAML path or pool spec with splits.
        settings: what is measured (:class:`~divssl.evaluate.settings.FinetuneSettings`;
            ``eval_seed`` seeds the head init, sample order, augmentation and bootstraps; its
            defaults when ``None``).
        options: where it runs (:class:`~divssl.evaluate.settings.RunOptions`; ``init="random"``
            trains from scratch; the results go to ``<out_dir>/finetune_<task>.json``, default
            ``RUN_DIR/eval``).
        **kwargs: fields of either model, as a convenience that builds (or updates) them.

    Returns:
        The results dict, with ``points`` (one per evaluation) and ``id_ood`` (the points'
        test/ood top-1 and macro-F1 values, ready for plotting and effective robustness).
    """
    from divssl.evaluate.features import (
        encoder_geometry,
        load_encoder,
        load_split_images,
        resolve_device,
        results_header,
        results_path,
    )
    from divssl.evaluate.tasks import open_task
    from divssl.io import atomic_write_json

    settings, options = split_settings(FinetuneSettings, settings, options, kwargs)
    start = time.perf_counter()
    fit = settings.model_dump(include=set(FinetuneFit.model_fields))
    cfg = FinetuneConfig(**fit, seed=settings.eval_seed)
    n_boot, level, eval_seed = settings.n_boot, settings.level, settings.eval_seed
    decode_cache, workers = options.decode_cache, options.workers
    dev = resolve_device(options.device)
    task = open_task(task_spec)
    encoder = load_encoder(run_dir, **options.encoder_args())
    path = results_path("finetune", task, encoder, options.out_dir) if options.write else None
    size = encoder.image_size
    geometry = encoder_geometry(encoder)  # the run's geometry and normalisation
    images, labels, corrupt = load_split_images(
        task, "train", size, decode_cache, workers, geometry.recipe
    )
    eval_data = {}
    for split in ("test", "ood"):
        if task.has(split):
            eval_images, eval_labels, _ = load_split_images(
                task, split, size, decode_cache, workers, geometry.recipe
            )
            eval_data[split] = (eval_images, eval_labels)
    points = finetune(
        encoder.fresh_model(), encoder.feat_dim, images, labels, eval_data, task.num_classes,
        size, cfg, dev, n_boot, level, geometry=geometry,
    )  # fmt: skip
    id_ood = [
        {
            "step": p["step"],
            **{
                f"{split}_{metric}": p[split][metric]["value"]
                for split in eval_data
                for metric in ("top1", "macro_f1")
            },
        }
        for p in points
    ]
    out = results_header("finetune", task, encoder, dev)
    out.update(
        {
            "config": cfg.model_dump(),
            "n_train": len(labels),
            "corrupt_train": len(corrupt),
            "stats": {"n_boot": n_boot, "level": level, "seed": eval_seed},
            "points": points,
            "id_ood": id_ood,
            "wall_seconds": round(time.perf_counter() - start, 3),
        }
    )
    if path is not None:
        out["path"] = str(path)
        atomic_write_json(path, out)
    return out
