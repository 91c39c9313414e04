"""One settings model per evaluation kind: the single declaration of its fields and defaults.

Each evaluation kind (kNN, linear probe, fine-tuning) has one pydantic model here whose field
types carry the valid ranges and whose field descriptions are the help texts:

* ``divssl eval {knn,linear,finetune}`` generates its options from the model
  (:func:`divssl.options.model_parameters`) and parses into it;
* ``divssl.study.spec`` embeds the same models (``KnnEval`` subclasses :class:`KnnSettings`, ...);
* the Python functions (``run_knn``, ``run_linear``, ``run_finetune``) take the model (keyword
  arguments are a convenience that builds it, :func:`split_settings`);
* the linear probe's fitting settings (:class:`ProbeSettings`) are the base of
  ``divssl.evaluate.linear.ProbeConfig``.

So a value the CLI refuses is refused by a study and by the function too, with the same message,
and a default lives in exactly one place. :class:`RunOptions` holds what says where an
evaluation runs (encoder source, device, decode cache, output folder) but not what it measures,
so it is not part of a study evaluation's id. Non-finite floats (``nan``, ``inf``) are refused
everywhere. Errors become :class:`~divssl.errors.ConfigError` naming the dotted field and the
valid range (exit code 2 in the CLI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import JsonDict

from divssl.errors import ConfigError

# Ranges of the evaluation settings; the message of a refused value quotes the bound.
Percent = Annotated[float, Field(gt=0, le=100)]  # label percentage in (0, 100]
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Count = Annotated[int, Field(ge=1)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # numpy/torch seed range
Fraction01 = Annotated[float, Field(gt=0, lt=1)]  # open interval (0, 1)
Fraction01Closed = Annotated[float, Field(ge=0, lt=1)]  # [0, 1)
BootCount = Annotated[int, Field(ge=1, le=1_000_000)]  # resamples; 1e6 is ~100x the usual 1e4

# ``json_schema_extra`` keys read by the CLI generator (divssl.options): ``cli`` renames the
# option (``--lr`` for ``base_lr``) or, when False, keeps a field out of the CLI (study-only).
CLI_ONLY_IN_STUDIES: JsonDict = {"cli": False}


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class EvalCommon(_Settings):
    """Fields every evaluation shares.

    Attributes:
        n_boot: bootstrap resamples per interval.
        level: interval coverage in (0, 1).
        eval_seed: seed of label-fraction subsets, validation carves and bootstraps.
    """

    n_boot: BootCount = Field(1000, description="bootstrap resamples per interval")
    level: Fraction01 = Field(0.95, description="interval coverage")
    eval_seed: Seed = Field(
        0,
        description="seed of label subsets, validation carve, order/augmentation, bootstrap",
    )


class KnnSettings(EvalCommon):
    """Weighted kNN on frozen features (``divssl.evaluate.run_knn``).

    ``k`` also accepts the keyword ``ks`` (the Python function's former name).
    """

    k: Annotated[list[Count], Field(min_length=1)] = Field(
        [20, 200],  # Wu et al. (2018) / solo-learn's kNN callback use k = 20 and 200
        validation_alias=AliasChoices("k", "ks"),
        description="neighbour counts",
    )
    temperature: Positive = Field(0.07, description="vote temperature T")
    fractions: Annotated[list[Percent], Field(min_length=1)] = Field(
        [100.0], description="label percentages of the bank"
    )
    feature_batch_size: Count = Field(256, description="images per feature-extraction batch")


class ProbeSettings(_Settings):
    """How the linear probe is fitted (the base of ``divssl.evaluate.linear.ProbeConfig``)."""

    protocol: Literal["cached", "sgd"] = Field(
        "cached", description="cached (features) or sgd (augmented images)"
    )
    solver: Literal["lbfgs", "sgd"] = Field("lbfgs", description="lbfgs or sgd (cached protocol)")
    weight_decays: Annotated[list[NonNegative], Field(min_length=1)] | None = Field(
        None, description="lambda grid, e.g. 1e-6,1e-4,1e-2 (default per solver)"
    )
    lrs: Annotated[list[Positive], Field(min_length=1)] | None = Field(
        None, description="SGD LR grid per 256 images (default 0.1)"
    )
    val_fraction: Fraction01 = Field(0.1, description="validation share of each class")
    epochs: Count = Field(100, description="SGD epochs")  # solo-learn linear.yaml: max_epochs 100
    batch_size: Count = Field(256, description="SGD batch size")
    # warm-started solves of 10k x 512 features took 14-40 iterations; every lambda's
    # convergence is recorded in the results' ``fits``
    max_iter: Count = Field(1000, description="L-BFGS iteration cap per weight decay")
    standardize: bool = Field(
        True, description="standardise features with the fitting data's statistics"
    )

    @model_validator(mode="after")
    def _lbfgs_needs_decay(self) -> ProbeSettings:
        solver = "sgd" if self.protocol == "sgd" else self.solver
        if solver == "lbfgs" and self.weight_decays and min(self.weight_decays) <= 0:
            raise ValueError("weight_decays: L-BFGS needs every weight decay > 0")
        return self


class LinearSettings(EvalCommon, ProbeSettings):
    """Linear probe on frozen features or images (``divssl.evaluate.run_linear``)."""

    fractions: Annotated[list[Percent], Field(min_length=1)] = Field(
        [100.0], description="label percentages (the paper's Table 5: 1,5,10,50,100)"
    )
    feature_batch_size: Count = Field(256, description="images per feature-extraction batch")


class FinetuneFit(_Settings):
    """How a backbone is fine-tuned (the base of ``divssl.evaluate.finetune.FinetuneConfig``)."""

    epochs: Count = Field(12, description="passes over the train split")
    batch_size: Annotated[int, Field(ge=2)] = Field(
        64, description="images per step"
    )  # BatchNorm needs two images per step
    base_lr: Positive = Field(
        0.01, description="peak LR per 256 images", json_schema_extra={"cli": "--lr"}
    )  # scaled linearly with the batch
    weight_decay: NonNegative = Field(1e-4, description="L2 weight decay")
    momentum: Fraction01Closed = Field(0.9, description="SGD momentum")
    warmup_fraction: Fraction01Closed = Field(0.0, description="share of steps warming up")
    eval_points: Count = Field(5, description="ID/OOD evaluations through training")


class FinetuneSettings(EvalCommon, FinetuneFit):
    """Full fine-tuning with ID/OOD evaluation points (``divssl.evaluate.run_finetune``)."""

    scratch_seeds: list[Seed] = Field(
        [],
        description="seeds of from-scratch baselines (studies only)",
        json_schema_extra=CLI_ONLY_IN_STUDIES,
    )


class RunOptions(_Settings):
    """Where an evaluation runs: the encoder, the device, decoding and the results folder.

    These say nothing about what is measured, so a study's evaluation id leaves them out (a study
    sets them per job).
    """

    init: Literal["pretrained", "random"] = Field(
        "pretrained", description="pretrained (the run's backbone.pt) or random (seeded init)"
    )
    backbone: str | None = Field(None, description="backbone name for --init random")
    image_size: Count | None = Field(None, description="input side for --init random")
    cifar_stem: bool | None = Field(None, description="ResNet CIFAR stem (--init random)")
    seed: Seed = Field(0, description="initialisation seed of --init random")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    decode_cache: Literal["memory", "mmap"] = Field(
        "memory", description="decode cache: memory or mmap"
    )
    workers: Annotated[int, Field(ge=0)] = Field(0, description="decode processes")
    out_dir: Path | None = Field(
        None,
        description="results folder (default RUN/eval)",
        json_schema_extra={"cli": "--out"},
    )
    write: bool = Field(
        True, description="write the results JSON", json_schema_extra=CLI_ONLY_IN_STUDIES
    )

    def encoder_args(self) -> dict[str, Any]:
        """Keyword arguments of :func:`divssl.evaluate.features.load_encoder`."""
        return self.model_dump(include={"init", "backbone", "image_size", "cifar_stem", "seed"})


S = TypeVar("S", bound=BaseModel)


def settings_error(
    exc: ValidationError, prefix: str = "", items_in_field: bool = False
) -> ConfigError:
    """The first pydantic error as a :class:`ConfigError` naming the dotted field.

    Args:
        exc: the validation error.
        prefix: put in front of the field (``"evaluations[0]"`` in a study).
        items_in_field: name a list item as ``k[0]`` (a study's YAML list) rather than ``k``
            with the position in the message (a CLI option's comma-separated string).
    """
    err = exc.errors()[0]
    loc = err["loc"]
    msg = str(err["msg"])
    if not loc and msg.startswith("Value error, ") and ": " in msg:
        # a model-level rule names its field at the start of its message
        name, msg = msg[len("Value error, ") :].split(": ", 1)
        loc = (name,)
    # the field is the option's name; a list item's position goes into the message
    names = [str(part) for part in loc if not isinstance(part, int)]
    items = [part for part in loc if isinstance(part, int)]
    field = ".".join([prefix, *names] if prefix else names) or prefix or "settings"
    if items_in_field and items:
        field += "".join(f"[{i}]" for i in items)
        items = []
    if err["type"] == "extra_forbidden":
        return ConfigError(field, "unknown key")
    got = err.get("input")
    if isinstance(got, (int, float, str)):
        msg += f", got {got!r}"
    if items:
        msg = f"item {items[0]}: {msg}"
    return ConfigError(field, msg)


def validate_settings(model: type[S], values: dict[str, Any], prefix: str = "") -> S:
    """Build ``model`` from ``values`` or raise a :class:`ConfigError` naming the field."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise settings_error(exc, prefix) from None


def split_settings(
    model: type[S], settings: S | None, options: RunOptions | None, kwargs: dict[str, Any]
) -> tuple[S, RunOptions]:
    """The settings and run options of an evaluation call, built from keyword arguments.

    ``run_knn(run, task, k=[20], device="cpu")`` is a convenience for
    ``run_knn(run, task, KnnSettings(k=[20]), RunOptions(device="cpu"))``: each keyword goes to
    the model that declares it (a given model is updated with it) and is validated there.

    Raises:
        ConfigError: a keyword neither model declares, or a value out of range.
    """
    aliases = _aliases(model)
    mine = {
        aliases.get(k, k): v for k, v in kwargs.items() if k in aliases or k in model.model_fields
    }
    rest = {k: v for k, v in kwargs.items() if k not in aliases and k not in model.model_fields}
    unknown = sorted(set(rest) - set(RunOptions.model_fields))
    if unknown:
        raise ConfigError(
            unknown[0], "unknown keyword", sorted([*model.model_fields, *RunOptions.model_fields])
        )
    base = settings.model_dump(include=set(model.model_fields)) if settings is not None else {}
    built = validate_settings(model, {**base, **mine}) if mine or settings is None else settings
    opts = options.model_dump() if options is not None else {}
    run = validate_settings(RunOptions, {**opts, **rest}) if rest or options is None else options
    return built, run


def _aliases(model: type[BaseModel]) -> dict[str, str]:
    """Other accepted names of a model's fields -> the field name."""
    out: dict[str, str] = {}
    for name, info in model.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            out.update({str(c): name for c in alias.choices if c != name})
    return out
