"""Fine-tuning schedule points, in-place training of a copy, and loud failure on NaN."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from divssl.errors import ConfigError, RunFailed
from divssl.evaluate.finetune import FinetuneConfig, eval_steps, finetune
from divssl.pretrain.backbones import build_backbone


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(0, 60, size=(n, 16, 16, 3)).astype(np.uint8)
    images[labels == 1, :, :, 0] += 150  # class 1 is red
    return images, labels


def test_eval_steps_evenly_spaced() -> None:
    assert eval_steps(10, 5) == [2, 4, 6, 8, 10]
    assert eval_steps(7, 2) == [4, 7]
    assert eval_steps(3, 5) == [1, 2, 3]
    assert eval_steps(12, 1) == [12]


def test_finetune_trains_a_copy_and_reports_points() -> None:
    torch.manual_seed(0)
    backbone, dim = build_backbone("convnet_tiny", 16)
    original = {k: v.clone() for k, v in backbone.state_dict().items()}
    images, labels = data(32, 0)
    test = data(20, 1)
    cfg = FinetuneConfig(epochs=3, batch_size=8, base_lr=1.0, eval_points=3, seed=0)
    net = copy.deepcopy(backbone)
    points = finetune(net, dim, images, labels, {"test": test}, 2, 16, cfg, torch.device("cpu"), 20)
    assert [p["step"] for p in points] == [4, 8, 12]
    assert [p["epoch"] for p in points] == [1.0, 2.0, 3.0]
    assert points[-1]["lr"] == 0.0  # cosine reaches 0 at the last step
    assert points[-1]["test"]["top1"]["value"] >= 0.9  # the colour cue is easy
    assert all(torch.equal(original[k], backbone.state_dict()[k]) for k in original)
    changed = [k for k in original if not torch.equal(original[k], net.state_dict()[k])]
    assert any("running_mean" in k for k in changed) and any("weight" in k for k in changed)


def test_finetune_fails_loudly_on_divergence() -> None:
    torch.manual_seed(0)
    backbone, dim = build_backbone("convnet_tiny", 16)
    images, labels = data(16, 0)
    cfg = FinetuneConfig(epochs=5, batch_size=8, base_lr=1e12, eval_points=1)
    with pytest.raises(RunFailed, match="loss is"):
        finetune(backbone, dim, images, labels, {}, 2, 16, cfg, torch.device("cpu"))
    with pytest.raises(ConfigError, match="batch_size"):
        FinetuneConfig(batch_size=1)


def test_finetune_trains_and_evaluates_with_the_runs_normalisation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The run's geometry (features.run_eval_geometry) sets the statistics of the training views
    # and of the evaluation inputs alike.
    import divssl.evaluate.features as features
    import divssl.pretrain.augment as augment

    norm = augment.Normalization((0.1, 0.2, 0.3), (0.5, 0.25, 0.125))
    geometry = features.run_eval_geometry(
        {"image_size": 16, "recipe": "cifar", "augment": {"mean": [0.1, 0.2, 0.3],
                                                          "std": [0.5, 0.25, 0.125]}}
    )  # fmt: skip
    assert geometry.norm == norm
    view_norms: list[augment.Normalization] = []
    eval_norms: list[augment.Normalization] = []
    real_views, real_forward = augment.make_views, features.forward_batches

    def views_spy(images, preset, generator, extents=None):  # type: ignore[no-untyped-def]
        view_norms.append(preset.norm)
        return real_views(images, preset, generator, extents=extents)

    def forward_spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        eval_norms.append(args[6])
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(augment, "make_views", views_spy)
    monkeypatch.setattr(features, "forward_batches", forward_spy)
    torch.manual_seed(0)
    backbone, dim = build_backbone("convnet_tiny", 16)
    images, labels = data(16, 0)
    cfg = FinetuneConfig(epochs=1, batch_size=8, base_lr=0.1, eval_points=1, seed=0)
    finetune(
        backbone, dim, images, labels, {"test": data(8, 1)}, 2, 16, cfg, torch.device("cpu"), 10,
        geometry=geometry,
    )  # fmt: skip
    assert view_norms and set(view_norms) == {norm}
    assert eval_norms == [norm]
