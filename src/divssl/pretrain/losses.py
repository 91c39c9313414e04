"""The seven self-supervised losses as pure functions, DDP-aware.

Each loss follows its paper and the authors' reference code (the docstring names the source).
Targets (momentum keys, BYOL targets, DINO teacher probabilities, SwAV codes) are detached inside
the loss, so gradients only reach the online branch.

Under ``torch.distributed`` every loss is defined so that **the mean of the per-rank losses equals
the single-process loss on the global batch**, and gradients averaged over ranks (as DDP does)
equal the single-process gradients (see :mod:`divssl.distributed` for the collectives' adjoints).
Two patterns occur:

* per-sample losses (NT-Xent, MoCo v3, BYOL, DINO, SwAV, VICReg's invariance term) return
  ``W / N_global · Σ_local`` — the local mean when ranks hold equal batches, exact otherwise;
* batch-statistic losses (Barlow Twins, VICReg's variance/covariance terms) are computed from
  global statistics and return the same value on every rank.

Precision: the losses run in at least float32. Half / bfloat16 inputs are upcast and autocast is
disabled inside each loss: the loss is a negligible share of a step's compute, while its
reductions (D² correlation terms, softmaxes over thousands of prototypes, exp(s / 0.05)) lose
accuracy or overflow in 16 bits. float64 inputs stay float64.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

from divssl.distributed import (
    all_reduce_max,
    all_reduce_sum,
    gather_sizes,
    gather_with_sizes,
    global_batch_size,
    rank,
    world_size,
)

_F = TypeVar("_F", bound=Callable[..., torch.Tensor])
_AUTOCAST_DEVICES = ("cpu", "cuda", "mps", "xpu")

__all__ = [
    "barlow_twins",
    "byol",
    "dino",
    "dino_center_update",
    "mocov3",
    "nt_xent",
    "sinkhorn",
    "swav",
    "vicreg",
]


# ----------------------------------------------------------------------------- precision


def _upcast(value: Any) -> Any:
    """Half / bfloat16 tensors to float32; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.dtype in (torch.float16, torch.bfloat16):
        return value.float()
    return value


def _no_autocast(args: tuple[Any, ...]) -> AbstractContextManager[Any]:
    """A context disabling autocast on the device of the first tensor argument."""
    device_type = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
    if device_type not in _AUTOCAST_DEVICES:
        return nullcontext()
    return torch.autocast(device_type=device_type, enabled=False)


def _full_precision(fn: _F) -> _F:
    """Run a loss in at least float32: upcast 16-bit tensor arguments, disable autocast."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> torch.Tensor:
        args = tuple(_upcast(a) for a in args)
        kwargs = {key: _upcast(value) for key, value in kwargs.items()}
        with _no_autocast((*args, *kwargs.values())):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# ----------------------------------------------------------------------------- validation


def _check_matrix(x: torch.Tensor, name: str) -> None:
    """Require a floating (B, D) tensor with B, D >= 1."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must have shape (B, D) with B, D >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {x.dtype}")


