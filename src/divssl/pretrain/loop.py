"""The budgeted pretraining loop: exactly C images, precision, DDP, checkpoints, exact resume.

One run, top to bottom:

1. ``prepare``: validate everything that needs data (pool, subset, budget) before writing a file;
2. build backbone + method + optimizer (LARS with LARC clipping, ``divssl.pretrain.optim``; biases
   and
   norms without decay or adaptation where the recipe says so), SyncBatchNorm under DDP;
3. resume from ``checkpoints/last.pt`` when asked;
4. per step: take the step's slice of the budgeted image stream, make views on the device with a
   generator seeded by (augment seed, step, rank), forward/backward under autocast, method hooks,
   schedules set from (step, total_steps), optimizer step;
5. log ``metrics.jsonl``, checkpoint every K steps, export ``backbone.pt`` and ``summary.json``.

Randomness is derived per step (views) or saved in checkpoints (global torch RNG for dropout), so
an interrupted-and-resumed run on CPU with ``deterministic=true`` ends with bitwise-equal weights.
"""

from __future__ import annotations

import copy
import math
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import divssl
from divssl import distributed as dist
from divssl.cache import cache_key
from divssl.data.cache import StoredPool, default_store_size, load_stored_pool, pixel_limit
from divssl.data.ordering import (
    Ordering,
    check_ordering,
    load_ordering,
    make_ordering,
    save_ordering,
)
from divssl.data.pool import Pool, open_pool
from divssl.errors import ConfigError, RunFailed
from divssl.io import atomic_torch_save, atomic_write_json, atomic_write_yaml, read_json
from divssl.pretrain.augment import AugmentPreset, make_views, preset_from_config
from divssl.pretrain.backbones import build_backbone, export_backbone
from divssl.pretrain.budget import (
    Budget,
    resolve_images,
    scaled_lr,
    stream_positions,
    warmup_cosine,
)
from divssl.pretrain.config import Config, config_to_dict, flatten, resolve_config
from divssl.pretrain.methods import Method, get_method
from divssl.pretrain.optim import LARS
from divssl.threads import ThreadPolicy, single_thread


@dataclass
class Prepared:
    """Everything validated before the run starts."""

    cfg: Config
    pool: Pool  # a StoredPool (whole images, aspect kept), or the streaming pool itself
    corrupt: list[str]
    ordering: Ordering | None  # None for streaming pools (see ``ordering_record``)
    ordering_record: dict[str, Any]  # kind, hash and pool manifest of the ordering used
    subset: np.ndarray  # (N,) decoded-pool indices of the pretraining set
    budget: Budget
    method_cls: type[Method]
    run_dir: Path
    num_classes: int | None
    stream_loader: Any = None  # the WebDataset loader, once streaming started


def _open_training_pool(cfg: Config) -> tuple[Pool, dict[str, Any] | None]:
    if cfg.data.composition is not None:
        from divssl.data.composition import ComposedPool, parse_composition, resolve_composition

        comp = parse_composition(cfg.data.composition)
        task_classes: list[str] | None = None
        if cfg.data.task is not None:
            from divssl.evaluate.tasks import open_task

            task_classes = list(open_task(cfg.data.task).class_names)
        resolved = resolve_composition(comp, task_classes)
        return ComposedPool(resolved), resolved.to_json()
    return open_pool(cfg.data.pool), None


def _run_dir(cfg: Config, budget_images: int, n: int) -> Path:
    return Path(
        cfg.out.format(
            method=cfg.method, backbone=cfg.backbone, budget=budget_images, n=n, seed=cfg.seed
        )
    )


def _subset_size(cfg: Config, pool_len: int) -> int:
    size, fraction = cfg.subset.size, cfg.subset.fraction
    if size is None:
        size = max(1, round((1.0 if fraction is None else fraction) * pool_len))
    if size > pool_len:
        raise ConfigError("subset.size", f"N={size} is larger than the pool ({pool_len} images)")
    return size


def _decoded_subset(ordering: Ordering, pool: Pool, n: int) -> np.ndarray:
    """Positions in the decoded pool of the first n ordering keys that decoded (corrupt samples
    are skipped, so subsets stay nested whatever got dropped)."""
    where = {k: i for i, k in enumerate(pool.keys)}
    kept = [where[k] for k in ordering.keys if k in where]
    if n > len(kept):
        raise ConfigError("subset.size", f"N={n} exceeds the {len(kept)} decodable images")
    return np.asarray(kept[:n], dtype=np.int64)


