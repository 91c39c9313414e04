"""Layered pretraining config: typed defaults, then a YAML file, then ``KEY=VALUE`` overrides.

Every key is validated before any compute starts; errors name the dotted field and, for
registries, the valid choices (:class:`divssl.errors.ConfigError`, exit code 2 in the CLI). The
resolved config is written into the run dir as ``config.yaml`` and later commands read it.
"""

from __future__ import annotations

import math
import re
import string
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from divssl.config_tree import check_keys, get_dotted, merge, set_dotted, validation_error
from divssl.errors import ConfigError
from divssl.pretrain.budget import MAX_BUDGET_IMAGES

DEFAULT_POOL = "world:classes=10:per_class=1000:size=16:seed=0"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # nan/inf never valid


class DataConfig(_Section):
    """Where pretraining images come from."""

    pool: str = DEFAULT_POOL  # pool spec, `name:key=value:...` (see `divssl data inspect`)
    composition: list[dict[str, Any]] | None = None  # parts of B ∪ A (replaces `pool` when set)
    task: str | None = None  # downstream task spec: its classes define `in`/`out` class priors
    cache: Literal["memory", "mmap"] = "memory"  # decoded uint8 cache for random-access pools
    workers: int = 0  # decoding processes (0: in the main process)
    # Shorter side (px) of the stored whole images that views are cropped from (aspect kept,
    # never upsampled); None: image_size for views <= 64 px, else image_size * 256/224.
    store_size: int | None = None
    # per-image decode limit, PIL's default (= divssl.data.cache.DEFAULT_MAX_PIXELS, tested);
    # larger images count as corrupt and are never decoded
    max_pixels: int = 89_478_485


class SubsetConfig(_Section):
    """The N unique images: a prefix of a saved, seeded ordering (nested across N)."""

    size: int | None = None  # N as a count
    fraction: float | None = None  # N as a fraction of the pool (default 1.0 if size unset)
    balanced: bool = False  # class-balanced nested prefixes (needs labels)
    seed: int = 0  # seed of the ordering (which images form the subset)
    ordering: str | None = None  # path of a saved ordering file to reuse (else one is made)


class BudgetConfig(_Section):
    """The compute budget: C images (compute-normalized) or E epochs (epoch-normalized)."""

    images: int | None = None  # C, source images processed; each image counts once
    epochs: float | None = None  # E; C = round(N * E) (the contrasting epoch-normalized mode)


class OptimConfig(_Section):
    """Optimizer; unset values are filled from the run's recipe (``divssl recipes``)."""

    name: Literal["lars", "sgd", "adamw"] | None = None
    base_lr: float | None = None  # per 256 images, scaled linearly with the global batch
    weight_decay: float | None = None  # start value of the weight-decay schedule
    final_weight_decay: float | None = None  # cosine target (DINO ViT 0.4); = wd: constant
    warmup_epochs: float | None = None  # linear LR warm-up, epochs (see schedule.units)
    warmup_start_lr: float | None = None  # absolute LR at the first warm-up step (solo-learn 3e-5)
    final_lr_fraction: float | None = None  # cosine LR ends at peak LR * this
    momentum: float | None = None  # SGD/LARS momentum
    lars_eta: float | None = None  # LARS trust coefficient (solo-learn 0.02, official repos 1e-3)
    lars_clip: bool | None = None  # LARC clipping min(ratio / lr, 1) (solo-learn clip_lr)
    exclude_bias_norm: bool | None = None  # biases and norms: no decay and no LARS adaptation
    grad_clip: float | None = None  # max global grad norm; 0 = off (DINO repo 3.0)


class ViewConfig(_Section):
    """One view's augmentation (unset values come from the recipe); probabilities in [0, 1]."""

    scale_min: float | None = None  # RandomResizedCrop area fraction, lower end
    scale_max: float | None = None  # RandomResizedCrop area fraction, upper end
    flip_p: float | None = None  # horizontal flip
    jitter_p: float | None = None  # colour jitter applied
    brightness: float | None = None  # jitter strengths (torchvision ColorJitter)
    contrast: float | None = None
    saturation: float | None = None
    hue: float | None = None
    gray_p: float | None = None  # grayscale
    blur_p: float | None = None  # Gaussian blur, sigma in [0.1, 2] px
    solarize_p: float | None = None  # solarization at 0.5


