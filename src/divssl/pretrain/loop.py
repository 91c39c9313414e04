"""The budgeted pretraining loop: exactly C images, precision, DDP, checkpoints, exact resume.

One run (:class:`PretrainSession`; :func:`pretrain` does all of it):

1. open: :func:`prepare` validates everything that needs data (pool, subset, budget) before a
   file is written; resume checks; ``config.yaml`` and the ordering are written; the method,
   optimizer (LARS with LARC clipping, SGD or AdamW) and views come from
   :func:`divssl.pretrain.build.build_run` (the study planner builds the same), SyncBatchNorm
   under DDP; ``checkpoints/last.pt`` is restored when resuming;
2. steps (:meth:`PretrainSession.run`): take the step's slice of the budgeted image stream, make
   views on the device with a generator seeded by (augment seed, step, rank), forward/backward
   under autocast, method hooks, schedules set from (step, total_steps), optimizer step; log
   ``metrics.jsonl``, checkpoint every K steps, show progress (:class:`divssl.progress.Progress`);
3. finish (:meth:`PretrainSession.finish`): ``backbone.pt`` and ``summary.json``.

Randomness is derived per step (views) or saved in checkpoints (global torch RNG for dropout), so
an interrupted-and-resumed run on CPU with ``deterministic=true`` ends with bitwise-equal weights.
Tracking of standalone runs in MLflow is the CLI's job (``divssl pretrain``); a study's runner
logs its runs with their grid factors.
"""

from __future__ import annotations

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
from divssl.config_tree import flatten
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
from divssl.pretrain.augment import make_views
from divssl.pretrain.backbones import export_backbone
from divssl.pretrain.budget import Budget, stream_positions
from divssl.pretrain.build import (
    RunParts,
    build_run,
    make_budget,
    num_classes_of,
    resolve_device,
    set_schedules,
    subset_size,
)
from divssl.pretrain.config import Config, config_to_dict, resolve_config
from divssl.pretrain.dry_run import count_flops_per_image
from divssl.pretrain.methods import Method, get_method
from divssl.progress import Progress, plain_every
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


def open_training_pool(cfg: Config) -> tuple[Pool, dict[str, Any] | None]:
    """The run's pool as pretraining reads it (a composition's parts resolved) and the record of
    the composition (``None`` for a plain pool)."""
    if cfg.data.composition is not None:
        from divssl.data.composition import ComposedPool, parse_composition, resolve_composition

        comp = parse_composition(cfg.data.composition)
        task_classes: list[str] | None = None
        if cfg.data.task is not None:
            from divssl.evaluate.tasks import open_task

            names = open_task(cfg.data.task).class_names
            task_classes = None if names is None else list(names)
        resolved = resolve_composition(comp, task_classes)
        return ComposedPool(resolved), resolved.to_json()
    return open_pool(cfg.data.pool), None


def _run_dir(cfg: Config, budget_images: int, n: int) -> Path:
    return Path(
        cfg.out.format(
            method=cfg.method, backbone=cfg.backbone, budget=budget_images, n=n, seed=cfg.seed
        )
    )


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
    raw_pool, composition = open_training_pool(cfg)
    n = subset_size(cfg, len(raw_pool))
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
        corrupt: list[str] = []
        pool, subset, ordering = raw_pool, np.arange(n), None
    else:
        if cfg.subset.ordering is not None:
            ordering = load_ordering(cfg.subset.ordering)
            check_ordering(ordering, raw_pool)
        else:
            ordering = make_ordering(raw_pool, seed=cfg.subset.seed, balanced=cfg.subset.balanced)
        pool, corrupt = _decode_pool(cfg, raw_pool)
        if cfg.subset.size is None:  # a fraction (default 1) of the decodable images
            n = subset_size(cfg, len(pool))
        subset = _decoded_subset(ordering, pool, n)
        record = {
            "kind": "permutation",
            "hash": ordering.hash,
            "pool_manifest": ordering.pool_manifest,
        }
    budget = make_budget(cfg, len(subset), dist.world_size())
    num_classes = num_classes_of(pool)
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
        _run_dir(cfg, budget.images, len(subset)),
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
        device = resolve_device(cfg)
        if device.type == "cuda" and cfg.data.cache == "memory" and hasattr(raw_pool, "path"):
            from divssl.data.gpu_decode import load_file_store

            return load_file_store(raw_pool, store_size(cfg), device)
        pool, stats = load_stored_pool(
            raw_pool, store_size(cfg), cache=cfg.data.cache, workers=cfg.data.workers
        )
    return pool, list(stats.corrupt)


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


