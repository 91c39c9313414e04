"""Budget accounting and schedules: exact C, nesting of passes, schedule end points."""

import math

import numpy as np
import pytest

from divssl.errors import ConfigError
from divssl.pretrain.budget import (
    Budget,
    cosine_increase,
    frozen,
    linear_warmup_constant,
    resolve_images,
    scaled_lr,
    stream_positions,
    warmup_cosine,
)


@pytest.mark.parametrize(
    ("c", "b"), [(1000, 256), (1024, 256), (257, 256), (5, 4), (3, 256), (50_001, 512)]
)
def test_batch_sizes_sum_to_exactly_c(c, b):
    budget = Budget(images=c, unique_images=100, global_batch=b)
    sizes = budget.batch_sizes
    assert sum(sizes) == c
    assert all(s >= 2 for s in sizes)
    assert all(s <= b + 1 for s in sizes[:-1])


def test_remainder_rule():
    # 1000 = 3*256 + 232: a final small step of 232 images.
    assert Budget(1000, 10, 256).batch_sizes == [256, 256, 256, 232]
    # 257 = 256 + 1: one image cannot form a batch, it joins the last full step.
    assert Budget(257, 10, 256).batch_sizes == [257]
    assert Budget(1000, 10, 256).steps == 4


def test_epochs_and_diversity():
    b = Budget(images=50_000_000, unique_images=5_000, global_batch=256)
    assert b.epochs == pytest.approx(10_000)
    assert b.diversity == pytest.approx(1e-4)
    assert b.epochs * b.diversity == pytest.approx(1.0)


def test_images_before():
    b = Budget(1000, 10, 256)
    assert [b.images_before(s) for s in range(5)] == [0, 256, 512, 768, 1000]


def test_resolve_images_modes():
    assert resolve_images(5000, None, 100) == 5000
    assert resolve_images(None, 2.5, 100) == 250
    with pytest.raises(ConfigError, match="budget"):
        resolve_images(None, None, 100)
    with pytest.raises(ConfigError, match="budget"):
        resolve_images(10, 1.0, 100)
    with pytest.raises(ConfigError, match="budget.images"):
        resolve_images(0, None, 100)


def test_budget_rejects_c_below_one():
    with pytest.raises(ConfigError, match="budget.images"):
        Budget(images=0, unique_images=10, global_batch=4)


def test_stream_is_full_shuffled_passes_then_partial():
    n, c = 7, 25
    pos = stream_positions(n, order_seed=3, start=0, count=c)
    # Each full pass is a permutation of the subset.
    for p in range(c // n):
        assert sorted(pos[p * n : (p + 1) * n].tolist()) == list(range(n))
    # The partial pass has no repeats.
    tail = pos[(c // n) * n :]
    assert len(set(tail.tolist())) == len(tail)
    # Each image is seen E or E+1 times in total.
    counts = np.bincount(pos, minlength=n)
    assert set(counts.tolist()) <= {c // n, c // n + 1}


def test_stream_slices_agree_with_whole_stream():
    whole = stream_positions(11, 5, 0, 60)
    parts = np.concatenate([stream_positions(11, 5, s, 7) for s in range(0, 56, 7)])
    np.testing.assert_array_equal(parts, whole[:56])
    assert not np.array_equal(stream_positions(11, 6, 0, 11), whole[:11])


def test_warmup_cosine_ends():
    total, base = 100, 1.0
    assert warmup_cosine(0, total, base, 0.0, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, total, base, 0.0, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(10, total, base, 0.0, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(99, total, base, 0.05, 0.1) == pytest.approx(0.05)
    mid = 10 + (89 // 2)
    t = (mid - 10) / 89
    assert warmup_cosine(mid, total, base, 0.0, 0.1) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * t))
    )


def test_cosine_increase_is_byol_momentum():
    # k / K with K = total steps, as solo-learn's MomentumUpdater.update_tau(global_step,
    # max_steps), moco-v3's adjust_moco_momentum and dino's cosine_scheduler
    total, tau = 50, 0.99
    for k in (0, 10, 25, 49):
        expected = 1 - (1 - tau) * (math.cos(math.pi * k / total) + 1) / 2
        assert cosine_increase(k, total, tau, 1.0) == pytest.approx(expected, abs=1e-15)
    assert cosine_increase(0, total, tau, 1.0) == pytest.approx(tau)
    last = cosine_increase(total - 1, total, tau, 1.0)  # just short of 1, reached after the run
    assert 1.0 - 1e-4 < last < 1.0
    assert cosine_increase(total, total, tau, 1.0) == 1.0
    assert cosine_increase(0, 1, tau, 1.0) == pytest.approx(tau)


def test_teacher_temperature_warmup_and_freezing():
    assert linear_warmup_constant(0, 100, 0.04, 0.07, 0.3) == pytest.approx(0.04)
    assert linear_warmup_constant(15, 100, 0.04, 0.07, 0.3) == pytest.approx(0.055)
    assert linear_warmup_constant(30, 100, 0.04, 0.07, 0.3) == pytest.approx(0.07)
    assert frozen(0, 1000, 0.01) and frozen(9, 1000, 0.01) and not frozen(10, 1000, 0.01)


def test_schedules_depend_only_on_step_fraction():
    # Same C (so same total steps) gives the same schedule whatever N is: the functions take no N.
    assert warmup_cosine(30, 200, 0.3, 0, 0.05) == warmup_cosine(30, 200, 0.3, 0, 0.05)
    assert scaled_lr(0.3, 512) == pytest.approx(0.6)
