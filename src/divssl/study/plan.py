"""Plans: a study's grid expanded into validated runs with C, N, E, D, FLOPs and a measured time.

:func:`build_plan` turns every grid point into a config tree (``base`` laid under the point's
axes, :mod:`divssl.config_tree`) and validates it in memory with
:func:`divssl.pretrain.config.config_from_tree`, as ``divssl pretrain`` would (every invalid
point is reported with its grid values). It opens the pools once to resolve N and C by the
pretraining stage's own rules (:func:`divssl.pretrain.build.subset_size`,
:func:`~divssl.pretrain.build.make_budget`; subset sizes, compositions, derived pools), sets the
epoch-normalized budgets, and names each run by a content hash: the first 12 hex digits of the
SHA-256 of its resolved config (without ``out``, and with the study folder written as
``${study_dir}`` so that a moved study keeps its hashes). The run lives in
``STUDY_DIR/runs/<hash>``; grid points that resolve to the same config share one run.

Costs come from the pretraining stage's dry run (:mod:`divssl.pretrain.dry_run`): FLOPs per image
are counted once per distinct model (method, backbone, image size, stem, view preset, method
settings), and :func:`measure_plan` times a few real training steps of each distinct model on the
current device (synchronised, median after a warm-up), caching the measurement in
``STUDY_DIR/throughput.json``, so the estimated time is measured, not guessed.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from divssl.config_tree import nest, reprefix, set_dotted
from divssl.data.pool import Pool
from divssl.errors import ConfigError
from divssl.pretrain.build import make_budget, num_classes_of, subset_size
from divssl.pretrain.config import Config, config_from_tree, config_to_dict
from divssl.pretrain.dry_run import count_model_flops, measure_throughput, model_settings
from divssl.pretrain.methods import get_method
from divssl.study.estimate import (
    RunEvalEstimate,
    estimate_evaluations,
    measure_eval_rates,
)
from divssl.study.jobs import (
    PLAN_FORMAT,
    BaselineJob,
    DerivedPoolFile,
    PlanDoc,
    PlannedEvaluation,
    PretrainJob,
    Tracking,
)
from divssl.study.spec import DerivedPool, FinetuneEval, Study
from divssl.threads import worker_share

THROUGHPUT_FILE = "throughput.json"
STUDY_DIR_TOKEN = "${study_dir}"


# ----------------------------------------------------------------------------------- records


# The jobs of a plan are the typed models of divssl.study.jobs (plan.json holds their JSON form).
PlannedRun = PretrainJob


@dataclass
class ModelCost:
    """Cost of one distinct model.

    Attributes:
        key: stable key (hash of the model's settings).
        settings: method, backbone, image size, stem, preset and method settings.
        flops_per_image: forward + backward FLOPs of all views of one source image.
        images_per_second: measured training throughput on ``device`` (``None`` if unmeasured).
        step_seconds: median step time of the measurement.
        measured_batch: images per measured step.
        device: where it was measured.
    """

    key: str
    settings: dict[str, Any]
    flops_per_image: float
    num_classes: int | None = None
    images_per_second: float | None = None
    step_seconds: float | None = None
    measured_batch: int | None = None
    device: str | None = None


@dataclass
class Plan:
    """The expanded study."""

    study: Study
    study_dir: Path
    runs: list[PlannedRun]
    baselines: list[BaselineJob]
    models: dict[str, ModelCost]
    pools: dict[str, str]
    tasks: dict[str, str]
    derived: dict[str, dict[str, Any]]
    inline_tasks: dict[str, dict[str, str]]
    gpus_per_run: int
    duplicates: int = 0
    derived_views: dict[str, Pool] = field(default_factory=dict, repr=False)  # built in memory
    # set by measure_plan: concurrent local workers the times were measured for, and each run's
    # estimated evaluation time (divssl.study.estimate)
    workers: int = 1
    eval_estimates: list[RunEvalEstimate] | None = None

    @property
    def jobs(self) -> list[PlannedRun | BaselineJob]:
        """Pretraining runs first, then from-scratch baselines."""
        return [*self.runs, *self.baselines]

    @property
    def total_images(self) -> int:
        """Sum of C over the runs."""
        return sum(r.budget_images for r in self.runs)

    @property
    def total_flops(self) -> float:
        """Sum of C x FLOPs per image over the runs."""
        return sum(r.budget_images * self.models[r.model].flops_per_image for r in self.runs)

    def device_seconds(self, run: PlannedRun) -> float | None:
        """Device time of a run: C / measured images per second of one device (``None`` when
        unmeasured)."""
        ips = self.models[run.model].images_per_second
        return run.budget_images / ips if ips else None

    def estimated_seconds(self, run: PlannedRun) -> float | None:
        """Wall time of a run: its device time shared by its ``gpus_per_run`` devices (DDP,
        assuming linear scaling; measure at the per-device batch)."""
        device = self.device_seconds(run)
        return None if device is None else device / max(1, self.gpus_per_run)

    @property
    def total_seconds(self) -> float | None:
        """Wall time of all runs one after another, each on its ``gpus_per_run`` devices."""
        parts = [self.estimated_seconds(r) for r in self.runs]
        return None if not parts or None in parts else float(sum(parts))  # type: ignore[arg-type]

    @property
    def total_eval_seconds(self) -> float | None:
        """Estimated evaluation time of all runs one after another (``None``: not measured or
        nothing estimable)."""
        if self.eval_estimates is None:
            return None
        parts = [e.seconds for e in self.eval_estimates if e.seconds is not None]
        return float(sum(parts)) if parts else None

    @property
    def wall_seconds(self) -> float | None:
        """Estimated wall time of the study: pretraining plus evaluations, shared by ``workers``
        concurrent workers (``None`` when pretraining is unmeasured)."""
        total = self.total_seconds
        if total is None:
            return None
        return (total + (self.total_eval_seconds or 0.0)) / max(1, self.workers)

    @property
    def total_device_seconds(self) -> float | None:
        """Device time of all runs (device-seconds: GPU-seconds when measured on a GPU)."""
        parts = [self.device_seconds(r) for r in self.runs]
        return None if not parts or None in parts else float(sum(parts))  # type: ignore[arg-type]

    def to_doc(self) -> PlanDoc:
        """What ``STUDY_DIR/plan.json`` holds (read back by workers on any backend)."""
        return PlanDoc(
            format=PLAN_FORMAT,
            study=self.study.name,
            study_dir=str(self.study_dir),
            tracking=Tracking(kind=self.study.tracking, uri=self.study.tracking_uri),
            gpus_per_run=self.gpus_per_run,
            pools=self.pools,
            tasks=self.tasks,
            derived={k: DerivedPoolFile.model_validate(v) for k, v in self.derived.items()},
            inline_tasks=self.inline_tasks,
            models={k: asdict(m) for k, m in self.models.items()},
            jobs=self.jobs,
        )

    def to_json(self) -> dict[str, Any]:
        """:meth:`to_doc` as JSON-ready data."""
        return self.to_doc().model_dump(mode="json")


# ----------------------------------------------------------------------------------- helpers


def content_hash(obj: Any, study_dir: Path) -> str:
    """12 hex digits of the SHA-256 of ``obj`` as sorted JSON, the study folder tokenised."""
    blob = json.dumps(obj, sort_keys=True, default=str).replace(str(study_dir), STUDY_DIR_TOKEN)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def default_study_dir(study: Study) -> Path:
    """``study.out`` or ``runs/<name>``."""
    return Path(study.out) if study.out else Path("runs") / study.name


def describe_point(factors: dict[str, Any]) -> str:
    """``method=simclr, subset.fraction=0.1`` for messages and tables."""
    return ", ".join(f"{k}={v}" for k, v in factors.items())


# ------------------------------------------------------------------------------ pools/tasks


def _hierarchy(name: str, fld: str) -> Any:
    from divssl.data.hierarchy import resolve_hierarchy

    try:
        return resolve_hierarchy(name)
    except FileNotFoundError as exc:
        raise ConfigError(f"{fld}.hierarchy", f"no hierarchy file {name!r}") from exc


def _superclass_map(pool: Pool, step: Any, fld: str) -> dict[str, str]:
    from divssl.data.interventions import pool_superclasses

    h = _hierarchy(step.hierarchy, fld)
    return pool_superclasses(pool, h, count=step.count, depth=step.depth)


def apply_step(pool: Pool, name: str, step: Any, fld: str) -> Pool:
    """Apply one intervention of :mod:`divssl.data.interventions` to ``pool``.

    Args:
        pool: the base pool (labelled, random access).
        name: ``relabel``, ``classes`` or ``diversity``.
        step: the step's validated settings.
        fld: field named in errors.

    Returns:
        The view (same images, a subset and/or new labels).
    """
    from divssl.data import interventions as iv

    if name == "relabel":
        return iv.relabel(pool, _superclass_map(pool, step, fld))
    if name == "classes":
        if (step.names is None) == (step.descendants_of is None):
            raise ConfigError(fld, "give exactly one of names or descendants_of")
        if step.names is not None:
            return iv.subset_by_classes(pool, step.names)
        h = _hierarchy(step.hierarchy, fld)
        wanted = set(iv.descendants_of(h, step.descendants_of))
        names = list(pool.class_names or [])
        match = h.match_classes(names, f"{fld}.hierarchy")
        return iv.subset_by_classes(pool, [n for n in names if match[n] in wanted])
    mapping = _superclass_map(pool, step.superclasses, fld) if step.superclasses else None
    return iv.diversity_subset(pool, step.class_fraction, step.total, step.seed, mapping)


def file_paths(pool: Pool) -> list[str] | None:
    """Absolute image paths of a file-backed pool (or a view of one), else ``None``."""
    from divssl.data.interventions import ViewPool
    from divssl.data.readers.folder import FileListPool

    if isinstance(pool, FileListPool):
        return [str(pool.path(i)) for i in range(len(pool))]
    if isinstance(pool, ViewPool):
        base = file_paths(pool.base)
        return None if base is None else [base[int(i)] for i in pool.indices]
    return None


class PoolResolver:
    """Names -> pool specs, opened once; derived pools are built in memory at plan time.

    A derived pool's run-time spec points at ``STUDY_DIR/pools/<name>.csv`` (file-backed bases:
    a table of the original image paths) or ``.npz`` (array-backed bases), written by
    :func:`materialize_derived` when the study runs.
    """

    def __init__(self, study: Study, study_dir: Path) -> None:
        self.study = study
        self.study_dir = study_dir
        self.opened: dict[str, Pool] = {}
        self.specs: dict[str, str] = {}
        self.derived: dict[str, dict[str, Any]] = {}
        self.views: dict[str, Pool] = {}

    def spec_of(self, name_or_spec: str, fld: str) -> str:
        """The spec of a pool name (a derived pool's future file), or a literal spec."""
        if name_or_spec in self.specs:
            return self.specs[name_or_spec]
        entry = self.study.pools.get(name_or_spec)
        if entry is None:
            if ":" not in name_or_spec:
                raise ConfigError(fld, f"unknown pool {name_or_spec!r}", self.study.pools)
            return name_or_spec
        if isinstance(entry, str):
            self.specs[name_or_spec] = entry
            return entry
        spec = self._derive(name_or_spec, entry, f"pools.{name_or_spec}")
        self.specs[name_or_spec] = spec
        return spec

    def open(self, spec: str, fld: str = "data.pool") -> Pool:
        """Open a spec once (derived specs return their in-memory view)."""
        if spec not in self.opened:
            from divssl.data.pool import open_pool

            self.opened[spec] = open_pool(spec, field=fld)
        return self.opened[spec]

    def _derive(self, name: str, entry: DerivedPool, fld: str) -> str:
        base_spec = self.spec_of(entry.pool, f"{fld}.pool")
        base = self.open(base_spec, f"{fld}.pool")
        step_name, step = entry.step()
        view = apply_step(base, step_name, step, f"{fld}.{step_name}")
        fmt = "csv" if file_paths(view) is not None else "npz"
        path = self.study_dir / "pools" / f"{name}.{fmt}"
        spec = f"{fmt}:path={path}"
        if view.source != "source":
            spec += f":source={view.source}"
        self.opened[spec] = view
        self.views[name] = view
        self.derived[name] = {
            "spec": spec,
            "path": str(path),
            "format": fmt,
            "base": base_spec,
            "step": step_name,
            "settings": step.model_dump(mode="json"),
            "size": len(view),
            "classes": len(view.class_names or []),
        }
        return spec


class TaskResolver:
    """Task names -> specs for ``open_task`` (inline tasks: ``STUDY_DIR/tasks/<name>.yaml``)."""

    def __init__(self, study: Study, study_dir: Path, pools: PoolResolver) -> None:
        self.study = study
        self.pools = pools
        self.specs: dict[str, str] = {}
        self.inline: dict[str, dict[str, str]] = {}
        self._class_names: dict[str, list[str] | None] = {}
        for name, entry in study.tasks.items():
            if isinstance(entry, str):
                self.specs[name] = entry
            else:
                splits = {s: pools.spec_of(v, f"tasks.{name}.{s}") for s, v in entry.items()}
                self.inline[name] = {"name": name, **splits}
                self.specs[name] = str(study_dir / "tasks" / f"{name}.yaml")

    def check(self, name: str) -> list[str] | None:
        """Open the task's splits (validating them) and return its class names."""
        if name in self._class_names:
            return self._class_names[name]
        if name in self.inline:
            from divssl.evaluate.tasks import REQUIRED_SPLITS, SPLITS

            doc = self.inline[name]
            for split in [*REQUIRED_SPLITS]:
                if split not in doc:
                    raise ConfigError(f"tasks.{name}.{split}", f"task {name!r} has no {split!r}")
            for split in doc:
                if split != "name" and split not in SPLITS:
                    raise ConfigError(f"tasks.{name}.{split}", "unknown split", SPLITS)
            pools = {s: self.pools.open(doc[s], f"tasks.{name}.{s}") for s in doc if s != "name"}
            names = pools["train"].class_names
        else:
            from divssl.evaluate.tasks import open_task

            try:
                names = open_task(self.specs[name]).class_names
            except ConfigError as exc:
                raise reprefix(exc, f"tasks.{name}") from None
        self._class_names[name] = names
        return names


# ------------------------------------------------------------------------------------- grid


def expand_grid(grid: dict[str, Any]) -> list[dict[str, Any]]:
    """The product of one grid's axes; composition values are ``(name, parts)`` pairs."""
    axes = list(grid)
    values = [list(grid[a].items()) if a == "composition" else list(grid[a]) for a in axes]
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*values)]


