"""Frozen-backbone features with an on-disk cache, and the plumbing every evaluation shares.

An :class:`Encoder` is a backbone loaded from a run dir's ``backbone.pt`` (``init="pretrained"``)
or freshly initialised from a seed (``init="random"``, the random-init baseline). Features of a
task split are extracted once, in eval mode, under ``torch.inference_mode()`` with the
deterministic :func:`divssl.pretrain.augment.eval_transform` (bf16 autocast on CUDA where
supported, fp32
otherwise), and cached on disk under ``features/<key>.npz`` where the key hashes

* the encoder identity: the checkpoint's SHA-256, or the backbone name, init seed and torch version
  for a random init;
* the pool's manifest hash;
* the transform parameters (eval transform, image size, decode size) and the compute precision.

Re-running an evaluation therefore reuses the features, and any change of weights, data or
transform misses the cache.
"""

from __future__ import annotations

import contextlib
import copy
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from divssl.errors import ConfigError, RunFailed, unknown_choice
from divssl.evaluate.tasks import Task

INITS = ("pretrained", "random")
DECODE_CACHES = ("memory", "mmap")
FEATURES_NAMESPACE = "features"
FEATURES_VERSION = 1


# ----------------------------------------------------------------------------------- devices


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``, ``cuda`` and ``cuda:N`` as given.

    Raises:
        ConfigError: unknown name or CUDA requested where none is available.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError("device", f"unknown device {device!r}", ("auto", "cpu", "cuda")) from exc
    if dev.type not in ("cpu", "cuda"):
        raise unknown_choice("device", device, ("auto", "cpu", "cuda", "cuda:N"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "CUDA requested but torch sees no GPU", ("auto", "cpu"))
    return dev


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on CUDA devices that support it; ``None`` (fp32) elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of :func:`autocast_dtype` (a no-op context for fp32)."""
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def precision_name(device: torch.device) -> str:
    """``"bf16"`` or ``"fp32"``: the precision features are computed in (part of the cache key)."""
    return "bf16" if autocast_dtype(device) is not None else "fp32"


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore each module's previous mode."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.training = training


# ----------------------------------------------------------------------------------- encoders


@dataclass
class Encoder:
    """A frozen feature extractor and where it came from.

    Attributes:
        model: maps (B, 3, S, S) normalised images to (B, feat_dim).
        feat_dim: feature width D.
        backbone: registry name.
        image_size: input side S.
        cifar_stem: ResNet CIFAR stem.
        identity: what the cache key and results record about the weights.
        run_dir: the run the weights came from (``None`` for a random init without a run).
        run_config: the run's resolved ``config.yaml`` (empty without a run).
    """

    model: nn.Module
    feat_dim: int
    backbone: str
    image_size: int
    cifar_stem: bool
    identity: dict[str, Any]
    run_dir: Path | None = None
    run_config: dict[str, Any] = field(default_factory=dict)

    def fresh_model(self) -> nn.Module:
        """A deep copy of the model, for fine-tuning without touching this encoder."""
        return copy.deepcopy(self.model)


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The run's ``config.yaml`` as a dict.

    Raises:
        ConfigError: the folder or its config is missing.
    """
    from divssl.io import read_yaml

    if not run_dir.is_dir():
        raise ConfigError("run", f"no run directory at {run_dir}")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError("run", f"{run_dir} has no config.yaml (not a divssl run dir)")
    cfg = read_yaml(path)
    if not isinstance(cfg, dict):
        raise ConfigError("run", f"{path} does not hold a mapping")
    return cfg


def load_encoder(
    run_dir: str | Path | None = None,
    *,
    init: str = "pretrained",
    backbone: str | None = None,
    image_size: int | None = None,
    cifar_stem: bool | None = None,
    seed: int = 0,
) -> Encoder:
    """Load a run's backbone, or build a randomly initialised one (the random-init baseline).

    Args:
        run_dir: run directory with ``config.yaml`` and ``backbone.pt``; optional for ``random``.
        init: ``"pretrained"`` (load ``backbone.pt``) or ``"random"`` (seeded fresh weights).
        backbone: backbone name; defaults to the run's ``backbone`` (required without a run).
        image_size: input side; defaults to the run's ``image_size`` (required without a run).
        cifar_stem: ResNet CIFAR stem; defaults to the run's ``cifar_stem`` (else False).
        seed: initialisation seed of a random init.

    Raises:
        ConfigError: unknown init, missing run files, or missing backbone/image size.
    """
    from divssl.pretrain.backbones import build_backbone, load_backbone

    if init not in INITS:
        raise unknown_choice("init", init, INITS)
    run = Path(run_dir) if run_dir is not None else None
    cfg = read_run_config(run) if run is not None else {}
    if run is None and init == "pretrained":
        raise ConfigError("run", "--run DIR is required unless --init random")
    if init == "pretrained" and any(v is not None for v in (backbone, image_size, cifar_stem)):
        raise ConfigError("backbone", "--backbone/--image-size/--cifar-stem go with --init random")
    name = backbone if backbone is not None else cfg.get("backbone")
    size = image_size if image_size is not None else cfg.get("image_size")
    stem = bool(cifar_stem if cifar_stem is not None else cfg.get("cifar_stem", False))
    if name is None:
        raise ConfigError("backbone", "give --backbone NAME (no run config to read it from)")
    if size is None:
        raise ConfigError("image_size", "give --image-size S (no run config to read it from)")
    size = int(size)
    if init == "pretrained":
        assert run is not None
        path = run / "backbone.pt"
        if not path.is_file():
            raise ConfigError("run", f"{run} has no backbone.pt (unfinished run?)")
        from divssl.cache import file_sha256

        model, dim = load_backbone(path, str(name), size, stem)
        identity: dict[str, Any] = {"init": "pretrained", "checkpoint_sha256": file_sha256(path)}
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, dim = build_backbone(str(name), size, stem)
        # The same seed gives the same weights only within one torch version.
        identity = {"init": "random", "seed": int(seed), "torch": torch.__version__}
    identity.update({"backbone": str(name), "image_size": size, "cifar_stem": stem})
    model.eval()
    return Encoder(model, dim, str(name), size, stem, identity, run, cfg)


# ----------------------------------------------------------------------------------- decoding


def decode_size(image_size: int) -> int:
    """Side the pool is decoded at so that ``eval_transform(., image_size)`` is exact.

    ``eval_transform`` resizes the shorter side to ``round(S / 0.875)`` for S >= 224 and to S
    below, then centre-crops S; decoding at that shorter side (and centre-cropping square) keeps
    the same pixels for square crops and skips a second resize.
    """
    from divssl.pretrain.augment import EVAL_CROP_FRACTION, EVAL_CROP_MIN_SIZE

    if image_size >= EVAL_CROP_MIN_SIZE:
        return round(image_size / EVAL_CROP_FRACTION)
    return image_size


def _decode_split(
    task: Task, split: str, image_size: int, decode_cache: str, workers: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decoded images (N', s, s, 3) uint8, the pool's own labels (N',) and corrupt keys."""
    from divssl.data.cache import load_array_pool

    if decode_cache not in DECODE_CACHES:
        raise unknown_choice("decode_cache", decode_cache, DECODE_CACHES)
    arr, stats = load_array_pool(
        task.pool(split), decode_size(image_size), cache=decode_cache, workers=workers
    )
    if arr.labels is None:
        raise ConfigError(f"task.{split}", "decoded pool lost its labels")
    return arr.images, np.asarray(arr.labels, dtype=np.int64), list(stats.corrupt)


def load_split_images(
    task: Task, split: str, image_size: int, decode_cache: str = "memory", workers: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode a task split once into uint8 images at :func:`decode_size`.

    Args:
        task: the task.
        split: split name.
        image_size: the model's input side S.
        decode_cache: ``memory`` or ``mmap``.
        workers: decode processes.

    Returns:
        images (N', s, s, 3) uint8, labels (N',) int64 in the task's class ids, and the keys of
        corrupt samples that were skipped.
    """
    images, labels, corrupt = _decode_split(task, split, image_size, decode_cache, workers)
    return images, task.align_labels(split, labels), corrupt


# ----------------------------------------------------------------------------------- extraction


def forward_batches(
    model: nn.Module,
    images: np.ndarray,
    image_size: int,
    device: torch.device,
    batch_size: int = 256,
) -> np.ndarray:
    """Run ``model`` over uint8 images with the eval transform, in eval mode, without gradients.

    Args:
        model: maps (B, 3, S, S) to (B, F).
        images: (N, H, W, 3) uint8 array (may be memory-mapped).
        image_size: S.
        device: compute device (the model is moved there).
        batch_size: images per forward pass.

    Returns:
        (N, F) float32 outputs on the CPU.
    """
    from divssl.pretrain.augment import eval_transform

    if batch_size < 1:
        raise ConfigError("batch_size", f"must be >= 1, got {batch_size}")
    model.to(device)
    outs: list[np.ndarray] = []
    with eval_mode(model), torch.inference_mode(), autocast(device):
        for start in range(0, len(images), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
            x = eval_transform(chunk.to(device).permute(0, 3, 1, 2), image_size)
            outs.append(model(x).float().cpu().numpy())
    if not outs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(outs).astype(np.float32, copy=False)


@dataclass
class SplitFeatures:
    """Cached features of one task split.

    Attributes:
        features: (N, D) float32.
        labels: (N,) int64 in the task's class ids.
        cache_hit: whether the features came from the cache.
        cache_key: the cache entry's key.
        corrupt: number of samples skipped as undecodable.
        seconds: wall time to obtain the features (extraction or cache read).
    """

    features: np.ndarray
    labels: np.ndarray
    cache_hit: bool
    cache_key: str
    corrupt: int
    seconds: float

    def record(self) -> dict[str, Any]:
        """What the results JSON records about this split's features."""
        return {
            "cache_hit": self.cache_hit,
            "cache_key": self.cache_key,
            "n": len(self.labels),
            "corrupt": self.corrupt,
            "seconds": round(self.seconds, 4),
        }


def feature_cache_key(encoder: Encoder, pool_manifest: str, device: torch.device) -> str:
    """Key of a split's features: encoder identity, pool manifest, transform and precision."""
    from divssl.cache import cache_key

    transform = {
        "name": "eval_transform",
        "image_size": encoder.image_size,
        "decode_size": decode_size(encoder.image_size),
    }
    return cache_key(
        "features", FEATURES_VERSION, encoder.identity, pool_manifest, transform,
        precision_name(device),
    )  # fmt: skip


def split_features(
    encoder: Encoder,
    task: Task,
    split: str,
    device: torch.device,
    batch_size: int = 256,
    decode_cache: str = "memory",
    workers: int = 0,
) -> SplitFeatures:
    """Features of a task split, from the cache or extracted (and then cached).

    Args:
        encoder: the frozen backbone.
        task: the task.
        split: ``train``, ``test``, ``ood`` or ``val``.
        device: compute device.
        batch_size: extraction batch size.
        decode_cache: ``memory`` or ``mmap`` (see ``divssl.data.cache.load_array_pool``).
        workers: decode processes.
    """
    from divssl.cache import cached_arrays

    start = time.perf_counter()
    pool = task.pool(split)
    key = feature_cache_key(encoder, pool.manifest_hash(), device)
    computed = False

    def compute() -> dict[str, np.ndarray]:
        nonlocal computed
        computed = True
        images, labels, corrupt = _decode_split(
            task, split, encoder.image_size, decode_cache, workers
        )
        feats = forward_batches(encoder.model, images, encoder.image_size, device, batch_size)
        # Labels are stored as the split's pool numbers them (its manifest is in the key) and
        # mapped to the task's class ids on every read, since that depends on the train split.
        return {
            "features": feats,
            "labels": labels,
            "n_corrupt": np.array(len(corrupt), dtype=np.int64),
        }

    arrays = cached_arrays(FEATURES_NAMESPACE, key, compute)
    features = arrays["features"].astype(np.float32, copy=False)
    if not np.all(np.isfinite(features)):
        raise RunFailed(f"non-finite features for split {split!r}: the backbone has diverged")
    return SplitFeatures(
        features=features,
        labels=task.align_labels(split, arrays["labels"]),
        cache_hit=not computed,
        cache_key=key,
        corrupt=int(arrays["n_corrupt"]),
        seconds=time.perf_counter() - start,
    )


# ----------------------------------------------------------------------------------- results


def environment() -> dict[str, Any]:
    """Versions and platform recorded in every results file."""
    import divssl

    return {
        "divssl": divssl.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }


def results_path(
    kind: str, task: Task, encoder: Encoder, out_dir: str | Path | None = None
) -> Path:
    """``<out_dir>/<kind>_<taskslug>.json``; ``out_dir`` defaults to ``RUN_DIR/eval``.

    A random-init encoder gets a ``_random-s<seed>`` suffix so it never overwrites the run's own
    results.

    Raises:
        ConfigError: no output folder (random init without a run and without ``--out``).
    """
    if out_dir is None:
        if encoder.run_dir is None:
            raise ConfigError("out", "give --out DIR (no run dir to write eval results into)")
        out_dir = encoder.run_dir / "eval"
    stem = f"{kind}_{task.slug}"
    if encoder.identity["init"] == "random":
        stem += f"_random-s{encoder.identity['seed']}"
    return Path(out_dir) / f"{stem}.json"


def results_header(kind: str, task: Task, encoder: Encoder, device: torch.device) -> dict[str, Any]:
    """The common head of a results JSON: what was evaluated, on what, with which code."""
    return {
        "kind": kind,
        "task": task.describe(),
        "num_classes": task.num_classes,
        "run_dir": str(encoder.run_dir) if encoder.run_dir is not None else None,
        "method": encoder.run_config.get("method"),
        "encoder": dict(encoder.identity),
        "device": str(device),
        "precision": precision_name(device),
        "environment": environment(),
    }


def task_features(
    encoder: Encoder,
    task: Task,
    device: torch.device,
    batch_size: int = 256,
    decode_cache: str = "memory",
    workers: int = 0,
) -> dict[str, SplitFeatures]:
    """Features of every split the task declares (train, test, and ood/val when present)."""
    return {
        split: split_features(encoder, task, split, device, batch_size, decode_cache, workers)
        for split in ("train", "val", "test", "ood")
        if task.has(split)
    }