def _refuse_existing_run(run_dir: Path, resume: bool, device: torch.device) -> None:
    """Refuse a run dir that already holds a finished or interrupted run (without ``resume``).

    Every rank decides together (a max over ranks of "I see a summary.json"), so under DDP all
    ranks raise the same error instead of the others waiting for rank 0 in a collective.

    Raises:
        ConfigError: naming ``out``.
    """
    if resume:
        return
    seen = torch.tensor([float((run_dir / "summary.json").exists())], device=device)
    if dist.all_reduce_max(seen).item() > 0:
        raise ConfigError(
            "out", f"run dir {run_dir} already holds a run; pass --resume or choose another `out`"
        )


def _write_run_files(prep: Prepared, composition: dict[str, Any] | None) -> None:
    """config.yaml (every effective value), the ordering used and the composition (rank 0)."""
    cfg, run_dir = prep.cfg, prep.run_dir
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


def _summary_base(
    prep: Prepared, parts: RunParts, flops_per_image: float, device: torch.device
) -> dict[str, Any]:
    """The summary fields known before the first step."""
    cfg, budget = prep.cfg, prep.budget
    return {
        "method": cfg.method,
        "backbone": cfg.backbone,
        "recipe": cfg.recipe,
        "recipe_picked": cfg._recipe_picked,  # "auto: image_size N" or "given"
        "schedule_units": cfg.schedule.units,
        "pool": cfg.data.pool if cfg.data.composition is None else "composition",
        "pool_manifest": prep.ordering_record["pool_manifest"],
        "ordering_hash": prep.ordering_record["hash"],
        "budget_images": budget.images,
        "unique_images": budget.unique_images,
        "epochs": budget.epochs,
        "diversity": budget.diversity,
        "steps": budget.steps,
        "global_batch": cfg.batch_size,
        "views_per_image": parts.preset.n_views,
        "flops_per_image": flops_per_image,
        "corrupt_images": len(prep.corrupt),
        "store_size": store_size(cfg),
        "normalization": "compute" if cfg.budget.images is not None else "epoch",
        "world_size": dist.world_size(),
        "device": str(device),
        "precision": "bf16" if parts.amp_dtype is not None else "fp32",
        "torch_version": torch.__version__,
        "divssl_version": divssl.__version__,
    }


def _wrap_ddp(method: Method, device: torch.device) -> nn.Module:
    """The module the steps call: DDP around the method under torch.distributed."""
    if not dist.is_dist():
        return method
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        method,
        device_ids=[device.index] if device.type == "cuda" else None,
        broadcast_buffers=False,
    )


