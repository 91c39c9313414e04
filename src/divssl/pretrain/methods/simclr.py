"""SimCLR (Chen et al., 2020): projector + NT-Xent between the two views of each image.

Defaults follow solo-learn's CIFAR preset (``scripts/pretrain/cifar/simclr.yaml``; the projector of
``solo/methods/simclr.py`` is Linear-ReLU-Linear without BatchNorm); every run takes its values
from its recipe (``divssl recipes --method simclr``). Both views go through the backbone in one
batch, as in SimCLR's own code (BatchNorm sees 2B rows).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from divssl.pretrain import losses
from divssl.pretrain.methods.base import Method, MethodConfig, StepOutput, register_method
from divssl.pretrain.methods.heads import check_two_views, forward_multicrop, mlp


class SimCLRConfig(MethodConfig):
    """SimCLR hyperparameters (``method_args.*``)."""

    proj_hidden_dim: int = Field(2048, ge=1)  # units; solo-learn CIFAR projector hidden width
    proj_output_dim: int = Field(256, ge=1)  # units; solo-learn CIFAR embedding width z
    proj_layers: int = Field(2, ge=1)  # Linear layers (solo-learn: Linear-ReLU-Linear)
    proj_use_bn: bool = False  # BN after hidden layers (solo-learn: none; SimCLR v1 repo: yes)
    proj_last_bn: bool = False  # BN after the last layer (SimCLR v1 repo: yes)
    temperature: float = Field(0.2, gt=0)  # softmax temperature; solo-learn CIFAR 0.2


@register_method
class SimCLR(Method):
    """SimCLR: backbone -> MLP projector -> NT-Xent over the 2B embeddings of the global batch."""

    name = "simclr"
    Config = SimCLRConfig
    augment_preset = "simclr"

    def __init__(
        self, backbone: nn.Module, feat_dim: int, cfg: SimCLRConfig, num_classes: int | None = None
    ) -> None:
        super().__init__(backbone, feat_dim, cfg, num_classes)
        self.cfg: SimCLRConfig = cfg
        self.projector = mlp(
            feat_dim,
            cfg.proj_hidden_dim,
            cfg.proj_output_dim,
            cfg.proj_layers,
            bn_last=cfg.proj_last_bn,
            use_bn=cfg.proj_use_bn,
        )

    def training_step(
        self, views: list[torch.Tensor], labels: torch.Tensor | None, step: int, total_steps: int
    ) -> StepOutput:
        """NT-Xent between the projections of the two views.

        Args:
            views: two (B, 3, h, w) views.
            labels: unused.
            step: unused (no schedule).
            total_steps: unused.
        """
        check_two_views(views, self.name)
        feats = forward_multicrop(self.backbone, views)  # (2, B, D)
        z = self.projector(feats.flatten(0, 1)).unflatten(0, feats.shape[:2])  # (2, B, P)
        loss = losses.nt_xent(z[0], z[1], self.cfg.temperature)
        return StepOutput(loss)
