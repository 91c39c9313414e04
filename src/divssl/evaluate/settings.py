"""Evaluation settings validated once, for the ``divssl eval`` CLI and study specs alike.

Each evaluation kind (kNN, linear probe, fine-tuning) has one pydantic model here whose field
types carry the valid ranges. ``divssl eval`` builds the model from its options and
``divssl.study.spec`` embeds the same models (``KnnEval`` subclasses :class:`KnnSettings`, ...),
so a value the CLI refuses is refused by a study too, with the same message. Non-finite floats
(``nan``, ``inf``) are refused everywhere. Errors become :class:`~divssl.errors.ConfigError`
naming the dotted field and the valid range (exit code 2 in the CLI).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class EvalCommon(_Settings):
    """Fields every evaluation shares.

    Attributes:
        n_boot: bootstrap resamples per interval.
        level: interval coverage in (0, 1).
        eval_seed: seed of label-fraction subsets, validation carves and bootstraps.
    """

    n_boot: BootCount = 1000
    level: Fraction01 = 0.95
    eval_seed: Seed = 0


class KnnSettings(EvalCommon):
    """Weighted kNN on frozen features (``divssl.evaluate.run_knn``)."""

    k: Annotated[list[Count], Field(min_length=1)] = [20, 200]
    temperature: Positive = 0.07
    fractions: Annotated[list[Percent], Field(min_length=1)] = [100.0]
    feature_batch_size: Count = 256


class LinearSettings(EvalCommon):
    """Linear probe on frozen features or images (``divssl.evaluate.run_linear``)."""

    fractions: Annotated[list[Percent], Field(min_length=1)] = [100.0]
    protocol: Literal["cached", "sgd"] = "cached"
    solver: Literal["lbfgs", "sgd"] = "lbfgs"
    weight_decays: Annotated[list[NonNegative], Field(min_length=1)] | None = None
    lrs: Annotated[list[Positive], Field(min_length=1)] | None = None
    val_fraction: Fraction01 = 0.1
    epochs: Count = 100
    batch_size: Count = 256
    max_iter: Count = 1000
    feature_batch_size: Count = 256

    @model_validator(mode="after")
    def _lbfgs_needs_decay(self) -> LinearSettings:
        solver = "sgd" if self.protocol == "sgd" else self.solver
        if solver == "lbfgs" and self.weight_decays and min(self.weight_decays) <= 0:
            raise ValueError("weight_decays: L-BFGS needs every weight decay > 0")
        return self


class FinetuneSettings(EvalCommon):
    """Full fine-tuning with ID/OOD evaluation points (``divssl.evaluate.run_finetune``)."""

    epochs: Count = 12
    batch_size: Annotated[int, Field(ge=2)] = 64  # BatchNorm needs two images per step
    base_lr: Positive = 0.01  # per 256 images, scaled linearly with the batch
    weight_decay: NonNegative = 1e-4
    momentum: Fraction01Closed = 0.9
    warmup_fraction: Fraction01Closed = 0.0
    eval_points: Count = 5
    scratch_seeds: list[Seed] = []


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
