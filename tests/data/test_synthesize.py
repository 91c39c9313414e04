"""Diffusion generation with a tiny randomly initialised Stable Diffusion pipeline built here
(nothing can be downloaded): files, settings, per-image determinism, resumability."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from divssl.data.cli_prep import app
from divssl.data.pool import open_pool
from divssl.data.synthesize import (
    SynthClass,
    class_registry,
    image_seed,
    load_pipeline,
    read_class_list,
    synthesize,
)
from divssl.errors import ConfigError

# diffusers' DPM-Solver builds numpy arrays from tensors the numpy-2 way; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def gpt2_byte_alphabet() -> list[str]:
    """The 256 printable stand-ins for bytes used by byte-level BPE (GPT-2 / CLIP)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += list(range(ord("®"), ord("ÿ") + 1))
    extra = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]


def build_tiny_pipeline(folder: Path) -> Path:
    """Save a randomly initialised, tiny Stable Diffusion pipeline (32 px images) to ``folder``."""
    diffusers = pytest.importorskip("diffusers", reason="needs the synthesis extra")
    transformers = pytest.importorskip("transformers", reason="needs the synthesis extra")
    import torch

    vocab: dict[str, int] = {}
    for ch in gpt2_byte_alphabet():
        vocab[ch] = len(vocab)
    for ch in gpt2_byte_alphabet():
        vocab[ch + "</w>"] = len(vocab)
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    tok_dir = folder / "tok"
    tok_dir.mkdir(parents=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")  # no merges: one token per character
    tokenizer = transformers.CLIPTokenizer(
        str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=16
    )
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=[8, 16],
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=4,
    )
    text_encoder = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=1,
            max_position_embeddings=16,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )
    )
    scheduler = diffusers.DDIMScheduler(
        beta_start=0.001,
        beta_end=0.02,
        beta_schedule="scaled_linear",
        steps_offset=1,
        clip_sample=False,
    )
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    model_dir = folder / "model"
    pipe.save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("sd"))


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_class_list_parsing(tmp_path) -> None:
    path = tmp_path / "classes.txt"
    path.write_text("# ImageNet ids with prompts\nn01531178\tgoldfinch\n\nsea anemone\n")
    assert read_class_list(path) == [
        SynthClass("n01531178", "goldfinch"),
        SynthClass("sea anemone", "sea anemone"),
    ]
    for bad in ("a/b\n", "x\nx\n", ".hidden\n", "\n"):
        path.write_text(bad)
        with pytest.raises(ConfigError) as err:
            read_class_list(path)
        assert err.value.field == "classes"


def test_image_seeds_are_distinct_and_reproducible() -> None:
    seeds = {image_seed(0, c, i) for c in range(5) for i in range(50)}
    assert len(seeds) == 250
    assert image_seed(3, 1, 2) == image_seed(3, 1, 2) != image_seed(4, 1, 2)
    assert all(0 <= s < 2**63 for s in seeds)


def test_class_registry_keeps_recorded_indices(tmp_path) -> None:
    assert class_registry(tmp_path, [SynthClass("b", "b"), SynthClass("a", "a")]) == [
        SynthClass("b", "b"),
        SynthClass("a", "a"),
    ]
    recorded = [
        {"index": 0, "name": "a", "prompt_name": "a"},
        {"index": 1, "name": "b", "prompt_name": "bee"},
    ]
    (tmp_path / "pool.json").write_text(json.dumps({"classes": recorded}))
    registry = class_registry(tmp_path, [SynthClass("c", "c"), SynthClass("b", "bee")])
    assert [c.name for c in registry] == ["a", "b", "c"]  # b keeps index 1, c is appended
    with pytest.raises(ConfigError, match="prompt name") as err:
        class_registry(tmp_path, [SynthClass("b", "butterfly")])
    assert err.value.field == "classes"


