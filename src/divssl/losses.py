"""Re-export of :mod:`divssl.pretrain.losses` at the import path DESIGN.md promises."""

from divssl.pretrain.losses import *  # noqa: F403
from divssl.pretrain.losses import __all__  # noqa: F401