def prepare(cfg: Config) -> tuple[Prepared, dict[str, Any] | None]:
    """Open and decode the pool, build the ordering and subset, resolve the budget.

    Random-access pools are decoded once into a uint8 array; the ordering is made over the raw
    pool's keys (the same file ``divssl data subset`` writes) and the subset is its first N
    decodable keys. Streaming (``wds``) pools keep their shard ordering (``divssl.data.stream``).

    Raises:
        ConfigError: any inconsistency (N larger than the pool, C < minimum batch, ...).
    """
    method_cls = get_method(cfg.method)
    raw_pool, composition = _open_training_pool(cfg)
    n = _subset_size(cfg, len(raw_pool))
    if raw_pool.streaming:
        from divssl.data.stream import stream_subset

        units = stream_subset(raw_pool, n, cfg.subset.seed)
        record = {
            "kind": "wds-shards",
            "units": [list(u) for u in units.units],
            "seed": cfg.subset.seed,
            "pool_manifest": raw_pool.manifest_hash(),
        }
        record["hash"] = cache_key(record)
        pool, corrupt, subset, ordering = raw_pool, [], np.arange(n), None
    else:
        if cfg.subset.ordering is not None:
            ordering = load_ordering(cfg.subset.ordering)
            check_ordering(ordering, raw_pool)
        else:
            ordering = make_ordering(raw_pool, seed=cfg.subset.seed, balanced=cfg.subset.balanced)
        pool, corrupt = _decode_pool(cfg, raw_pool)
        if cfg.subset.size is None:  # a fraction (default 1) of the decodable images
            n = _subset_size(cfg, len(pool))
        subset = _decoded_subset(ordering, pool, n)
        record = {
            "kind": "permutation",
            "hash": ordering.hash,
            "pool_manifest": ordering.pool_manifest,
        }
    c = resolve_images(cfg.budget.images, cfg.budget.epochs, len(subset))
    assert cfg.batch_size is not None, "resolve_config fills batch_size"
    budget = Budget(
        images=c,
        unique_images=len(subset),
        global_batch=cfg.batch_size,
        min_batch=2 * dist.world_size(),
    )
    num_classes = len(pool.class_names) if pool.class_names else None
    if num_classes is None and pool.labels is not None and (pool.labels >= 0).any():
        num_classes = int(pool.labels.max()) + 1
    if method_cls.needs_labels and num_classes is None:
        raise ConfigError("method", f"{cfg.method} needs a labelled pool; {cfg.data.pool} has none")
    prepared = Prepared(
        cfg,
        pool,
        corrupt,
        ordering,
        record,
        subset,
        budget,
        method_cls,
        _run_dir(cfg, c, len(subset)),
        num_classes,
    )
    return prepared, composition


def store_size(cfg: Config) -> int:
    """Shorter side of the stored whole images: ``data.store_size``, else the default for the view
    size (the view size up to 64 px, as solo-learn crops 32 px CIFAR images to 32 px views;
    256/224 of it above)."""
    return cfg.data.store_size or default_store_size(cfg.image_size)


def _decode_pool(cfg: Config, raw_pool: Pool) -> tuple[StoredPool, list[str]]:
    """Decode a random-access pool once at storage resolution, under ``data.max_pixels``: JPEG
    files in batches on the GPU when training on CUDA (``divssl.data.gpu_decode``; in-memory
    cache only), else the CPU decoding pass."""
    with pixel_limit(cfg.data.max_pixels):  # larger images are refused as corrupt
        if _device(cfg).type == "cuda" and cfg.data.cache == "memory" and hasattr(raw_pool, "path"):
            from divssl.data.gpu_decode import load_file_store

            return load_file_store(raw_pool, store_size(cfg), _device(cfg))
        pool, stats = load_stored_pool(
            raw_pool, store_size(cfg), cache=cfg.data.cache, workers=cfg.data.workers
        )
    return pool, list(stats.corrupt)


# ----------------------------------------------------------------------------------- building


def _device(cfg: Config) -> torch.device:
    if cfg.device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist.local_rank())
        return torch.device("cpu")
    device = torch.device(cfg.device)
    if device.type == "cuda":  # refuse a missing GPU here, before the run dir is written
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError("device", f"{cfg.device} requested but torch sees no GPU", ("cpu",))
        if device.index is not None and device.index >= count:
            choices = ["cpu", "cuda", *(f"cuda:{i}" for i in range(count))]
            raise ConfigError("device", f"{cfg.device} does not exist", choices)
    return device


