"""Dotted keys over nested dicts: get/set/flatten/nest/merge, key checks and error fields."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from divssl import config_tree as ct
from divssl.errors import ConfigError


def test_set_and_get_dotted_create_sections_and_copy_values():
    tree: dict = {}
    value = {"x": [1, 2]}
    ct.set_dotted(tree, "a.b.c", value)
    value["x"].append(3)  # the tree holds a copy
    assert tree == {"a": {"b": {"c": {"x": [1, 2]}}}}
    assert ct.get_dotted(tree, "a.b.c.x") == [1, 2]
    assert ct.get_dotted(tree, "a.nope", None) is None
    with pytest.raises(KeyError):
        ct.get_dotted(tree, "a.nope")
    ct.set_dotted(tree, "v", 1)
    with pytest.raises(ConfigError) as info:
        ct.set_dotted(tree, "v.w", 2)
    assert info.value.field == "v.w" and "not a section" in str(info.value)


def test_flatten_and_nest_are_inverse_on_plain_trees():
    tree = {"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}, "f": None}
    flat = ct.flatten(tree)
    assert flat == {"a.b": 1, "a.c.d": [1, 2], "e": {}, "f": None}
    assert ct.nest(flat) == tree


def test_nest_merges_sections_and_keeps_opaque_dicts_whole():
    flat = {
        "subset": {"size": 5},
        "subset.seed": 1,
        "method_args": {"temperature.x": 0.5},  # a method's own keys: not expanded
    }
    assert ct.nest(flat) == {
        "subset": {"size": 5, "seed": 1},
        "method_args": {"temperature.x": 0.5},
    }
    with pytest.raises(ConfigError) as info:
        ct.nest({"seed": 1, "seed.init": 2}, "base")
    assert info.value.field == "base.seed.init"


def test_merge_is_deep_pure_and_replaces_opaque_sections():
    base = {"optim": {"lr": 1, "wd": 2}, "method_args": {"a": 1, "b": 2}, "k": [1]}
    extra = {"optim": {"wd": 3}, "method_args": {"a": 5}, "k": [2]}
    out = ct.merge(base, extra)
    assert out == {"optim": {"lr": 1, "wd": 3}, "method_args": {"a": 5}, "k": [2]}
    assert base["optim"] == {"lr": 1, "wd": 2}  # inputs unchanged
    out["optim"]["lr"] = 9
    assert base["optim"]["lr"] == 1  # no shared sub-dicts


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = 1
    mode: str = "a"


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inner: _Inner = _Inner()
    maybe: _Inner | None = None
    method_args: dict = {}
    n: int | str = 0


def test_check_keys_names_the_field_and_valid_keys():
    ct.check_keys({"inner": {"size": 2}, "n": 1}, _Outer)
    with pytest.raises(ConfigError) as info:
        ct.check_keys({"inner": {"sise": 2}}, _Outer)
    assert info.value.field == "inner.sise" and info.value.choices == ["mode", "size"]
    with pytest.raises(ConfigError, match="expected a mapping"):
        ct.check_keys({"inner": 3}, _Outer)


def test_has_key_walks_models_and_stops_at_opaque_fields():
    assert ct.has_key(_Outer, "inner.size")
    assert ct.has_key(_Outer, "maybe.mode")  # through `Model | None`
    assert ct.has_key(_Outer, "method_args.anything.below")
    assert not ct.has_key(_Outer, "inner.nope")
    assert not ct.has_key(_Outer, "n.deeper")


def test_validation_error_names_the_dotted_field_without_union_tags():
    with pytest.raises(ValidationError) as info:
        _Outer.model_validate({"inner": {"size": "x"}})
    err = ct.validation_error(info.value, _Outer, prefix="grid[0]")
    assert err.field == "grid[0].inner.size"
    with pytest.raises(ValidationError) as info:
        _Outer.model_validate({"n": [1]})
    assert ct.validation_error(info.value, _Outer, union_tags=("int", "str")).field == "n"
    with pytest.raises(ValidationError) as info:
        _Outer.model_validate({"inner": {"extra": 1}})
    err = ct.validation_error(info.value, _Outer)
    assert err.field == "inner.extra" and err.choices == ["mode", "size"]


def test_reprefix_keeps_message_and_choices():
    exc = ConfigError("k", "unknown value 'x'", ["a", "b"])
    out = ct.reprefix(exc, "evaluations[1]")
    assert out.field == "evaluations[1].k" and out.choices == ["a", "b"]
    assert str(out) == "evaluations[1].k: unknown value 'x' (valid choices: a, b)"
    assert str(ct.reprefix(ConfigError("k", "bad"), "")) == "k: bad"
