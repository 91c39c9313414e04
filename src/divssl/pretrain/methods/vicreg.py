"""VICReg (Bardes, Ponce & LeCun, 2022): invariance, variance and covariance terms on the
expander outputs of the two views.

Defaults follow solo-learn's CIFAR preset (``scripts/pretrain/cifar/vicreg.yaml``): a 3-layer
expander of width 2048 (8192 in the paper) and coefficients 25 / 25 / 1 (paper and solo-learn).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from divssl.pretrain import losses
from divssl.pretrain.methods.base import Method, MethodConfig, StepOutput, register_method
from divssl.pretrain.methods.heads import check_two_views, mlp


class VICRegConfig(MethodConfig):
    """VICReg hyperparameters (``method_args.*``)."""

    proj_hidden_dim: int = Field(2048, ge=1)  # units; solo-learn CIFAR (paper 8192)
    proj_output_dim: int = Field(2048, ge=1)  # units; solo-learn CIFAR (paper 8192)
    proj_layers: int = Field(3, ge=1)  # Linear layers; (Linear-BN-ReLU) x 2 then Linear (paper)
    sim_coeff: float = Field(25.0, ge=0)  # lambda, invariance weight (paper)
    std_coeff: float = Field(25.0, ge=0)  # mu, variance weight (paper)
    cov_coeff: float = Field(1.0, ge=0)  # nu, covariance weight (paper)
    # main_vicreg.py divides the variance term by 2; the paper and solo-learn do not
    variance_halved: bool = False


@register_method
class VICReg(Method):
    """VICReg with an MLP expander."""

    name = "vicreg"
    Config = VICRegConfig
    augment_preset = "vicreg"

    def __init__(
        self, backbone: nn.Module, feat_dim: int, cfg: VICRegConfig, num_classes: int | None = None
    ) -> None:
        super().__init__(backbone, feat_dim, cfg, num_classes)
        self.cfg: VICRegConfig = cfg
        self.projector = mlp(feat_dim, cfg.proj_hidden_dim, cfg.proj_output_dim, cfg.proj_layers)

    def training_step(
        self, views: list[torch.Tensor], labels: torch.Tensor | None, step: int, total_steps: int
    ) -> StepOutput:
        """VICReg loss between the expanded views.

        Args:
            views: two (B, 3, h, w) views, each forwarded separately (BatchNorm sees B rows).
            labels: unused.
            step: unused (no schedule).
            total_steps: unused.
        """
        check_two_views(views, self.name)
        z_a, z_b = (self.projector(self.backbone(v)) for v in views)
        c = self.cfg
        loss = losses.vicreg(
            z_a, z_b, c.sim_coeff, c.std_coeff, c.cov_coeff, variance_halved=c.variance_halved
        )
        return StepOutput(loss)
