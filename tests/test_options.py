"""CLI options generated from settings models: one declaration of names, defaults and ranges."""

from __future__ import annotations

import inspect
import typing

import pytest
import typer
from typer.testing import CliRunner

from divssl.distances.settings import DistanceSettings
from divssl.errors import ConfigError
from divssl.evaluate.settings import FinetuneSettings, KnnSettings, LinearSettings, RunOptions
from divssl.options import cli_fields, model_parameters, option_name, parse_into, settings_command

runner = CliRunner()


def _option(param: inspect.Parameter) -> typer.models.OptionInfo:
    (info,) = [
        m for m in typing.get_args(param.annotation)[1:] if isinstance(m, typer.models.OptionInfo)
    ]
    return info


@pytest.mark.parametrize("model", [KnnSettings, LinearSettings, FinetuneSettings, RunOptions])
def test_every_cli_field_is_an_option_with_the_models_default(model):
    params = {p.name: p for p in model_parameters(model)}
    assert set(params) == set(cli_fields(model))
    for name, param in params.items():
        info = model.model_fields[name]
        default = info.get_default(call_default_factory=True)
        if isinstance(default, list):  # lists: None on the command line means the model's default
            assert param.default is None
        else:
            assert param.default == default, name
        assert _option(param).help.startswith(info.description)


def test_renamed_and_study_only_fields():
    assert option_name("base_lr", FinetuneSettings.model_fields["base_lr"]) == "--lr"
    assert option_name("out_dir", RunOptions.model_fields["out_dir"]) == "--out"
    assert "scratch_seeds" not in cli_fields(FinetuneSettings)  # a study's from-scratch seeds
    assert "write" not in cli_fields(RunOptions)


def test_parse_into_splits_lists_and_keeps_model_defaults():
    knn = parse_into(KnnSettings, {"k": ["20,200", "5"], "fractions": None, "temperature": 0.1})
    assert knn.k == [20, 200, 5] and knn.fractions == [100.0] and knn.temperature == 0.1
    dist = parse_into(DistanceSettings, {"a": ["wds:urls=/x/{a,b}.tar"], "b": ["p"]})
    assert dist.a == ["wds:urls=/x/{a,b}.tar"]  # pool specs are never split on commas
    with pytest.raises(ConfigError) as err:
        parse_into(KnnSettings, {"k": ["20,x"]})
    assert err.value.field == "k" and "item 1" in str(err.value)


def test_a_generated_command_receives_validated_models():
    seen = []
    app = typer.Typer()
    app.command("go")(
        settings_command([KnnSettings, RunOptions], [], lambda s, o: seen.append((s, o)), "doc")
    )
    app.command("other")(lambda: None)  # two commands: typer keeps the sub-command names
    result = runner.invoke(
        app, ["go", "--k", "3", "--k", "7,9", "--device", "cpu", "--no-cifar-stem"]
    )
    assert result.exit_code == 0, result.output
    ((settings, options),) = seen
    assert settings == KnnSettings(k=[3, 7, 9])
    assert options == RunOptions(device="cpu", cifar_stem=False)
    bad = runner.invoke(app, ["go", "--level", "2"])
    assert isinstance(bad.exception, ConfigError) and bad.exception.field == "level"


def test_distance_settings_metrics_and_ranges():
    s = DistanceSettings(a=["x"], b=["y"], metric=["KID", "fid,kid"])
    assert s.metric == ["kid", "fid"] and s.extractor == "inception" and s.max_images == 50_000
    bad_values = [
        ({"metric": ["lpips"]}, "metric"),
        ({"max_images": 1}, "max_images"),
        ({"kid_subset_size": 1}, "kid_subset_size"),
        ({"a": []}, "a"),
    ]
    for bad, field in bad_values:
        with pytest.raises(ValueError, match=field):
            DistanceSettings(**{"a": ["x"], "b": ["y"], **bad})


def test_study_distances_are_the_cli_model():
    from divssl.study.spec import DistanceSpec

    assert issubclass(DistanceSpec, DistanceSettings)
    assert set(DistanceSpec.model_fields) == set(DistanceSettings.model_fields)


def test_an_option_declared_twice_is_refused():
    with pytest.raises(ValueError, match="declared twice"):
        settings_command([KnnSettings, LinearSettings], [], lambda *a: None, "doc")
