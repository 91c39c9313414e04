"""BYOL (Grill et al., 2020): online backbone + projector + predictor regress the EMA target's
projection of the other view, symmetric loss ``byol(p1, z2') + byol(p2, z1')``.

The target momentum follows ``tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2``
(``divssl.pretrain.budget.cosine_increase``). Defaults follow solo-learn's CIFAR preset
(``scripts/pretrain/cifar/byol.yaml``).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from divssl.pretrain import losses
from divssl.pretrain.budget import cosine_increase
from divssl.pretrain.methods.base import Method, MethodConfig, StepOutput, register_method
from divssl.pretrain.methods.ema import ema_update, make_momentum_copy
from divssl.pretrain.methods.heads import check_two_views, mlp


class BYOLConfig(MethodConfig):
    """BYOL hyperparameters (``method_args.*``)."""

    proj_hidden_dim: int = Field(4096, ge=1)  # units; paper and solo-learn CIFAR
    proj_output_dim: int = Field(256, ge=1)  # units; paper and solo-learn CIFAR
    pred_hidden_dim: int = Field(4096, ge=1)  # units; paper and solo-learn CIFAR
    base_tau: float = Field(0.99, ge=0, le=1)  # tau_base; solo-learn CIFAR 0.99 (paper 0.996)
    final_tau: float = Field(1.0, ge=0, le=1)  # momentum at the last step (paper: 1)


@register_method
class BYOL(Method):
    """BYOL with an EMA target network (backbone + projector)."""

    name = "byol"
    Config = BYOLConfig
    augment_preset = "byol"

    def __init__(
        self, backbone: nn.Module, feat_dim: int, cfg: BYOLConfig, num_classes: int | None = None
    ) -> None:
        super().__init__(backbone, feat_dim, cfg, num_classes)
        self.cfg: BYOLConfig = cfg
        self.projector = mlp(feat_dim, cfg.proj_hidden_dim, cfg.proj_output_dim, 2)
        self.predictor = mlp(cfg.proj_output_dim, cfg.pred_hidden_dim, cfg.proj_output_dim, 2)
        self.momentum_backbone = make_momentum_copy(backbone)
        self.momentum_projector = make_momentum_copy(self.projector)

    def momentum(self, step: int, total_steps: int) -> float:
        """tau at ``step``: cosine from ``base_tau`` (step 0) to ``final_tau`` (last step)."""
        return cosine_increase(step, total_steps, self.cfg.base_tau, self.cfg.final_tau)

    def training_step(
        self, views: list[torch.Tensor], labels: torch.Tensor | None, step: int, total_steps: int
    ) -> StepOutput:
        """Symmetric BYOL regression loss.

        Args:
            views: two (B, 3, h, w) views, each forwarded separately (BatchNorm sees B rows).
            labels: unused.
            step: used only for logging the momentum.
            total_steps: run length.
        """
        check_two_views(views, self.name)
        p = [self.predictor(self.projector(self.backbone(v))) for v in views]  # 2 x (B, P)
        with torch.no_grad():
            z = [self.momentum_projector(self.momentum_backbone(v)) for v in views]
        loss = losses.byol(p[0], z[1]) + losses.byol(p[1], z[0])
        return StepOutput(loss, {"tau": self.momentum(step, total_steps)})

    def on_after_optimizer_step(self, step: int, total_steps: int) -> None:
        """EMA update of the target backbone and projector."""
        m = self.momentum(step, total_steps)
        ema_update(self.momentum_backbone, self.backbone, m)
        ema_update(self.momentum_projector, self.projector, m)
