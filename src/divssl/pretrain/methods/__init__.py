"""Pretraining methods; importing this package registers them all."""

from divssl.pretrain.methods import (  # noqa: F401  (importing registers each method)
    barlow_twins,
    byol,
    dino,
    mocov3,
    simclr,
    supervised,
    swav,
    vicreg,
)
from divssl.pretrain.methods.base import (
    Method,
    StepOutput,
    get_method,
    method_names,
    register_method,
)

__all__ = ["Method", "StepOutput", "get_method", "method_names", "register_method"]