def _check_pair(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Require two floating (B, D) tensors of the same shape."""
    _check_matrix(a, name_a)
    _check_matrix(b, name_b)
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )


def _check_positive(value: float, name: str) -> None:
    """Require a finite positive scalar."""
    if not (float(value) > 0.0 and float(value) < float("inf")):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_global_batch(n_global: int, loss: str, why: str) -> None:
    """Require at least two samples in the global batch."""
    if n_global < 2:
        raise ValueError(f"{loss} needs a (global) batch of at least 2 samples ({why}), got 1")


def _off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """Off-diagonal entries of a square matrix.

    Args:
        m: (D, D).

    Returns:
        (D·(D-1),) the entries m_ij with i != j.
    """
    d = m.shape[0]
    return m[~torch.eye(d, dtype=torch.bool, device=m.device)]


def _rank_weight(n_local: int, device: torch.device) -> tuple[float, int]:
    """Weight turning a local sum into this rank's share of a global mean.

    Args:
        n_local: this rank's batch size.
        device: device for the size exchange.

    Returns:
        ``(W / N_global, N_global)``: ``weight · Σ_local`` averaged over ranks is the global mean.
    """
    n_global = global_batch_size(n_local, device)
    return world_size() / n_global, n_global


# ----------------------------------------------------------------------------- SimCLR


@_full_precision
def nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalized-temperature cross-entropy (Chen et al., 2020, eq. 1).

    All ``2B`` embeddings are L2-normalised. For each of the ``2B`` anchors the positive is the
    other view of the same image and the other ``2B - 2`` embeddings are negatives (the anchor's
    similarity with itself is excluded); the loss is the mean over all ``2B`` anchors of
    ``-log softmax(sim / τ)[positive]``.

    Under DDP the negatives come from the global batch (gathered with gradient) while the anchors
    are this rank's rows; each rank returns ``W / (2 N_global) ·`` the sum over its anchors.

    Args:
        z_a: (B, D) projections of the first views.
        z_b: (B, D) projections of the second views (row i is the same image as ``z_a[i]``).
        temperature: τ > 0.

    Returns:
        Scalar loss.

    Raises:
        ValueError: bad shapes, τ <= 0, or a global batch of 1 (no negatives).
    """
    _check_pair(z_a, z_b, "z_a", "z_b")
    _check_positive(temperature, "temperature")
    z_a = F.normalize(z_a, dim=1)
    z_b = F.normalize(z_b, dim=1)
    # One collective for both views: (N, 2D) split back into (N, D) and (N, D).
    both, sizes = gather_with_sizes(torch.cat([z_a, z_b], dim=1), grad=True)
    all_a, all_b = both.split(z_a.shape[1], dim=1)
    n_global = sum(sizes)
    _check_global_batch(n_global, "nt_xent", "every anchor needs a negative")
    n = z_a.shape[0]
    anchors = torch.cat([z_a, z_b], dim=0)  # (2n, D)
    candidates = torch.cat([all_a, all_b], dim=0)  # (2N, D)
    logits = anchors @ candidates.T / temperature  # (2n, 2N)
    own = torch.arange(n, device=z_a.device) + sum(sizes[: rank()])
    self_index = torch.cat([own, own + n_global])
    positive_index = torch.cat([own + n_global, own])
    rows = torch.arange(2 * n, device=z_a.device)
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[rows, self_index] = True
    logits = logits.masked_fill(self_mask, float("-inf"))
    loss_sum = F.cross_entropy(logits, positive_index, reduction="sum")
    return loss_sum * (world_size() / (2 * n_global))


# ----------------------------------------------------------------------------- MoCo v3


@_full_precision
def mocov3(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo v3's contrastive loss (Chen, Xie & He, 2021, Algorithm 1 / official ``ctr``).

    ``q`` and ``k`` are L2-normalised; logits are ``q · kᵀ / τ`` with the positive on the
    diagonal; the loss is the cross-entropy times ``2τ``. ``k`` comes from the momentum encoder
    and is detached here. The symmetric loss ``mocov3(q1, k2) + mocov3(q2, k1)`` is formed by the
    method.

    Under DDP the keys are gathered without gradient from all ranks and the labels are offset by
    this rank's start in the global batch (``rank · B`` for equal batches); each rank returns
    ``2τ · W / N_global ·`` the sum over its queries.

    Args:
        q: (B, D) online predictions for one view.
        k: (B, D) momentum-encoder keys for the other view.
        temperature: τ > 0.

    Returns:
        Scalar loss.

    Raises:
        ValueError: bad shapes, τ <= 0, or a global batch of 1 (no negatives).
    """
    _check_pair(q, k, "q", "k")
    _check_positive(temperature, "temperature")
    q = F.normalize(q, dim=1)
    k = F.normalize(k.detach(), dim=1)
    all_k, sizes = gather_with_sizes(k, grad=False)
    n_global = sum(sizes)
    _check_global_batch(n_global, "mocov3", "every query needs a negative key")
    logits = q @ all_k.T / temperature  # (B, N)
    labels = torch.arange(q.shape[0], device=q.device) + sum(sizes[: rank()])
    loss_sum = F.cross_entropy(logits, labels, reduction="sum")
    return loss_sum * (world_size() / n_global) * (2.0 * temperature)


# ----------------------------------------------------------------------------- BYOL


@_full_precision
def byol(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's regression loss (Grill et al., 2020, eq. 2): ``2 - 2 · cos(p, z)``, batch mean.

    ``z`` is the target network's projection and is detached here. The symmetric loss (both
    views through the predictor) is formed by the method.

    Under DDP each rank returns ``W / N_global ·`` the sum over its rows.

    Args:
        p: (B, D) online predictions.
        z: (B, D) target projections.

    Returns:
        Scalar loss in [0, 4].

    Raises:
        ValueError: bad shapes.
    """
    _check_pair(p, z, "p", "z")
    p = F.normalize(p, dim=1)
    z = F.normalize(z.detach(), dim=1)
    per_sample = 2.0 - 2.0 * (p * z).sum(dim=1)  # (B,)
    weight, _ = _rank_weight(p.shape[0], p.device)
    return per_sample.sum() * weight


# ----------------------------------------------------------------------------- Barlow Twins


def _standardize(z: torch.Tensor, n_global: int, eps: float) -> torch.Tensor:
    """Standardise each dimension over the global batch, like ``BatchNorm1d(affine=False)``.

    Args:
        z: (B, D) this rank's rows.
        n_global: global batch size.
        eps: added to the biased variance inside the square root.

    Returns:
        (B, D) ``(z - mean) / sqrt(var_biased + eps)`` with global mean and variance.
    """
    mean = all_reduce_sum(z.sum(dim=0)) / n_global  # (D,)
    centered = z - mean
    var = all_reduce_sum(centered.pow(2).sum(dim=0)) / n_global  # (D,) biased
    return centered / torch.sqrt(var + eps)


@_full_precision
def barlow_twins(
    z_a: torch.Tensor, z_b: torch.Tensor, lambd: float, *, scale_loss: float = 1.0
) -> torch.Tensor:
    """Barlow Twins' redundancy-reduction loss (Zbontar et al., 2021, Algorithm 1).

    Each dimension is standardised over the global batch with the biased variance and
    ``eps = 1e-5`` (``BatchNorm1d`` without affine, synchronised under DDP); the
    cross-correlation is ``c = z_aᵀ z_b / N_global`` (under DDP the local products are summed
    over ranks); the loss is ``Σ_i (1 - c_ii)² + λ Σ_{i≠j} c_ij²``, times ``scale_loss``
    (solo-learn's multiplier). Every rank returns the same, global value.

    Args:
        z_a: (B, D) projections of the first views.
        z_b: (B, D) projections of the second views.
        lambd: weight λ of the redundancy-reduction (off-diagonal) term.
        scale_loss: overall multiplier.

    Returns:
        Scalar loss.

    Raises:
        ValueError: bad shapes or a global batch of 1 (variance undefined).
    """
    _check_pair(z_a, z_b, "z_a", "z_b")
    n_global = global_batch_size(z_a.shape[0], z_a.device)
    _check_global_batch(n_global, "barlow_twins", "batch statistics need two samples")
    a = _standardize(z_a, n_global, eps=1e-5)
    b = _standardize(z_b, n_global, eps=1e-5)
    c = all_reduce_sum(a.T @ b) / n_global  # (D, D)
    on_diag = (torch.diagonal(c) - 1.0).pow(2).sum()
    off_diag = _off_diagonal(c).pow(2).sum()
    return scale_loss * (on_diag + lambd * off_diag)


# ----------------------------------------------------------------------------- VICReg


@_full_precision
def vicreg(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    sim_coeff: float,
    std_coeff: float,
    cov_coeff: float,
    *,
    variance_halved: bool = False,
) -> torch.Tensor:
    """VICReg (Bardes, Ponce & LeCun, 2022): the paper's Eq. 6 and solo-learn's
    ``vicreg_loss_func``.

    ``repr = MSE(z_a, z_b)``; both embeddings are gathered (with gradient) over ranks for the
    variance and covariance terms and centred per dimension;
    ``std = sqrt(var_unbiased + 1e-4)``, ``std_loss = mean(relu(1 - std_a)) +
    mean(relu(1 - std_b))`` (the paper's ``v(Z) + v(Z')``; the authors' ``main_vicreg.py`` divides
    each term by 2: ``variance_halved=True``); ``cov = zᵀz / (N - 1)``, ``cov_loss =
    Σ offdiag(cov_a)² / D + Σ offdiag(cov_b)² / D``; ``loss = sim·repr + std·std_loss +
    cov·cov_loss``.

    Under DDP the invariance term is this rank's share ``W / (N_global · D) · Σ_local (a - b)²``
    and the variance/covariance terms are global (identical on every rank).

    Args:
        z_a: (B, D) expander outputs of the first views.
        z_b: (B, D) expander outputs of the second views.
        sim_coeff: weight of the invariance term (25 in the paper).
        std_coeff: weight of the variance term (25 in the paper).
        cov_coeff: weight of the covariance term (1 in the paper).
        variance_halved: halve the variance term as ``main_vicreg.py`` does.

    Returns:
        Scalar loss.

    Raises:
        ValueError: bad shapes or a global batch of 1 (unbiased variance undefined).
    """
    _check_pair(z_a, z_b, "z_a", "z_b")
    dim = z_a.shape[1]
    both, sizes = gather_with_sizes(torch.cat([z_a, z_b], dim=1), grad=True)  # (N, 2D)
    x, y = both.split(dim, dim=1)
    n_global = sum(sizes)
    _check_global_batch(n_global, "vicreg", "the unbiased variance needs two samples")
    repr_loss = (z_a - z_b).pow(2).sum() * (world_size() / (n_global * dim))
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + 1e-4)
    std_y = torch.sqrt(y.var(dim=0) + 1e-4)
    std_loss = F.relu(1.0 - std_x).mean() + F.relu(1.0 - std_y).mean()
    if variance_halved:
        std_loss = std_loss / 2
    cov_x = (x.T @ x) / (n_global - 1)
    cov_y = (y.T @ y) / (n_global - 1)
    cov_loss = _off_diagonal(cov_x).pow(2).sum() / dim + _off_diagonal(cov_y).pow(2).sum() / dim
    return sim_coeff * repr_loss + std_coeff * std_loss + cov_coeff * cov_loss


# ----------------------------------------------------------------------------- DINO


def _check_dino(
    student_out: torch.Tensor, teacher_out: torch.Tensor, center: torch.Tensor
) -> tuple[int, int]:
    """Validate DINO shapes; return ``(n_crops_s, n_crops_t)``."""
    for name, t in (("student_out", student_out), ("teacher_out", teacher_out)):
        if not isinstance(t, torch.Tensor) or t.ndim != 3 or min(t.shape) < 1:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must have shape (n_crops, B, K) with sizes >= 1, got {shape}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {t.dtype}")
    n_s, batch, k = student_out.shape
    n_t = teacher_out.shape[0]
    if teacher_out.shape[1:] != (batch, k):
        raise ValueError(
            f"teacher_out must have shape (n_crops_t, {batch}, {k}) to match student_out, "
            f"got {tuple(teacher_out.shape)}"
        )
    if n_t > n_s:
        raise ValueError(
            f"teacher crops ({n_t}) must be the first global crops of the student's ({n_s})"
        )
    if n_s == 1:
        raise ValueError("dino needs at least 2 student crops (a crop is never its own target)")
    if not isinstance(center, torch.Tensor) or center.numel() != k:
        shape = tuple(center.shape) if isinstance(center, torch.Tensor) else type(center).__name__
        raise ValueError(f"center must have K={k} entries, (K,) or (1, K), got {shape}")
    return n_s, n_t


@_full_precision
def dino(
    student_out: torch.Tensor,
    teacher_out: torch.Tensor,
    center: torch.Tensor,
    student_temp: float,
    teacher_temp: float,
) -> torch.Tensor:
    """DINO's self-distillation loss (Caron et al., 2021, Algorithm 1 / official ``DINOLoss``).

    Teacher probabilities ``q = softmax((t - center) / τ_t)`` are detached; student
    log-probabilities are ``log_softmax(s / τ_s)``. The loss is the mean over all (teacher crop
    ``iq``, student crop ``v``) pairs with ``v != iq`` of the batch mean of ``-Σ_k q log p``.
    The teacher's crops are the first ``n_crops_t`` (global) crops of the student's.

    Under DDP each rank returns ``W / N_global ·`` its batch sum (the centre is updated across
    ranks by :func:`dino_center_update`).

    Args:
        student_out: (n_crops_s, B, K) student head logits, global crops first.
        teacher_out: (n_crops_t, B, K) teacher head logits of the global crops.
        center: (K,) or (1, K) running centre of the teacher logits.
        student_temp: τ_s > 0 (0.1 in the paper).
        teacher_temp: τ_t > 0 (0.04–0.07 in the paper).

    Returns:
        Scalar loss.

    Raises:
        ValueError: bad shapes, fewer than 2 student crops, or non-positive temperatures.
    """
    n_s, n_t = _check_dino(student_out, teacher_out, center)
    _check_positive(student_temp, "student_temp")
    _check_positive(teacher_temp, "teacher_temp")
    batch, k = student_out.shape[1:]
    q = F.softmax((teacher_out - center.reshape(1, 1, k)) / teacher_temp, dim=-1).detach()
    log_p = F.log_softmax(student_out / student_temp, dim=-1)  # (n_s, B, K)
    # Cross-entropy of every (teacher crop, student crop) pair summed over the batch: (n_t, n_s).
    pair_ce = -torch.einsum("tbk,sbk->ts", q.to(log_p.dtype), log_p)
    pair_mask = ~torch.eye(n_t, n_s, dtype=torch.bool, device=log_p.device)
    n_pairs = int(pair_mask.sum())
    weight, _ = _rank_weight(batch, student_out.device)
    return pair_ce[pair_mask].sum() * (weight / n_pairs)


@torch.no_grad()
def dino_center_update(
    center: torch.Tensor, teacher_out: torch.Tensor, momentum: float
) -> torch.Tensor:
    """DINO's centre update (official ``update_center``), averaged over all ranks.

    ``center ← m · center + (1 - m) · mean of the teacher logits`` over all teacher crops and
    the global batch.

    Args:
        center: (K,) or (1, K) current centre.
        teacher_out: (n_crops_t, B, K) teacher head logits.
        momentum: m in [0, 1] (0.9 in the paper).

    Returns:
        The new centre, same shape as ``center``.

    Raises:
        ValueError: bad shapes or momentum outside [0, 1].
    """
    if teacher_out.ndim != 3 or center.numel() != teacher_out.shape[-1]:
        raise ValueError(
            f"teacher_out must be (n_crops_t, B, K) and center have K entries, got "
            f"{tuple(teacher_out.shape)} and {tuple(center.shape)}"
        )
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
    rows = _upcast(teacher_out).reshape(-1, teacher_out.shape[-1])  # (n_t·B, K)
    batch_sum = all_reduce_sum(rows.sum(dim=0))
    batch_center = batch_sum / global_batch_size(rows.shape[0], rows.device)
    new_center = _upcast(center) * momentum + batch_center.reshape(center.shape) * (1.0 - momentum)
    return new_center.to(center.dtype)


# ----------------------------------------------------------------------------- SwAV


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iters: int = 3) -> torch.Tensor:
    """Sinkhorn-Knopp codes (SwAV, Caron et al., 2020, official ``distributed_sinkhorn``).

    ``Q = exp(scores / ε)ᵀ`` (K, B) is normalised to total mass 1, then ``iters`` times: rows
    divided by their sums and by K (each prototype gets mass 1/K), columns divided by their sums
    and by B (each sample gets 1/B); finally ``Q · B`` so each sample's code sums to 1. Under DDP
    the total and row sums are all-reduced over ranks and B is the global number of rows.

    The scores are shifted by their global maximum before ``exp``; the shift cancels in the
    first normalisation, so the codes are unchanged but cannot overflow. Half-precision scores
    are processed in float32.

    Args:
        scores: (B, K) similarities of normalised features with normalised prototypes (rows may
            include queued samples).
        epsilon: entropic regularisation ε > 0.
        iters: number of Sinkhorn iterations (>= 1).

    Returns:
        (B, K) detached codes; each row sums to 1, and column sums approach B/K as ``iters``
        grows.

    Raises:
        ValueError: bad shapes, ε <= 0 or iters < 1.
    """
    _check_matrix(scores, "scores")
    _check_positive(epsilon, "epsilon")
    if int(iters) != iters or iters < 1:
        raise ValueError(f"iters must be an integer >= 1, got {iters!r}")
    s = scores.detach()
    if s.dtype in (torch.float16, torch.bfloat16):
        s = s.float()
    n_global = sum(gather_sizes(s.shape[0], s.device))
    q = torch.exp((s - all_reduce_max(s.max())) / epsilon).T  # (K, B)
    k = q.shape[0]
    q = q / all_reduce_sum(q.sum())
    for _ in range(int(iters)):
        q = q / all_reduce_sum(q.sum(dim=1, keepdim=True))
        q = q / k
        q = q / q.sum(dim=0, keepdim=True)
        q = q / n_global
    return (q * n_global).T


