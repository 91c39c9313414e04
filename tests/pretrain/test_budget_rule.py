"""The budget is a rule, not a list: O(1) memory for any C, identical to the list rule."""

from __future__ import annotations

import tracemalloc

import pytest

from divssl.errors import ConfigError
from divssl.pretrain.budget import MAX_BUDGET_IMAGES, Budget, resolve_images


def reference_sizes(c: int, b: int, min_batch: int) -> list[int]:
    """The module docstring's rule written out as a list: floor(C/B) full steps, then a final
    step of r = C mod B if r >= min_batch, else r added to the last full step."""
    full, rem = divmod(c, b)
    sizes = [b] * full
    if rem >= min_batch or not sizes:
        sizes.append(rem)
    else:
        sizes[-1] += rem
    return [s for s in sizes if s > 0]


@pytest.mark.parametrize("b", [1, 2, 3, 7, 16, 256])
@pytest.mark.parametrize("min_batch", [2, 4])
def test_rule_matches_the_list_for_every_small_c(b, min_batch):
    for c in range(min_batch, 600):
        budget = Budget(c, 10, b, min_batch)
        want = reference_sizes(c, b, min_batch)
        assert budget.steps == len(want)
        assert list(budget.batch_sizes) == want and budget.batch_sizes == want
        assert [budget.batch_size(s) for s in range(len(want))] == want
        assert [budget.images_before(s) for s in range(len(want) + 2)] == [
            sum(want[:s]) for s in range(len(want) + 2)
        ]
        assert budget.batch_sizes[-1] == want[-1]
        assert budget.batch_sizes[1:3] == want[1:3]


def test_the_largest_budget_costs_constant_memory_and_time():
    tracemalloc.start()
    budget = Budget(MAX_BUDGET_IMAGES, 1_281_167, 256)
    steps = budget.steps
    last = budget.batch_sizes[steps - 1]
    before_last = budget.images_before(steps - 1)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 100_000  # bytes: no per-step list
    assert steps == MAX_BUDGET_IMAGES // 256  # 10**12 is a multiple of 256
    assert last == 256 and before_last + last == MAX_BUDGET_IMAGES
    with pytest.raises(IndexError):
        budget.batch_size(steps)


def test_absurd_budgets_are_refused_with_the_bound():
    with pytest.raises(ConfigError, match="budget.images: C must lie in") as info:
        resolve_images(10**15, None, 100)
    assert "1e+12" in str(info.value)
    with pytest.raises(ConfigError, match="budget.epochs") as info:
        resolve_images(None, 1e13, 1_000_000)
    assert "exceeds the bound" in str(info.value)
    with pytest.raises(ConfigError, match="budget.epochs"):
        resolve_images(None, float("inf"), 10)
