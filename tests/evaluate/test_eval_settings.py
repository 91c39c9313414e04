"""One settings model per evaluation kind: ``divssl eval`` and study specs accept and refuse the
same values, because the study's ``KnnEval``/``LinearEval``/``FinetuneEval`` are the settings
models of :mod:`divssl.evaluate.settings` plus a task."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from divssl.errors import ConfigError
from divssl.evaluate.cli import app
from divssl.evaluate.settings import (
    FinetuneSettings,
    KnnSettings,
    LinearSettings,
    validate_settings,
)
from divssl.study.spec import FinetuneEval, KnnEval, LinearEval, study_from_tree

runner = CliRunner()


def test_study_evaluations_are_the_shared_settings_models():
    assert issubclass(KnnEval, KnnSettings)
    assert issubclass(LinearEval, LinearSettings)
    assert issubclass(FinetuneEval, FinetuneSettings)
    for study_model, settings in (
        (KnnEval, KnnSettings),
        (LinearEval, LinearSettings),
        (FinetuneEval, FinetuneSettings),
    ):
        assert set(settings.model_fields) <= set(study_model.model_fields)


# (kind, CLI option, CLI value, study key, study value, settings field): each row is refused
# by the CLI, by a study, and by the settings model alike.
BAD = [
    ("knn", "--k", "-1", "k", [-1], "k"),
    ("knn", "--k", "0", "k", [0], "k"),
    ("knn", "--temperature", "0", "temperature", 0.0, "temperature"),
    ("knn", "--fractions", "150", "fractions", [150], "fractions"),
    ("knn", "--n-boot", "0", "n_boot", 0, "n_boot"),
    ("knn", "--level", "1", "level", 1.0, "level"),
    ("linear", "--fractions", "150", "fractions", [150], "fractions"),
    ("linear", "--fractions", "0", "fractions", [0], "fractions"),
    ("linear", "--weight-decays", "-1", "weight_decays", [-1.0], "weight_decays"),
    ("linear", "--lrs", "0", "lrs", [0.0], "lrs"),
    ("linear", "--val-fraction", "1", "val_fraction", 1.0, "val_fraction"),
    ("linear", "--max-iter", "0", "max_iter", 0, "max_iter"),
    ("finetune", "--lr", "-1", "base_lr", -1.0, "base_lr"),
    ("finetune", "--batch-size", "1", "batch_size", 1, "batch_size"),
    ("finetune", "--warmup-fraction", "1", "warmup_fraction", 1.0, "warmup_fraction"),
    ("finetune", "--eval-points", "0", "eval_points", 0, "eval_points"),
    ("finetune", "--eval-seed", "-1", "eval_seed", -1, "eval_seed"),
]
MODELS = {"knn": KnnSettings, "linear": LinearSettings, "finetune": FinetuneSettings}


@pytest.mark.parametrize(("kind", "option", "cli_value", "key", "value", "field"), BAD)
def test_cli_and_study_refuse_the_same_values(tmp_path, kind, option, cli_value, key, value, field):
    from tests.study.conftest import tiny_tree

    result = runner.invoke(
        app, [kind, "--task", "world:classes=2", "--out", str(tmp_path / "o"), option, cli_value]
    )
    assert isinstance(result.exception, ConfigError), result.output
    assert result.exception.field == field
    assert not (tmp_path / "o").exists()

    tree = tiny_tree(evaluations=[{"kind": kind, "task": "wt", key: value}])
    with pytest.raises(ConfigError) as info:
        study_from_tree(tree)
    assert info.value.field.startswith(f"evaluations[0].{key}")

    with pytest.raises(ConfigError) as info:
        validate_settings(MODELS[kind], {key: value})
    assert info.value.field == field


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused(bad):
    with pytest.raises(ConfigError, match="finite") as info:
        validate_settings(KnnSettings, {"temperature": bad})
    assert info.value.field == "temperature"


def test_list_item_position_is_said_and_valid_values_pass():
    with pytest.raises(ConfigError, match="item 1: .*greater than or equal to 1, got -3"):
        validate_settings(KnnSettings, {"k": [20, -3]})
    ok = validate_settings(LinearSettings, {"fractions": [1, 100], "weight_decays": [1e-4]})
    assert ok.fractions == [1.0, 100.0] and ok.max_iter == 1000
    sgd = validate_settings(LinearSettings, {"protocol": "sgd", "weight_decays": [0.0]})
    assert sgd.weight_decays == [0.0]  # zero decay is fine without L-BFGS


def test_cli_and_study_defaults_are_the_models():
    # one declaration: the defaults the issue found disagreeing (max_iter 300 vs 1000, fractions
    # 1,5,10,50,100 vs [100]) now come from LinearSettings for the CLI and for studies alike
    from divssl.options import model_parameters

    cli = {p.name: p.default for p in model_parameters(LinearSettings)}
    study = LinearEval(task="t")
    assert cli["max_iter"] == study.max_iter == LinearSettings().max_iter == 1000
    assert cli["fractions"] is None and study.fractions == LinearSettings().fractions == [100.0]
    assert KnnEval(task="t").k == KnnSettings().k == [20, 200]


def test_keyword_convenience_builds_the_models():
    from divssl.evaluate.settings import RunOptions, split_settings

    settings, options = split_settings(
        KnnSettings, None, None, {"ks": [5], "temperature": 0.1, "device": "cpu"}
    )
    assert settings == KnnSettings(k=[5], temperature=0.1) and options.device == "cpu"
    given = KnnEval(task="t", k=[7])  # a study's evaluation is a settings model plus its task
    same, _ = split_settings(KnnSettings, given, None, {})
    assert same is given
    updated, _ = split_settings(KnnSettings, given, RunOptions(workers=2), {"n_boot": 5})
    assert updated.k == [7] and updated.n_boot == 5
    with pytest.raises(ConfigError) as info:
        split_settings(KnnSettings, None, None, {"kk": [5]})
    assert info.value.field == "kk" and "k" in (info.value.choices or [])
    with pytest.raises(ConfigError) as info:
        split_settings(KnnSettings, None, None, {"workers": -1})
    assert info.value.field == "workers"


def test_fit_configs_extend_the_shared_settings():
    from divssl.evaluate.finetune import FinetuneConfig
    from divssl.evaluate.linear import ProbeConfig

    probe = ProbeConfig.from_settings(LinearSettings(eval_seed=3, max_iter=50, protocol="sgd"))
    assert (probe.seed, probe.max_iter, probe.solver, probe.momentum) == (3, 50, "sgd", 0.9)
    with pytest.raises(ConfigError) as info:
        FinetuneConfig(batch_size=1)
    assert info.value.field == "batch_size"
    with pytest.raises(ConfigError) as info:
        ProbeConfig(threads=0)
    assert info.value.field == "threads"
