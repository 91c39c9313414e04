"""The pretraining stage: config + recipes, budget, augment, backbones, losses, methods, the loop.

``pretrain(cfg)`` runs one budgeted pretraining run and returns its run dir; ``load_config``
builds a resolved :class:`~divssl.pretrain.config.Config` from a file and ``KEY=VALUE`` overrides.
Both are imported on first use (PEP 562) so that ``import divssl.pretrain.config`` does not pull in
the training loop.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_config", "pretrain"]


def __getattr__(name: str) -> Any:
    # Deferred: the loop imports torch and the data stack; the config module alone is light.
    if name == "pretrain":
        from divssl.pretrain.loop import pretrain

        return pretrain
    if name == "load_config":
        from divssl.pretrain.config import load_config

        return load_config
    raise AttributeError(f"module 'divssl.pretrain' has no attribute {name!r}")
