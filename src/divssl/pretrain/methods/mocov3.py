"""MoCo v3 (Chen, Xie & He, 2021): online backbone + projector + predictor against a momentum
encoder (EMA backbone + projector), symmetric InfoNCE ``mocov3(q1, k2) + mocov3(q2, k1)``.

Defaults follow solo-learn's CIFAR preset (``scripts/pretrain/cifar/mocov3.yaml``); the MLPs
follow the official code (``moco/builder.py``) and solo-learn's ``_build_mlp``: bias-free Linear
layers, BN after every layer, the projector's last BN without affine parameters; 2 projector layers
and no last BN in the predictor for ResNets, 3 layers and a last BN for ViTs, whose patch
embedding is frozen (``stop_grad_conv1``). Recipes pick these per backbone.
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


class MoCoV3Config(MethodConfig):
    """MoCo v3 hyperparameters (``method_args.*``)."""

    proj_hidden_dim: int = Field(4096, ge=1)  # units; paper and solo-learn CIFAR
    proj_output_dim: int = Field(256, ge=1)  # units; paper and solo-learn CIFAR
    # Linear layers of the projector: 2 for ResNets, 3 for ViTs (moco/builder.py, solo-learn).
    proj_layers: int = Field(2, ge=1)
    pred_hidden_dim: int = Field(4096, ge=1)  # units; paper and solo-learn CIFAR
    # Predictor's last BN: absent in the official ResNet code, present (affine=False) for ViTs.
    pred_last_bn: bool = False
    # ViT: random, frozen patch embedding (moco-v3 vits.py stop_grad_conv1); ignored by CNNs.
    freeze_patch_embed: bool = False
    temperature: float = Field(0.2, gt=0)  # softmax temperature; solo-learn CIFAR 0.2
    base_tau: float = Field(0.99, ge=0, le=1)  # EMA momentum at step 0 (solo-learn CIFAR)
    final_tau: float = Field(1.0, ge=0, le=1)  # EMA momentum at the last step (cosine ramp)


@register_method
class MoCoV3(Method):
    """MoCo v3 with a momentum encoder whose momentum follows ``cosine_increase``."""

    name = "mocov3"
    Config = MoCoV3Config
    augment_preset = "byol"

    def __init__(
        self, backbone: nn.Module, feat_dim: int, cfg: MoCoV3Config, num_classes: int | None = None
    ) -> None:
        super().__init__(backbone, feat_dim, cfg, num_classes)
        self.cfg: MoCoV3Config = cfg
        self.projector = mlp(
            feat_dim,
            cfg.proj_hidden_dim,
            cfg.proj_output_dim,
            cfg.proj_layers,
            bn_last=True,
            bn_last_affine=False,
            bias=False,
        )
        self.predictor = mlp(
            cfg.proj_output_dim,
            cfg.pred_hidden_dim,
            cfg.proj_output_dim,
            2,
            bn_last=cfg.pred_last_bn,
            bn_last_affine=False,
            bias=False,
        )
        if cfg.freeze_patch_embed:
            freeze_patch_embedding(backbone)
        self.momentum_backbone = make_momentum_copy(backbone)
        self.momentum_projector = make_momentum_copy(self.projector)

    def momentum(self, step: int, total_steps: int) -> float:
        """EMA momentum at ``step``: cosine from ``base_tau`` to ``final_tau``."""
        return cosine_increase(step, total_steps, self.cfg.base_tau, self.cfg.final_tau)

    def training_step(
        self, views: list[torch.Tensor], labels: torch.Tensor | None, step: int, total_steps: int
    ) -> StepOutput:
        """Symmetric contrastive loss between online queries and momentum keys.

        Args:
            views: two (B, 3, h, w) views; each goes through the networks separately (as in the
                official code, so BatchNorm sees B rows).
            labels: unused.
            step: used only for logging the momentum.
            total_steps: run length.
        """
        check_two_views(views, self.name)
        q = [self.predictor(self.projector(self.backbone(v))) for v in views]  # 2 x (B, P)
        with torch.no_grad():
            k = [self.momentum_projector(self.momentum_backbone(v)) for v in views]
        t = self.cfg.temperature
        loss = losses.mocov3(q[0], k[1], t) + losses.mocov3(q[1], k[0], t)
        return StepOutput(loss, {"tau": self.momentum(step, total_steps)})

    def on_after_optimizer_step(self, step: int, total_steps: int) -> None:
        """EMA update of the momentum backbone and projector."""
        m = self.momentum(step, total_steps)
        ema_update(self.momentum_backbone, self.backbone, m)
        ema_update(self.momentum_projector, self.projector, m)


def freeze_patch_embedding(backbone: nn.Module) -> int:
    """Freeze a ViT's patch projection at its random init (MoCo v3's ``stop_grad_conv1``).

    Args:
        backbone: a timm ViT (has ``patch_embed.proj``); other backbones are left alone.

    Returns:
        The number of parameter tensors frozen (0 for backbones without a patch embedding).
    """
    patch = getattr(getattr(backbone, "patch_embed", None), "proj", None)
    if patch is None:
        return 0
    params = list(patch.parameters())
    for p in params:
        p.requires_grad_(False)
    return len(params)
