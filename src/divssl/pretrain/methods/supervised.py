"""Supervised baseline: a linear classifier on the backbone, cross-entropy on one view.

solo-learn has no supervised pretraining config; the recipes take the standard references
(``kuangliu/pytorch-cifar`` for CIFAR: SGD, weight decay 5e-4; ``pytorch/vision``
``references/classification`` for ImageNet: weight decay 1e-4), see ``divssl recipes``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from divssl.errors import ConfigError
from divssl.pretrain.methods.base import Method, MethodConfig, StepOutput, register_method


class SupervisedConfig(MethodConfig):
    """Supervised hyperparameters (``method_args.*``)."""

    label_smoothing: float = Field(0.0, ge=0, lt=1)  # cross-entropy smoothing; off by default


@register_method
class Supervised(Method):
    """Backbone + linear classifier trained with cross-entropy on labelled images."""

    name = "supervised"
    Config = SupervisedConfig
    augment_preset = "supervised"
    n_global_views = 1
    needs_labels = True

    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        cfg: SupervisedConfig,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(backbone, feat_dim, cfg, num_classes)
        if num_classes is None or num_classes < 2:
            raise ConfigError(
                "data.pool", f"supervised needs a labelled pool (>= 2 classes), got {num_classes}"
            )
        self.cfg: SupervisedConfig = cfg
        self.classifier = nn.Linear(feat_dim, num_classes)

    def training_step(
        self, views: list[torch.Tensor], labels: torch.Tensor | None, step: int, total_steps: int
    ) -> StepOutput:
        """Cross-entropy of the first view's logits.

        Args:
            views: one (B, 3, h, w) view (the ``supervised`` preset).
            labels: (B,) int64 class indices.
            step: unused (no schedule).
            total_steps: unused.
        """
        if labels is None:
            raise ValueError("supervised needs labels")
        if len(views) != 1:
            raise ValueError(f"supervised takes 1 view (preset 'supervised'), got {len(views)}")
        logits = self.classifier(self.backbone(views[0]))  # (B, num_classes)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.cfg.label_smoothing)
        accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
        return StepOutput(loss, {"train_acc": float(accuracy)})