def _autocast_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    if cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _optim_settings(cfg: Config, method: Method) -> dict[str, Any]:
    """The resolved optimizer values of a run (``resolve_config`` filled every one)."""
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
    decay, no_decay = [], []
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


def _set_schedules(
    opt: torch.optim.Optimizer, step: int, total: int, cfg: Config, settings: dict[str, Any]
) -> tuple[float, float]:
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


# ------------------------------------------------------------------------------------ batches


def _rank_slice(n: int) -> slice:
    """This rank's part of a global batch of n images (split as evenly as possible)."""
    w, r = dist.world_size(), dist.rank()
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return slice(start, start + base + (1 if r < extra else 0))


def step_batch(
    prep: Prepared, step: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """This rank's uint8 images (b, 3, H, W), labels (b,) and image extents (b, 2) of a step.

    Whole images of different shapes are padded to the batch's largest (H, W) and their true
    ``(h, w)`` returned as extents (``None`` when every image fills (H, W)).
    """
    budget = prep.budget
    size = budget.batch_sizes[step]
    stream = stream_positions(
        len(prep.subset), prep.cfg.seed_for("order"), budget.images_before(step), size
    )
    idx = prep.subset[stream[_rank_slice(size)]]
    assert isinstance(prep.pool, StoredPool)
    array, extents = prep.pool.gather(idx)
    images = torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
    labels = None
    if prep.pool.labels is not None:
        labels = torch.from_numpy(prep.pool.labels[idx])
    ragged = bool((extents != extents.max(axis=0)).any())
    images, labels = _to_device(images, labels, device)
    return images, labels, torch.from_numpy(extents).to(device) if ragged else None


def _to_device(
    images: torch.Tensor, labels: torch.Tensor | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if device.type == "cuda":
        images = images.pin_memory().to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True) if labels is not None else None
    return images, labels


def batches(
    prep: Prepared, start_step: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]:
    """This rank's (images uint8 (b, 3, H, W), labels (b,), extents (b, 2) or ``None``) for
    steps ``start_step ..`` (see :func:`step_batch`).

    Array pools index the decoded array; streaming pools read the exact budgeted WebDataset
    stream of whole images at storage resolution (every rank reads the global batch and keeps
    its slice, so the stream is identical whatever the world size).
    """
    if not prep.pool.streaming:
        for step in range(start_step, prep.budget.steps):
            yield step_batch(prep, step, device)
        return
    from divssl.data.stream import stream_batches

    loader = stream_batches(
        prep.pool,
        len(prep.subset),
        prep.budget.batch_sizes,
        prep.cfg.seed_for("order"),
        start_step=start_step,
        size=prep.cfg.image_size,
        workers=prep.cfg.data.workers,
        subset_seed=prep.cfg.subset.seed,
        max_pixels=prep.cfg.data.max_pixels,
        store_size=store_size(prep.cfg),
        device=device,  # CUDA: batched nvJPEG decoding (divssl.data.gpu_decode)
    )
    prep.stream_loader = loader
    for images, labels, extents in loader:
        part = _rank_slice(len(images))
        lab, ext = labels[part], extents[part]
        full = bool((ext == torch.tensor(images.shape[-2:])).all())
        yield (
            *_to_device(images[part].contiguous(), lab if (lab >= 0).any() else None, device),
            None if full else ext.to(device),
        )


def view_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """Augmentation generator of one step on one rank: a pure function of (seed, step, rank)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.SeedSequence([seed, step, dist.rank()]).generate_state(1)[0]))
    return g


# ----------------------------------------------------------------------------------- counting


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


# Dense peak FLOP/s per device and precision (no sparsity), from NVIDIA's datasheets; fp32 = plain
# FP32 CUDA cores (torch leaves TF32 off for matmuls by default). Matched by substring of
# torch.cuda.get_device_name; PCIe/NVL variants have lower peaks: give `peak_flops` for those.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989e12, "fp32": 67e12},  # H200 SXM datasheet (same as H100 SXM)
    "H100": {"bf16": 989e12, "fp32": 67e12},  # H100 SXM datasheet: BF16 1,979 sparse / 2
    "A100": {"bf16": 312e12, "fp32": 19.5e12},  # A100 datasheet (SXM and PCIe)
    "L4": {"bf16": 121e12, "fp32": 30.3e12},  # L4 datasheet: BF16 242 sparse / 2
    "V100": {"fp32": 15.7e12},  # V100 SXM2 datasheet (no bf16)
}


def peak_flops(device: torch.device, precision: str, given: float | None) -> float | None:
    """The device's peak FLOP/s for MFU: ``given`` (config ``peak_flops``), else the
    :data:`PEAK_FLOPS` entry whose name occurs in the CUDA device name, else ``None`` (CPU, or
    an unknown GPU)."""
    if given is not None:
        return float(given)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, table in PEAK_FLOPS.items():
        if key in name:
            return table.get(precision)
    return None


class LossMeter:
    """Loss sum and the first non-finite step, kept on the training device.

    ``update`` only queues device ops (no host synchronisation, so a CUDA stream never waits
    for Python); ``read`` copies the numbers to the host, at ``log_every`` and checkpoints.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.total = torch.zeros((), dtype=torch.float64, device=device)
        self.count = 0
        self.last = torch.full((), float("nan"), dtype=torch.float64, device=device)
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_value = torch.zeros((), dtype=torch.float64, device=device)

    def update(self, loss: torch.Tensor, step: int) -> None:
        """Add one step's scalar loss (detached) and remember the first non-finite step."""
        value = loss.detach().to(torch.float64)
        first = (self.bad_step < 0) & ~torch.isfinite(value)
        self.bad_step = torch.where(first, torch.full_like(self.bad_step, step), self.bad_step)
        self.bad_value = torch.where(first, value, self.bad_value)
        self.total += value
        self.last = value
        self.count += 1

    def read(self) -> tuple[float, float, int | None, float]:
        """(last loss, mean loss since the previous read, first non-finite step or None, its
        loss value); resets the running mean."""
        host = torch.stack(
            [self.last, self.total, self.bad_step.to(torch.float64), self.bad_value]
        ).cpu()
        last, total, bad, bad_value = (float(v) for v in host)
        mean = total / self.count if self.count else float("nan")
        self.total.zero_()
        self.count = 0
        return last, mean, (int(bad) if bad >= 0 else None), bad_value


# ---------------------------------------------------------------------------------- checkpoint


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: Path, method: Method, opt: torch.optim.Optimizer, step: int, extra: dict[str, Any]
) -> None:
    """Everything needed to continue: model, optimizer, next step, RNG states, counters."""
    atomic_torch_save(
        {
            "model": method.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "rng": _rng_state(),
            "extra": extra,
            "method_extra": method.extra_state(),
        },
        path,
    )


