"""SwAV (Caron et al., 2020): swapped prediction of Sinkhorn-Knopp cluster codes.

Features are projected, L2-normalised and scored against K unit-norm prototypes (re-normalised
before every forward pass, under ``no_grad``, as SwAV's ``main_swav.py``). Codes come from the 2
global crops (Sinkhorn-Knopp, optionally over a queue of past features of the same crop); every
other crop predicts each code, and the loss averages over the (code, crop) pairs. Prototypes are
frozen (gradients dropped) during the first steps.

Epoch-valued settings of the references (solo-learn CIFAR: queue start at epoch 50, prototypes
frozen for 2 epochs) become fractions of the run through ``Method.epochs_fraction`` (see
``schedule.units``). The queue is filled from the first step (solo-learn) and, as in SwAV, used only
once it is full.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from divssl import distributed as dist
from divssl.pretrain import losses
from divssl.pretrain.budget import frozen
from divssl.pretrain.methods.base import Method, MethodConfig, StepOutput, register_method
from divssl.pretrain.methods.heads import Prototypes, forward_multicrop, mlp


class SwAVConfig(MethodConfig):
    """SwAV hyperparameters (``method_args.*``)."""

    proj_hidden_dim: int = Field(2048, ge=1)  # units; paper and solo-learn CIFAR
    proj_output_dim: int = Field(128, ge=1)  # units; paper and solo-learn CIFAR
    num_prototypes: int = Field(3000, ge=1)  # K; solo-learn CIFAR 3000 (paper ImageNet 3000)
    temperature: float = Field(0.1, gt=0)  # softmax temperature of the predictions (paper)
    sk_epsilon: float = Field(0.05, gt=0)  # entropic regularisation of Sinkhorn-Knopp (paper)
    sk_iters: int = Field(3, ge=1)  # Sinkhorn-Knopp iterations (paper)
    # Queue length in features per global crop over all ranks (each rank keeps
    # queue_size // world_size); solo-learn CIFAR 3840 (15 batches of 256); 0 disables it.
    queue_size: int = Field(3840, ge=0)
    queue_start_epochs: float = Field(50.0, ge=0)  # solo-learn CIFAR epoch_queue_starts
    freeze_prototypes_epochs: float = Field(2.0, ge=0)  # solo-learn CIFAR


@register_method
class SwAV(Method):
    """SwAV with prototypes, Sinkhorn-Knopp codes, an optional queue and multi-crop."""

    name = "swav"
    Config = SwAVConfig
    augment_preset = "swav"
    supports_local_crops = True
    # buffers (registered in __init__), declared for type checkers
    queue: torch.Tensor
    queue_filled: torch.Tensor

    def __init__(
        self, backbone: nn.Module, feat_dim: int, cfg: SwAVConfig, num_classes: int | None = None
    ) -> None:
        super().__init__(backbone, feat_dim, cfg, num_classes)
        self.cfg: SwAVConfig = cfg
        self.projector = mlp(feat_dim, cfg.proj_hidden_dim, cfg.proj_output_dim, 2)
        self.prototypes = Prototypes(cfg.proj_output_dim, cfg.num_prototypes)
        per_rank = cfg.queue_size // dist.world_size()
        # (2, Q, P) past normalised projections of each global crop, newest first.
        self.register_buffer("queue", torch.zeros(2, per_rank, cfg.proj_output_dim))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))

    def queue_active(self, step: int, total_steps: int) -> bool:
        """Whether the queue feeds Sinkhorn-Knopp: enabled, past its start, and full."""
        capacity = self.queue.shape[1]
        if capacity == 0 or frozen(
            step, total_steps, self.epochs_fraction(self.cfg.queue_start_epochs)
        ):
            return False
        return int(self.queue_filled) >= capacity

    def embed(self, views: list[torch.Tensor]) -> torch.Tensor:
        """All crops -> (n, B, P) L2-normalised projections."""
        feats = forward_multicrop(self.backbone, views)  # (n, B, D)
        z = F.normalize(self.projector(feats.flatten(0, 1)), dim=1, p=2)
        return z.unflatten(0, feats.shape[:2])

    def training_step(
        self, views: list[torch.Tensor], labels: torch.Tensor | None, step: int, total_steps: int
    ) -> StepOutput:
        """Swapped prediction over the crops.

        Args:
            views: 2 global crops (B, 3, H, W) then optional local crops (B, 3, h, w).
            labels: unused.
            step: 0-based step (queue start).
            total_steps: run length.
        """
        if len(views) < 2:
            raise ValueError(f"swav needs at least the 2 global crops, got {len(views)} views")
        self.prototypes.normalize_()
        z = self.embed(views)  # (n, B, P)
        scores = self.prototypes(z)  # (n, B, K)
        use_queue = self.queue_active(step, total_steps)
        queued: list[torch.Tensor | None] = self.queue_scores() if use_queue else [None, None]
        if len(views) == 2:
            loss = losses.swav(
                scores[0],
                scores[1],
                self.cfg.temperature,
                self.cfg.sk_epsilon,
                self.cfg.sk_iters,
                queue_a=queued[0],
                queue_b=queued[1],
            )
        else:
            loss = self.multicrop_loss(scores, queued)
        self.push_queue(z[:2].detach())
        return StepOutput(loss, {"queue_used": float(use_queue)})

    @torch.no_grad()
    def queue_scores(self) -> list[torch.Tensor | None]:
        """Scores of the queued features against the current prototypes: 2 x (Q, K)."""
        return [self.prototypes(self.queue[i]) for i in range(2)]

    @torch.no_grad()
    def codes(self, scores: torch.Tensor, queued: torch.Tensor | None) -> torch.Tensor:
        """Sinkhorn-Knopp codes of one global crop.

        Args:
            scores: (B, K) scores of the crop.
            queued: (Q, K) scores of the queue of that crop, or ``None``.

        Returns:
            (B, K) codes (rows are distributions over prototypes).
        """
        rows = scores.detach() if queued is None else torch.cat([scores.detach(), queued])
        return losses.sinkhorn(rows, self.cfg.sk_epsilon, self.cfg.sk_iters)[: scores.shape[0]]

    def multicrop_loss(
        self, scores: torch.Tensor, queued: list[torch.Tensor | None]
    ) -> torch.Tensor:
        """SwAV's multi-crop loss: codes of the 2 global crops, predicted by every other crop.

        ``L = 1/2 sum_{a in {0,1}} 1/(n-1) sum_{v != a} H(q_a, softmax(s_v / T))``, exactly the
        loop of ``main_swav.py`` (with ``crops_for_assign = [0, 1]``). With two crops this is
        ``losses.swav``, which the two-crop path calls; ``losses.swav`` takes only two crops, so
        the cross-entropy over the extra crops is composed here from ``losses.sinkhorn``.

        Args:
            scores: (n, B, K) scores of all crops, global first.
            queued: per global crop, (Q, K) queue scores or ``None``.

        Returns:
            Scalar loss.
        """
        n, batch = scores.shape[:2]
        log_p = F.log_softmax(scores / self.cfg.temperature, dim=-1)  # (n, B, K)
        total = scores.new_zeros(())
        for a in range(2):
            q = self.codes(scores[a], queued[a]).to(log_p.dtype)  # (B, K)
            others = [v for v in range(n) if v != a]
            cross = -(q.unsqueeze(0) * log_p[others]).sum(dim=-1)  # (n-1, B)
            total = total + cross.sum() / (n - 1)
        # Per-rank share of the global-batch mean, as in divssl.pretrain.losses: W / N_global *
        # local sum.
        weight = dist.world_size() / dist.global_batch_size(batch, scores.device)
        return total * weight / 2

    @torch.no_grad()
    def push_queue(self, z_global: torch.Tensor) -> None:
        """Insert the newest projections of the 2 global crops at the front of the queue.

        Args:
            z_global: (2, B, P) detached projections.
        """
        capacity = self.queue.shape[1]
        if capacity == 0:
            return
        merged = torch.cat([z_global.to(self.queue), self.queue], dim=1)[:, :capacity]
        self.queue.copy_(merged)
        self.queue_filled.fill_(min(int(self.queue_filled) + z_global.shape[1], capacity))

    def on_before_optimizer_step(self, step: int, total_steps: int) -> None:
        """Drop the prototypes' gradients while frozen (no update, no weight decay)."""
        if frozen(step, total_steps, self.epochs_fraction(self.cfg.freeze_prototypes_epochs)):
            for p in self.prototypes.parameters():
                p.grad = None
