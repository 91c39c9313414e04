"""Synchronised BatchNorm for data-parallel runs: statistics over the global batch.

Every reference (solo-learn ``sync_batchnorm: True``, MoCo v3, DINO, SwAV, VICReg) trains with
synchronised BN, so a run on W ranks of B / W images normalises exactly as one rank of B images.
On CUDA this is ``torch.nn.SyncBatchNorm``. torch's module refuses CPU tensors, so for CPU (gloo)
runs divssl has its own :class:`GlobalBatchNorm`: two differentiable all-reduces (the sums, then
the centred squares, for a numerically stable variance) and the usual affine map; autograd through
``torch.distributed.nn.functional.all_reduce`` gives the same input gradient as torch's
SyncBatchNorm (the gradient of the sum of every rank's loss).
"""

from __future__ import annotations

import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def _world() -> int:
    return tdist.get_world_size() if tdist.is_available() and tdist.is_initialized() else 1


def _all_reduce(x: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over ranks."""
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(x)


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm over the rows of all ranks (any backend); plain BatchNorm in a single process
    or in eval mode. Input (B, C) or (B, C, *spatial)."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (B, C, ...), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise with global-batch statistics while training under torch.distributed."""
        self._check_input_dim(x)
        if not (self.training and _world() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        count = torch.tensor([xf.numel() / xf.shape[1]], device=x.device)
        sums = _all_reduce(torch.cat([xf.sum(dim=dims), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centred = xf - mean.view(shape)
        var = _all_reduce(centred.pow(2).sum(dim=dims)) / n  # biased, as BatchNorm normalises
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            self._update_running(mean.detach(), var.detach(), float(n))
        return out.to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, n: float) -> None:
        assert self.running_mean is not None and self.running_var is not None
        assert self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (n / max(n - 1.0, 1.0))
        self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean), alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var), alpha=factor)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm of ``module`` by a synchronised one (parameters and buffers kept).

    Args:
        module: the model (converted in place where possible; use the return value).
        device: the training device: CUDA uses ``torch.nn.SyncBatchNorm``, anything else
            :class:`GlobalBatchNorm`.

    Returns:
        The converted module.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if module.affine:
            with torch.no_grad():
                new.weight.copy_(module.weight)
                new.bias.copy_(module.bias)
            new.weight.requires_grad_(module.weight.requires_grad)
            new.bias.requires_grad_(module.bias.requires_grad)
        if module.track_running_stats:
            new.running_mean = module.running_mean
            new.running_var = module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new.to(next(iter(module.buffers()), torch.zeros(())).device)
    for name, child in module.named_children():
        module.add_module(name, _convert(child))
    return module
