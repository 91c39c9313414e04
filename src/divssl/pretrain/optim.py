"""LARS with LARC clipping, as the SSL references run it.

Hand-written rather than ``timm.optim.Lars`` because timm decides whether to adapt a parameter
from its group's weight decay (a group with ``weight_decay == 0`` is never adapted), so
``optim.weight_decay=0`` silently turned LARS into SGD, and it cannot exclude a group from
adaptation while decaying it or the reverse. Here each group says explicitly whether it is
adapted (``lars_adapt``), independent of its decay, as solo-learn's ``solo/utils/lars.py``
(commit 9187ea3) with ``exclude_bias_n_norm``.

Per parameter ``p`` with gradient ``g``, in an adapted group (solo-learn's formula):

1. ``ratio = eta * ||p|| / (||g|| + wd * ||p|| + eps)`` when both norms are non-zero (else no
   adaptation and no decay, as the reference);
2. with ``clip`` (LARC): ``ratio = min(ratio / lr, 1)``, so the effective step never exceeds
   the global learning rate;
3. ``d = (g + wd * p) * ratio``.

In a group that is not adapted, ``d = g`` (no decay: solo-learn excludes biases and norms from
both). Then SGD momentum ``buf = m * buf + d`` (``buf = d`` at the first step) and
``p -= lr * buf``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling with optional LARC clipping.

    Args:
        params: parameters or parameter groups. A group may set ``lars_adapt`` (default True)
            and its own ``weight_decay``.
        lr: global learning rate.
        momentum: SGD momentum.
        weight_decay: L2 decay of adapted groups (added to the gradient before scaling).
        eta: trust coefficient.
        clip: LARC clipping ``min(ratio / lr, 1)`` (solo-learn ``clip_lr``).
        eps: added to the denominator of the trust ratio.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.02,
        clip: bool = True,
        eps: float = 1e-8,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0 or eta <= 0:
            raise ValueError(
                f"LARS needs lr, momentum, weight_decay >= 0 and eta > 0; got lr={lr}, "
                f"momentum={momentum}, weight_decay={weight_decay}, eta={eta}"
            )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "eta": eta,
            "clip": clip,
            "eps": eps,
            "lars_adapt": True,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One optimisation step (see the module docstring for the update)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                if group["lars_adapt"]:
                    d_p = self._adapted(p, d_p, group, lr, wd)
                if momentum != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        buf = state["momentum_buffer"] = d_p.detach().clone()
                    else:
                        buf = state["momentum_buffer"]
                        buf.mul_(momentum).add_(d_p)
                    d_p = buf
                p.add_(d_p, alpha=-lr)
        return loss

    @staticmethod
    def _adapted(
        p: torch.Tensor, grad: torch.Tensor, group: dict[str, Any], lr: float, wd: float
    ) -> torch.Tensor:
        """``(g + wd p) * trust_ratio`` of one parameter (``g`` unchanged if a norm is 0)."""
        p_norm = torch.linalg.vector_norm(p)
        g_norm = torch.linalg.vector_norm(grad)
        if p_norm == 0 or g_norm == 0:
            return grad
        ratio = group["eta"] * p_norm / (g_norm + p_norm * wd + group["eps"])
        if group["clip"] and lr > 0:
            ratio = torch.clamp(ratio / lr, max=1.0)
        return (grad + wd * p) * ratio
