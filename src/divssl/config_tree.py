"""Config trees: nested dicts addressed by dotted keys, and the errors that name those keys.

One home for what the pretraining config (``divssl.pretrain.config``), the study planner
(``divssl.study.plan``) and the study spec (``divssl.study.spec``) all do with trees:

* :func:`get_dotted` / :func:`set_dotted` read and write ``a.b.c`` in a nested dict;
* :func:`flatten` turns a tree into ``{"a.b.c": value}`` and :func:`nest` does the reverse
  (sections given twice are merged);
* :func:`merge` lays one tree over another (sections merge, values replace);
* :func:`check_keys` / :func:`has_key` compare a tree or a dotted key with a pydantic model;
* :func:`validation_error` and :func:`reprefix` turn pydantic errors into
  :class:`~divssl.errors.ConfigError` naming the dotted field (exit code 2 in the CLI).

Keys listed in ``opaque`` (``method_args``: a method's own settings, checked by the method's
model) hold plain dicts that are replaced whole, never merged or expanded.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from divssl.errors import ConfigError

OPAQUE = ("method_args",)  # dict values taken whole (a method's settings model checks them)
_MISSING = object()


def get_dotted(tree: Mapping[str, Any], dotted: str, default: Any = _MISSING) -> Any:
    """The value at ``a.b.c``.

    Args:
        tree: a nested dict.
        dotted: the key path.
        default: returned when a part is missing (without it a missing part raises ``KeyError``).
    """
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is _MISSING:
                raise KeyError(dotted)
            return default
        node = node[part]
    return node


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, creating sections (the value is copied).

    Raises:
        ConfigError: a part of the path holds a value, not a section.
    """
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(dotted, f"{part!r} is not a section")
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and empty dicts stay values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def merge(
    base: Mapping[str, Any], extra: Mapping[str, Any], opaque: Iterable[str] = OPAQUE
) -> dict[str, Any]:
    """``extra`` laid over ``base`` (a new tree; neither input changes).

    Sections present in both merge key by key; any other value of ``extra`` replaces the base's,
    and so do the dicts of ``opaque`` keys.
    """
    skip = tuple(opaque)
    out = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict) and key not in skip:
            out[key] = merge(out[key], value, skip)
        else:
            out[key] = copy.deepcopy(value)
    return out


def nest(
    flat: Mapping[str, Any], field: str = "config", opaque: Iterable[str] = OPAQUE
) -> dict[str, Any]:
    """Expand dotted keys (``subset.fraction: 0.1``) into nested dicts, merging sections.

    Keys may mix both forms (``{"subset": {"size": 5}, "subset.seed": 1}``); later keys win.

    Raises:
        ConfigError: naming ``field.key`` when a dotted key runs through a value.
    """
    skip = tuple(opaque)
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = str(key).split(".")
        if isinstance(value, Mapping) and parts[-1] not in skip:
            value = nest(value, f"{field}.{key}", skip)
        layer: Any = value
        for part in reversed(parts):
            layer = {part: layer}
        try:
            _check_sections(out, parts)
        except ConfigError as exc:
            raise ConfigError(f"{field}.{key}", str(exc)[len(exc.field) + 2 :]) from None
        out = merge(out, layer, skip)
    return out


def _check_sections(tree: Mapping[str, Any], parts: list[str]) -> None:
    node: Any = tree
    for part in parts[:-1]:
        if not isinstance(node, Mapping) or part not in node:
            return
        node = node[part]
        if not isinstance(node, Mapping):
            raise ConfigError(part, f"{part!r} is not a section")


# --------------------------------------------------------------------------- trees vs models


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation names (``Model`` or ``Model | None``), else ``None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    members = [a for a in getattr(annotation, "__args__", ()) if isinstance(a, type)]
    models = [a for a in members if issubclass(a, BaseModel)]
    return models[0] if models else None


def check_keys(tree: Mapping[str, Any], model: type[BaseModel], prefix: str = "") -> None:
    """Reject unknown keys, naming the dotted field and the valid keys at that level.

    Raises:
        ConfigError: an unknown key, or a value where the model has a section.
    """
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if key not in model.model_fields:
            raise ConfigError(dotted, "unknown key", list(model.model_fields))
        annotation = model.model_fields[key].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if not isinstance(value, Mapping):
                raise ConfigError(dotted, f"expected a mapping, got {value!r}")
            check_keys(value, annotation, dotted + ".")


def has_key(model: type[BaseModel], dotted: str, opaque: Iterable[str] = OPAQUE) -> bool:
    """Whether ``dotted`` names a field of ``model`` (any key below an ``opaque`` field counts:
    its own model checks it later)."""
    skip = tuple(opaque)
    current: type[BaseModel] | None = model
    for part in dotted.split("."):
        if current is None or part not in current.model_fields:
            return False
        if part in skip:
            return True
        current = _model_of(current.model_fields[part].annotation)
    return True


# ------------------------------------------------------------------------------------ errors


def loc_to_field(
    loc: Iterable[Any], prefix: str = "", union_tags: Iterable[str] = (), root: str = "config"
) -> str:
    """A pydantic error location as a dotted field (``evaluations[0].k``; ``root`` if empty)."""
    tags = set(union_tags)
    out = prefix
    for part in loc:
        if part in tags:
            continue  # pydantic names the union member it tried; the user never wrote it
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or root


def fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Field names of the (nested) model that ``loc`` points into, for 'unknown key' errors."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or not (
            isinstance(current, type) and issubclass(current, BaseModel)
        ):
            continue
        info = current.model_fields.get(str(part))
        if info is None:
            return None
        current = _model_of(info.annotation) or info.annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return None


def validation_error(
    exc: ValidationError,
    model: type[BaseModel],
    prefix: str = "",
    union_tags: Iterable[str] = (),
    root: str = "config",
) -> ConfigError:
    """The first pydantic error as a :class:`ConfigError` naming the dotted field.

    Args:
        exc: pydantic's error.
        model: the model that was validated (lists the valid keys of an unknown one).
        prefix: put in front of the field (``evaluations[2]``).
        union_tags: location parts that name union members (``str``, ``int``, a model name);
            they are dropped from the field, and among a union's errors the deepest is reported.
        root: the field named when the error is about the whole tree.
    """
    tags = tuple(union_tags)
    # With unions pydantic reports one error per member; the deepest one is the user's mistake.
    err = max(exc.errors(), key=lambda e: len([p for p in e["loc"] if p not in tags]))
    loc = tuple(p for p in err["loc"] if p not in tags)
    fld = loc_to_field(loc, prefix, root=root)
    if err["type"] == "extra_forbidden":
        return ConfigError(fld, "unknown key", fields_at(model, loc))
    ctx = err.get("ctx") or {}
    choices = None
    if "expected" in ctx:
        choices = [
            c.strip().strip("'") for c in str(ctx["expected"]).replace(" or ", ",").split(",")
        ]
    return ConfigError(fld, err["msg"], choices)


def reprefix(exc: ConfigError, prefix: str) -> ConfigError:
    """The same error with ``prefix`` put in front of its field."""
    text = str(exc)[len(exc.field) + 2 :]
    if exc.choices is not None:
        text = text[: text.rfind(" (valid choices: ")]
    return ConfigError(f"{prefix}.{exc.field}" if prefix else exc.field, text, exc.choices)
