"""Frozen-backbone features with an on-disk cache, and the plumbing every evaluation shares.

An :class:`Encoder` is a backbone loaded from a run dir's ``backbone.pt`` (``init="pretrained"``)
or freshly initialised from a seed (``init="random"``, the random-init baseline). Features of a
task split are extracted once, in eval mode, under ``torch.inference_mode()`` with the
deterministic :func:`eval_transform` of the run (:func:`run_eval_geometry`: the geometry of its
recipe scale, :data:`EVAL_PROTOCOLS`, the references' validation transform value for value, and
the normalisation statistics the run was pretrained with, ``augment.mean`` / ``augment.std`` of
its ``config.yaml``; bf16 autocast on CUDA where supported, fp32 otherwise), and cached on disk
under ``features/<key>.npz`` where the key hashes

* the encoder identity: the checkpoint's SHA-256, or the backbone name, init seed and torch version
  for a random init;
* the pool's manifest hash;
* the transform parameters (recipe scale, resize, crop, decode size, mean, std) and the compute
  precision.

The same transform serves every consumer of a run's inputs: the probes and fine-tuning here, the
pixel baselines (:func:`eval_pixels`, before normalisation) and the ``run:DIR`` distance
extractor.

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
from divssl.pretrain.augment import IMAGENET_NORM, Normalization, normalize, run_normalization

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


# ------------------------------------------------------------------------- eval transform

_SOLO_T_VAL = (
    "vturrisi/solo-learn@9187ea3 solo/data/classification_dataloader.py prepare_transforms"
)


@dataclass(frozen=True)
class EvalProtocol:
    """The reference's validation transform at one recipe scale (linear probe and kNN features).

    solo-learn evaluates with the same ``T_val`` in ``main_linear.py`` (validation) and
    ``main_knn.py`` (train and validation features).

    Attributes:
        crop: the side the reference evaluates at (its ``CenterCrop``, or the image side where
            it does not crop).
        resize: the shorter side it resizes to before the crop (``Resize(int)``: shorter side,
            bilinear, antialiased on PIL images); equal to ``crop`` where it does not resize.
        mean: per-channel normalisation mean of the reference's ``T_val``.
        std: per-channel normalisation std of the reference's ``T_val``. divssl normalises a
            run's evaluation inputs with the run's own ``augment.mean`` / ``augment.std`` (the
            statistics it was pretrained with; see each row's note).
        source: repository, file and key the values were read from.
        note: how divssl applies it (other sizes, values not honoured).
    """

    crop: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str
    note: str = ""


_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # timm IMAGENET_DEFAULT_*
_CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))
# solo-learn normalises CIFAR pretraining views with pretrain_dataloader.py MEANS_N_STD
# ["cifar10"] std (0.2470, 0.2435, 0.2616) (the cifar recipe's augment.std) and evaluates with
# T_val's std cut to (0.247, 0.243, 0.261); divssl evaluates with the run's statistics.
_CIFAR_NORM_NOTE = (
    "normalised with the run's augment.mean / augment.std, the statistics it was pretrained "
    "with (cifar recipe: solo-learn's pretraining MEANS_N_STD['cifar10'], std (0.2470, 0.2435, "
    "0.2616); T_val's std above is the same cut to 3 decimals, < 0.3% apart)"
)
_IMAGENET_NORM_NOTE = "normalised with the run's augment.mean / augment.std (recipe: as T_val)"
_DINO_NOTE = (
    "bilinear as solo-learn (the paper's code); facebookresearch/dino eval_knn.py and "
    "eval_linear.py use the same geometry with bicubic (Resize(256, interpolation=3))"
)
# Recipe scale -> the reference's validation transform (recipes: divssl.pretrain.recipes).
EVAL_PROTOCOLS: dict[str, EvalProtocol] = {
    "cifar": EvalProtocol(
        crop=32,  # CIFAR images are 32 x 32 and used whole
        resize=32,  # no Resize in T_val
        mean=_CIFAR_STATS[0],
        std=_CIFAR_STATS[1],
        source=f"{_SOLO_T_VAL} cifar_pipeline['T_val']: ToTensor, Normalize (no Resize/Crop)",
        note="at S px: shorter side to S, centre S x S (the whole image for square sources); "
        + _CIFAR_NORM_NOTE,
    ),
    "imagenet100": EvalProtocol(
        crop=224,  # transforms.CenterCrop(224)
        resize=256,  # transforms.Resize(256), "resize shorter"
        mean=_IMAGENET_STATS[0],
        std=_IMAGENET_STATS[1],
        source=f"{_SOLO_T_VAL} imagenet_pipeline['T_val']: Resize(256), CenterCrop(224)",
        note="at S px: shorter side to round(S * 256 / 224), centre S x S; "
        + f"{_IMAGENET_NORM_NOTE}; {_DINO_NOTE}",
    ),
    "imagenet": EvalProtocol(
        crop=224,  # transforms.CenterCrop(224)
        resize=256,  # transforms.Resize(256)
        mean=_IMAGENET_STATS[0],
        std=_IMAGENET_STATS[1],
        source=f"{_SOLO_T_VAL} imagenet_pipeline['T_val']: Resize(256), CenterCrop(224)",
        note="at S px: shorter side to round(S * 256 / 224), centre S x S; "
        + "normalised with the run's augment.mean / augment.std (official repositories' "
        + f"statistics, e.g. none for SimCLR, std 0.228 for SwAV); {_DINO_NOTE}",
    ),
    "small": EvalProtocol(
        crop=32,
        resize=32,
        mean=_CIFAR_STATS[0],
        std=_CIFAR_STATS[1],
        source="divssl.pretrain.recipes.data: recipe small = cifar rows (solo-learn cifar T_val)",
        note="as cifar; " + _CIFAR_NORM_NOTE,
    ),
}


@dataclass(frozen=True)
class EvalGeometry:
    """The resolved evaluation transform of one run: geometry and normalisation.

    Attributes:
        recipe: the recipe scale it comes from (a key of :data:`EVAL_PROTOCOLS`).
        resize: shorter side the image is resized to.
        crop: side of the centre crop (the model's input side S).
        norm: the input normalisation (the run's ``augment.mean`` / ``augment.std``).
    """

    recipe: str
    resize: int
    crop: int
    norm: Normalization = IMAGENET_NORM


def eval_geometry(
    image_size: int, recipe: str | None = None, norm: Normalization = IMAGENET_NORM
) -> EvalGeometry:
    """The evaluation geometry of a run: its recipe scale's reference transform at ``image_size``.

    The reference's ratio of resize to crop is kept at other sizes: ``resize = round(S *
    resize_ref / crop_ref)`` (256/224 for the ImageNet scales, 1 for CIFAR), ``crop = S``.

    Args:
        image_size: the model's input side S.
        recipe: the run's recipe (``cifar``, ``imagenet100``, ``imagenet``, ``small``);
            ``None`` or ``auto`` picks it from ``image_size`` as pretraining does.
        norm: the run's normalisation (:func:`run_eval_geometry` reads it from the run's
            config); ImageNet statistics by default, as every run before ``augment.mean``.

    Raises:
        ConfigError: unknown recipe or a non-positive size.
    """
    from divssl.pretrain.recipes import pick_recipe

    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ConfigError("image_size", f"must be a positive integer, got {image_size!r}")
    name = pick_recipe(recipe or "auto", image_size)
    ref = EVAL_PROTOCOLS[name]
    return EvalGeometry(name, round(image_size * ref.resize / ref.crop), image_size, norm)


def run_eval_geometry(run_config: dict[str, Any], image_size: int | None = None) -> EvalGeometry:
    """The evaluation transform of a run from its ``config.yaml`` (as a dict).

    Its recipe scale's geometry (``recipe``; absent: picked from the size) and its pretraining
    statistics (``augment.mean`` / ``augment.std``; run dirs written before these keys: ImageNet
    statistics, which they were pretrained with).

    Args:
        run_config: the run's resolved config; ``{}`` for an encoder without a run.
        image_size: S; defaults to the run's ``image_size``.

    Raises:
        ConfigError: no image size, an unknown recipe or malformed statistics.
    """
    size = image_size if image_size is not None else run_config.get("image_size")
    if size is None:
        raise ConfigError("image_size", "the run config names no image_size")
    recipe = run_config.get("recipe")
    return eval_geometry(
        int(size), str(recipe) if recipe is not None else None, run_normalization(run_config)
    )


def eval_pixels(images: torch.Tensor, geometry: EvalGeometry) -> torch.Tensor:
    """The evaluation geometry without normalisation: ``Resize(resize)`` (shorter side,
    bilinear, antialiased) then ``CenterCrop(crop)``, as [0, 1] intensities.

    Uses torchvision's own ``resize``/``center_crop`` on the uint8 images (output side lengths
    and crop offsets as the reference's transforms compute them; rounded to uint8 after the
    resize, as the reference's PIL resize is).

    Args:
        images: (B, 3, H, W) uint8 images.
        geometry: from :func:`eval_geometry` / :func:`run_eval_geometry`.

    Returns:
        (B, 3, crop, crop) float32 in [0, 1].
    """
    from torchvision.transforms.v2 import functional as TF

    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) uint8 images, got {images.dtype} {images.shape}")
    if min(images.shape[-2:]) != geometry.resize:
        images = TF.resize(images, geometry.resize, antialias=True)
    images = TF.center_crop(images, [geometry.crop, geometry.crop])
    return images.to(torch.float32).div_(255.0)


def eval_transform(images: torch.Tensor, geometry: EvalGeometry) -> torch.Tensor:
    """The deterministic evaluation transform: :func:`eval_pixels`, then normalisation with
    ``geometry.norm`` (:func:`divssl.pretrain.augment.normalize`).

    Args:
        images: (B, 3, H, W) uint8 images.
        geometry: from :func:`eval_geometry` / :func:`run_eval_geometry`.

    Returns:
        (B, 3, crop, crop) float32 normalised images.
    """
    return normalize(eval_pixels(images, geometry), geometry.norm)


# ----------------------------------------------------------------------------------- decoding


def decode_size(image_size: int, recipe: str | None = None) -> int:
    """Side the pool is decoded at so that :func:`eval_transform` needs no second resize.

    The shorter side is resized to :func:`eval_geometry`'s ``resize`` (PIL bilinear, the
    reference's own resize) and the centre square kept; :func:`eval_transform` then only takes
    the centre crop. At the references' sizes (32 px CIFAR, 224 px from 256) this is their
    transform pixel for pixel; where ``resize - crop`` is not a multiple of 4 the two-stage
    centre crop can sit one pixel from the one-stage one (torchvision rounds each offset half to
    even).
    """
    return eval_geometry(image_size, recipe).resize


def _decode_split(
    task: Task,
    split: str,
    image_size: int,
    decode_cache: str,
    workers: int,
    recipe: str | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decoded images (N', s, s, 3) uint8, the pool's own labels (N',) and corrupt keys."""
    from divssl.data.cache import load_array_pool

    if decode_cache not in DECODE_CACHES:
        raise unknown_choice("decode_cache", decode_cache, DECODE_CACHES)
    arr, stats = load_array_pool(
        task.pool(split), decode_size(image_size, recipe), cache=decode_cache, workers=workers
    )
    if arr.labels is None:
        raise ConfigError(f"task.{split}", "decoded pool lost its labels")
    return arr.images, np.asarray(arr.labels, dtype=np.int64), list(stats.corrupt)


def load_split_images(
    task: Task,
    split: str,
    image_size: int,
    decode_cache: str = "memory",
    workers: int = 0,
    recipe: str | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode a task split once into uint8 images at :func:`decode_size`.

    Args:
        task: the task.
        split: split name.
        image_size: the model's input side S.
        decode_cache: ``memory`` or ``mmap``.
        workers: decode processes.
        recipe: the run's recipe (see :func:`eval_geometry`); ``None``: picked from S.

    Returns:
        images (N', s, s, 3) uint8, labels (N',) int64 in the task's class ids, and the keys of
        corrupt samples that were skipped.
    """
    images, labels, corrupt = _decode_split(task, split, image_size, decode_cache, workers, recipe)
    return images, task.align_labels(split, labels), corrupt


# ----------------------------------------------------------------------------------- extraction


def forward_batches(
    model: nn.Module,
    images: np.ndarray,
    image_size: int,
    device: torch.device,
    batch_size: int = 256,
    recipe: str | None = None,
    norm: Normalization = IMAGENET_NORM,
) -> np.ndarray:
    """Run ``model`` over uint8 images with the eval transform, in eval mode, without gradients.

    Args:
        model: maps (B, 3, S, S) to (B, F).
        images: (N, H, W, 3) uint8 array (may be memory-mapped).
        image_size: S.
        device: compute device (the model is moved there).
        batch_size: images per forward pass.
        recipe: the run's recipe (see :func:`eval_geometry`); ``None``: picked from S.
        norm: the run's normalisation (:func:`divssl.pretrain.augment.run_normalization`).

    Returns:
        (N, F) float32 outputs on the CPU.
    """
    geometry = eval_geometry(image_size, recipe, norm)
    if batch_size < 1:
        raise ConfigError("batch_size", f"must be >= 1, got {batch_size}")
    model.to(device)
    outs: list[np.ndarray] = []
    with eval_mode(model), torch.inference_mode(), autocast(device):
        for start in range(0, len(images), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
            x = eval_transform(chunk.to(device).permute(0, 3, 1, 2), geometry)
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


def encoder_recipe(encoder: Encoder) -> str | None:
    """The recipe of the encoder's run (``config.yaml``), ``None`` without one (picked from S)."""
    recipe = encoder.run_config.get("recipe")
    return str(recipe) if recipe is not None else None


def encoder_geometry(encoder: Encoder) -> EvalGeometry:
    """The evaluation transform of an encoder: its run's (:func:`run_eval_geometry`)."""
    return run_eval_geometry(encoder.run_config, encoder.image_size)


def feature_cache_key(encoder: Encoder, pool_manifest: str, device: torch.device) -> str:
    """Key of a split's features: encoder identity, pool manifest, transform and precision."""
    from divssl.cache import cache_key

    geometry = encoder_geometry(encoder)
    transform = {
        "name": "eval_transform",
        "image_size": encoder.image_size,
        "recipe_scale": geometry.recipe,
        "resize": geometry.resize,
        "crop": geometry.crop,
        "decode_size": geometry.resize,
        "mean": list(geometry.norm.mean),
        "std": list(geometry.norm.std),
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
        recipe = encoder_recipe(encoder)
        images, labels, corrupt = _decode_split(
            task, split, encoder.image_size, decode_cache, workers, recipe
        )
        feats = forward_batches(
            encoder.model, images, encoder.image_size, device, batch_size, recipe,
            run_normalization(encoder.run_config),
        )  # fmt: skip
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
