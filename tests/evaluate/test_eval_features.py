"""Feature extraction and its cache; the frozen backbone never changes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from divssl.errors import ConfigError
from divssl.evaluate.features import (
    decode_size,
    load_encoder,
    load_split_images,
    results_path,
    split_features,
)
from divssl.evaluate.linear import ProbeConfig, probe_images
from divssl.evaluate.tasks import open_task
from divssl.io import atomic_write_yaml
from divssl.pretrain.augment import eval_transform
from divssl.pretrain.backbones import build_backbone, export_backbone

TASK = "world:classes=3:per_class=8:size=16"
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # The many tiny float64 ops of L-BFGS crawl when intra-op threads compete with other
    # processes (xdist workers) for the two cores; one thread keeps these tests fast.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIVSSL_CACHE", str(tmp_path / "cache"))


def make_run(root: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model, _ = build_backbone("convnet_tiny", 16)
    run = root / f"run{seed}"
    run.mkdir(parents=True)
    export_backbone(model, run / "backbone.pt")
    atomic_write_yaml(
        run / "config.yaml",
        {"method": "simclr", "backbone": "convnet_tiny", "image_size": 16, "cifar_stem": False,
         "data": {"pool": "world:classes=3:per_class=8:size=16"}, "seed": seed},
    )  # fmt: skip
    return run


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert any("running_mean" in k for k in a) and any("num_batches_tracked" in k for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_features_match_direct_forward_and_cache(tmp_path: Path) -> None:
    enc = load_encoder(make_run(tmp_path))
    task = open_task(TASK)
    enc.model.train()  # extraction must switch to eval mode itself, and restore the mode
    before = state(enc.model)
    first = split_features(enc, task, "test", CPU, batch_size=5)
    assert not first.cache_hit and first.features.shape == (24, enc.feat_dim)
    assert enc.model.training
    assert_same_state(before, state(enc.model))
    images, labels, _ = load_split_images(task, "test", 16)
    enc.model.eval()
    with torch.no_grad():
        x = eval_transform(torch.from_numpy(images).permute(0, 3, 1, 2), 16)
        direct = enc.model(x).numpy()
    np.testing.assert_allclose(first.features, direct, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(first.labels, labels)
    again = split_features(enc, task, "test", CPU)
    assert again.cache_hit and again.cache_key == first.cache_key
    np.testing.assert_array_equal(again.features, first.features)
    assert split_features(enc, task, "train", CPU).cache_key != first.cache_key
    other = load_encoder(make_run(tmp_path, seed=1))
    assert split_features(other, task, "test", CPU).cache_key != first.cache_key


def test_random_init_is_seeded_and_keyed() -> None:
    task = open_task(TASK)
    a = load_encoder(init="random", backbone="convnet_tiny", image_size=16, seed=3)
    b = load_encoder(init="random", backbone="convnet_tiny", image_size=16, seed=3)
    c = load_encoder(init="random", backbone="convnet_tiny", image_size=16, seed=4)
    assert_same_state(state(a.model), state(b.model))
    fa, fc = split_features(a, task, "test", CPU), split_features(c, task, "test", CPU)
    assert split_features(b, task, "test", CPU).cache_hit
    assert fa.cache_key != fc.cache_key and not np.allclose(fa.features, fc.features)
    assert a.identity["seed"] == 3 and a.identity["init"] == "random"
    with pytest.raises(ConfigError, match="out"):
        results_path("linear", task, a)


def test_encoder_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--run DIR"):
        load_encoder(None)
    with pytest.raises(ConfigError, match="config.yaml"):
        (tmp_path / "empty").mkdir()
        load_encoder(tmp_path / "empty")
    with pytest.raises(ConfigError, match="backbone"):
        load_encoder(init="random", image_size=16)
    with pytest.raises(ConfigError, match="init"):
        load_encoder(make_run(tmp_path), init="imagenet")
    assert decode_size(16) == 16 and decode_size(224) == 256


def test_sgd_protocol_never_changes_the_backbone(tmp_path: Path) -> None:
    enc = load_encoder(make_run(tmp_path))
    task = open_task(TASK)
    feats = split_features(enc, task, "train", CPU)
    images, labels, _ = load_split_images(task, "train", 16)
    enc.model.train()
    before = state(enc.model)
    cfg = ProbeConfig(protocol="sgd", lrs=(0.1, 1.0), epochs=2, batch_size=8, seed=0)
    res = probe_images(
        enc.model, images, np.arange(len(labels)), labels, feats.features, 3, enc.feat_dim, 16,
        cfg, CPU,
    )  # fmt: skip
    assert_same_state(before, state(enc.model))
    assert enc.model.training
    assert len(res.sweep) == 2 and res.predict(feats.features).shape == (24, 3)
    assert all(p.grad is None for p in enc.model.parameters())
