"""The builders the loop and the planner share: N, the budget, device, the method and optimizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from divssl.data.ordering import subset_size as ordering_subset_size
from divssl.errors import ConfigError
from divssl.pretrain.build import (
    autocast_dtype,
    build_run,
    make_budget,
    num_classes_of,
    optim_settings,
    subset_size,
)
from divssl.pretrain.config import load_config


@pytest.mark.parametrize(
    ("overrides", "pool_len", "want"),
    [
        ([], 96, 96),  # neither given: the whole pool
        (["subset.fraction=0.25"], 96, 24),
        (["subset.fraction=0.3"], 10, 3),  # round(0.3 * 10)
        (["subset.fraction=0.25"], 10, 2),  # round(2.5): half to even
        (["subset.size=7"], 96, 7),
    ],
)
def test_subset_size_is_the_ordering_rule(overrides, pool_len, want):
    cfg = load_config(None, overrides)
    assert subset_size(cfg, pool_len) == want
    size, fraction = cfg.subset.size, cfg.subset.fraction
    assert ordering_subset_size(pool_len, size, fraction if size else fraction or 1.0) == want


@pytest.mark.parametrize(
    ("overrides", "pool_len", "field"),
    [(["subset.size=97"], 96, "subset.size"), (["subset.fraction=0.01"], 10, "subset.fraction")],
)
def test_subset_size_refuses_n_outside_the_pool(overrides, pool_len, field):
    with pytest.raises(ConfigError) as info:
        subset_size(load_config(None, overrides), pool_len)
    assert info.value.field == field


def test_make_budget_compute_and_epoch_normalized():
    cfg = load_config(None, ["budget.images=150", "batch_size=32"])
    b = make_budget(cfg, 40)
    assert (b.images, b.unique_images, b.steps, b.global_batch) == (150, 40, 5, 32)
    assert b.batch_sizes[-1] == 22
    epochs = load_config(None, ["budget.images=null", "budget.epochs=2.5", "batch_size=32"])
    assert make_budget(epochs, 40).images == 100  # C = round(N * E)
    with pytest.raises(ConfigError, match="budget.images"):
        make_budget(load_config(None, ["budget.images=3", "batch_size=32"]), 40, world_size=2)


class _Pool:
    def __init__(self, class_names, labels):
        self.class_names = class_names
        self.labels = None if labels is None else np.asarray(labels)


def test_num_classes_of_names_then_labels_then_none():
    assert num_classes_of(_Pool(["a", "b", "c"], [0, 0, 1])) == 3  # names win
    assert num_classes_of(_Pool(None, [0, 4, -1])) == 5  # largest label + 1
    assert num_classes_of(_Pool(None, [-1, -1])) is None
    assert num_classes_of(_Pool(None, None)) is None


def test_build_run_gives_the_method_optimizer_views_and_precision():
    cfg = load_config(None, ["method=simclr", "image_size=16", "batch_size=64"])
    torch.manual_seed(0)
    parts = build_run(cfg, None, torch.device("cpu"))
    assert parts.preset.n_views == 2
    assert parts.amp_dtype is None  # precision=auto on the CPU: fp32
    assert parts.settings == optim_settings(cfg, parts.method)
    params = {id(p) for p in parts.method.parameters() if p.requires_grad}
    in_opt = {id(p) for g in parts.optimizer.param_groups for p in g["params"]}
    assert in_opt == params
    torch.manual_seed(0)
    again = build_run(cfg, None, torch.device("cpu"))
    for a, b in zip(parts.method.parameters(), again.method.parameters(), strict=True):
        assert torch.equal(a, b)  # same seed, same initialisation


def test_autocast_dtype_follows_precision():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert autocast_dtype(load_config(None, ["precision=auto"]), cpu) is None
    assert autocast_dtype(load_config(None, ["precision=auto"]), cuda) is torch.bfloat16
    assert autocast_dtype(load_config(None, ["precision=bf16"]), cpu) is torch.bfloat16
    assert autocast_dtype(load_config(None, ["precision=fp32"]), cuda) is None