@pytest.mark.slow
def test_synthesize_files_settings_determinism_and_resume(tmp_path, model_dir) -> None:
    classes = tmp_path / "classes.txt"
    classes.write_text("goldfinch\nhornbill\n")
    out = tmp_path / "synthetic"
    args = ["synthesize", "--classes", str(classes), "--per-class", "2", "--model", str(model_dir)]
    args += ["--out", str(out), "--steps", "2", "--batch", "3", "--size", "32", "--device", "cpu"]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "generated 4, skipped 0" in first.output
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == [f"{c}/00000{i}.png" for c in ("goldfinch", "hornbill") for i in (0, 1)]
    images = {f: read_png(out / f) for f in files}
    assert all(im.shape == (32, 32, 3) and im.dtype == np.uint8 for im in images.values())
    assert not np.array_equal(images["goldfinch/000000.png"], images["goldfinch/000001.png"])

    meta = json.loads((out / "pool.json").read_text())
    assert meta["source"] == "synthetic" and meta["complete"] is True
    assert meta["classes"] == [
        {"index": 0, "name": "goldfinch", "prompt_name": "goldfinch", "images": 2},
        {"index": 1, "name": "hornbill", "prompt_name": "hornbill", "images": 2},
    ]
    settings = meta["settings"]
    assert settings["prompt_template"] == "A photo of a {class}"
    assert (settings["steps"], settings["guidance"], settings["size"]) == (2, 7.5, 32)
    assert settings["model"] == str(model_dir.resolve())
    sched = settings["scheduler"]
    assert sched["name"] == "DPMSolverMultistepScheduler"
    assert (sched["algorithm_type"], sched["beta_start"], sched["beta_end"]) == (
        "dpmsolver++",
        0.00085,
        0.012,
    )

    # Second run: everything exists, nothing is regenerated or rewritten.
    stamps = {f: (out / f).stat().st_mtime_ns for f in files}
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "generated 0, skipped 4" in second.output
    assert stamps == {f: (out / f).stat().st_mtime_ns for f in files}

    # One image regenerated alone (it was made inside a batch of 3) is the same image.
    (out / "hornbill/000000.png").unlink()
    third = runner.invoke(app, args)
    assert "generated 1, skipped 3" in third.output
    np.testing.assert_array_equal(read_png(out / "hornbill/000000.png"), images[files[2]])

    # The folder is a synthetic pool whose class names are the class list.
    pool = open_pool(f"folder:root={out}")
    assert pool.class_names == ["goldfinch", "hornbill"] and len(pool) == 4
    assert pool.source == "synthetic"

    # Other settings into the same folder are refused before anything is written.
    changed = runner.invoke(app, [*args[:-6], "--steps", "3", "--batch", "3", "--size", "32"])
    assert isinstance(changed.exception, ConfigError) and changed.exception.field == "out"


@pytest.mark.slow
def test_python_api_with_loaded_pipeline(tmp_path, model_dir) -> None:
    pipe = load_pipeline(model_dir, device="cpu")
    assert pipe.scheduler.config.algorithm_type == "dpmsolver++"
    cls = [SynthClass("c0", "red circle")]
    report = synthesize(cls, 1, model_dir, tmp_path / "a", steps=2, size=32, pipeline=pipe)
    assert (report.generated, report.skipped) == (1, 0)
    a = read_png(tmp_path / "a/c0/000000.png")
    other = synthesize(cls, 1, model_dir, tmp_path / "c", seed=1, steps=2, size=32, pipeline=pipe)
    assert other.generated == 1
    assert not np.array_equal(a, read_png(tmp_path / "c/c0/000000.png"))


def test_missing_model_and_bad_arguments_write_nothing(tmp_path) -> None:
    pytest.importorskip("diffusers", reason="needs the synthesis extra")
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as err:
        synthesize([SynthClass("a", "a")], 1, tmp_path / "no_model", out)
    assert err.value.field == "model"
    with pytest.raises(ConfigError) as err:
        synthesize([SynthClass("a", "a")], 0, tmp_path / "no_model", out)
    assert err.value.field == "per_class"
    assert not out.exists()


def test_missing_diffusers_says_how_to_install(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)  # makes `import diffusers` fail
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"pip install 'divssl\[synthesis\]'"):
        load_pipeline(tmp_path)
