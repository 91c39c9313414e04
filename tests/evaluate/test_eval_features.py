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
    encoder_geometry,
    eval_geometry,
    eval_transform,
    load_encoder,
    load_split_images,
    results_path,
    split_features,
)
from divssl.evaluate.linear import ProbeConfig, probe_images
from divssl.evaluate.tasks import open_task
from divssl.io import atomic_write_yaml
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


def make_run(
    root: Path, seed: int = 0, augment: dict | None = None, name: str | None = None
) -> Path:
    """A tiny run dir; without ``augment`` its config.yaml is one of a run written before
    ``augment.mean`` / ``augment.std`` existed."""
    torch.manual_seed(seed)
    model, _ = build_backbone("convnet_tiny", 16)
    run = root / (name or f"run{seed}")
    run.mkdir(parents=True)
    export_backbone(model, run / "backbone.pt")
    config = {
        "method": "simclr", "backbone": "convnet_tiny", "image_size": 16, "cifar_stem": False,
        "data": {"pool": "world:classes=3:per_class=8:size=16"}, "seed": seed,
    }  # fmt: skip
    if augment is not None:
        config["augment"] = augment
    atomic_write_yaml(run / "config.yaml", config)
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
        x = eval_transform(torch.from_numpy(images).permute(0, 3, 1, 2), eval_geometry(16))
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


# Written by hand from the references: solo-learn 9187ea3 solo/data/pretrain_dataloader.py
# MEANS_N_STD["cifar10"], and timm's IMAGENET_DEFAULT_MEAN / IMAGENET_DEFAULT_STD.
CIFAR10 = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _reference_features(model: torch.nn.Module, images: np.ndarray, stats: tuple) -> np.ndarray:
    """Features of 16 px world images (no resize at 16 px) normalised with ``stats``, written
    from the formula ``(x / 255 - mean) / std`` per channel."""
    x = images.astype(np.float64) / 255.0  # (N, H, W, 3)
    x = (x - np.array(stats[0])) / np.array(stats[1])
    batch = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))
    model.eval()
    with torch.no_grad():
        return model(batch).numpy()


def test_a_runs_features_use_the_statistics_of_its_config(tmp_path: Path) -> None:
    # Same weights (seed 0), two run dirs: one records CIFAR statistics, one ImageNet's.
    task = open_task(TASK)
    cifar_stats = {"mean": list(CIFAR10[0]), "std": list(CIFAR10[1])}
    cifar = load_encoder(make_run(tmp_path, augment=cifar_stats, name="cifar"))
    imnet_stats = {"mean": list(IMAGENET[0]), "std": list(IMAGENET[1])}
    imnet = load_encoder(make_run(tmp_path, augment=imnet_stats, name="imagenet"))
    assert encoder_geometry(cifar).norm.mean == CIFAR10[0]
    assert encoder_geometry(cifar).norm.std == CIFAR10[1]
    f_cifar = split_features(cifar, task, "test", CPU)
    f_imnet = split_features(imnet, task, "test", CPU)
    assert f_cifar.cache_key != f_imnet.cache_key  # the statistics are part of the key
    images, _, _ = load_split_images(task, "test", 16)
    np.testing.assert_allclose(
        f_cifar.features, _reference_features(cifar.model, images, CIFAR10), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        f_imnet.features, _reference_features(imnet.model, images, IMAGENET), rtol=1e-4, atol=1e-5
    )
    assert np.abs(f_cifar.features - f_imnet.features).max() > 1e-3


def test_old_run_dirs_without_statistics_use_imagenet_statistics(tmp_path: Path) -> None:
    task = open_task(TASK)
    old = load_encoder(make_run(tmp_path))  # config.yaml has no augment section at all
    assert "augment" not in old.run_config
    geometry = encoder_geometry(old)
    assert (geometry.norm.mean, geometry.norm.std) == IMAGENET
    images, _, _ = load_split_images(task, "test", 16)
    np.testing.assert_allclose(
        split_features(old, task, "test", CPU).features,
        _reference_features(old.model, images, IMAGENET),
        rtol=1e-4,
        atol=1e-5,
    )
    # an augment section from before issue 10 (views only) also means ImageNet statistics
    views = load_encoder(make_run(tmp_path, augment={"preset": "simclr"}, name="views"))
    assert (encoder_geometry(views).norm.mean, encoder_geometry(views).norm.std) == IMAGENET


def test_bad_statistics_in_a_run_config_are_config_errors(tmp_path: Path) -> None:
    bad = load_encoder(make_run(tmp_path, augment={"mean": [0.5, 0.5], "std": [1, 1, 1]}))
    with pytest.raises(ConfigError, match="augment.mean"):
        encoder_geometry(bad)
    zero = load_encoder(make_run(tmp_path, 1, augment={"mean": [0, 0, 0], "std": [1, 0, 1]}))
    with pytest.raises(ConfigError, match="augment.std"):
        encoder_geometry(zero)


def test_sgd_probe_views_use_the_runs_statistics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SGD linear protocol trains on augmented views: normalised as the run's inputs are.
    import divssl.pretrain.augment as augment
    from divssl.evaluate.linear import run_linear

    seen: list[augment.Normalization] = []
    real = augment.make_views

    def spy(images, preset, generator, extents=None):  # type: ignore[no-untyped-def]
        seen.append(preset.norm)
        return real(images, preset, generator, extents=extents)

    monkeypatch.setattr(augment, "make_views", spy)
    stats = {"mean": list(CIFAR10[0]), "std": list(CIFAR10[1])}
    run = make_run(tmp_path, augment=stats)
    run_linear(
        run, TASK, fractions=(100,), protocol="sgd", lrs=(0.1,), epochs=1, batch_size=8,
        device="cpu", n_boot=10, write=False,
    )  # fmt: skip
    assert seen and set(seen) == {augment.Normalization(*CIFAR10)}
