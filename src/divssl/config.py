"""Layered pretraining config: typed defaults, then a YAML file, then ``KEY=VALUE`` overrides.

Every key is validated before any compute starts; errors name the dotted field and, for
registries, the valid choices (:class:`divssl.errors.ConfigError`, exit code 2 in the CLI). The
resolved config is written into the run dir as ``config.yaml`` and later commands read it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from divssl.errors import ConfigError

DEFAULT_POOL = "world:classes=10:per_class=1000:size=16:seed=0"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Section):
    """Where pretraining images come from."""

    pool: str = DEFAULT_POOL  # pool spec, `name:key=value:...` (see `divssl data inspect`)
    composition: list[dict[str, Any]] | None = None  # parts of B ∪ A (replaces `pool` when set)
    task: str | None = None  # downstream task spec: its classes define `in`/`out` class priors
    cache: Literal["memory", "mmap"] = "memory"  # decoded uint8 cache for random-access pools
    workers: int = 0  # decoding processes (0: in the main process)


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

    # "recipe": the views of the run's recipe; a name of `divssl.augment.PRESETS` replaces them.
    # Single keys (augment.view2.solarize_p=0.1) override either.
    preset: str = "recipe"
    view1: ViewConfig = ViewConfig()  # first global view (the only one for supervised)
    view2: ViewConfig = ViewConfig()  # second global view
    local: ViewConfig = ViewConfig()  # every local crop (multi-crop for DINO/SwAV)
    n_local_crops: int | None = None  # multi-crop for DINO/SwAV (0: two global crops only)
    local_size: int | None = None  # side of local crops (default ~ image_size * 96/224)


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
    recipe: str = "auto"  # auto | cifar | imagenet100 | imagenet (`divssl recipes`)
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
    # how `recipe` was chosen ("auto: image_size N" or "given"); set by resolve_config, not saved
    _recipe_picked: str = PrivateAttr(default="given")

    def seed_for(self, kind: Literal["init", "order", "augment"]) -> int:
        """The seed of one random stream; unset ones are offsets of ``seed``."""
        value = getattr(self.seeds, kind)
        offsets = {"init": 0, "order": 1, "augment": 2}
        return int(value) if value is not None else self.seed * 1000 + offsets[kind]


def _field_names(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _check_keys(tree: dict[str, Any], model: type[BaseModel], prefix: str = "") -> None:
    """Reject unknown keys, naming the dotted field and the valid keys at that level."""
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if key not in model.model_fields:
            raise ConfigError(dotted, "unknown key", _field_names(model))
        annotation = model.model_fields[key].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if not isinstance(value, dict):
                raise ConfigError(dotted, f"expected a mapping, got {value!r}")
            _check_keys(value, annotation, dotted + ".")


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(dotted, f"{part!r} is not a section")
        node = child
    node[parts[-1]] = value


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
    return key.strip(), value


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "method_args":
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _validation_to_config_error(exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "config"
    choices = None
    ctx = err.get("ctx") or {}
    if "expected" in ctx:
        choices = [
            c.strip().strip("'") for c in str(ctx["expected"]).replace(" or ", ",").split(",")
        ]
    return ConfigError(field, err["msg"], choices)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build a validated :class:`Config` from defaults, an optional YAML file and overrides.

    Raises:
        ConfigError: unknown key, wrong type, bad choice or an inconsistent combination.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("--config", f"no such file: {p}")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError("--config", "the config file must hold a mapping")
        tree = _deep_merge(tree, loaded)
    for item in overrides or []:
        key, value = parse_override(item)
        _set_dotted(tree, key, value)
    _check_keys(tree, Config)
    try:
        cfg = Config.model_validate(tree)
    except ValidationError as exc:
        raise _validation_to_config_error(exc) from None
    validate_static(cfg)
    cfg = resolve_config(cfg)
    validate_static(cfg)
    return cfg


def validate_static(cfg: Config) -> None:
    """Checks that need no data: registries, ranges, exclusive options."""
    from divssl.augment import PRESETS
    from divssl.backbones import BACKBONES
    from divssl.methods import get_method, method_names

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
    for name in ("batch_size", "image_size", "log_every", "checkpoint_every"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise ConfigError(name, f"must be >= 1, got {getattr(cfg, name)}")
    if cfg.augment.preset != "recipe" and cfg.augment.preset not in PRESETS:
        raise ConfigError(
            "augment.preset", f"unknown value {cfg.augment.preset!r}", ["recipe", *PRESETS]
        )
    n_local = cfg.augment.n_local_crops or 0
    if n_local < 0:
        raise ConfigError("augment.n_local_crops", "must be >= 0")
    if n_local > 0 and not method_cls.supports_local_crops:
        multi = [m for m in method_names() if get_method(m).supports_local_crops]
        raise ConfigError(
            "augment.n_local_crops", f"{cfg.method} takes two views; multi-crop needs", multi
        )


# ------------------------------------------------------------------------------ recipes


def _get_dotted(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node[part]
    return node


def _preset_values(cfg: Config) -> dict[str, Any]:
    """View values of a named preset (``augment.preset`` other than ``recipe``)."""
    from divssl.augment import get_preset, view_values

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
    from divssl.methods import get_method
    from divssl.recipes import pick_recipe, recipe_values

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
        elif _get_dotted(tree, key) is None:
            _set_dotted(tree, key, value)
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
    keys += ["augment.n_local_crops", "augment.local_size"]
    return [k for k in keys if _get_dotted(tree, k) is None]


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain dict of the resolved config (what ``config.yaml`` holds)."""
    return cfg.model_dump(mode="json")