@_full_precision
def swav(
    scores_a: torch.Tensor,
    scores_b: torch.Tensor,
    temperature: float = 0.1,
    epsilon: float = 0.05,
    sinkhorn_iters: int = 3,
    *,
    queue_a: torch.Tensor | None = None,
    queue_b: torch.Tensor | None = None,
) -> torch.Tensor:
    """SwAV's swapped-prediction loss for two views (Caron et al., 2020, eq. 1-3).

    Codes ``q_a``, ``q_b`` come from :func:`sinkhorn` on the detached scores (with the queued
    scores appended before Sinkhorn and the codes of the first B rows kept); the loss is
    ``-0.5 · mean_b[Σ_k q_a log softmax(scores_b / τ) + Σ_k q_b log softmax(scores_a / τ)]``.

    Under DDP Sinkhorn runs over the global batch (and every rank's queue) and each rank returns
    ``W / N_global ·`` its batch sum.

    Args:
        scores_a: (B, K) normalised features of view a times normalised prototypes.
        scores_b: (B, K) the same for view b.
        temperature: τ > 0 of the prediction softmax.
        epsilon: ε > 0 of Sinkhorn.
        sinkhorn_iters: Sinkhorn iterations (>= 1).
        queue_a: (Q, K) scores of queued features of view a, or ``None``.
        queue_b: (Q, K) scores of queued features of view b, or ``None``.

    Returns:
        Scalar loss.

    Raises:
        ValueError: bad shapes or hyperparameters.
    """
    _check_pair(scores_a, scores_b, "scores_a", "scores_b")
    _check_positive(temperature, "temperature")
    if (queue_a is None) != (queue_b is None):
        raise ValueError("queue_a and queue_b must be given together")
    batch, k = scores_a.shape
    rows_a, rows_b = scores_a.detach(), scores_b.detach()
    if queue_a is not None and queue_b is not None:
        for name, queue in (("queue_a", queue_a), ("queue_b", queue_b)):
            _check_matrix(queue, name)
            if queue.shape[1] != k:
                raise ValueError(f"{name} must have shape (Q, {k}), got {tuple(queue.shape)}")
        rows_a = torch.cat([rows_a, queue_a.detach().to(rows_a.dtype)], dim=0)
        rows_b = torch.cat([rows_b, queue_b.detach().to(rows_b.dtype)], dim=0)
    log_p_a = F.log_softmax(scores_a / temperature, dim=1)
    log_p_b = F.log_softmax(scores_b / temperature, dim=1)
    q_a = sinkhorn(rows_a, epsilon, sinkhorn_iters)[:batch].to(log_p_b.dtype)
    q_b = sinkhorn(rows_b, epsilon, sinkhorn_iters)[:batch].to(log_p_a.dtype)
    per_sample = -0.5 * ((q_a * log_p_b).sum(dim=1) + (q_b * log_p_a).sum(dim=1))  # (B,)
    weight, _ = _rank_weight(batch, scores_a.device)
    return per_sample.sum() * weight