class AugmentConfig(_Section):
    """View generation on the training device: two global views and optional local crops."""

    # "recipe": the views of the run's recipe; a name of `divssl.pretrain.augment.PRESETS` replaces
    # them.
    # Single keys (augment.view2.solarize_p=0.1) override either.
    preset: str = "recipe"
    view1: ViewConfig = ViewConfig()  # first global view (the only one for supervised)
    view2: ViewConfig = ViewConfig()  # second global view
    local: ViewConfig = ViewConfig()  # every local crop (multi-crop for DINO/SwAV)
    n_local_crops: int | None = None  # multi-crop for DINO/SwAV (0: two global crops only)
    local_size: int | None = None  # side of local crops (default ~ image_size * 96/224)
    # Input normalisation (x - mean) / std of [0, 1] RGB, in pretraining views and in every
    # evaluation of the run (probes, fine-tuning, run:DIR distances); from the recipe.
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None  # each > 0


class ScheduleConfig(_Section):
    """How epoch-valued settings (warm-ups, freezing, queue start) map onto steps."""

    # epochs: epochs of the subset (the run's max_epochs is E = C / N), as the papers did;
    # steps: the fraction value / reference_epochs of the run's steps (equal C, equal schedule).
    units: Literal["steps", "epochs"] = "steps"
    reference_epochs: float | None = None  # the reference's max_epochs (from the recipe)


class SeedsConfig(_Section):
    """Separate seeds; unset ones derive from the top-level ``seed``."""

    init: int | None = None  # weight initialisation
    order: int | None = None  # sample order of the budgeted stream
    augment: int | None = None  # augmentation randomness


class Config(_Section):
    """A pretraining run. Keys are dotted on the command line: ``budget.images=50000``."""

    method: str = "simclr"
    recipe: str = "auto"  # auto | cifar | imagenet100 | imagenet | small (`divssl recipes`)
    backbone: str = "convnet_tiny"
    cifar_stem: bool = False  # ResNet 3x3/1 stem without max-pool for small images
    method_args: dict[str, Any] = {}  # the method's hyperparameters (its `Config` model)
    data: DataConfig = DataConfig()
    subset: SubsetConfig = SubsetConfig()
    budget: BudgetConfig = BudgetConfig(images=50_000)
    batch_size: int | None = None  # global batch (all ranks together); recipe's by default
    image_size: int = 16  # side of the global views in pixels
    seed: int = 0
    seeds: SeedsConfig = SeedsConfig()
    optim: OptimConfig = OptimConfig()
    augment: AugmentConfig = AugmentConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    sync_batchnorm: bool | None = None  # SyncBatchNorm under DDP (recipes: on)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, else fp32
    channels_last: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    deterministic: bool = False  # torch.use_deterministic_algorithms (bitwise resume on CPU)
    log_every: int = 20  # steps between metrics.jsonl lines
    checkpoint_every: int = 200  # steps between checkpoints (and one at the end)
    out: str = "runs/{method}-{backbone}-C{budget}-N{n}-s{seed}"  # run dir (format fields)
    tracking: Literal["none", "tensorboard", "mlflow"] = "tensorboard"
    mlflow_uri: str | None = None  # tracking store; default sqlite:///<run dir>/../mlflow.db
    threads: int | str = "auto"  # training intra-op threads: auto | N >= 1 (see divssl.threads)
    compile: bool = False  # torch.compile the backbone (the step's FLOPs), in place
    peak_flops: float | None = None  # device peak FLOP/s for MFU (None: known-GPU table)
    # how `recipe` was chosen ("auto: image_size N" or "given"); set by resolve_config, not saved
    _recipe_picked: str = PrivateAttr(default="given")

    def seed_for(self, kind: Literal["init", "order", "augment"]) -> int:
        """The seed of one random stream; unset ones are offsets of ``seed``."""
        value = getattr(self.seeds, kind)
        offsets = {"init": 0, "order": 1, "augment": 2}
        return int(value) if value is not None else self.seed * 1000 + offsets[kind]