def _factors(point: dict[str, Any]) -> dict[str, Any]:
    return {k: (v[0] if k == "composition" else v) for k, v in point.items()}


def _needs_task(parts: list[dict[str, Any]]) -> bool:
    return any(p.get("prior", "all") in ("in", "out") for p in parts)


class _Resolver:
    """Turns grid points into validated configs with N and C (shared pool/task state)."""

    def __init__(self, study: Study, study_dir: Path) -> None:
        self.study = study
        self.study_dir = study_dir
        self.pools = PoolResolver(study, study_dir)
        self.tasks = TaskResolver(study, study_dir, self.pools)
        self.base = nest(study.base, "base")
        if "out" in self.base:
            raise ConfigError("base.out", "the study sets each run's folder; remove `out`")

    def prior_task(self) -> str | None:
        if self.study.prior_task is not None:
            return self.study.prior_task
        return next(iter(self.study.tasks), None)

    def parts(self, parts: list[dict[str, Any]], fld: str) -> list[dict[str, Any]]:
        out = []
        for i, part in enumerate(parts):
            part = dict(part)
            part["pool"] = self.pools.spec_of(str(part.get("pool", "")), f"{fld}[{i}].pool")
            out.append(part)
        return out

    def tree(self, point: dict[str, Any]) -> dict[str, Any]:
        tree = copy.deepcopy(self.base)
        data = tree.setdefault("data", {})
        if isinstance(data.get("pool"), str):
            data["pool"] = self.pools.spec_of(data["pool"], "base.data.pool")
        if isinstance(data.get("composition"), list):
            data["composition"] = self.parts(data["composition"], "base.data.composition")
        for axis, value in point.items():
            if axis == "normalization":
                continue
            if axis == "pool":
                set_dotted(tree, "data.pool", self.pools.spec_of(value, "grid.pool"))
            elif axis == "composition":
                name, parts = value
                set_dotted(tree, "data.composition", self.parts(parts, f"grid.composition.{name}"))
            else:
                set_dotted(tree, axis, value)
        comp = tree.get("data", {}).get("composition")
        if comp and _needs_task(comp) and not tree["data"].get("task"):
            task = self.prior_task()
            if task is None:
                raise ConfigError("prior_task", "priors 'in'/'out' need a task; declare `tasks`")
            tree["data"]["task"] = self.tasks.specs[task]
        elif isinstance(tree["data"].get("task"), str) and tree["data"]["task"] in self.tasks.specs:
            tree["data"]["task"] = self.tasks.specs[tree["data"]["task"]]
        return tree

    def task_classes(self, task_spec: str | None) -> list[str] | None:
        if task_spec is None:
            return None
        for name, spec in self.tasks.specs.items():
            if spec == task_spec:
                return self.tasks.check(name)
        from divssl.evaluate.tasks import open_task

        return open_task(task_spec).class_names

    def pool_size_and_source(self, cfg: Config) -> tuple[int, str]:
        if cfg.data.composition is not None:
            from divssl.data.composition import parse_composition, resolve_composition

            comp = parse_composition(cfg.data.composition)
            classes = self.task_classes(cfg.data.task)
            resolved = resolve_composition(comp, classes, pools=self.pools.opened)
            sources = sorted({p.source for p in resolved.parts})
            return len(resolved), "+".join(sources)
        pool = self.pools.open(cfg.data.pool)
        return len(pool), pool.source

    def sizes(self, cfg: Config) -> tuple[int, int, str]:
        """(N, C, source) of a validated config, by the pretraining stage's rules."""
        total, source = self.pool_size_and_source(cfg)
        n = subset_size(cfg, total)
        return n, make_budget(cfg, n).images, source

    def num_classes(self, cfg: Config) -> int | None:
        """Label count of the pool a supervised run trains on (``None`` for SSL methods)."""
        if not get_method(cfg.method).needs_labels:
            return None
        if cfg.data.composition is not None:
            from divssl.data.composition import (
                ComposedPool,
                parse_composition,
                resolve_composition,
            )

            comp = parse_composition(cfg.data.composition)
            classes = self.task_classes(cfg.data.task)
            resolved = resolve_composition(comp, classes, pools=self.pools.opened)
            return num_classes_of(ComposedPool(resolved, pools=self.pools.opened))
        return num_classes_of(self.pools.open(cfg.data.pool))

    def config(self, point: dict[str, Any]) -> tuple[Config, int, int, str]:
        tree = self.tree(point)
        if point.get("normalization") == "epoch":
            ref_point = self.reference_point(point)
            ref_cfg = config_from_tree(self.tree(ref_point))
            n_ref, c_ref, _ = self.sizes(ref_cfg)
            tree["budget"] = {"epochs": c_ref / n_ref}
        cfg = config_from_tree(tree)
        n, c, source = self.sizes(cfg)
        return cfg, n, c, source

    def reference_point(self, point: dict[str, Any]) -> dict[str, Any]:
        ref = dict(point)
        ref["normalization"] = "compute"
        for key, value in (self.study.epoch_reference or {}).items():
            if key == "composition":
                comps = self._compositions()
                if value not in comps:
                    raise ConfigError("epoch_reference.composition", f"unknown {value!r}", comps)
                ref["composition"] = (value, comps[value])
            else:
                ref[key] = value
        return ref

    def _compositions(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for g in self.study.grid:
            out.update(g.get("composition", {}))
        return out


# ------------------------------------------------------------------------------ model costs


# ------------------------------------------------------------------------------------ build


def _baselines(
    study: Study,
    runs: list[PlannedRun],
    tasks: TaskResolver,
    study_dir: Path,
) -> list[BaselineJob]:
    out: list[BaselineJob] = []
    backbones = list(
        dict.fromkeys(
            (r.config["backbone"], r.config["image_size"], r.config["cifar_stem"]) for r in runs
        )
    )
    for ev in study.evaluations:
        if not isinstance(ev, FinetuneEval) or not ev.scratch_seeds:
            continue
        planned = PlannedEvaluation.of(ev, tasks.specs[ev.task])
        for (backbone, size, stem), seed in itertools.product(backbones, ev.scratch_seeds):
            key = {
                "kind": "scratch",
                "backbone": backbone,
                "image_size": size,
                "cifar_stem": stem,
                "seed": seed,
                "evaluation": planned.model_dump(mode="json"),
            }
            job_id = content_hash(key, study_dir)
            out.append(
                BaselineJob(
                    id=job_id,
                    task=ev.task,
                    task_spec=tasks.specs[ev.task],
                    backbone=backbone,
                    image_size=size,
                    cifar_stem=stem,
                    seed=seed,
                    evaluation=planned,
                    out=str(study_dir / "baselines" / job_id),
                )
            )
    return out


def _group_errors(errors: list[tuple[dict[str, Any], ConfigError]]) -> ConfigError:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for factors, exc in errors:
        grouped.setdefault(str(exc), []).append(factors)
    lines = []
    for text, points in grouped.items():
        shown = "; ".join("{" + describe_point(p) + "}" for p in points[:3])
        more = f" (+{len(points) - 3} more)" if len(points) > 3 else ""
        lines.append(f"  {len(points)} run(s) [{shown}{more}]: {text}")
    first_factors, first = errors[0]
    fld = f"grid{{{describe_point(first_factors)}}}.{first.field}"
    total = sum(len(p) for p in grouped.values())
    return ConfigError(fld, f"{total} grid point(s) are invalid:\n" + "\n".join(lines))


def build_plan(
    study: Study, study_dir: str | Path | None = None, *, count_flops: bool = True
) -> Plan:
    """Expand and validate a study into runs (no file is written).

    Args:
        study: a validated study.
        study_dir: the study folder (default ``study.out`` or ``runs/<name>``).
        count_flops: count FLOPs per image of every distinct model.

    Raises:
        ConfigError: every invalid grid point, reported with its grid values.
    """
    root = Path(study_dir) if study_dir is not None else default_study_dir(study)
    root = root.expanduser().absolute()
    try:
        res = _Resolver(study, root)
        for name in study.tasks:
            res.tasks.check(name)
        for name in study.pools:
            res.pools.spec_of(name, f"pools.{name}")
    except ConfigError as exc:
        raise _with_params_hint(exc, study) from None
    evals = [PlannedEvaluation.of(ev, res.tasks.specs[ev.task]) for ev in study.evaluations]
    gpus = resolve_gpus_per_run(study)
    runs: list[PlannedRun] = []
    seen: set[str] = set()
    errors: list[tuple[dict[str, Any], ConfigError]] = []
    duplicates = 0
    models: dict[str, ModelCost] = {}
    model_cfgs: dict[str, tuple[Config, int | None]] = {}
    for grid in study.grid:
        for point in expand_grid(grid):
            factors = _factors(point)
            try:
                cfg, n, c, source = res.config(point)
            except ConfigError as exc:
                errors.append((factors, exc))
                continue
            resolved = config_to_dict(cfg)
            resolved.pop("out", None)
            run_id = content_hash(resolved, root)
            if run_id in seen:
                duplicates += 1
                continue
            seen.add(run_id)
            run_dir = root / "runs" / run_id
            resolved["out"] = str(run_dir)
            settings = model_settings(cfg)
            key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
            if key not in models:
                classes = res.num_classes(cfg)
                models[key] = ModelCost(key, settings, float("nan"), classes)
                model_cfgs[key] = (cfg, classes)
            budget = make_budget(cfg, n, gpus)
            runs.append(PlannedRun(
                id=run_id, factors=factors, config=resolved,
                pool=point.get("pool") if "pool" in point else _pool_name(study, cfg),
                composition=point["composition"][0] if "composition" in point else None,
                source=source, budget_images=c, unique_images=n, epochs=budget.epochs,
                diversity=budget.diversity, steps=budget.steps, global_batch=budget.global_batch,
                normalization="compute" if cfg.budget.images is not None else "epoch",
                model=key, evaluations=copy.deepcopy(evals),
            ))  # fmt: skip
    if errors:
        raise _group_errors(errors)
    if count_flops:
        for key, (cfg, classes) in model_cfgs.items():
            models[key].flops_per_image = count_model_flops(cfg, classes)
    plan = Plan(
        study,
        root,
        runs,
        _baselines(study, runs, res.tasks, root),
        models,
        dict(res.pools.specs),
        dict(res.tasks.specs),
        res.pools.derived,
        res.tasks.inline,
        gpus,
        duplicates,
        res.pools.views,
    )
    return plan


def _with_params_hint(exc: ConfigError, study: Study) -> ConfigError:
    """A data error of a study with parameters: name them and how to set them."""
    if not study.params:
        return exc
    shown = ", ".join(f"{k}={v}" for k, v in study.params.items())
    hint = reprefix(exc, "")
    return ConfigError(
        hint.field,
        f"{str(hint)[len(hint.field) + 2 :]} [study parameters: "
        f"{shown}; set them with --set NAME=VALUE]",
    )


def _pool_name(study: Study, cfg: Config) -> str | None:
    if cfg.data.composition is not None:
        return None
    for name, entry in study.pools.items():
        if entry == cfg.data.pool:
            return name
    return cfg.data.pool


def resolve_gpus_per_run(study: Study) -> int:
    """``resources.gpus_per_run``, or 1 when CUDA is visible here, else 0."""
    value = study.resources.gpus_per_run
    if value is None:
        return 1 if torch.cuda.is_available() else 0
    if value < 0:
        raise ConfigError("resources.gpus_per_run", f"must be >= 0, got {value}")
    return int(value)


# -------------------------------------------------------------------------------- throughput


def device_name(device: torch.device) -> str:
    """Human-readable device: the GPU name, or the CPU model and thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"cpu {cpu} x{torch.get_num_threads()} threads"


def _cache_key(model: ModelCost, batch: int, device: torch.device) -> str:
    parts = [model.settings, batch, device_name(device), torch.__version__]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def estimate_workers(plan: Plan, device: torch.device) -> int:
    """Concurrent local workers the estimate is for: ``resources.workers``, else one per group of
    ``gpus_per_run`` visible GPUs on CUDA and one on the CPU (the local backend's defaults)."""
    if plan.study.resources.workers:
        return plan.study.resources.workers
    if device.type == "cuda":
        return max(1, torch.cuda.device_count() // max(1, plan.gpus_per_run))
    return 1


def measure_plan(
    plan: Plan, device: str = "auto", steps: int = 5, warmup: int = 2, batch: int | None = None
) -> dict[str, Any]:
    """Measure each distinct model's throughput (cached in ``STUDY_DIR/throughput.json``) and
    estimate the runs' evaluations (:mod:`divssl.study.estimate`).

    On the CPU every measurement runs at one worker's thread share (``cores // workers``, as the
    local backend gives its workers), so that :attr:`Plan.wall_seconds` = (pretraining +
    evaluations) / workers.

    Args:
        plan: the plan (its models get ``images_per_second``).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        steps: timed steps per model.
        warmup: untimed steps per model.
        batch: images per measured step (default: the run's per-device batch).

    Returns:
        The cache contents.
    """
    from divssl.io import atomic_write_json, read_json

    if steps < 1 or warmup < 0:
        raise ConfigError("--measure-steps", "need at least one timed step and warm-up >= 0")
    dev = torch.device(
        "cuda"
        if device == "auto" and torch.cuda.is_available()
        else ("cpu" if device == "auto" else device)
    )
    plan.workers = estimate_workers(plan, dev)
    threads = worker_share(plan.workers) if dev.type == "cpu" else torch.get_num_threads()
    path = plan.study_dir / THROUGHPUT_FILE
    cache: dict[str, Any] = read_json(path) if path.is_file() else {}
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        changed = _measure_models(plan, dev, cache, steps, warmup, batch)
    finally:
        torch.set_num_threads(saved_threads)
    if changed:
        atomic_write_json(path, cache)
    plan.eval_estimates = estimate_evaluations(plan, measure_eval_rates(plan, threads))
    return cache


def _measure_models(
    plan: Plan,
    dev: torch.device,
    cache: dict[str, Any],
    steps: int,
    warmup: int,
    batch: int | None,
) -> bool:
    """Time each model not yet in ``cache`` (keyed by settings, batch, device and threads) and
    set its measured fields; whether the cache changed."""
    changed = False
    for key, model in plan.models.items():
        run = next(r for r in plan.runs if r.model == key)
        per_device = max(2, run.global_batch // max(1, plan.gpus_per_run))
        b = min(batch, per_device) if batch else per_device
        ck = _cache_key(model, b, dev)
        if ck not in cache:
            cfg = Config.model_validate(run.config)
            ips, times = measure_throughput(cfg, model.num_classes, dev, b, steps, warmup)
            cache[ck] = {
                "images_per_second": ips,
                "step_seconds": times,
                "batch": b,
                "device": device_name(dev),
                "torch": torch.__version__,
                "settings": model.settings,
                "measured_at": time.time(),
            }
            changed = True
        entry = cache[ck]
        model.images_per_second = float(entry["images_per_second"])
        model.step_seconds = float(statistics.median(entry["step_seconds"]))
        model.measured_batch = int(entry["batch"])
        model.device = str(entry["device"])
    return changed


# ------------------------------------------------------------------------------------- table


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 3 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def varying_axes(plan: Plan) -> list[str]:
    """Grid axes whose value differs between runs (other than method and backbone)."""
    axes: list[str] = []
    for run in plan.runs:
        for k in run.factors:
            if k not in axes and k not in ("method", "backbone"):
                axes.append(k)
    return [
        a for a in axes if len({json.dumps(r.factors.get(a), default=str) for r in plan.runs}) > 1
    ]


def plan_table(plan: Plan) -> Any:
    """A rich table: each run's method, backbone, varying factors, C, N, E, D, steps, time."""
    from rich.table import Table

    axes = varying_axes(plan)
    measured = any(m.images_per_second for m in plan.models.values())
    table = Table(title=f"study {plan.study.name}: {len(plan.runs)} runs -> {plan.study_dir}")
    for col in ("#", "run", "method", "recipe", "backbone", *axes):
        table.add_column(col)
    for col in ("C", "N", "E", "D", "steps", "GFLOP/img"):
        table.add_column(col, justify="right")
    if measured:
        table.add_column("est. time", justify="right")
    evals = plan.eval_estimates
    if evals is not None:
        table.add_column("est. eval", justify="right")
    for i, run in enumerate(plan.runs):
        row = [
            str(i),
            run.id,
            run.config["method"],
            run.config.get("recipe", ""),
            run.config["backbone"],
            *[
                run.normalization if a == "normalization" else str(run.factors.get(a, ""))
                for a in axes
            ],
            f"{run.budget_images:,}",
            f"{run.unique_images:,}",
            f"{run.epochs:.4g}",
            f"{run.diversity:.3g}",
            f"{run.steps:,}",
            f"{plan.models[run.model].flops_per_image / 1e9:.3g}",
        ]
        if measured:
            row.append(_fmt_seconds(plan.estimated_seconds(run)))
        if evals is not None:
            row.append(_fmt_seconds(evals[i].seconds))
        table.add_row(*row)
    return table


def plan_summary(plan: Plan) -> list[str]:
    """Totals and measurement notes, one line each."""
    lines = [
        f"runs: {len(plan.runs)}"
        + (f" ({plan.duplicates} duplicate grid points share a run)" if plan.duplicates else "")
        + (f", from-scratch baselines: {len(plan.baselines)}" if plan.baselines else ""),
        f"total images (sum of C): {plan.total_images:,}",
        f"total pretraining compute: {plan.total_flops / 1e15:.4g} PFLOP",
    ]
    total, device = plan.total_seconds, plan.total_device_seconds
    if total is not None and device is not None:
        devices = sorted({m.device for m in plan.models.values() if m.device})
        per_run = f", {plan.gpus_per_run} devices per run" if plan.gpus_per_run > 1 else ""
        lines.append(
            f"estimated pretraining time on {', '.join(devices)}: {device / 86400:.4g} "
            f"device-days ({device / 3600:.4g} device-hours); one run after another"
            f"{per_run}: {_fmt_seconds(total)}"
        )
        for m in plan.models.values():
            s = m.settings
            lines.append(
                f"  measured {s['method']}/{s['backbone']} @{s['image_size']}px: "
                f"{m.images_per_second:,.3g} img/s (batch {m.measured_batch}, median "
                f"step {m.step_seconds:.3g} s)"
            )
    lines += _wall_lines(plan)
    return lines


def _wall_lines(plan: Plan) -> list[str]:
    """The evaluation estimate and the study's wall time (after :func:`measure_plan`)."""
    if plan.eval_estimates is None or plan.wall_seconds is None:
        return []
    skipped = sorted({e for est in plan.eval_estimates for e in est.not_estimated})
    evals = plan.total_eval_seconds
    lines = [
        f"estimated evaluations, one run after another: {_fmt_seconds(evals)} (features, kNN, "
        "and L-BFGS probes at their iteration caps: an upper bound)"
        + (f"; not estimated: {', '.join(skipped)}" if skipped else "")
    ]
    share = f"{plan.workers} workers" if plan.workers > 1 else "1 worker"
    baselines = ", report baselines" if plan.study.report.baselines else ""
    lines.append(
        f"estimated study wall time with {share} (pretraining + evaluations) / workers: "
        f"{_fmt_seconds(plan.wall_seconds)} (not included: distances, Vendi{baselines})"
    )
    return lines
