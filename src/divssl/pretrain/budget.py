"""Compute budget accounting (C, N, E, D) and schedules as pure functions of (step, total_steps).

A run processes exactly C source images (each image counts once, however many views it yields):
``floor(C / B)`` full passes of the global batch B, and the remainder ``r = C mod B`` handled so
that the total stays exactly C:

* if ``r >= min_batch`` (2 images per rank, so BatchNorm and contrastive losses are defined), one
  final smaller step of ``r`` images is added;
* otherwise the ``r`` images are added to the last full step (which then holds ``B + r``).

The image stream is a sequence of full shuffled passes over the N-image subset followed by a
partial pass; pass ``e`` uses the permutation ``rng(order_seed, e)``, so the position in the stream
is a single integer and resuming needs only the step index.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np

from divssl.errors import ConfigError

# The largest budget C accepted: ~500x the largest published SSL runs (DINOv2 ViT-g: ~2e9
# images); above it a run would take centuries on any machine and int64 stream positions near
# their end lose meaning for users. Shared with config validation
# (``divssl.pretrain.config.RANGES``).
MAX_BUDGET_IMAGES = 10**12


@dataclass(frozen=True)
class Budget:
    """The resolved budget of one run.

    Attributes:
        images: C, source images processed in total.
        unique_images: N, size of the pretraining set.
        global_batch: B, images per optimizer step (all ranks together).
        min_batch: smallest allowed final step.
    """

    images: int
    unique_images: int
    global_batch: int
    min_batch: int = 2

    def __post_init__(self) -> None:
        if self.images < 1:
            raise ConfigError("budget.images", f"C must be >= 1, got {self.images}")
        if self.unique_images < 1:
            raise ConfigError("subset", f"N must be >= 1, got {self.unique_images}")
        if self.global_batch < 1:
            raise ConfigError("batch_size", f"must be >= 1, got {self.global_batch}")
        if self.images < self.min_batch:
            raise ConfigError(
                "budget.images", f"C={self.images} is below the minimum batch {self.min_batch}"
            )

    @property
    def epochs(self) -> float:
        """E = C / N (fractional allowed)."""
        return self.images / self.unique_images

    @property
    def diversity(self) -> float:
        """D = N / C = 1 / E."""
        return self.unique_images / self.images

    @property
    def steps(self) -> int:
        """Number of optimizer steps (O(1): computed from C and B, never listed)."""
        full, rem = divmod(self.images, self.global_batch)
        if full == 0:
            return 1  # C < B: one step of C images
        return full + 1 if rem >= self.min_batch else full

    def batch_size(self, step: int) -> int:
        """Images of step ``step`` (see the module docstring for the remainder).

        Raises:
            IndexError: ``step`` outside ``0 .. steps - 1``.
        """
        steps = self.steps
        if not 0 <= step < steps:
            raise IndexError(f"step {step} outside 0..{steps - 1}")
        full, rem = divmod(self.images, self.global_batch)
        if full == 0:
            return self.images
        if step < full - 1:
            return self.global_batch
        if rem >= self.min_batch:
            return self.global_batch if step == full - 1 else rem
        return self.global_batch + rem  # the last full step also takes the small remainder

    @property
    def batch_sizes(self) -> BatchSizes:
        """Images per step as a lazy sequence; sums to exactly C (O(1) memory)."""
        return BatchSizes(self)

    def images_before(self, step: int) -> int:
        """Images consumed by steps ``0 .. step-1``: every step before the last holds B."""
        if step <= 0:
            return 0
        return self.images if step >= self.steps else step * self.global_batch


class BatchSizes(Sequence[int]):
    """The per-step batch sizes of a :class:`Budget`, computed on access (a rule, not a list).

    Compares equal to any sequence with the same items; slices are materialised lists.
    """

    def __init__(self, budget: Budget) -> None:
        self.budget = budget

    def __len__(self) -> int:
        return self.budget.steps

    @overload
    def __getitem__(self, index: int) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> list[int]: ...

    def __getitem__(self, index: int | slice) -> int | list[int]:
        if isinstance(index, slice):
            return [self.budget.batch_size(i) for i in range(*index.indices(len(self)))]
        i = index + len(self) if index < 0 else index
        return self.budget.batch_size(i)

    def __iter__(self) -> Iterator[int]:
        return (self.budget.batch_size(i) for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))

    def __hash__(self) -> int:
        return hash((self.budget.images, self.budget.global_batch, self.budget.min_batch))

    def __repr__(self) -> str:
        head = ", ".join(str(b) for b in self[:4])
        return f"BatchSizes([{head}{', ...' if len(self) > 4 else ''}], steps={len(self)})"


def resolve_images(
    budget_images: int | None, budget_epochs: float | None, unique_images: int
) -> int:
    """Turn ``budget.images`` (compute-normalized) or ``budget.epochs`` (epoch-normalized) into C.

    Raises:
        ConfigError: neither or both given, or a non-positive value.
    """
    if (budget_images is None) == (budget_epochs is None):
        raise ConfigError("budget", "give exactly one of budget.images (C) or budget.epochs")
    if budget_images is not None:
        if not 1 <= budget_images <= MAX_BUDGET_IMAGES:
            raise ConfigError(
                "budget.images",
                f"C must lie in [1, {MAX_BUDGET_IMAGES:.0e}] (a larger run would take "
                f"centuries), got {budget_images}",
            )
        return int(budget_images)
    assert budget_epochs is not None
    if not 0 < budget_epochs < math.inf:
        raise ConfigError("budget.epochs", f"must be a finite number > 0, got {budget_epochs}")
    images = max(1, round(unique_images * budget_epochs))
    if images > MAX_BUDGET_IMAGES:
        raise ConfigError(
            "budget.epochs",
            f"C = N x E = {images:.3g} images exceeds the bound {MAX_BUDGET_IMAGES:.0e} "
            "(a run that long would take centuries)",
        )
    return images


def pass_permutation(n: int, order_seed: int, pass_index: int) -> np.ndarray:
    """The shuffled order of pass ``pass_index`` over an n-image subset (positions 0..n-1)."""
    rng = np.random.default_rng([order_seed, pass_index])
    return rng.permutation(n)


def stream_positions(n: int, order_seed: int, start: int, count: int) -> np.ndarray:
    """Subset positions of images ``start .. start+count-1`` of the budgeted stream.

    Args:
        n: subset size N.
        order_seed: seed of the sample order.
        start: index of the first image in the stream (images consumed so far).
        count: number of images.

    Returns:
        int64 array of shape (count,) with values in [0, n).
    """
    out = np.empty(count, dtype=np.int64)
    filled = 0
    while filled < count:
        pos = start + filled
        pass_index, offset = divmod(pos, n)
        take = min(count - filled, n - offset)
        perm = pass_permutation(n, order_seed, pass_index)
        out[filled : filled + take] = perm[offset : offset + take]
        filled += take
    return out


# --------------------------------------------------------------------------------- schedules
# Every schedule is a pure function of (step, total_steps): the same C gives the same schedule
# whatever N is, which is what makes runs with different diversity comparable.


def _progress(step: int, total_steps: int) -> float:
    if total_steps <= 1:
        return 1.0
    return min(max(step / (total_steps - 1), 0.0), 1.0)


def warmup_cosine(
    step: int, total_steps: int, base: float, final: float = 0.0, warmup_fraction: float = 0.0
) -> float:
    """Linear warm-up from 0 to ``base`` over ``warmup_fraction`` of the steps, then cosine to
    ``final``. At step 0 with warm-up the value is ``base / warmup_steps``; at the last step it is
    ``final``.
    """
    warmup_steps = int(round(warmup_fraction * total_steps))
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    rest = total_steps - warmup_steps
    if rest <= 1:
        return final if step >= total_steps - 1 else base
    t = min(max((step - warmup_steps) / (rest - 1), 0.0), 1.0)
    return final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * t))


def cosine_increase(step: int, total_steps: int, start: float, end: float) -> float:
    """Cosine ramp from ``start`` (step 0) towards ``end``, e.g. BYOL's EMA momentum
    ``tau = 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2`` with k/K = ``step / total_steps``, as
    the references compute it (solo-learn ``MomentumUpdater.update_tau(global_step, max_steps)``,
    moco-v3 ``adjust_moco_momentum``, dino ``cosine_scheduler``): the last step's value is just
    short of ``end``, which is reached after the run."""
    t = min(max(step / total_steps, 0.0), 1.0) if total_steps >= 1 else 1.0
    return end - (end - start) * (math.cos(math.pi * t) + 1.0) / 2.0


def linear_warmup_constant(
    step: int, total_steps: int, start: float, end: float, warmup_fraction: float
) -> float:
    """Linear from ``start`` to ``end`` over ``warmup_fraction`` of the steps, then ``end``
    (DINO's teacher temperature)."""
    warmup_steps = int(round(warmup_fraction * total_steps))
    if warmup_steps <= 0 or step >= warmup_steps:
        return end
    return start + (end - start) * step / warmup_steps


def frozen(step: int, total_steps: int, freeze_fraction: float) -> bool:
    """True while ``step`` is within the first ``freeze_fraction`` of the run (SwAV prototypes,
    DINO's last layer)."""
    return step < int(round(freeze_fraction * total_steps))


def scaled_lr(base_lr: float, global_batch: int) -> float:
    """Linear scaling rule: ``base_lr`` is per 256 images."""
    return base_lr * global_batch / 256.0