class PretrainSession:
    """One budgeted pretraining run in three parts: open (setup), :meth:`run` (the steps) and
    :meth:`finish` (summary, ``backbone.pt``).

    :func:`pretrain` does all three. A caller that wants to stop early (a time-sliced job, a
    test of exact resume) calls :meth:`run` with ``until`` and then :meth:`finish`: the run
    dir then says ``status: interrupted`` and ``--resume`` continues from the last checkpoint.

    Opening validates everything that needs data before anything is written, writes
    ``config.yaml`` and the ordering, builds the run (:func:`divssl.pretrain.build.build_run`),
    counts FLOPs per image and restores ``checkpoints/last.pt`` when resuming.

    Args:
        cfg: validated config (resolved here again; idempotent).
        resume: continue from ``checkpoints/last.pt`` if it exists.

    Raises:
        ConfigError: invalid input, detected before anything is written (on every rank).
    """

    def __init__(self, cfg: Config, resume: bool = False) -> None:
        dist.init_from_env()  # no-op for a single process; torchrun sets WORLD_SIZE/RANK
        plain_every()  # a bad DIVSSL_PROGRESS_SECONDS is refused before anything is written
        device = resolve_device(cfg)  # a missing device is refused before any data is decoded
        cfg = resolve_config(cfg)  # idempotent; fills every value the recipe gives
        self.is_main = dist.rank() == 0
        if self.is_main:
            print(
                f"divssl: recipe {cfg.recipe} ({cfg._recipe_picked}); see `divssl recipes`",
                file=sys.stderr,
            )
        prep, composition = prepare(cfg)
        self.cfg, self.prep, self.device = cfg, prep, device
        self.run_dir = prep.run_dir
        self.ckpt_path = self.run_dir / "checkpoints" / "last.pt"
        if resume:
            check_resume_config(self.run_dir, cfg)  # every rank, so none waits on a refused run
            if self.is_main:
                clean_stale_tmp(self.run_dir)
        _refuse_existing_run(self.run_dir, resume, device)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        self.threads = ThreadPolicy(cfg.threads, device, adaptive=not cfg.deterministic)
        self.threads.start()
        torch.manual_seed(cfg.seed_for("init"))
        random.seed(cfg.seed_for("init"))
        self.parts = build_run(cfg, prep.num_classes, device, prep.budget)
        self.method = self.parts.method
        if self.is_main:
            _write_run_files(prep, composition)
        self.flops_per_image = count_flops_per_image(
            self.method, self.parts.preset, cfg.image_size, device
        )
        self.step, self.images_seen, self.wall_before = 0, 0, 0.0
        if resume and self.ckpt_path.is_file():
            ckpt = load_checkpoint(self.ckpt_path, self.method, self.parts.optimizer)
            self.step = int(ckpt["step"])
            self.images_seen = int(ckpt["extra"]["images_seen"])
            self.wall_before = float(ckpt["extra"]["wall_seconds"])
            if self.is_main:
                _trim_metrics(self.run_dir / "metrics.jsonl", self.step)
        elif self.is_main:
            (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
        self.train_module = _wrap_ddp(self.method, device)
        if cfg.compile:
            # The backbone holds the step's FLOPs and takes only the views, so it compiles once;
            # the method's step takes Python ints (step, total) and schedules, which would
            # recompile. In place: state_dict keys, checkpoints and backbone.pt stay unchanged.
            self.method.backbone.compile()
        self.summary = _summary_base(prep, self.parts, self.flops_per_image, device)
        self.logger = _Logger(self.run_dir, self.is_main, cfg.tracking in ("tensorboard", "mlflow"))
        self.progress = Progress(
            "pretrain",
            prep.budget.steps,
            start=self.step,
            images_total=prep.budget.images,
            images_start=self.images_seen,
            enabled=self.is_main,
        )
        self.meter = LossMeter(device)
        self.window_lrs: dict[int, float] = {}  # lr of each step since the last read (host)
        self.last: dict[str, Any] = {"loss": float("nan"), "lr": 0.0, "wd": 0.0}
        self.warm: tuple[float, int] | None = None  # (clock, images) after the first step
        self.t0 = time.perf_counter()
        self.batch_iter = batches(prep, self.step, device)
        self.status = "running"
        self.closed = False

    @property
    def total(self) -> int:
        """Optimizer steps of the whole run."""
        return self.prep.budget.steps

    def wall_seconds(self) -> float:
        """Training wall time of the run so far (earlier sessions included)."""
        return self.wall_before + time.perf_counter() - self.t0

    # --------------------------------------------------------------------------------- steps

    def run(self, until: int | None = None) -> bool:
        """Train up to ``until`` steps done in total (default: the whole run).

        Logs ``metrics.jsonl`` every ``log_every`` steps and checkpoints every
        ``checkpoint_every`` steps and at the end of the run.

        Returns:
            Whether the run is complete.

        Raises:
            RunFailed: a non-finite loss; ``summary.json`` records ``status: failed``.
        """
        stop = self.total if until is None else min(int(until), self.total)
        self.method.train()
        try:
            while self.step < stop:
                self._step()
        except RunFailed as exc:
            self._fail(exc)
            raise
        return self.step == self.total

    def _step(self) -> None:
        """One optimizer step, as numbered stages."""
        cfg, step, total, opt = self.cfg, self.step, self.total, self.parts.optimizer
        budget = self.prep.budget
        # 1. schedules and this step's batch
        self.threads.maybe_adapt()
        lr, wd = set_schedules(opt, step, total, cfg, self.parts.settings)
        self.window_lrs[step] = lr
        images, labels, extents = next(self.batch_iter)
        # 2. views on the device, from a generator seeded by (augment seed, step, rank)
        with single_thread(self.device):
            views = make_views(
                images,
                self.parts.preset,
                view_generator(cfg.seed_for("augment"), step, self.device),
                extents=extents,
            )
        if cfg.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        # 3. forward under autocast, backward, method hooks, optimizer step
        amp = self.parts.amp_dtype
        with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = self.train_module(views, labels, step, total)
        self.meter.update(out.loss, step)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        self.method.on_before_optimizer_step(step, total)
        if cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.method.parameters(), cfg.optim.grad_clip)
        opt.step()
        self.method.on_after_optimizer_step(step, total)
        # 4. counters, logs and checkpoints
        self.images_seen += budget.batch_sizes[step]
        self.last.update({"lr": lr, "wd": wd})
        self.step = done = step + 1
        if self.warm is None:
            _synchronize(self.device)
            self.warm = (time.perf_counter(), self.images_seen)
        log_now = done % cfg.log_every == 0 or done == total
        ckpt_now = self.is_main and (done % cfg.checkpoint_every == 0 or done == total)
        if log_now or ckpt_now:
            self._read_meter(out.logs)
        if log_now:
            self.logger.log(
                {
                    "step": done,
                    "images_seen": self.images_seen,
                    **self.last,
                    "images_per_step": budget.batch_sizes[step],
                    "flops": self.flops_per_image * self.images_seen,
                    "wall_seconds": self.wall_seconds(),
                }
            )
        if ckpt_now:
            self.checkpoint()

    def _read_meter(self, logs: dict[str, float]) -> None:
        # The only host synchronisation of the loop: at log_every, checkpoints and the end.
        loss_last, loss_mean, bad, bad_value = self.meter.read()
        if bad is not None:
            lr = self.window_lrs.get(bad, float("nan"))
            raise RunFailed(
                _nan_diagnosis(bad, bad_value, logs, lr, self.method)
                + f" (detected at step {self.step - 1}, the first read after it)"
            )
        self.window_lrs.clear()
        self.last.update({"loss": loss_last, "loss_mean": loss_mean, **logs})
        self.progress.update(self.step, self.images_seen, loss=loss_last)

    def checkpoint(self) -> None:
        """Write ``checkpoints/last.pt`` at the current step (rank 0)."""
        if not self.is_main:
            return
        extra = {"images_seen": self.images_seen, "wall_seconds": self.wall_seconds()}
        save_checkpoint(self.ckpt_path, self.method, self.parts.optimizer, self.step, extra)

    # -------------------------------------------------------------------------------- finish

    def finish(self) -> Path:
        """End the session: ``summary.json`` (``completed`` or ``interrupted``), ``backbone.pt``
        of a completed run, and the thread settings restored.

        Returns:
            The run dir.

        Raises:
            RunFailed: a non-finite loss among the steps not read yet.
        """
        self.status = "completed" if self.step == self.total else "interrupted"
        try:
            if self.meter.count:  # steps since the last read
                self._read_meter({})
        except RunFailed as exc:
            self._fail(exc)
            raise
        _synchronize(self.device)
        self.summary.update(
            _speed_record(
                time.perf_counter(),
                self.warm,
                self.images_seen,
                self.flops_per_image,
                self.device,
                self.cfg,
                self.parts.amp_dtype,
            )
        )
        self.summary["threads"] = self.threads.record()
        self.close()
        if self.prep.stream_loader is not None:
            self.summary.update(stream_counts(self.prep.stream_loader, self.prep.budget))
        if dist.is_dist():
            self.summary["replica_max_abs_diff"] = replica_drift(self.method)
        if self.is_main:
            if self.status == "completed":
                export_backbone(self.method.backbone, self.run_dir / "backbone.pt")
            self._write_summary(final=self.last)
        return self.run_dir

    def _fail(self, exc: RunFailed) -> None:
        self.status = "failed"
        self.summary["threads"] = self.threads.record()
        self.close()
        if self.is_main:
            self._write_summary(error=str(exc))

    def close(self) -> None:
        """Stop the progress display and the logger; restore the thread settings (later
        phases of this process, e.g. evaluation, decide their own). Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.progress.close()
        self.logger.close()
        self.threads.restore()

    def _write_summary(self, error: str | None = None, final: dict[str, Any] | None = None) -> None:
        wall = self.wall_seconds()
        summary = {
            **self.summary,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "status": self.status,
            "images_seen": self.images_seen,
            "total_flops": self.flops_per_image * self.images_seen,
            "wall_seconds": wall,
            "images_per_second": self.images_seen / wall if wall > 0 else 0.0,
        }
        if final is not None:
            summary["final_loss"] = final.get("loss")
        if error is not None:
            summary["error"] = error
        atomic_write_json(self.run_dir / "summary.json", summary)


def pretrain(cfg: Config, resume: bool = False, *, step_limit: int | None = None) -> Path:
    """Run one budgeted pretraining run and return its run dir.

    Args:
        cfg: validated config.
        resume: continue from ``checkpoints/last.pt`` if it exists.
        step_limit: stop once this many steps are done in total, with a checkpoint: the run dir
            says ``status: interrupted`` and a later call with ``resume=True`` continues (for
            time-sliced cluster jobs; ``divssl pretrain --step-limit``). ``None``: the whole run.

    Raises:
        ConfigError: invalid input, detected before anything is written.
        RunFailed: a non-finite loss (summary.json records ``status: failed``).
    """
    if step_limit is not None and step_limit < 1:
        raise ConfigError("--step-limit", f"must be >= 1 step, got {step_limit}")
    session = PretrainSession(cfg, resume=resume)
    try:
        complete = session.run(until=step_limit)
        if not complete:
            session.checkpoint()
        return session.finish()
    finally:
        session.close()


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


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """Load a run's summary.json."""
    return read_json(Path(run_dir) / "summary.json")
