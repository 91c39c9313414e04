"""Study specs: a YAML file declaring pools, tasks, a grid of pretraining runs and evaluations.

A study is read with ``yaml.safe_load``, ``${name}`` placeholders are replaced by ``params`` (which
``--set name=value`` overrides), and every section is validated with pydantic models that forbid
unknown keys. Errors are :class:`~divssl.errors.ConfigError` naming the field, e.g.
``grid.method[2]: unknown value 'simclr2' (valid choices: ...)``. Example::

    name: quickstart
    params: {data_root: /data}
    pools: {world: "world:classes=10:per_class=1000:size=16:seed=0"}
    tasks: {world_id: "world:classes=10:per_class=200:size=16:seed=0"}
    base: {backbone: convnet_tiny, image_size: 16, batch_size: 256}
    grid:
      method: [simclr]
      subset.fraction: [0.1, 0.5, 1.0]
      budget.images: [100000]
      seed: [0, 1]
    evaluations: [{kind: knn, task: world_id, k: [20, 200]}]

``grid`` is a mapping of axes (the plan is their product) or a list of such mappings (the plan is
the union of their products, e.g. an epoch-normalized baseline next to compute-normalized runs).
Axes are dotted pretraining keys (``subset.fraction``, ``budget.images``, ``method``, ...) and
three special ones: ``pool`` (names from ``pools``), ``composition`` (named compositions: lists
of parts whose ``pool`` may name an entry of ``pools``) and ``normalization`` (``compute``, or
``epoch``: ``budget.epochs`` is set to the E of the ``epoch_reference`` grid point).

A ``pools`` entry is a pool spec string, or a *derived pool* that applies one intervention of
:mod:`divssl.data.interventions` to another pool (the robustness paper's relabel / semantics /
diversity steps), materialised in the study folder when the study runs::

    pools:
      imagenet: "folder:root=${imagenet}"
      imagenet_17: {pool: imagenet, relabel: {hierarchy: imagenet1k, count: 17}}
      animals: {pool: imagenet, classes: {hierarchy: imagenet1k, descendants_of: animal}}
      quarter: {pool: imagenet, diversity: {class_fraction: 0.25, total: 100000, seed: 0}}

A ``tasks`` entry is a task spec (``divssl.evaluate.open_task``: a pool spec whose reader takes
``split``, or a task YAML path) or an inline mapping with ``train``/``test``/``ood``/``val`` pool
specs (pool names allowed), written to ``STUDY_DIR/tasks/<name>.yaml`` when the study runs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from divssl import config_tree
from divssl.config_tree import reprefix
from divssl.data.composition import parse_composition
from divssl.distances.settings import DistanceSettings
from divssl.errors import ConfigError, unknown_choice
from divssl.evaluate.settings import (
    EvalCommon,
    FinetuneSettings,
    KnnSettings,
    LinearSettings,
    settings_error,
)
from divssl.pretrain.backbones import BACKBONES
from divssl.pretrain.config import Config, read_yaml_file
from divssl.pretrain.methods import method_names
from divssl.report.sections import SECTIONS

SPECIAL_AXES = ("pool", "composition", "normalization")
NORMALIZATIONS = ("compute", "epoch")
EVAL_KINDS = ("knn", "linear", "finetune")
TRACKING = ("none", "mlflow")
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


# Settings that joined an evaluation kind later -> the behaviour it had before (left out of ids).
ID_STABLE_DEFAULTS: dict[str, Any] = {"standardize": True}  # linear probe, always standardised


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------- evaluations


class _EvalBase(EvalCommon):
    """Fields shared by every evaluation of a study: the task, plus :class:`EvalCommon`.

    The settings of each kind (and their valid ranges) are the models of
    :mod:`divssl.evaluate.settings`, shared with ``divssl eval`` so the two cannot disagree.

    Attributes:
        task: name of an entry of ``tasks``.
    """

    task: str

    def eval_id(self) -> str:
        """Stable id of this evaluation: ``<kind>-<task>-<8 hex of its settings>``.

        Settings added after ids were first written are left out while they hold the value
        the evaluation had before them (:data:`ID_STABLE_DEFAULTS`), so the ids of existing
        study folders, and thus their finished records, stay valid.
        """
        values = self.model_dump(mode="json")
        for name, before in ID_STABLE_DEFAULTS.items():
            if name in values and values[name] == before:
                del values[name]
        blob = json.dumps(values, sort_keys=True).encode()
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self.task).strip("-") or "task"
        return f"{self.kind}-{slug}-{hashlib.sha256(blob).hexdigest()[:8]}"  # type: ignore[attr-defined]


class KnnEval(_EvalBase, KnnSettings):
    """Weighted kNN on frozen features (``divssl.evaluate.run_knn``)."""

    kind: Literal["knn"] = "knn"


class LinearEval(_EvalBase, LinearSettings):
    """Linear probe on frozen features (``divssl.evaluate.run_linear``); fractions default to
    [100] (Table 5 uses 5, 10, 50, 100)."""

    kind: Literal["linear"] = "linear"


class FinetuneEval(_EvalBase, FinetuneSettings):
    """Full fine-tuning with ID/OOD evaluation points (``divssl.evaluate.run_finetune``).

    ``scratch_seeds`` adds the robustness paper's baseline: the same fine-tuning from a random
    initialisation (training from scratch), once per seed and distinct backbone of the grid; those
    records carry ``baseline=True`` and define the ID-OOD trend.
    """

    kind: Literal["finetune"] = "finetune"


EVAL_MODELS: dict[str, type[_EvalBase]] = {
    "knn": KnnEval,
    "linear": LinearEval,
    "finetune": FinetuneEval,
}
Evaluation = KnnEval | LinearEval | FinetuneEval


# ------------------------------------------------------------------------ pools and the rest


class RelabelStep(_Strict):
    """Coarsen labels to superclasses of a hierarchy (``imagenet1k`` or a JSON/CSV file)."""

    hierarchy: str = "imagenet1k"
    count: int | None = None
    depth: int | None = None


class ClassesStep(_Strict):
    """Keep some classes: an explicit list, or the descendants of a hierarchy node."""

    names: list[str] | None = None
    hierarchy: str = "imagenet1k"
    descendants_of: str | None = None


class DiversityStep(_Strict):
    """Fixed-quantity subset trading classes for images per class."""

    class_fraction: float
    total: int
    seed: int = 0
    superclasses: RelabelStep | None = None  # stratify the class choice by these superclasses


class DerivedPool(_Strict):
    """A pool made from another one by exactly one intervention."""

    pool: str
    relabel: RelabelStep | None = None
    classes: ClassesStep | None = None
    diversity: DiversityStep | None = None

    def step(self) -> tuple[str, BaseModel]:
        """The one intervention (name, settings)."""
        steps = [(n, getattr(self, n)) for n in ("relabel", "classes", "diversity")]
        given = [(n, s) for n, s in steps if s is not None]
        if len(given) != 1:
            raise ConfigError(
                "pools",
                "a derived pool needs exactly one of relabel, classes, diversity",
                ["classes", "diversity", "relabel"],
            )
        return given[0]


class DistanceSpec(DistanceSettings):
    """Distances between pools: :class:`divssl.distances.settings.DistanceSettings`, the model
    ``divssl distance`` parses into, whose ``a``/``b`` here name pools, tasks or ``task:split``.

    ``extractor`` is any name of :func:`divssl.distances.get_extractor` or a study run:
    ``run:best`` (the run with the best ID top-1 on the first evaluation) or ``run:<hash>``.
    """


class VendiSpec(_Strict):
    """Measured diversity (``divssl.study.diversity``): the Vendi score of every pool and every
    pretraining subset, written to ``STUDY_DIR/vendi.json`` / ``vendi.csv``.

    ``extractor`` is any name of :func:`divssl.distances.get_extractor` or a study run (as in
    :class:`DistanceSpec`); ``pixels`` needs no weights. ``max_images`` caps the images scored per
    pool or subset (a seeded sample; a subset's first ``max_images`` ordering entries).
    """

    extractor: str = "pixels"
    weights: str | None = None
    kernel: Literal["cosine", "rbf"] = "cosine"
    max_images: int = Field(10_000, ge=2)
    seed: int = 0
    batch_size: int = Field(64, ge=1)


class Resources(_Strict):
    """What each run needs and how backends place it.

    Attributes:
        gpus_per_run: GPUs of one run (> 1 launches DDP with torchrun); ``None``: 1 when CUDA is
            available where the study is launched, else 0.
        cpus_per_run: CPU cores of one run (Ray ``num_cpus``, SLURM ``cpus_per_task``).
        workers: local backend: parallel worker processes (default: visible GPUs // gpus_per_run,
            or 1 without GPUs).
        ray_num_cpus: CPUs of a Ray instance started on demand (default: all).
        partition: SLURM partition.
        time_min: SLURM time limit of one run in minutes.
        mem_gb: SLURM memory per run.
        array_parallelism: SLURM job-array concurrency.
        slurm_extra: extra ``sbatch`` options passed to submitit (``slurm_additional_parameters``).
    """

    gpus_per_run: int | None = None
    cpus_per_run: int = 4
    workers: int | None = None
    ray_num_cpus: int | None = None
    partition: str | None = None
    time_min: int = 24 * 60
    mem_gb: int | None = None
    array_parallelism: int = 64
    slurm_extra: dict[str, Any] = {}


class ReportSpec(_Strict):
    """What ``divssl report`` renders (section names are the report's)."""

    sections: list[str] | None = None
    title: str | None = None
    contrasts: list[dict[str, Any]] = []  # findings: {name, a: {col: v}, b: {col: v}, paired}
    contrast_metric: dict[str, Any] = {}  # rows compared, e.g. {eval: linear, metric: top1}
    # pixel kNN / logistic regression and a random-init encoder beside every kNN / cached linear
    # evaluation (divssl.evaluate.baselines), computed once per study into baselines.json
    baselines: bool = False


class Study(_Strict):
    """A validated study spec (after ``${param}`` substitution)."""

    name: str
    description: str = ""
    params: dict[str, Any] = {}
    out: str | None = None  # study folder (default: runs/<name>); `--out` overrides
    pools: dict[str, str | DerivedPool] = {}
    tasks: dict[str, str | dict[str, str]] = {}
    base: dict[str, Any] = {}
    grid: list[dict[str, Any]]
    epoch_reference: dict[str, Any] | None = None
    prior_task: str | None = None  # task whose classes define `in`/`out` composition priors
    evaluations: list[Evaluation] = []
    distances: list[DistanceSpec] = []
    vendi: VendiSpec | None = None  # Vendi score of every pool and pretraining subset
    report: ReportSpec = ReportSpec()
    resources: Resources = Resources()
    tracking: Literal["none", "mlflow"] = "none"
    tracking_uri: str | None = None  # default sqlite:///STUDY_DIR/mlflow.db

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``STUDY_DIR/study.yaml`` holds)."""
        return self.model_dump(mode="json", exclude_none=False)


# ---------------------------------------------------------------------------------- errors


_UNION_TAGS = ("str", "DerivedPool", "dict[str,str]")


def validation_error(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> ConfigError:
    """Turn the first pydantic error into a :class:`ConfigError` naming the dotted field."""
    return config_tree.validation_error(exc, model, prefix, union_tags=_UNION_TAGS, root="study")


# ---------------------------------------------------------------------------------- params


def parse_param(item: str) -> tuple[str, Any]:
    """``NAME=VALUE`` of ``--set``; the value is parsed as YAML (``64``, ``[5000, 25000]``)."""
    if "=" not in item:
        raise ConfigError("--set", f"expected NAME=VALUE, got {item!r}")
    name, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    if value is None:
        value = raw
    return name.strip(), value


def substitute(node: Any, params: dict[str, Any], path: str = "") -> Any:
    """Replace ``${name}`` in every string of ``node`` by ``params[name]``.

    A string that is exactly one placeholder takes the parameter's type (``${epochs}`` -> 400).

    Raises:
        ConfigError: a placeholder that names no parameter.
    """
    if isinstance(node, dict):
        return {
            k: substitute(v, params, f"{path}.{k}" if path else str(k)) for k, v in node.items()
        }
    if isinstance(node, list):
        return [substitute(v, params, f"{path}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node
    for name in _PLACEHOLDER.findall(node):
        if name not in params:
            raise ConfigError(path or "study", f"unknown parameter ${{{name}}}", params)
    whole = _PLACEHOLDER.fullmatch(node)
    if whole is not None:
        return params[whole.group(1)]
    return _PLACEHOLDER.sub(lambda m: str(params[m.group(1)]), node)


# ------------------------------------------------------------------------------- validation


def _is_config_key(dotted: str) -> bool:
    return config_tree.has_key(Config, dotted)


def _axis_choices() -> list[str]:
    return [*SPECIAL_AXES, *Config.model_fields]


def _check_registry(values: list[Any], fld: str, choices: list[str]) -> None:
    for i, value in enumerate(values):
        if value not in choices:
            raise unknown_choice(f"{fld}[{i}]", str(value), choices)


def _check_axis(key: str, values: Any, fld: str, study: dict[str, Any]) -> None:
    if key == "composition":
        if not isinstance(values, dict) or not values:
            raise ConfigError(fld, "composition must map names to lists of parts")
        for name, parts in values.items():
            try:
                parse_composition(parts)
            except ConfigError as exc:
                raise reprefix(exc, f"{fld}.{name}") from None
        return
    if not isinstance(values, list) or not values:
        raise ConfigError(fld, "an axis must be a non-empty list of values")
    if key == "normalization":
        for i, value in enumerate(values):
            if value not in NORMALIZATIONS:
                raise unknown_choice(f"{fld}[{i}]", str(value), NORMALIZATIONS)
    elif key == "pool":
        for i, value in enumerate(values):
            if not isinstance(value, str) or (
                value not in study.get("pools", {}) and ":" not in value
            ):
                raise ConfigError(f"{fld}[{i}]", f"unknown pool {value!r}", study.get("pools", {}))
    elif key == "method":
        _check_registry(values, fld, method_names())
    elif key == "backbone":
        _check_registry(values, fld, list(BACKBONES))
    elif not _is_config_key(key):
        raise ConfigError(
            fld,
            "unknown axis (a dotted pretraining key or pool, composition, normalization)",
            _axis_choices(),
        )


def _check_grid(study: dict[str, Any]) -> list[dict[str, Any]]:
    grid = study.get("grid")
    if grid is None:
        raise ConfigError("grid", "a study needs a grid of at least one axis")
    grids = grid if isinstance(grid, list) else [grid]
    if not grids:
        raise ConfigError("grid", "a study needs a grid of at least one axis")
    for gi, g in enumerate(grids):
        prefix = f"grid[{gi}]" if isinstance(grid, list) else "grid"
        if not isinstance(g, dict):
            raise ConfigError(prefix, "must map axis names to lists of values")
        for key, values in g.items():
            _check_axis(str(key), values, f"{prefix}.{key}", study)
    return grids


def _check_references(study: Study) -> None:
    """Names used across sections must exist."""
    tasks = list(study.tasks)
    for i, ev in enumerate(study.evaluations):
        if ev.task not in study.tasks:
            raise unknown_choice(f"evaluations[{i}].task", ev.task, tasks)
    if study.prior_task is not None and study.prior_task not in study.tasks:
        raise unknown_choice("prior_task", study.prior_task, tasks)
    for name, entry in study.pools.items():
        if isinstance(entry, DerivedPool):
            try:
                entry.step()  # exactly one intervention
            except ConfigError as exc:
                msg = "a derived pool needs exactly one intervention"
                raise ConfigError(f"pools.{name}", msg, exc.choices) from None
            if entry.pool not in study.pools and ":" not in entry.pool:
                raise unknown_choice(f"pools.{name}.pool", entry.pool, study.pools)
            if entry.pool == name:
                raise ConfigError(f"pools.{name}.pool", "a pool cannot derive from itself")
    names = [*study.pools, *study.tasks]
    for i, dspec in enumerate(study.distances):
        for side in ("a", "b"):
            for j, ref in enumerate(getattr(dspec, side)):
                base = ref.rsplit(":", 1)[0] if ref.count(":") == 1 else ref
                if base not in names:
                    raise unknown_choice(f"distances[{i}].{side}[{j}]", ref, names)
    if study.vendi is not None:  # the name only: weights load when the scores are computed
        # deferred: the extractors module imports torch; spec validation stays light
        from divssl.distances.extractors import check_extractor_name

        check_extractor_name(study.vendi.extractor, "vendi.extractor")
    _check_report_sections(study.report.sections)
    needs_epoch = any("epoch" in g.get("normalization", []) for g in study.grid)
    if needs_epoch and not study.epoch_reference:
        raise ConfigError(
            "epoch_reference",
            "normalization 'epoch' needs an epoch_reference "
            "grid point (e.g. {composition: B+A_in})",
        )


def _check_report_sections(sections: list[str] | None) -> None:
    """Section names are the report's."""
    for i, name in enumerate(sections or []):
        if name not in SECTIONS:
            raise unknown_choice(f"report.sections[{i}]", name, SECTIONS)


def _parse_evaluations(items: Any) -> list[Evaluation]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise ConfigError("evaluations", "must be a list of {kind, task, ...} mappings")
    out: list[Evaluation] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(f"evaluations[{i}]", "must be a mapping with kind and task")
        kind = item.get("kind")
        if kind not in EVAL_MODELS:
            raise unknown_choice(f"evaluations[{i}].kind", str(kind), EVAL_KINDS)
        model = EVAL_MODELS[kind]
        try:
            out.append(model.model_validate(item))  # type: ignore[arg-type]
        except ValidationError as exc:
            if exc.errors()[0]["type"] == "extra_forbidden":  # lists the valid keys
                raise validation_error(exc, model, f"evaluations[{i}]") from None
            # the same message as `divssl eval` gives for the same value
            raise settings_error(exc, f"evaluations[{i}]", items_in_field=True) from None
    return out


def validate_study(tree: dict[str, Any]) -> Study:
    """Validate a substituted study tree.

    Raises:
        ConfigError: naming the field of the first problem.
    """
    if not isinstance(tree, dict):
        raise ConfigError("study", "a study file must hold a mapping")
    tree = copy.deepcopy(tree)
    grids = _check_grid(tree)
    tree["grid"] = grids
    evaluations = _parse_evaluations(tree.pop("evaluations", None))
    try:
        study = Study.model_validate({**tree, "evaluations": []})
    except ValidationError as exc:
        raise validation_error(exc, Study) from None
    study.evaluations = evaluations
    if not re.fullmatch(r"[A-Za-z0-9._-]+", study.name) or study.name.startswith("."):
        raise ConfigError(
            "name",
            f"use letters, digits, '.', '_' or '-' only, not starting with '.', got {study.name!r}",
        )
    if study.out is not None and (not study.out.strip() or Path(study.out).name in (".", "..")):
        raise ConfigError("out", f"{study.out!r} names no study folder (empty, '.' or '..')")
    _check_references(study)
    return study


def load_study(path: str | Path, overrides: list[str] | None = None) -> Study:
    """Read, substitute and validate a study YAML file.

    Args:
        path: the study file.
        overrides: ``NAME=VALUE`` parameter overrides (``--set``); names must be declared in
            ``params``.

    Raises:
        ConfigError: unreadable file, unknown parameter, or an invalid section.
    """
    return study_from_tree(read_yaml_file(path, "study"), overrides)


def study_from_tree(tree: Any, overrides: list[str] | None = None) -> Study:
    """Substitute ``${params}`` (with ``--set`` overrides) in a raw tree and validate it."""
    if not isinstance(tree, dict):
        raise ConfigError("study", "a study file must hold a mapping")
    params = dict(tree.get("params") or {})
    if not isinstance(params, dict):
        raise ConfigError("params", "must be a mapping of names to values")
    for item in overrides or []:
        name, value = parse_param(item)
        if name not in params:
            raise ConfigError(f"--set {name}", "not a parameter of this study", params)
        params[name] = value
    body = {k: v for k, v in tree.items() if k != "params"}
    resolved = substitute(body, params)
    resolved["params"] = params
    return validate_study(resolved)
