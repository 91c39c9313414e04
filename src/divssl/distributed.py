"""DDP-aware global-batch helpers for the losses, plus process-group setup for ``torchrun``.

Every helper is a no-op (or the identity) when ``torch.distributed`` is not initialised, so the
losses in :mod:`divssl.pretrain.losses` run unchanged on one process.

Gradient convention. With DDP each rank ``r`` computes a loss ``L_r`` and the gradients are
averaged over ranks, i.e. the update follows ``d(mean_r L_r)/dθ``. The differentiable collectives
here are the exact adjoints of their forward passes, so autograd on each rank yields that rank's
share of ``d(Σ_r L_r)/dθ``:

* :func:`gather_with_grad` (all-gather) back-propagates by summing the incoming gradient over
  ranks (all-reduce) and keeping this rank's rows (the adjoint of all-gather is reduce-scatter);
* :func:`all_reduce_sum` back-propagates by all-reducing (summing) the incoming gradient.

The losses therefore define each rank's value so that ``mean_r L_r`` equals the single-process
loss on the global batch; gradients averaged as DDP does then equal the single-process gradients.

Collectives are hand-written autograd functions rather than ``torch.distributed.nn.functional``
because that module's ``all_gather`` needs equal per-rank sizes, and ranks may hold different
batch sizes here (the last batch of a budget, uneven shards): sizes are gathered, rows padded to
the largest size, gathered, and trimmed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from divssl.errors import ConfigError

BACKENDS = ("gloo", "nccl", "mpi")


def is_dist() -> bool:
    """Whether a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the default group (0 when not distributed)."""
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if is_dist() else 1


def local_rank() -> int:
    """This process's rank on its node, from ``LOCAL_RANK`` (set by ``torchrun``; 0 if unset).

    Raises:
        ConfigError: ``LOCAL_RANK`` is not a non-negative integer.
    """
    return _env_int("LOCAL_RANK", 0)


def gather_sizes(n: int, device: torch.device | str = "cpu") -> list[int]:
    """Gather every rank's local batch size.

    Args:
        n: this rank's number of rows.
        device: device for the communication tensor (a CUDA device under NCCL).

    Returns:
        ``[n_0, ..., n_{W-1}]``, identical on all ranks; ``[n]`` when not distributed.
    """
    if not is_dist():
        return [int(n)]
    local = torch.tensor([int(n)], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(local) for _ in range(world_size())]
    dist.all_gather(sizes, local)
    return [int(s.item()) for s in sizes]


def _all_gather_padded(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """All-gather rows of possibly different counts: pad to the largest, gather, trim.

    Args:
        x: (n_r, ...) this rank's rows, ``n_r = sizes[rank()]``.
        sizes: per-rank row counts from :func:`gather_sizes`.

    Returns:
        (Σ sizes, ...) the rows of all ranks in rank order.
    """
    max_n = max(sizes)
    x = x.contiguous()
    if x.shape[0] < max_n:
        pad = x.new_zeros((max_n - x.shape[0], *x.shape[1:]))
        x = torch.cat([x, pad], dim=0)
    buffers = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(buffers, x)
    return torch.cat([buf[:n] for buf, n in zip(buffers, sizes, strict=True)], dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0; backward sums gradients over ranks and keeps this rank's rows."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        ctx.start = sum(sizes[: rank()])
        ctx.n = x.shape[0]
        return _all_gather_padded(x, sizes)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.start + ctx.n], None


class _AllReduceSum(torch.autograd.Function):
    """Out-of-place all-reduce (sum) whose backward all-reduces (sums) the incoming gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def gather_with_sizes(x: torch.Tensor, *, grad: bool = True) -> tuple[torch.Tensor, list[int]]:
    """All-gather ``x`` along dim 0 and return the per-rank sizes too.

    Args:
        x: (n_r, ...) this rank's rows; ``n_r`` may differ between ranks.
        grad: differentiable gather (see :func:`gather_with_grad`) or a detached one.

    Returns:
        ``(gathered, sizes)``: (Σ_r n_r, ...) rows in rank order, and ``[n_0, ..., n_{W-1}]``.
        Rank ``r``'s rows start at ``sum(sizes[:r])``. When not distributed: ``(x, [n])``.
    """
    if not is_dist():
        return (x if grad else x.detach()), [x.shape[0]]
    sizes = gather_sizes(x.shape[0], x.device)
    if grad:
        return _GatherWithGrad.apply(x, sizes), sizes
    with torch.no_grad():
        return _all_gather_padded(x.detach(), sizes), sizes


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0, differentiable (the standard ``GatherLayer``).

    The backward pass all-reduces (sums) the gradient of the gathered tensor and returns this
    rank's slice, so every rank's loss contributes to the gradient of every rank's rows.

    Args:
        x: (n_r, ...) this rank's rows; ranks may hold different ``n_r``.

    Returns:
        (Σ_r n_r, ...) the rows of all ranks in rank order; ``x`` itself when not distributed.
    """
    return gather_with_sizes(x, grad=True)[0]


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0 without gradient (e.g. momentum-encoder keys).

    Args:
        x: (n_r, ...) this rank's rows; ranks may hold different ``n_r``.

    Returns:
        (Σ_r n_r, ...) detached rows of all ranks in rank order.
    """
    return gather_with_sizes(x, grad=False)[0]


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` over ranks, out of place and differentiable.

    The backward pass sums the incoming gradient over ranks (the adjoint of an all-reduce).
    Every rank must take part in the backward pass, as in any DDP loss.

    Args:
        x: any shape, identical on all ranks.

    Returns:
        Σ_r x_r (same shape); ``x`` itself when not distributed.
    """
    if not is_dist():
        return x
    return _AllReduceSum.apply(x)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Average ``x`` over ranks, out of place and differentiable (``all_reduce_sum(x) / W``).

    Args:
        x: any shape, identical on all ranks.

    Returns:
        (1/W) Σ_r x_r (same shape); ``x`` itself when not distributed.
    """
    if not is_dist():
        return x
    return all_reduce_sum(x) / world_size()


def all_reduce_max(x: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over ranks, out of place and not differentiable.

    Args:
        x: any shape, identical on all ranks.

    Returns:
        max_r x_r (same shape), detached; ``x.detach()`` when not distributed.
    """
    out = x.detach().contiguous().clone()
    if is_dist():
        dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


def global_batch_size(n: int, device: torch.device | str = "cpu") -> int:
    """Total rows over ranks, ``Σ_r n_r`` (``n`` when not distributed)."""
    return sum(gather_sizes(n, device))


def barrier() -> None:
    """Wait for all ranks (no-op when not distributed)."""
    if is_dist():
        dist.barrier()


def cleanup() -> None:
    """Destroy the default process group (no-op when not distributed)."""
    if is_dist():
        dist.destroy_process_group()


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a ``torchrun`` launch.

    Attributes:
        rank: global rank.
        local_rank: rank on this node (the CUDA device index under NCCL).
        world_size: number of processes.
        backend: the process-group backend, ``None`` when not distributed.
    """

    rank: int
    local_rank: int
    world_size: int
    backend: str | None

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the one that writes results)."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    """Read a non-negative integer environment variable; bad values raise ConfigError."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as err:
        raise ConfigError(name, f"environment variable must be an integer, got {raw!r}") from err
    if value < 0:
        raise ConfigError(name, f"environment variable must be >= 0, got {value}")
    return value


def init_from_env(backend: str | None = None, *, timeout_s: float = 1800.0) -> DistInfo:
    """Initialise the default process group from ``torchrun``'s environment.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. With
    ``WORLD_SIZE`` unset or 1 nothing is initialised (single process). Under NCCL the CUDA device
    is set to ``LOCAL_RANK``. If a group already exists it is reused.

    Args:
        backend: ``"gloo"``, ``"nccl"`` or ``"mpi"``; ``None`` picks NCCL when CUDA is available,
            gloo otherwise.
        timeout_s: collective timeout in seconds.

    Returns:
        The :class:`DistInfo` of this process.

    Raises:
        ConfigError: unknown backend, missing or malformed environment variables.
    """
    if backend is not None and backend not in BACKENDS:
        raise ConfigError("backend", f"unknown value {backend!r}", BACKENDS)
    if is_dist():
        return DistInfo(rank(), local_rank(), world_size(), str(dist.get_backend()))
    size = _env_int("WORLD_SIZE", 1)
    if size < 1:
        raise ConfigError("WORLD_SIZE", f"must be >= 1, got {size}")
    global_rank = _env_int("RANK", 0)
    if global_rank >= size:
        raise ConfigError("RANK", f"must be < WORLD_SIZE={size}, got {global_rank}")
    node_rank = local_rank()
    if size == 1:
        return DistInfo(0, node_rank, 1, None)
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(key):
            raise ConfigError(key, f"environment variable is required when WORLD_SIZE={size}")
    _env_int("MASTER_PORT", 0)
    chosen = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if chosen == "nccl":
        torch.cuda.set_device(node_rank)
    dist.init_process_group(
        backend=chosen,
        init_method="env://",
        rank=global_rank,
        world_size=size,
        timeout=timedelta(seconds=timeout_s),
    )
    return DistInfo(global_rank, node_rank, size, chosen)
