"""Layered config: defaults, YAML file, overrides; clear errors naming the field."""

import pytest

from divssl.errors import ConfigError
from divssl.pretrain.config import Config, load_config, parse_override


def test_defaults_validate():
    cfg = load_config()
    assert cfg.method == "simclr"
    assert cfg.budget.images == 50_000
    assert cfg.seed_for("init") != cfg.seed_for("order") != cfg.seed_for("augment")


def test_file_then_overrides(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("method: byol\nbudget:\n  images: 1000\nsubset:\n  fraction: 0.5\n")
    cfg = load_config(f, ["budget.images=2000", "data.pool=world:classes=4:size=16"])
    assert cfg.method == "byol"
    assert cfg.budget.images == 2000
    assert cfg.subset.fraction == 0.5
    assert cfg.data.pool == "world:classes=4:size=16"


def test_epoch_mode_drops_default_c():
    cfg = load_config(None, ["budget.epochs=3"])
    assert cfg.budget.images is None and cfg.budget.epochs == 3


@pytest.mark.parametrize(
    ("overrides", "field", "choice"),
    [
        (["bogus=1"], "bogus", "method"),
        (["subset.bogus=1"], "subset.bogus", "fraction"),
        (["method=simclrr"], "method", "byol"),
        (["backbone=resnet7"], "backbone", "resnet18"),
        (["precision=fp8"], "precision", "bf16"),
        (["method_args.nonsense=3"], "method_args.nonsense", None),
        (["budget.images=0"], "budget.images", None),
        (["subset.size=10", "subset.fraction=0.5"], "subset", None),
        (["augment.preset=weird"], "augment.preset", "byol"),
    ],
)
def test_bad_input_names_field_and_choices(overrides, field, choice):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert info.value.field == field
    if choice is not None:
        assert choice in str(info.value)


def test_every_config_key_is_read_somewhere():
    """A key that no module reads is dead: fail on it (DESIGN: every key is read somewhere)."""
    import pathlib

    src = "".join(
        p.read_text() for p in pathlib.Path("src/divssl").rglob("*.py") if p.name != "config.py"
    )

    def leaves(model, prefix=""):
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                yield from leaves(ann, prefix + name + ".")
            else:
                yield prefix + name, name

    unread = [d for d, leaf in leaves(Config) if f".{leaf}" not in src and f'"{leaf}"' not in src]
    assert unread == []


def test_parse_override_types():
    assert parse_override("a=3") == ("a", 3)
    assert parse_override("a=0.5") == ("a", 0.5)
    assert parse_override("a=true") == ("a", True)
    assert parse_override("data.pool=world:classes=3") == ("data.pool", "world:classes=3")
    with pytest.raises(ConfigError):
        parse_override("novalue")