def load_checkpoint(path: Path, method: Method, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    method.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    method.load_extra_state(ckpt.get("method_extra", {}))
    _set_rng_state(ckpt["rng"])
    return ckpt


# ---------------------------------------------------------------------------------------- run


class _Logger:
    """metrics.jsonl (append, one JSON object per logging step) plus optional TensorBoard."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional; metrics.jsonl is always written
                self.tb = None
            else:
                self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        import json

        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"pretrain/{k}", v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _trim_metrics(path: Path, steps_done: int) -> None:
    """On resume, drop log lines of steps after the checkpoint (they will be re-run).

    A line's ``step`` counts completed steps, so lines up to ``steps_done`` are kept."""
    if not path.is_file():
        return
    import json

    keep = [
        ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= steps_done
    ]
    from divssl.io import atomic_write_text

    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


# Keys that may differ on --resume: they change how a run is logged, tracked, checkpointed or
# where it computes, not what it computes. ``out`` resolved to this run dir already.
RESUME_FREE_KEYS = (
    "log_every",
    "tracking",
    "mlflow_uri",
    "checkpoint_every",
    "device",
    "threads",
    "compile",
    "out",
)


def resume_differences(saved: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between a run dir's config and a resumed config.

    Keys of :data:`RESUME_FREE_KEYS` (and keys below them) are ignored; a key present on one
    side only counts as a difference. Top-level keys come first (a changed ``method`` changes
    many recipe values below it; the cause should lead the message).
    """
    a, b = flatten(saved), flatten(given)
    return sorted(
        (
            key
            for key in set(a) | set(b)
            if a.get(key, _MISSING) != b.get(key, _MISSING)
            and key.split(".")[0] not in RESUME_FREE_KEYS
        ),
        key=lambda key: (key.count("."), key),
    )


_MISSING = object()


def check_resume_config(run_dir: Path, cfg: Config) -> None:
    """On ``--resume`` the run dir's ``config.yaml`` is the contract: refuse a changed config.

    Raises:
        ConfigError: naming the differing keys with their saved and given values.
    """
    path = run_dir / "config.yaml"
    if not path.is_file():
        return  # nothing was written yet: a fresh start
    import yaml

    saved = yaml.safe_load(path.read_text()) or {}
    given = config_to_dict(cfg)
    if given["data"].get("store_size") is None and (saved.get("data") or {}).get("store_size"):
        given["data"]["store_size"] = store_size(cfg)  # the run dir records the effective value
    diffs = resume_differences(saved, given)
    if diffs:
        a, b = flatten(saved), flatten(given)
        shown = "; ".join(
            f"{k}: {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}" for k in diffs[:8]
        )
        more = "; ..." if len(diffs) > 8 else ""
        raise ConfigError(
            "--resume",
            f"{run_dir}/config.yaml is the run's contract; these keys differ: "
            f"{', '.join(diffs)} (saved -> given: {shown}{more}). "
            "Only " + ", ".join(RESUME_FREE_KEYS) + " may change on resume; "
            "use another `out` for a different run",
        )


def clean_stale_tmp(run_dir: Path) -> list[Path]:
    """Remove temporary files that a killed atomic write left (``.<name>.*.tmp``).

    Returns:
        The removed paths.
    """
    removed = []
    for folder in (run_dir, run_dir / "checkpoints"):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                if tmp.is_symlink() or tmp.is_file():
                    tmp.unlink(missing_ok=True)
                    removed.append(tmp)
    return removed


def pretrain(cfg: Config, resume: bool = False, stop_after_steps: int | None = None) -> Path:
    """Run one budgeted pretraining run and return its run dir.

    Args:
        cfg: validated config.
        resume: continue from ``checkpoints/last.pt`` if it exists.
        stop_after_steps: stop (as if killed) once this many steps are done in total; used to
            test exact resume. The run's status is then ``interrupted``.

    Raises:
        ConfigError: invalid input, detected before anything is written.
        RunFailed: a non-finite loss (summary.json records ``status: failed``).
    """
    dist.init_from_env()  # no-op for a single process; torchrun sets WORLD_SIZE/RANK
    _device(cfg)  # a missing device is refused before any data is decoded
    cfg = resolve_config(cfg)  # idempotent; fills every value the recipe gives
    how = cfg._recipe_picked
    if dist.rank() == 0:
        print(f"divssl: recipe {cfg.recipe} ({how}); see `divssl recipes`", file=sys.stderr)
    prep, composition = prepare(cfg)
    run_dir = prep.run_dir
    is_main = dist.rank() == 0
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    if resume:
        check_resume_config(run_dir, cfg)  # every rank, so none waits on a refused run
        if is_main:
            clean_stale_tmp(run_dir)
    if is_main and run_dir.exists() and not resume and (run_dir / "summary.json").exists():
        raise ConfigError(
            "out", f"run dir {run_dir} already holds a run; pass --resume or choose another `out`"
        )
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    device = _device(cfg)
    threads = ThreadPolicy(cfg.threads, device, adaptive=not cfg.deterministic)
    threads.start()
    torch.manual_seed(cfg.seed_for("init"))
    random.seed(cfg.seed_for("init"))
    backbone, feat_dim = build_backbone(cfg.backbone, cfg.image_size, cfg.cifar_stem)
    method = prep.method_cls(
        backbone, feat_dim, prep.method_cls.Config(**cfg.method_args), prep.num_classes
    ).to(device)
    if cfg.channels_last:
        method = method.to(memory_format=torch.channels_last)
    budget = prep.budget
    total = budget.steps
    method.schedule_epochs = schedule_epochs(cfg, budget)
    if dist.is_dist() and cfg.sync_batchnorm:
        from divssl.pretrain.syncbn import convert_sync_batchnorm

        method = convert_sync_batchnorm(method, device)  # type: ignore[assignment]
    settings = _optim_settings(cfg, method)
    opt = build_optimizer(method, cfg, settings)
    preset = preset_from_config(cfg)

    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = config_to_dict(cfg)
        resolved["data"]["store_size"] = store_size(cfg)  # the effective value, not null
        atomic_write_yaml(run_dir / "config.yaml", resolved)
        if prep.ordering is not None:
            save_ordering(prep.ordering, run_dir / "ordering.json")
        else:
            atomic_write_json(run_dir / "ordering.json", prep.ordering_record)
        if composition is not None:
            atomic_write_json(run_dir / "composition.json", composition)
    flops_per_image = count_flops_per_image(method, preset, cfg.image_size, device)

    start_step, images_seen, wall_before = 0, 0, 0.0
    if resume and ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path, method, opt)
        start_step = int(ckpt["step"])
        images_seen = int(ckpt["extra"]["images_seen"])
        wall_before = float(ckpt["extra"]["wall_seconds"])
        if is_main:
            _trim_metrics(run_dir / "metrics.jsonl", start_step)
    elif is_main:
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)

    train_module: nn.Module = method
    if dist.is_dist():
        from torch.nn.parallel import DistributedDataParallel

        train_module = DistributedDataParallel(
            method,
            device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False,
        )
    if cfg.compile:
        # The backbone holds the step's FLOPs and takes only the views, so it compiles once; the
        # method's step takes Python ints (step, total) and schedules, which would recompile.
        # In place: state_dict keys, checkpoints and backbone.pt stay unchanged.
        method.backbone.compile()
    logger = _Logger(run_dir, is_main, cfg.tracking in ("tensorboard", "mlflow"))
    amp_dtype = _autocast_dtype(cfg, device)
    status = "running"
    summary_base = {
        "method": cfg.method,
        "backbone": cfg.backbone,
        "recipe": cfg.recipe,
        "recipe_picked": how,  # "auto: image_size N" or "given"
        "schedule_units": cfg.schedule.units,
        "pool": cfg.data.pool if cfg.data.composition is None else "composition",
        "pool_manifest": prep.ordering_record["pool_manifest"],
        "ordering_hash": prep.ordering_record["hash"],
        "budget_images": budget.images,
        "unique_images": budget.unique_images,
        "epochs": budget.epochs,
        "diversity": budget.diversity,
        "steps": total,
        "global_batch": cfg.batch_size,
        "views_per_image": preset.n_views,
        "flops_per_image": flops_per_image,
        "corrupt_images": len(prep.corrupt),
        "store_size": store_size(cfg),
        "normalization": "compute" if cfg.budget.images is not None else "epoch",
        "world_size": dist.world_size(),
        "device": str(device),
        "precision": "bf16" if amp_dtype is not None else "fp32",
        "torch_version": torch.__version__,
        "divssl_version": divssl.__version__,
    }
    batch_iter = batches(prep, start_step, device)
    progress = _Progress(total, start_step, budget, enabled=is_main)
    meter = LossMeter(device)
    window_lrs: dict[int, float] = {}  # lr of each step since the last read (host values)
    t0 = time.perf_counter()
    warm: tuple[float, int] | None = None  # (clock, images) after the first step
    last: dict[str, Any] = {"loss": float("nan"), "lr": 0.0, "wd": 0.0}
    step = start_step

    def read_meter(done: int, logs: dict[str, float]) -> None:
        # The only host synchronisation of the loop: at log_every, checkpoints and the end.
        loss_last, loss_mean, bad, bad_value = meter.read()
        if bad is not None:
            raise RunFailed(
                _nan_diagnosis(bad, bad_value, logs, window_lrs.get(bad, float("nan")), method)
                + f" (detected at step {done - 1}, the first read after it)"
            )
        window_lrs.clear()
        last.update({"loss": loss_last, "loss_mean": loss_mean, **logs})
        progress.update(done - 1, images_seen, loss_last)

    try:
        method.train()
        for step in range(start_step, total):
            if stop_after_steps is not None and step >= stop_after_steps:
                status = "interrupted"
                break
            threads.maybe_adapt()
            lr, wd = _set_schedules(opt, step, total, cfg, settings)
            window_lrs[step] = lr
            images, labels, extents = next(batch_iter)
            with single_thread(device):
                views = make_views(
                    images,
                    preset,
                    view_generator(cfg.seed_for("augment"), step, device),
                    extents=extents,
                )
            if cfg.channels_last:
                views = [v.contiguous(memory_format=torch.channels_last) for v in views]
            with torch.autocast(
                device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
            ):
                out = train_module(views, labels, step, total)
            loss = out.loss
            meter.update(loss, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            method.on_before_optimizer_step(step, total)
            if cfg.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.optim.grad_clip)
            opt.step()
            method.on_after_optimizer_step(step, total)
            images_seen += budget.batch_sizes[step]
            last.update({"lr": lr, "wd": wd})
            done = step + 1
            if warm is None:
                _synchronize(device)
                warm = (time.perf_counter(), images_seen)
            log_now = done % cfg.log_every == 0 or done == total
            ckpt_now = is_main and (done % cfg.checkpoint_every == 0 or done == total)
            if log_now or ckpt_now:
                read_meter(done, out.logs)
            if log_now:
                elapsed = wall_before + time.perf_counter() - t0
                logger.log(
                    {
                        "step": done,
                        "images_seen": images_seen,
                        **last,
                        "images_per_step": budget.batch_sizes[step],
                        "flops": flops_per_image * images_seen,
                        "wall_seconds": elapsed,
                    }
                )
            if ckpt_now:
                save_checkpoint(
                    ckpt_path,
                    method,
                    opt,
                    done,
                    {
                        "images_seen": images_seen,
                        "wall_seconds": wall_before + time.perf_counter() - t0,
                    },
                )
        else:
            status = "completed"
        if meter.count:  # interrupted between reads
            read_meter(step if status == "interrupted" else step + 1, {})
        _synchronize(device)
        summary_base.update(
            _speed_record(
                time.perf_counter(), warm, images_seen, flops_per_image, device, cfg, amp_dtype
            )
        )
        summary_base["threads"] = threads.record()
    except RunFailed as exc:
        status = "failed"
        summary_base["threads"] = threads.record()
        if is_main:
            _write_summary(
                run_dir,
                summary_base,
                status,
                images_seen,
                wall_before,
                t0,
                flops_per_image,
                error=str(exc),
            )
        raise
    finally:
        progress.close()
        logger.close()
        threads.restore()  # later phases of this process (evaluation) decide their own
    if prep.stream_loader is not None:
        summary_base.update(stream_counts(prep.stream_loader, budget))
    if dist.is_dist():
        summary_base["replica_max_abs_diff"] = replica_drift(method)
    if is_main:
        if status == "completed":
            export_backbone(method.backbone, run_dir / "backbone.pt")
        _write_summary(
            run_dir, summary_base, status, images_seen, wall_before, t0, flops_per_image, final=last
        )
    if is_main and status == "completed" and cfg.tracking == "mlflow" and not _in_study(run_dir):
        log_standalone_run(run_dir, config_to_dict(cfg))
    return run_dir


def stream_counts(loader: Any, budget: Budget) -> dict[str, Any]:
    """Summary fields of a streamed (``wds``) run, corrected for undecodable samples.

    A streaming subset is cut by the index's sample counts, which include undecodable samples;
    each bad sample is counted once (``corrupt_images``) and N, E and D are recomputed from the
    decodable count. ``unique_images_indexed`` keeps the index's N and ``unique_images_exact``
    says whether every sample of the subset was decoded at least once (else N is an upper bound).
    """
    corrupt = int(loader.corrupt_count)
    out: dict[str, Any] = {"corrupt_images": corrupt}
    if corrupt == 0:
        return out
    n = max(1, int(loader.decodable_count))
    exact = bool(loader.subset_checked)
    out.update(
        unique_images=n,
        unique_images_indexed=budget.unique_images,
        unique_images_exact=exact,
        epochs=budget.images / n,
        diversity=n / budget.images,
        unique_images_note=(
            f"N counts decodable samples: {corrupt} of the subset's {budget.unique_images} "
            f"indexed samples are undecodable and were skipped, so N = {n} and E, D use it"
            + ("" if exact else " (not every sample was met yet: N is an upper bound)")
        ),
    )
    return out


def schedule_epochs(cfg: Config, budget: Budget) -> float:
    """Epochs the run's steps stand for: E = C / N with ``schedule.units=epochs`` (the paper's
    max_epochs), the recipe's reference epochs with ``schedule.units=steps``."""
    if cfg.schedule.units == "epochs":
        return budget.epochs
    assert cfg.schedule.reference_epochs is not None
    return float(cfg.schedule.reference_epochs)


def _synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (before reading a clock); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _speed_record(
    now: float,
    warm: tuple[float, int] | None,
    images_seen: int,
    flops_per_image: float,
    device: torch.device,
    cfg: Config,
    amp_dtype: torch.dtype | None,
) -> dict[str, Any]:
    """Steady-state speed and MFU of this session's steps after the first (the first step holds
    compilation, allocator and cuDNN warm-up, so it is excluded, as airbench and nanoGPT do).

    ``mfu`` = counted FLOPs (all ranks) / steady wall seconds / (peak FLOP/s x world size);
    ``None`` when the peak is unknown (the CPU, unless ``peak_flops`` is given) or when fewer
    than two steps ran.
    """
    precision = "bf16" if amp_dtype is not None else "fp32"
    peak = peak_flops(device, precision, cfg.peak_flops)
    record: dict[str, Any] = {
        "compile": cfg.compile,
        "peak_flops": peak,
        "steady_images_per_second": None,
        "mfu": None,
    }
    if warm is None or images_seen <= warm[1] or now <= warm[0]:
        return record
    ips = (images_seen - warm[1]) / (now - warm[0])
    record["steady_images_per_second"] = ips
    if peak is not None:
        record["mfu"] = ips * flops_per_image / (peak * dist.world_size())
    return record


def _in_study(run_dir: Path) -> bool:
    # Study runs are logged by the runner, with their grid factors and evaluation results.
    return (run_dir.parent.parent / "plan.json").is_file()


def log_standalone_run(run_dir: Path, config: dict[str, Any]) -> str:
    """Log a single ``divssl pretrain`` run to MLflow (``mlflow_uri``, default a SQLite store
    ``mlflow.db`` beside the run dir): params, the metrics.jsonl series, summary and config."""
    from divssl.study.tracking import log_job

    plan_doc = {"study": "divssl-pretrain"}
    job = {"id": run_dir.name, "kind": "pretrain", "config": config, "factors": {}}
    return log_job(run_dir.parent, plan_doc, job, run_dir, rows=[])


def replica_drift(model: nn.Module) -> float:
    """Largest |difference| between this rank's parameters and rank 0's, over all ranks (0.0
    when data-parallel replicas stayed in sync)."""
    import torch.distributed as tdist

    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    ref = flat.clone()
    tdist.broadcast(ref, src=0)
    diff = (flat - ref).abs().max().reshape(1)
    tdist.all_reduce(diff, op=tdist.ReduceOp.MAX)
    return float(diff)


def _write_summary(
    run_dir: Path,
    base: dict[str, Any],
    status: str,
    images_seen: int,
    wall_before: float,
    t0: float,
    flops_per_image: float,
    error: str | None = None,
    final: dict[str, Any] | None = None,
) -> None:
    wall = wall_before + time.perf_counter() - t0
    summary = {
        **base,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": status,
        "images_seen": images_seen,
        "total_flops": flops_per_image * images_seen,
        "wall_seconds": wall,
        "images_per_second": images_seen / wall if wall > 0 else 0.0,
    }
    if final is not None:
        summary["final_loss"] = final.get("loss")
    if error is not None:
        summary["error"] = error
    atomic_write_json(run_dir / "summary.json", summary)


def _nan_diagnosis(
    step: int, loss: float, logs: dict[str, float], lr: float, method: Method
) -> str:
    bad = [n for n, p in method.named_parameters() if not torch.isfinite(p).all()]
    parts = [f"non-finite loss {loss} at step {step} (lr {lr:.4g})"]
    if bad:
        parts.append(
            f"non-finite parameters (now, after the steps up to the read): {', '.join(bad[:5])}"
        )
    else:
        parts.append(
            "parameters are finite: the loss itself diverged; lower optim.base_lr or "
            "raise the warm-up (optim.warmup_epochs)"
        )
    if logs:
        parts.append("last logs: " + ", ".join(f"{k}={v:.4g}" for k, v in logs.items()))
    return "; ".join(parts)


class _Progress:
    """Rich progress bar with images/s and ETA on a terminal; plain lines otherwise."""

    def __init__(self, total: int, start: int, budget: Budget, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None
        self.total = total
        self.t0 = time.perf_counter()
        self.start_images = budget.images_before(start)
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("pretrain"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} steps"),
                TextColumn("{task.fields[ips]:.0f} img/s"),
                TextColumn("loss {task.fields[loss]:.4f}"),
                TimeRemainingColumn(),
            )
            self.task = self.bar.add_task(
                "pretrain", total=total, completed=start, ips=0.0, loss=float("nan")
            )
            self.bar.start()

    def update(self, step: int, images_seen: int, loss: float) -> None:
        if not self.enabled:
            return
        dt = time.perf_counter() - self.t0
        ips = (images_seen - self.start_images) / dt if dt > 0 else 0.0
        if self.bar is not None:
            self.bar.update(self.task, completed=step + 1, ips=ips, loss=loss)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """Load a run's summary.json."""
    return read_json(Path(run_dir) / "summary.json")
