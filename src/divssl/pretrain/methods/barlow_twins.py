"""Barlow Twins (Zbontar et al., 2021): drive the cross-correlation matrix of the two views'
projections to the identity.

Defaults follow solo-learn's CIFAR preset (``scripts/pretrain/cifar/barlow.yaml``): a 3-layer
projector of width 2048 (8192 in the paper), ``lambd = 0.0051`` (paper) and ``scale_loss = 0.1``.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from divssl.pretrain import losses
from divssl.pretrain.methods.base import Method, MethodConfig, StepOutput, register_method
from divssl.pretrain.methods.heads import check_two_views, mlp


class BarlowTwinsConfig(MethodConfig):
    """Barlow Twins hyperparameters (``method_args.*``)."""

    proj_hidden_dim: int = Field(2048, ge=1)  # units; solo-learn CIFAR (paper 8192)
    proj_output_dim: int = Field(2048, ge=1)  # units; solo-learn CIFAR (paper 8192)
    proj_layers: int = Field(3, ge=1)  # Linear layers; (Linear-BN-ReLU) x 2 then Linear (paper)
    lambd: float = Field(0.0051, ge=0)  # off-diagonal weight (paper)
    scale_loss: float = Field(0.1, gt=0)  # overall loss scale; solo-learn CIFAR 0.1


@register_method
class BarlowTwins(Method):
    """Barlow Twins with an MLP projector."""

    name = "barlow_twins"
    Config = BarlowTwinsConfig
    augment_preset = "byol"

    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        cfg: BarlowTwinsConfig,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(backbone, feat_dim, cfg, num_classes)
        self.cfg: BarlowTwinsConfig = cfg
        self.projector = mlp(feat_dim, cfg.proj_hidden_dim, cfg.proj_output_dim, cfg.proj_layers)

    def training_step(
        self, views: list[torch.Tensor], labels: torch.Tensor | None, step: int, total_steps: int
    ) -> StepOutput:
        """Barlow Twins loss between the projected views.

        Args:
            views: two (B, 3, h, w) views, each forwarded separately (BatchNorm sees B rows).
            labels: unused.
            step: unused (no schedule).
            total_steps: unused.
        """
        check_two_views(views, self.name)
        z_a, z_b = (self.projector(self.backbone(v)) for v in views)
        loss = losses.barlow_twins(z_a, z_b, self.cfg.lambd, scale_loss=self.cfg.scale_loss)
        return StepOutput(loss)
