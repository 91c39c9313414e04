"""The method interface: a backbone plus heads, a loss and per-step hooks.

A method is ``view preset + heads + loss``. The training loop (``divssl.pretrain.loop``) calls,
each step:

1. ``out = method.training_step(views, labels, step, total_steps)`` under autocast;
2. ``out.loss.backward()``;
3. ``method.on_before_optimizer_step(step, total_steps)`` (prototype / last-layer freezing);
4. ``optimizer.step()``;
5. ``method.on_after_optimizer_step(step, total_steps)`` (EMA teachers, queues).

Every schedule a method uses is a pure function of ``(step, total_steps)`` (see
``divssl.pretrain.budget``).
Epoch-valued settings (``*_epochs``, as the papers give them) become fractions of the run through
:meth:`Method.epochs_fraction`: the training loop sets ``schedule_epochs`` to the epochs the run's
steps stand for (E = C / N under ``schedule.units=epochs``; the recipe's reference epochs under
``schedule.units=steps``, so that runs with equal C see identical schedules).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from divssl.errors import unknown_choice


class MethodConfig(BaseModel):
    """Base of each method's hyperparameters (``method_args.*`` keys); unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


# solo-learn's CIFAR max_epochs: what `schedule_epochs` is outside the training loop.
DEFAULT_SCHEDULE_EPOCHS = 1000.0


@dataclass
class StepOutput:
    """What ``training_step`` returns: the scalar loss and floats to log."""

    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)


class Method(nn.Module):
    """Base class of every pretraining method.

    Subclasses set the class attributes and implement :meth:`training_step`.

    Args:
        backbone: feature extractor mapping (B, 3, H, W) to (B, feat_dim).
        feat_dim: backbone output width.
        cfg: the method's validated ``Config``.
        num_classes: number of labels (only ``supervised`` needs it).
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    augment_preset: ClassVar[str] = "simclr"  # the closest named preset (`augment.preset`)
    n_global_views: ClassVar[int] = 2  # views at image_size (1 for supervised)
    needs_labels: ClassVar[bool] = False
    supports_local_crops: ClassVar[bool] = False  # multi-crop (DINO, SwAV)

    def __init__(
        self, backbone: nn.Module, feat_dim: int, cfg: MethodConfig, num_classes: int | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.feat_dim = feat_dim
        self.cfg = cfg
        self.num_classes = num_classes
        self.schedule_epochs = DEFAULT_SCHEDULE_EPOCHS

    def epochs_fraction(self, epochs: float) -> float:
        """An epoch-valued setting as a fraction of the run's steps (at most 1)."""
        if epochs <= 0:
            return 0.0
        return min(1.0, epochs / self.schedule_epochs)

    def training_step(
        self, views: list[torch.Tensor], labels: torch.Tensor | None, step: int, total_steps: int
    ) -> StepOutput:
        """Compute the loss of one step.

        Args:
            views: augmented views, each (B, 3, h, w) float; global crops first.
            labels: (B,) int64 or ``None``.
            step: 0-based optimizer step.
            total_steps: steps of the whole run.
        """
        raise NotImplementedError

    def forward(
        self, views: list[torch.Tensor], labels: torch.Tensor | None, step: int, total_steps: int
    ) -> StepOutput:
        """Alias of :meth:`training_step`, so DistributedDataParallel can wrap a method."""
        return self.training_step(views, labels, step, total_steps)

    def on_before_optimizer_step(self, step: int, total_steps: int) -> None:
        """Hook after backward, before the optimizer step (e.g. zero frozen gradients)."""

    def on_after_optimizer_step(self, step: int, total_steps: int) -> None:
        """Hook after the optimizer step (e.g. EMA teacher update)."""

    def extra_state(self) -> dict[str, Any]:
        """Non-parameter state to checkpoint (queues are buffers; this is for the rest)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""


_METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method to the registry under ``cls.name``."""
    _METHODS[cls.name] = cls
    return cls


def method_names() -> list[str]:
    """Names of all registered methods."""
    import divssl.pretrain.methods  # noqa: F401  (registers the built-in methods)

    return sorted(_METHODS)


def get_method(name: str, field_name: str = "method") -> type[Method]:
    """Look up a method class; unknown names raise a ConfigError listing the valid ones."""
    names = method_names()
    if name not in _METHODS:
        raise unknown_choice(field_name, name, names)
    return _METHODS[name]
