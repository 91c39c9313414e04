"""Pool ``world``: the embedded procedural world (see :mod:`divssl.data.world`).

Spec: ``world:classes=10:per_class=500:size=16:seed=0:split=train:shift=0.0:ood_shift=0.5:
class_offset=0``. Tasks substitute ``split=test`` / ``split=ood`` in the same spec.
"""

from __future__ import annotations

from typing import Any

from divssl.data.pool import ArrayPool, register_pool
from divssl.data.world import generate_world
from divssl.errors import ConfigError


def _int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"world.{field}", f"must be an integer, got {value!r}")
    return value


def _float(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"world.{field}", f"must be a number, got {value!r}")
    return float(value)


@register_pool("world")
def world_pool(
    classes: int = 10,
    per_class: int = 500,
    size: int = 16,
    seed: int = 0,
    split: str = "train",
    shift: float = 0.0,
    ood_shift: float = 0.5,
    class_offset: int = 0,
) -> ArrayPool:
    """Generate the world pool in memory (labelled, source tag ``source``).

    Keys are ``"<class name>_<index in class>"``, e.g. ``"c003_000041"``.

    Raises:
        ConfigError: a bad key value, naming ``world.<key>``.
    """
    images, labels, names = generate_world(
        classes=_int("classes", classes),
        per_class=_int("per_class", per_class),
        size=_int("size", size),
        seed=_int("seed", seed),
        split=str(split),
        shift=_float("shift", shift),
        ood_shift=_float("ood_shift", ood_shift),
        class_offset=_int("class_offset", class_offset),
    )
    keys = [f"{names[k]}_{i:06d}" for k in range(classes) for i in range(per_class)]
    spec = (
        f"world:classes={classes}:per_class={per_class}:size={size}:seed={seed}:split={split}"
        f":shift={shift}:ood_shift={ood_shift}:class_offset={class_offset}"
    )
    return ArrayPool(images, labels, names, keys=keys, source="source", spec=spec)
