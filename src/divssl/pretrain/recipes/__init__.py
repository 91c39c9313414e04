"""Recipes as data: every hyperparameter of a method at a dataset scale, with its source.

A *recipe* is one of :data:`RECIPE_NAMES` (``cifar``, ``imagenet100``, ``imagenet``, ``small``);
for each method it maps dotted config keys (``optim.base_lr``, ``method_args.temperature``,
``augment.view2.solarize_p``, ...) to a :class:`Ref`: the value, where it comes from (repository,
file, key) and a note (e.g. why divssl cannot honour it). The values are those of solo-learn's
published configs at commit 9187ea3, which the SSL-diversity paper ran, or of the method's
official repository where solo-learn has no file (see :mod:`divssl.pretrain.recipes.data`).
``small`` is
divssl's own CPU-scale recipe (tiny nets, tiny views, ~10^2 steps): the ``cifar`` rows except a
few measured choices; ``recipe=auto`` never picks it, the user names it.

:func:`divssl.pretrain.config.load_config` fills every key the user did not set from the run's
recipe, so
``config.yaml`` records every effective value. ``docs/recipes.md`` is :func:`recipes_markdown`'s
output (``divssl recipes --markdown``); a test regenerates and compares it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from divssl.errors import ConfigError, unknown_choice

RECIPE_NAMES: tuple[str, ...] = ("cifar", "imagenet100", "imagenet", "small")

# recipe=auto: views of at most this many pixels take the CIFAR recipe (CIFAR 32 px, Tiny-ImageNet
# 64 px, the 16 px world), larger ones the ImageNet-100 recipe (the paper's 224 px scale; choose
# `recipe=imagenet` explicitly for the full-ImageNet ResNet-50 recipes).
AUTO_CIFAR_MAX_SIZE = 64


@dataclass(frozen=True)
class ByBackbone:
    """A value that depends on the backbone family (MoCo v3's heads differ for ResNets and ViTs).

    Attributes:
        cnn: value for convolutional backbones (ResNets, the tiny convnet).
        vit: value for ``vit_*`` backbones.
    """

    cnn: Any
    vit: Any

    def pick(self, backbone: str) -> Any:
        """The value for a backbone registry name."""
        return self.vit if backbone.startswith("vit") else self.cnn

    def __str__(self) -> str:
        return f"{self.cnn} (CNN) / {self.vit} (ViT)"


@dataclass(frozen=True)
class Ref:
    """One recipe value and its source.

    Attributes:
        value: the value (or a :class:`ByBackbone`).
        source: ``repo@commit file key`` it was read from.
        note: caveat, e.g. why divssl does not honour it exactly; empty when it is honoured.
        applied: False for informational rows (the reference's crop size: ``image_size`` is set
            by the pool and the user, never by the recipe).
    """

    value: Any
    source: str
    note: str = ""
    applied: bool = True

    def resolved(self, backbone: str) -> Any:
        """The value for a backbone."""
        return self.value.pick(backbone) if isinstance(self.value, ByBackbone) else self.value


def pick_recipe(recipe: str, image_size: int) -> str:
    """Resolve ``recipe=auto`` from the view size; named recipes are returned unchanged.

    ``auto`` picks only the references' recipes (``cifar`` or ``imagenet100``), never divssl's
    ``small``.

    Raises:
        ConfigError: an unknown recipe name.
    """
    if recipe == "auto":
        return "cifar" if image_size <= AUTO_CIFAR_MAX_SIZE else "imagenet100"
    if recipe not in RECIPE_NAMES:
        raise unknown_choice("recipe", recipe, ("auto", *RECIPE_NAMES))
    return recipe


def get_recipe(recipe: str, method: str) -> dict[str, Ref]:
    """The rows (dotted key -> :class:`Ref`) of one method at one recipe.

    Raises:
        ConfigError: unknown recipe or method.
    """
    from divssl.pretrain.recipes.data import RECIPES

    if recipe not in RECIPE_NAMES:
        raise unknown_choice("recipe", recipe, RECIPE_NAMES)
    table = RECIPES[recipe]
    if method not in table:
        raise unknown_choice("method", method, table)
    return table[method]


def recipe_values(recipe: str, method: str, backbone: str) -> dict[str, Any]:
    """Applied values of a recipe as a flat ``{dotted key: value}`` for one backbone."""
    return {
        key: ref.resolved(backbone)
        for key, ref in get_recipe(recipe, method).items()
        if ref.applied
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def recipe_rows(method: str | None = None, recipe: str | None = None) -> list[dict[str, str]]:
    """Rows of the recipe table, optionally filtered by method and recipe.

    Raises:
        ConfigError: an unknown method or recipe filter.
    """
    from divssl.pretrain.recipes.data import RECIPES

    recipes = list(RECIPE_NAMES) if recipe is None else [recipe]
    for name in recipes:
        if name not in RECIPE_NAMES:
            raise unknown_choice("--recipe", name, RECIPE_NAMES)
    methods = sorted(RECIPES[RECIPE_NAMES[0]])
    if method is not None and method not in methods:
        raise unknown_choice("--method", method, methods)
    rows = []
    for m in methods if method is None else [method]:
        for r in recipes:
            for key, ref in RECIPES[r][m].items():
                note = ref.note if ref.applied else f"(reference only) {ref.note}".strip()
                rows.append(
                    {
                        "method": m,
                        "recipe": r,
                        "key": key,
                        "value": _fmt(ref.value),
                        "source": ref.source,
                        "note": note,
                    }
                )
    return rows


def recipes_markdown(method: str | None = None, recipe: str | None = None) -> str:
    """The recipe table as Markdown (``docs/recipes.md`` is this with no filter)."""
    rows = recipe_rows(method, recipe)
    lines = [
        "# Recipes",
        "",
        "Generated by `divssl recipes --markdown` from `src/divssl/pretrain/recipes/data.py`;",
        "do not edit (a test regenerates this file and compares). Every value a run takes from its",
        "recipe is",
        "listed with its source (repository@commit, file, key). `recipe=auto` takes `cifar` for",
        f"views of at most {AUTO_CIFAR_MAX_SIZE} px and `imagenet100` above. Keys given by the",
        "user override single values. `config.yaml` of every run records all resolved values.",
        "",
        "`small` is divssl's own CPU-scale recipe (tiny nets, tiny views, ~10^2 steps; the",
        "quickstart's): the `cifar` rows except those whose source reads \"divssl: CPU-scale",
        'choice", each with the measurement behind it (docs/benchmarks.md, "A CPU-scale',
        'recipe"). `recipe=auto` never picks it.',
        "",
        "Epoch-valued settings (`*_epochs`) are in epochs, as the papers kept them: with",
        "`schedule.units=epochs` they are epochs of the run's subset (E = C / N is the run's",
        "`max_epochs`, as the SSL-diversity paper scaled only `max_epochs`); with",
        "`schedule.units=steps` (divssl's default, so that runs of equal C share schedules) they",
        "are the fraction `value / schedule.reference_epochs` of the run's steps.",
        "",
        "`augment.mean` / `augment.std` normalise the run's pretraining views and every",
        "evaluation of the run (probes, fine-tuning, `run:DIR` distances); run dirs without them",
        "(written before these keys) are evaluated with ImageNet statistics, as they were trained.",
        "",
        "Not honoured everywhere (each row's note says where): `batch_size` is the reference's",
        "global batch; a run with a smaller batch (memory, CPU) keeps `base_lr` per 256 images",
        "(linear scaling), which is not the reference run. divssl's random resized crop resamples",
        "bilinearly without antialiasing (torchvision antialiases), and its Gaussian blur kernel",
        "spans ~10% of the view. Precision: bf16 autocast on CUDA, fp32 on CPU (references:",
        "fp16 mixed precision).",
        "",
    ]
    current = None
    for row in rows:
        head = (row["method"], row["recipe"])
        if head != current:
            current = head
            lines += [
                "",
                f"## {row['method']} · {row['recipe']}",
                "",
                "| key | value | source | note |",
                "| --- | --- | --- | --- |",
            ]
        note = row["note"].replace("|", "\\|")
        lines.append(f"| `{row['key']}` | {row['value']} | {row['source']} | {note} |")
    return "\n".join(lines) + "\n"


def check_recipe_key(key: str) -> None:
    """Fail if a recipe row names a key the config does not have (used by the tests)."""
    from divssl.pretrain.config import Config

    model: Any = Config
    parts = key.split(".")
    for i, part in enumerate(parts):
        if part not in model.model_fields:
            raise ConfigError(key, "recipe key is not a config key")
        annotation = model.model_fields[part].annotation
        if part == "method_args":
            return
        if i < len(parts) - 1:
            model = annotation
