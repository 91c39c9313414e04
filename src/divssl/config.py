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
from pydantic import BaseModel, ConfigDict, ValidationError

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
    """Optimizer; unset values take the method's defaults (``Method.optim_defaults``)."""

    name: Literal["lars", "sgd", "adamw"] | None = None
    base_lr: float | None = None  # per 256 images, scaled linearly with the global batch
    weight_decay: float | None = None  # start value of the weight-decay schedule
    final_weight_decay: float | None = None  # cosine target (DINO 0.4); None keeps it constant
    warmup_fraction: float | None = None  # fraction of total steps with linear LR warm-up
    final_lr_fraction: float = 0.0  # cosine LR ends at base_lr * this
    momentum: float = 0.9  # SGD/LARS momentum (SimCLR, BYOL, solo-learn)
    lars_eta: float = 0.02  # LARS trust coefficient (solo-learn default)
    grad_clip: float | None = None  # max global grad norm (DINO uses 3.0 on ViTs)


class AugmentConfig(_Section):
    """View generation on the training device."""

    preset: str | None = None  # None: the method's preset (see `divssl.augment.PRESETS`)
    n_local_crops: int = 0  # multi-crop for DINO/SwAV (0: two global crops only)
    local_size: int | None = None  # side of local crops (default ~ image_size * 96/224)


class SeedsConfig(_Section):
    """Separate seeds; unset ones derive from the top-level ``seed``."""

    init: int | None = None  # weight initialisation
    order: int | None = None  # sample order of the budgeted stream
    augment: int | None = None  # augmentation randomness


class Config(_Section):
    """A pretraining run. Keys are dotted on the command line: ``budget.images=50000``."""

    method: str = "simclr"
    backbone: str = "convnet_tiny"
    cifar_stem: bool = False  # ResNet 3x3/1 stem without max-pool for small images
    method_args: dict[str, Any] = {}  # the method's hyperparameters (its `Config` model)
    data: DataConfig = DataConfig()
    subset: SubsetConfig = SubsetConfig()
    budget: BudgetConfig = BudgetConfig(images=50_000)
    batch_size: int = 256  # global batch (all ranks together)
    image_size: int = 16  # side of the global views in pixels
    seed: int = 0
    seeds: SeedsConfig = SeedsConfig()
    optim: OptimConfig = OptimConfig()
    augment: AugmentConfig = AugmentConfig()
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
        if getattr(cfg, name) < 1:
            raise ConfigError(name, f"must be >= 1, got {getattr(cfg, name)}")
    bad_threads = isinstance(cfg.threads, bool) or not isinstance(cfg.threads, int)
    if cfg.threads != "auto" and (bad_threads or cfg.threads < 1):
        raise ConfigError("threads", f"must be 'auto' or an integer >= 1, got {cfg.threads!r}")
    if cfg.peak_flops is not None and cfg.peak_flops <= 0:
        raise ConfigError("peak_flops", f"must be > 0 FLOP/s, got {cfg.peak_flops}")
    if cfg.augment.preset is not None and cfg.augment.preset not in PRESETS:
        raise ConfigError("augment.preset", f"unknown value {cfg.augment.preset!r}", PRESETS)
    if cfg.augment.n_local_crops < 0:
        raise ConfigError("augment.n_local_crops", "must be >= 0")
    if cfg.augment.n_local_crops > 0 and not method_cls.supports_local_crops:
        multi = [m for m in method_names() if get_method(m).supports_local_crops]
        raise ConfigError(
            "augment.n_local_crops", f"{cfg.method} takes two views; multi-crop needs", multi
        )


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain dict of the resolved config (what ``config.yaml`` holds)."""
    return cfg.model_dump(mode="json")
