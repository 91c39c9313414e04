"""The pretraining stage: config + recipes, budget, augment, backbones, losses, methods, the loop.

``pretrain(cfg)`` runs one budgeted pretraining run and returns its run dir
(:class:`~divssl.pretrain.loop.PretrainSession` runs it in parts: open, ``run(until=...)``,
``finish()``); ``load_config`` builds a resolved :class:`~divssl.pretrain.config.Config` from a
file and ``KEY=VALUE`` overrides (``config_from_tree`` from a tree in memory).
:mod:`divssl.pretrain.build` holds the builders the loop and the study planner share
(``build_run``, ``subset_size``, ``make_budget``) and :mod:`divssl.pretrain.dry_run` the
planner's costs (FLOPs per image, timed steps).

Names are imported on first use (PEP 562) so that ``import divssl.pretrain.config`` does not
pull in the training loop.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["PretrainSession", "build_run", "config_from_tree", "load_config", "pretrain"]

# name -> module that defines it
_HOMES = {
    "pretrain": "divssl.pretrain.loop",
    "PretrainSession": "divssl.pretrain.loop",
    "build_run": "divssl.pretrain.build",
    "load_config": "divssl.pretrain.config",
    "config_from_tree": "divssl.pretrain.config",
}


def __getattr__(name: str) -> Any:
    # Deferred: the loop imports torch and the data stack; the config module alone is light.
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'divssl.pretrain' has no attribute {name!r}")