def _field_names(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def parse_override(item: str) -> tuple[str, Any]:
    """Split ``KEY=VALUE``; the value is parsed as YAML (numbers, bools, lists, null)."""
    if "=" not in item:
        raise ConfigError(item, "overrides must look like KEY=VALUE")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and ":" in raw and key.endswith("pool"):
        value = raw  # pool specs contain ':' and stay strings
    if key.strip() == "out":
        value = raw  # a path template: `{method}` is a format field, not a YAML mapping
    return key.strip(), value


MAX_YAML_BYTES = 16 * 2**20  # a config or study file is text of a few KiB


def read_yaml_file(path: str | Path, field: str) -> Any:
    """Read a YAML file safely: text only, ``yaml.safe_load`` (no ``!!python`` tags), bounded.

    Args:
        path: the file.
        field: what to name in errors (``--config``, ``study``).

    Raises:
        ConfigError: a missing, oversized, binary or non-YAML file, or one with unsafe tags.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(field, f"no such file: {p}")
    if p.stat().st_size > MAX_YAML_BYTES:
        raise ConfigError(field, f"{p} is larger than {MAX_YAML_BYTES // 2**20} MiB; not a config")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(field, f"{p} is not UTF-8 text (a binary file?)") from None
    if "\x00" in text:
        raise ConfigError(field, f"{p} holds NUL bytes (a binary file?)")
    try:
        return yaml.safe_load(text)
    except yaml.constructor.ConstructorError as exc:
        problem = f"{p} holds a YAML tag that is not allowed: {exc.problem}"
        raise ConfigError(field, problem) from None
    except yaml.YAMLError as exc:
        raise ConfigError(field, f"{p} is not valid YAML: {exc}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build a validated :class:`Config` from defaults, an optional YAML file and overrides.

    Raises:
        ConfigError: unknown key, wrong type, bad choice or an inconsistent combination.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        loaded = read_yaml_file(path, "--config") or {}
        if not isinstance(loaded, dict):
            raise ConfigError("--config", "the config file must hold a mapping")
        tree = merge(tree, loaded)
    for item in overrides or []:
        key, value = parse_override(item)
        set_dotted(tree, key, value)
    return config_from_tree(tree)


def config_from_tree(tree: dict[str, Any]) -> Config:
    """Validate and resolve a nested config tree held in memory (what a config file holds).

    ``divssl pretrain --config FILE KEY=VALUE`` and every grid point of a study go through this
    one function, so a study accepts exactly what a single run accepts (same defaults, same
    errors).

    Raises:
        ConfigError: unknown key, wrong type, bad choice or an inconsistent combination.
    """
    check_keys(tree, Config)
    try:
        cfg = Config.model_validate(tree)
    except ValidationError as exc:
        raise _validation_to_config_error(exc) from None
    validate_static(cfg)
    cfg = resolve_config(cfg)
    validate_static(cfg)
    return cfg


def _validation_to_config_error(exc: ValidationError) -> ConfigError:
    # `threads: int | str`: pydantic names the union member it tried (threads.int); drop it.
    return validation_error(exc, Config, union_tags=("int", "str"))


def validate_static(cfg: Config) -> None:
    """Checks that need no data: registries, ranges, exclusive options."""
    from divssl.pretrain.augment import PRESETS
    from divssl.pretrain.backbones import BACKBONES
    from divssl.pretrain.methods import get_method, method_names

    method_cls = get_method(cfg.method)
    if cfg.backbone not in BACKBONES:
        raise ConfigError("backbone", f"unknown value {cfg.backbone!r}", BACKBONES)
    try:
        method_cls.Config(**cfg.method_args)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(
            f"method_args.{key}", err["msg"], _field_names(method_cls.Config)
        ) from None
    if cfg.subset.size is not None and cfg.subset.fraction is not None:
        raise ConfigError("subset", "give subset.size or subset.fraction, not both")
    if cfg.subset.size is not None and cfg.subset.size < 1:
        raise ConfigError("subset.size", f"N must be >= 1, got {cfg.subset.size}")
    if cfg.subset.fraction is not None and not 0 < cfg.subset.fraction <= 1:
        raise ConfigError("subset.fraction", f"must be in (0, 1], got {cfg.subset.fraction}")
    if (cfg.budget.images is None) == (cfg.budget.epochs is None):
        raise ConfigError("budget", "give exactly one of budget.images (C) or budget.epochs")
    if cfg.budget.images is not None and cfg.budget.images < 1:
        raise ConfigError("budget.images", f"C must be >= 1, got {cfg.budget.images}")
    if cfg.budget.epochs is not None and cfg.budget.epochs <= 0:
        raise ConfigError("budget.epochs", f"must be > 0, got {cfg.budget.epochs}")
    if cfg.data.store_size is not None and cfg.data.store_size < 1:
        raise ConfigError("data.store_size", f"must be >= 1, got {cfg.data.store_size}")
    for name in ("batch_size", "image_size", "log_every", "checkpoint_every"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise ConfigError(name, f"must be >= 1, got {getattr(cfg, name)}")
    threads = cfg.threads
    bad_threads = isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    if threads != "auto" and bad_threads:
        raise ConfigError("threads", f"must be 'auto' or an integer >= 1, got {cfg.threads!r}")
    if cfg.peak_flops is not None and cfg.peak_flops <= 0:
        raise ConfigError("peak_flops", f"must be > 0 FLOP/s, got {cfg.peak_flops}")
    _check_ranges(cfg)
    check_device(cfg.device)
    check_out(cfg.out)
    if cfg.augment.preset != "recipe" and cfg.augment.preset not in PRESETS:
        raise ConfigError(
            "augment.preset", f"unknown value {cfg.augment.preset!r}", ["recipe", *PRESETS]
        )
    if cfg.augment.mean is not None or cfg.augment.std is not None:
        from divssl.pretrain.augment import run_normalization

        run_normalization(config_to_dict(cfg))  # three finite numbers each, std > 0
    n_local = cfg.augment.n_local_crops or 0
    if n_local < 0:
        raise ConfigError("augment.n_local_crops", "must be >= 0")
    if n_local > 0 and not method_cls.supports_local_crops:
        multi = [m for m in method_names() if get_method(m).supports_local_crops]
        raise ConfigError(
            "augment.n_local_crops", f"{cfg.method} takes two views; multi-crop needs", multi
        )


# ------------------------------------------------------------------------- ranges of values
# Bounds of numeric keys, shared with study specs (``divssl.study.spec`` checks grid values with
# :func:`check_value`). Each bound says why it is there; the message of a refused value quotes it.
# MAX_BUDGET_IMAGES (1e12, from divssl.pretrain.budget): ~500x the largest published SSL runs
MAX_IMAGE_SIZE = 1024  # views are B x 3 x S^2 floats on the device; SSL recipes stop at 518 px
MAX_BATCH_SIZE = 2**16  # 2x the largest SSL batch in the literature (32768, LARS studies)
MAX_SEED = 2**32 - 1  # numpy's legacy seed range; every seed stream fits torch's 64 bits

# dotted key -> (low, high, low inclusive, high inclusive, reason); None: unbounded side
RANGES: dict[str, tuple[float | None, float | None, bool, bool, str]] = {
    "budget.images": (1, MAX_BUDGET_IMAGES, True, True, "C above 1e12 would run for centuries"),
    "budget.epochs": (0, None, False, True, "E = C / N"),
    "subset.size": (1, None, True, True, "N counts images"),
    "subset.fraction": (0, 1, False, True, "a share of the pool"),
    "subset.seed": (0, MAX_SEED, True, True, "numpy seed range"),
    "batch_size": (1, MAX_BATCH_SIZE, True, True, "2**16 is 2x the largest SSL batch published"),
    "image_size": (1, MAX_IMAGE_SIZE, True, True, "views are B x 3 x S^2 floats on the device"),
    "seed": (0, MAX_SEED, True, True, "numpy seed range"),
    "seeds.init": (0, MAX_SEED, True, True, "numpy seed range"),
    "seeds.order": (0, MAX_SEED, True, True, "numpy seed range"),
    "seeds.augment": (0, MAX_SEED, True, True, "numpy seed range"),
    "log_every": (1, None, True, True, "steps between log lines"),
    "checkpoint_every": (1, None, True, True, "steps between checkpoints"),
    "data.workers": (0, 256, True, True, "decoding processes"),
    "data.max_pixels": (1, None, True, True, "pixels per image; larger ones count as corrupt"),
    "optim.base_lr": (0, None, False, True, "a learning rate is positive"),
    "optim.weight_decay": (0, None, True, True, "a decay is non-negative"),
    "optim.final_weight_decay": (0, None, True, True, "a decay is non-negative"),
    "optim.warmup_epochs": (0, None, True, True, "epochs of linear LR warm-up"),
    "optim.warmup_start_lr": (0, None, True, True, "an absolute learning rate"),
    "optim.final_lr_fraction": (0, 1, True, True, "a share of base_lr"),
    "optim.momentum": (0, 1, True, False, "momentum >= 1 diverges"),
    "optim.lars_eta": (0, None, False, True, "LARS trust coefficient is positive"),
    "optim.grad_clip": (0, None, True, True, "a gradient-norm bound; 0 = off"),
    "augment.n_local_crops": (0, 32, True, True, "multi-crop recipes use <= 10 local crops"),
    "augment.local_size": (1, MAX_IMAGE_SIZE, True, True, "like image_size"),
}
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda|cuda:\d+")
OUT_FIELDS = ("method", "backbone", "budget", "n", "seed")  # format fields of `out`


def _range_text(low: float | None, high: float | None, low_in: bool, high_in: bool) -> str:
    def num(x: float) -> str:
        return str(int(x)) if float(x).is_integer() and abs(x) < 2**53 else f"{x:g}"

    left = "-inf" if low is None else num(low)
    right = "inf" if high is None else num(high)
    opening = "[" if low_in and low is not None else "("
    closing = "]" if high_in and high is not None else ")"
    return f"{opening}{left}, {right}{closing}"


def check_value(dotted: str, value: Any) -> None:
    """Refuse a value of a bounded key that lies outside its range (see :data:`RANGES`).

    Raises:
        ConfigError: naming ``dotted``, the valid range and the reason of the bound.
    """
    if dotted not in RANGES or value is None or isinstance(value, bool):
        return
    if not isinstance(value, (int, float)):
        raise ConfigError(dotted, f"expected a number, got {value!r}")
    low, high, low_in, high_in, why = RANGES[dotted]
    if not math.isfinite(value):
        raise ConfigError(dotted, f"must be a finite number, got {value!r}")
    too_low = low is not None and (value < low if low_in else value <= low)
    too_high = high is not None and (value > high if high_in else value >= high)
    if too_low or too_high:
        bounds = _range_text(low, high, low_in, high_in)
        raise ConfigError(dotted, f"must lie in {bounds} ({why}), got {value!r}")


def _check_ranges(cfg: Config) -> None:
    tree = config_to_dict(cfg)
    for dotted in RANGES:
        node: Any = tree
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        check_value(dotted, node)


def check_device(device: str) -> None:
    """The form of ``device`` (whether it exists is checked when the run starts)."""
    if not isinstance(device, str) or not DEVICE_PATTERN.fullmatch(device):
        raise ConfigError("device", f"unknown device {device!r}", ("auto", "cpu", "cuda", "cuda:N"))


def check_out(out: str) -> None:
    """``out`` must be a non-empty path template using only :data:`OUT_FIELDS`."""
    if not isinstance(out, str) or not out.strip():
        raise ConfigError("out", "give a run dir (empty would write into the current directory)")
    if "\x00" in out:
        raise ConfigError("out", "a path cannot hold a NUL byte")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(out) if f is not None]
    except ValueError as exc:
        raise ConfigError("out", f"bad format string {out!r}: {exc}") from None
    for name in fields:  # plain names only: no `{method.attr}` / `{n[0]}` lookups
        if name not in OUT_FIELDS:
            raise ConfigError("out", f"unknown format field {{{name}}}", OUT_FIELDS)
    try:
        path = out.format(**{name: 0 for name in OUT_FIELDS})
    except ValueError as exc:  # a bad format spec such as {seed:q}
        raise ConfigError("out", f"bad format string {out!r}: {exc}") from None
    if Path(path).resolve() == Path.cwd().resolve() or Path(path).name in ("", ".", ".."):
        raise ConfigError("out", f"{out!r} names the current or a parent directory, not a run dir")


# ------------------------------------------------------------------------------ recipes


def _preset_values(cfg: Config) -> dict[str, Any]:
    """View values of a named preset (``augment.preset`` other than ``recipe``)."""
    from divssl.pretrain.augment import get_preset, view_values

    preset = get_preset(cfg.augment.preset, cfg.image_size, cfg.augment.n_local_crops or 0)
    glob = preset.global_views
    values = {f"augment.view1.{k}": v for k, v in view_values(glob[0]).items()}
    second = glob[1] if len(glob) > 1 else glob[0]
    values.update({f"augment.view2.{k}": v for k, v in view_values(second).items()})
    if preset.local_views:
        values.update(
            {f"augment.local.{k}": v for k, v in view_values(preset.local_views[0]).items()}
        )
    return values


def resolve_config(cfg: Config) -> Config:
    """Fill every unset value from the run's recipe; values the user set are kept.

    Order: the recipe (``recipe=auto`` picks one by ``image_size``), then the views of a named
    ``augment.preset`` (if not ``recipe``), then the user's keys. The result holds no ``None``
    among the recipe's keys, so ``config.yaml`` records every effective value and re-loading it
    gives the same run whatever later versions change in the recipes. Idempotent.

    Raises:
        ConfigError: unknown recipe or method, or a value the method's settings reject.
    """
    from divssl.pretrain.methods import get_method
    from divssl.pretrain.recipes import pick_recipe, recipe_values

    recipe = pick_recipe(cfg.recipe, cfg.image_size)
    values = recipe_values(recipe, cfg.method, cfg.backbone)
    if cfg.augment.preset != "recipe":
        values.update(_preset_values(cfg))
    tree = cfg.model_dump(mode="python")
    tree["recipe"] = recipe
    args = dict(tree["method_args"])
    for key, value in values.items():
        if key.startswith("method_args."):
            args.setdefault(key.removeprefix("method_args."), value)
        elif get_dotted(tree, key) is None:
            set_dotted(tree, key, value)
    aug = tree["augment"]
    for field, value in aug["view1"].items():  # views a method does not use: view1's values
        for view in ("view2", "local"):
            if aug[view][field] is None:
                aug[view][field] = value
    if aug["local_size"] is None:
        aug["local_size"] = max(8, round(cfg.image_size * 96 / 224))
    optim = tree["optim"]
    if optim["final_weight_decay"] is None:
        optim["final_weight_decay"] = optim["weight_decay"]
    method_cls = get_method(cfg.method)
    try:
        tree["method_args"] = method_cls.Config(**args).model_dump(mode="python")
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(
            f"method_args.{key}", err["msg"], _field_names(method_cls.Config)
        ) from None
    try:
        resolved = Config.model_validate(tree)
    except ValidationError as exc:
        raise _validation_to_config_error(exc) from None
    missing = unresolved_keys(resolved)
    if missing:
        raise ConfigError(missing[0], f"recipe {recipe!r} gives no value for {cfg.method}")
    picked = f"auto: image_size {cfg.image_size}" if cfg.recipe == "auto" else cfg._recipe_picked
    resolved._recipe_picked = picked
    return resolved


def unresolved_keys(cfg: Config) -> list[str]:
    """Dotted keys still ``None`` that a resolved config must hold (empty once resolved)."""
    tree = cfg.model_dump(mode="python")
    keys = ["batch_size", "sync_batchnorm", "schedule.reference_epochs"]
    keys += [f"optim.{k}" for k in tree["optim"]]
    keys += [f"augment.{v}.{k}" for v in ("view1", "view2", "local") for k in tree["augment"][v]]
    keys += ["augment.n_local_crops", "augment.local_size", "augment.mean", "augment.std"]
    return [k for k in keys if get_dotted(tree, k) is None]


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain dict of the resolved config (what ``config.yaml`` holds)."""
    return cfg.model_dump(mode="json")
