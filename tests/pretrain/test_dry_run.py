"""The dry run: FLOPs and timed steps of a config's model, the same numbers as a real run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from divssl.io import read_json
from divssl.pretrain.config import Config, load_config
from divssl.pretrain.dry_run import count_model_flops, measure_throughput, model_settings
from divssl.pretrain.loop import pretrain


def test_real_throughput_measurement_times_training_steps():
    cfg = Config(batch_size=8, image_size=16)
    ips, times = measure_throughput(cfg, None, torch.device("cpu"), batch=8, steps=2, warmup=1)
    assert len(times) == 2 and all(t > 0 for t in times)
    assert ips == pytest.approx(8 / float(np.median(times)))


def test_dry_run_flops_equal_the_flops_a_run_records(tmp_path):
    cfg = load_config(
        None,
        [
            "data.pool=world:classes=4:per_class=8:size=16:seed=0",
            "budget.images=32",
            "batch_size=16",
            "tracking=none",
            f"out={tmp_path / 'run'}",
        ],
    )
    run = pretrain(cfg)
    assert read_json(run / "summary.json")["flops_per_image"] == pytest.approx(
        count_model_flops(cfg, None)
    )


def test_model_settings_change_with_what_changes_the_cost():
    base = load_config(None, ["image_size=16"])
    same = load_config(None, ["image_size=16", "seed=5", "budget.images=999"])
    bigger = load_config(None, ["image_size=24"])
    assert model_settings(base) == model_settings(same)  # seeds and C cost nothing per image
    assert model_settings(base) != model_settings(bigger)
    assert count_model_flops(bigger, None) > count_model_flops(base, None)
