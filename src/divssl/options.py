"""Typer options generated from a pydantic settings model, so a stage declares its settings once.

:func:`model_parameters` turns each field of a settings model into a typer option whose name,
default and help come from the field (``feature_batch_size`` -> ``--feature-batch-size``; the
field's ``json_schema_extra={"cli": "--lr"}`` renames it, ``{"cli": False}`` leaves it out).
:func:`settings_command` wraps a function that receives the validated models, so a CLI command is
``parse into the model, call the stage``. List fields are repeatable, comma-separated options
(``--k 20,200`` or ``--k 20 --k 200``); their items are validated by the model, which names the
field in its error.

typer reads a command's parameters from its signature; a generated signature
(``__signature__``) is its documented way of building options at run time.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, TypeVar

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from divssl.evaluate.settings import validate_settings

M = TypeVar("M", bound=BaseModel)


def _cli_extra(info: FieldInfo, key: str = "cli") -> Any:
    extra = info.json_schema_extra
    return extra.get(key) if isinstance(extra, dict) else None


def _splits(info: FieldInfo) -> bool:
    """List items are split on commas unless the field says ``{"split": False}`` (pool specs
    may hold commas, e.g. brace expansions of shard URLs)."""
    return _cli_extra(info, "split") is not False


def cli_fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """The fields of ``model`` that the command line offers (``cli: False`` ones left out)."""
    return {n: f for n, f in model.model_fields.items() if _cli_extra(f) is not False}


def option_name(name: str, info: FieldInfo) -> str:
    """``--feature-batch-size`` for ``feature_batch_size`` (or the field's ``cli`` name)."""
    extra = _cli_extra(info)
    return str(extra) if isinstance(extra, str) else "--" + name.replace("_", "-")


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; anything else -> ``(annotation, False)``."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else annotation), True
    return annotation, False


def _base_type(annotation: Any) -> Any:
    """The plain type under ``Annotated[...]`` metadata."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(_base_type(annotation)) in (list, tuple)


def _list_text(values: Sequence[Any]) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _parameter(name: str, info: FieldInfo) -> inspect.Parameter:
    """One typer option for one field: its type, default and help."""
    inner, optional = _strip_optional(_base_type(info.annotation))
    required = info.is_required()
    default: Any = (
        inspect.Parameter.empty if required else info.get_default(call_default_factory=True)
    )
    helptext = info.description or name
    flag = option_name(name, info)
    kind: Any
    if _is_list(inner):
        kind = list[str] if required else list[str] | None
        helptext += " (repeatable" + (", comma-separated" if _splits(info) else "")
        if default is not inspect.Parameter.empty:
            if default:
                helptext += f"; default {_list_text(default)}"
            default = None
        helptext += ")"
    elif typing.get_origin(_base_type(inner)) is Literal:
        choices = [str(c) for c in typing.get_args(_base_type(inner))]
        kind = str
        helptext += f" ({', '.join(choices)})"
    else:
        base = _base_type(inner)
        kind = base | None if optional else base
        if base is bool:
            stem = flag[2:]
            flag = f"--{stem}/--no-{stem}"
    annotation = Annotated[kind, typer.Option(flag, help=helptext)]
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


def model_parameters(model: type[BaseModel]) -> list[inspect.Parameter]:
    """Typer options (as signature parameters) of every command-line field of ``model``."""
    return [_parameter(name, info) for name, info in cli_fields(model).items()]


def parse_into(model: type[M], values: dict[str, Any]) -> M:
    """Command-line values -> the validated model (comma-separated lists split into items).

    Raises:
        ConfigError: naming the field (``fractions``), with the item's position in the message.
    """
    fields = model.model_fields
    data: dict[str, Any] = {}
    for name, value in values.items():
        info = fields[name]
        inner, _ = _strip_optional(_base_type(info.annotation))
        if _is_list(inner):
            if value is None:
                continue  # the model's default
            items = [str(v) for v in value]
            if _splits(info):
                items = [part.strip() for v in items for part in v.split(",") if part.strip()]
            value = items
        data[name] = value
    return validate_settings(model, data)


def settings_command(
    models: Sequence[type[BaseModel]],
    leading: Sequence[inspect.Parameter],
    body: Callable[..., None],
    doc: str,
) -> Callable[..., None]:
    """A typer command whose options are ``leading`` plus every field of ``models``.

    Args:
        models: settings models; the command receives one validated instance of each, in order.
        leading: hand-written options that belong to no model (``--task``, ``--run``).
        body: ``body(*instances, **leading values)``.
        doc: the command's help text.

    Raises:
        ValueError: two models (or a model and ``leading``) declare the same option.
    """
    params = list(leading)
    owner: dict[str, type[BaseModel]] = {}
    for model in models:
        for param in model_parameters(model):
            if param.name in owner or any(p.name == param.name for p in leading):
                raise ValueError(f"option {param.name!r} is declared twice")
            owner[param.name] = model
            params.append(param)

    def command(**kwargs: Any) -> None:
        instances = []
        for model in models:
            mine = {k: v for k, v in kwargs.items() if owner.get(k) is model}
            instances.append(parse_into(model, mine))
        rest = {k: v for k, v in kwargs.items() if k not in owner}
        body(*instances, **rest)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = doc
    command.__name__ = body.__name__
    return command
