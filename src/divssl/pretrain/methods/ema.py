"""Momentum (EMA) networks: BYOL's target, MoCo v3's momentum encoder, DINO's teacher.

Only parameters are averaged; the target's BatchNorm running statistics are updated by its own
forward passes in train mode, as in solo-learn's ``MomentumUpdater`` and DINO's teacher update.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_momentum_copy(module: nn.Module) -> nn.Module:
    """Deep copy of ``module`` with every parameter frozen (``requires_grad=False``), so the
    training loop's optimizer never sees it; it moves only through :func:`ema_update`.

    Args:
        module: the online network.

    Returns:
        An independent copy holding the same values.
    """
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """In place ``target = momentum * target + (1 - momentum) * online`` for every parameter.

    Args:
        target: the momentum network (same architecture as ``online``).
        online: the network trained by the optimizer.
        momentum: m in [0, 1]; 1 keeps the target unchanged.

    Raises:
        ValueError: ``momentum`` outside [0, 1] or mismatched parameter names / shapes.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
    t_params = dict(target.named_parameters())
    o_params = dict(online.named_parameters())
    if t_params.keys() != o_params.keys():
        raise ValueError("EMA target and online networks have different parameters")
    for name, t in t_params.items():
        o = o_params[name]
        if t.shape != o.shape:
            raise ValueError(f"EMA shape mismatch at {name}: {tuple(t.shape)} vs {tuple(o.shape)}")
        t.mul_(momentum).add_(o.detach(), alpha=1.0 - momentum)
