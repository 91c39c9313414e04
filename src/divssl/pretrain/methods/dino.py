"""DINO (Caron et al., 2021): self-distillation from an EMA teacher with centering and sharpening.

The student (backbone + DINO head) sees every crop; the teacher (EMA copy) sees the 2 global crops.
Teacher outputs are centred with a running mean ``center`` (a buffer, so checkpoints hold it) and
sharpened with a temperature warmed up linearly from ``warmup_teacher_temp`` to ``teacher_temp``.
The head's last layer is frozen for the first steps (its gradients are dropped before the
optimizer step, as DINO's ``cancel_gradients_last_layer``).

Epoch-valued settings (teacher-temperature warm-up, last layer frozen) are in epochs, as in the
references (solo-learn CIFAR: no warm-up, 1 frozen epoch; ImageNet-100: 50 epochs of warm-up) and
become fractions of the run through ``Method.epochs_fraction`` (see ``schedule.units``).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from divssl.pretrain import losses
from divssl.pretrain.budget import cosine_increase, frozen, linear_warmup_constant
from divssl.pretrain.methods.base import Method, MethodConfig, StepOutput, register_method
from divssl.pretrain.methods.ema import ema_update, make_momentum_copy
from divssl.pretrain.methods.heads import DINOHead, forward_multicrop


class DINOConfig(MethodConfig):
    """DINO hyperparameters (``method_args.*``)."""

    proj_hidden_dim: int = Field(2048, ge=1)  # units; DINO head MLP width (paper, solo-learn)
    proj_output_dim: int = Field(256, ge=1)  # units; bottleneck before the prototypes (paper)
    proj_layers: int = Field(3, ge=1)  # Linear layers of the head MLP (paper)
    num_prototypes: int = Field(4096, ge=1)  # K; solo-learn CIFAR 4096 (paper ImageNet 65536)
    use_bn_in_head: bool = False  # BN in the head MLP; off in the paper and solo-learn
    norm_last_layer: bool = True  # prototypes fixed to unit norm (paper default, stabler)
    student_temp: float = Field(0.1, gt=0)  # student softmax temperature (paper)
    teacher_temp: float = Field(0.07, gt=0)  # teacher temperature after warm-up (solo-learn)
    warmup_teacher_temp: float = Field(0.04, gt=0)  # teacher temperature at step 0 (paper)
    # epochs of linear teacher-temperature warm-up (solo-learn default 0; imagenet-100 yaml 50)
    warmup_teacher_temp_epochs: float = Field(0.0, ge=0)
    center_momentum: float = Field(0.9, ge=0, le=1)  # EMA rate of the center (paper)
    base_tau: float = Field(0.9995, ge=0, le=1)  # teacher momentum at step 0 (solo-learn CIFAR)
    final_tau: float = Field(1.0, ge=0, le=1)  # teacher momentum at the last step (paper)
    # epochs with the last layer frozen (solo-learn and DINO default 1)
    freeze_last_layer_epochs: float = Field(1.0, ge=0)


@register_method
class DINO(Method):
    """DINO with an EMA teacher (backbone + head), centering and multi-crop."""

    name = "dino"
    Config = DINOConfig
    augment_preset = "dino"
    supports_local_crops = True
    center: torch.Tensor  # (K,) buffer registered in __init__, declared for type checkers

    def __init__(
        self, backbone: nn.Module, feat_dim: int, cfg: DINOConfig, num_classes: int | None = None
    ) -> None:
        super().__init__(backbone, feat_dim, cfg, num_classes)
        self.cfg: DINOConfig = cfg
        self.head = DINOHead(
            feat_dim,
            cfg.num_prototypes,
            hidden_dim=cfg.proj_hidden_dim,
            bottleneck_dim=cfg.proj_output_dim,
            num_layers=cfg.proj_layers,
            use_bn=cfg.use_bn_in_head,
            norm_last_layer=cfg.norm_last_layer,
        )
        self.teacher_backbone = make_momentum_copy(backbone)
        self.teacher_head = make_momentum_copy(self.head)
        self.register_buffer("center", torch.zeros(cfg.num_prototypes))  # (K,)
        self._teacher_out: torch.Tensor | None = None  # (2, B, K) for the center update

    def teacher_temp(self, step: int, total_steps: int) -> float:
        """Teacher temperature: linear warm-up, then constant."""
        c = self.cfg
        return linear_warmup_constant(
            step,
            total_steps,
            c.warmup_teacher_temp,
            c.teacher_temp,
            self.epochs_fraction(c.warmup_teacher_temp_epochs),
        )

    def momentum(self, step: int, total_steps: int) -> float:
        """Teacher EMA momentum: cosine from ``base_tau`` to ``final_tau``."""
        return cosine_increase(step, total_steps, self.cfg.base_tau, self.cfg.final_tau)

    def student_forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        """All crops through the student: (n_s, B, K) logits."""
        feats = forward_multicrop(self.backbone, views)  # (n_s, B, D)
        return self.head(feats.flatten(0, 1)).unflatten(0, feats.shape[:2])

    @torch.no_grad()
    def teacher_forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        """The 2 global crops through the teacher: (2, B, K) logits."""
        feats = forward_multicrop(self.teacher_backbone, views[:2])
        return self.teacher_head(feats.flatten(0, 1)).unflatten(0, feats.shape[:2])

    def training_step(
        self, views: list[torch.Tensor], labels: torch.Tensor | None, step: int, total_steps: int
    ) -> StepOutput:
        """DINO cross-entropy between sharpened, centred teacher and student distributions.

        Args:
            views: 2 global crops (B, 3, H, W) then optional local crops (B, 3, h, w).
            labels: unused.
            step: 0-based step (teacher temperature).
            total_steps: run length.
        """
        if len(views) < 2:
            raise ValueError(f"dino needs at least the 2 global crops, got {len(views)} views")
        student_out = self.student_forward(views)
        teacher_out = self.teacher_forward(views)
        t_temp = self.teacher_temp(step, total_steps)
        loss = losses.dino(student_out, teacher_out, self.center, self.cfg.student_temp, t_temp)
        self._teacher_out = teacher_out.detach()
        return StepOutput(loss, {"teacher_temp": t_temp})

    def on_before_optimizer_step(self, step: int, total_steps: int) -> None:
        """Drop the last layer's gradients while it is frozen (no update, no weight decay)."""
        if frozen(step, total_steps, self.epochs_fraction(self.cfg.freeze_last_layer_epochs)):
            for p in self.head.last_layer.parameters():
                p.grad = None

    def on_after_optimizer_step(self, step: int, total_steps: int) -> None:
        """EMA teacher update and center update ``c = m c + (1 - m) mean(teacher_out)``."""
        m = self.momentum(step, total_steps)
        ema_update(self.teacher_backbone, self.backbone, m)
        ema_update(self.teacher_head, self.head, m)
        if self._teacher_out is not None:
            new = losses.dino_center_update(
                self.center, self._teacher_out.float(), self.cfg.center_momentum
            )
            self.center.copy_(new)
            self._teacher_out = None
