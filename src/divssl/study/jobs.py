"""Typed jobs: what ``STUDY_DIR/plan.json`` holds and what every worker loads back.

The planner (:mod:`divssl.study.plan`) builds a :class:`PlanDoc` of :class:`PretrainJob` and
:class:`BaselineJob` models; ``plan.json`` is its JSON form, and workers on any backend read it
back with :func:`read_plan` as the same objects (validated, so a hand-edited or stale plan fails
with a message naming the field rather than with a ``KeyError`` in a worker).

An evaluation a job owes is a :class:`PlannedEvaluation`: the study's evaluation settings
(:data:`divssl.study.spec.Evaluation`, i.e. the shared settings models of
:mod:`divssl.evaluate.settings` plus a task) with its id and resolved task spec. In JSON it is one
flat mapping ``{kind, task, <settings>, id, task_spec}``, the form records also keep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypedDict

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from divssl.errors import ConfigError
from divssl.io import read_json
from divssl.study.spec import Evaluation, validation_error

PLAN_FORMAT: Final = "divssl-plan/1"
PLAN_FILE = "plan.json"
_PLANNED_KEYS = ("id", "task_spec")


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlannedEvaluation(_Doc):
    """One evaluation of a job.

    Attributes:
        id: ``<kind>-<task>-<hash of the settings>`` (:meth:`divssl.study.spec._EvalBase.eval_id`).
        task_spec: the task resolved to a spec string (inline tasks: their YAML file).
        settings: the study's evaluation (``KnnEval`` / ``LinearEval`` / ``FinetuneEval``).
    """

    id: str
    task_spec: str
    settings: Annotated[Evaluation, Field(discriminator="kind")]

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and "settings" not in data:
            rest = {k: v for k, v in data.items() if k not in _PLANNED_KEYS}
            return {**{k: data[k] for k in _PLANNED_KEYS if k in data}, "settings": rest}
        return data

    @model_serializer(mode="wrap")
    def _flat_form(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        nested = handler(self)
        return {**nested["settings"], "id": nested["id"], "task_spec": nested["task_spec"]}

    @property
    def kind(self) -> str:
        """``knn``, ``linear`` or ``finetune``."""
        return self.settings.kind

    @property
    def task(self) -> str:
        """The task's name in the study."""
        return self.settings.task

    @classmethod
    def of(cls, evaluation: Evaluation, task_spec: str) -> PlannedEvaluation:
        """The planned form of a study evaluation."""
        return cls(id=evaluation.eval_id(), task_spec=task_spec, settings=evaluation)


class PretrainJob(_Doc):
    """One pretraining run of the plan, with the evaluations it owes.

    Attributes:
        id: content hash of the resolved config (12 hex).
        factors: grid axis -> value as written in the study (composition and pool by name).
        config: the resolved pretraining config tree (``config.yaml``), ``out`` = the run folder.
        pool: pool name (``None`` for compositions); composition: composition name.
        source: source tag(s) of the pretraining images (``web``, ``source+synthetic``, ...).
        budget_images: C. unique_images: N. epochs: E. diversity: D.
        steps: optimizer steps. global_batch: B. normalization: ``compute`` or ``epoch``.
        model: key of the plan's ``models`` (cost of the distinct model).
        evaluations: what to evaluate once pretraining is done.
    """

    id: str
    factors: dict[str, Any]
    config: dict[str, Any]
    pool: str | None
    composition: str | None
    source: str
    budget_images: int
    unique_images: int
    epochs: float
    diversity: float
    steps: int
    global_batch: int
    normalization: Literal["compute", "epoch"]
    model: str
    evaluations: list[PlannedEvaluation] = []
    kind: Literal["pretrain"] = "pretrain"

    @property
    def run_dir(self) -> Path:
        """``STUDY_DIR/runs/<id>``."""
        return Path(self.config["out"])

    @property
    def owed(self) -> list[PlannedEvaluation]:
        """The evaluations this job writes records for."""
        return list(self.evaluations)


class BaselineJob(_Doc):
    """Fine-tuning from a random initialisation (the robustness paper's from-scratch trend)."""

    id: str
    task: str
    task_spec: str
    backbone: str
    image_size: int
    cifar_stem: bool
    seed: int
    evaluation: PlannedEvaluation
    out: str
    kind: Literal["baseline"] = "baseline"

    @property
    def owed(self) -> list[PlannedEvaluation]:
        """The evaluations this job writes records for (its one fine-tuning)."""
        return [self.evaluation]


Job = Annotated[PretrainJob | BaselineJob, Field(discriminator="kind")]


class Tracking(_Doc):
    """Experiment tracking of a study: ``none`` or ``mlflow`` (``uri`` default: SQLite)."""

    kind: Literal["none", "mlflow"] = "none"
    uri: str | None = None


class DerivedPoolFile(_Doc):
    """A derived pool of the study and where it is materialised.

    Attributes:
        spec: the pool spec of the materialised file (``csv:path=...``).
        path: the file; format: ``csv`` (original image paths) or ``npz`` (images).
        base: spec of the pool it derives from; step: ``relabel``, ``classes`` or ``diversity``.
        settings: the step's settings; size: images; classes: classes.
    """

    spec: str
    path: str
    format: Literal["csv", "npz"]
    base: str
    step: Literal["relabel", "classes", "diversity"]
    settings: dict[str, Any]
    size: int
    classes: int


class PlanDoc(_Doc):
    """``STUDY_DIR/plan.json``: the expanded study as workers on every backend read it.

    Attributes:
        format: :data:`PLAN_FORMAT`.
        study: the study's name; study_dir: its folder.
        tracking: experiment tracking.
        gpus_per_run: GPUs of one run (> 1: DDP through torchrun).
        pools: pool name -> spec; tasks: task name -> spec (inline tasks: their YAML file).
        derived: derived pools' files; inline_tasks: inline tasks' split specs.
        models: cost of every distinct model (:class:`divssl.study.plan.ModelCost` fields).
        jobs: pretraining runs first, then from-scratch baselines.
    """

    format: Literal["divssl-plan/1"] = PLAN_FORMAT
    study: str
    study_dir: str
    tracking: Tracking = Tracking()
    gpus_per_run: int = 0
    pools: dict[str, str] = {}
    tasks: dict[str, str] = {}
    derived: dict[str, DerivedPoolFile] = {}
    inline_tasks: dict[str, dict[str, str]] = {}
    models: dict[str, dict[str, Any]] = {}
    jobs: list[Job] = []

    def job(self, job_id: str) -> PretrainJob | BaselineJob:
        """The job with this id.

        Raises:
            ConfigError: no such job.
        """
        for job in self.jobs:
            if job.id == job_id:
                return job
        raise ConfigError("job", f"no job {job_id!r} in {Path(self.study_dir) / PLAN_FILE}")

    @property
    def runs(self) -> list[PretrainJob]:
        """The pretraining jobs."""
        return [j for j in self.jobs if isinstance(j, PretrainJob)]


class JobResult(TypedDict, total=False):
    """What running one job returned (:func:`divssl.study.worker.execute_job`).

    Attributes:
        id: the job; kind: ``pretrain`` or ``baseline``.
        status: ``done``, ``skipped`` (already complete), ``locked`` (another runner holds it) or
            ``failed`` (with ``error``).
        seconds: wall time; pid: the worker process; cuda_visible_devices: its GPUs.
        mlflow_run: the MLflow run logged for it, when tracking is on.
    """

    id: str
    kind: str
    status: Literal["done", "skipped", "locked", "failed"]
    seconds: float
    pid: int
    cuda_visible_devices: str | None
    error: str
    mlflow_run: str


def read_plan(study_dir: str | Path) -> PlanDoc:
    """``STUDY_DIR/plan.json`` as a :class:`PlanDoc`.

    Raises:
        ConfigError: not a study folder, or a plan that does not validate (the field is named).
    """
    path = Path(study_dir) / PLAN_FILE
    if not path.is_file():
        raise ConfigError("STUDY_DIR", f"{study_dir} has no plan.json (run `divssl run` first)")
    try:
        return PlanDoc.model_validate(read_json(path))
    except ValidationError as exc:
        raise validation_error(exc, PlanDoc, "plan.json") from None


def job_dir(study_dir: str | Path, job: PretrainJob | BaselineJob) -> Path:
    """Run folder (``runs/<hash>``) or baseline folder (``baselines/<hash>``) of a job."""
    sub = "baselines" if job.kind == "baseline" else "runs"
    return Path(study_dir) / sub / job.id


def record_path(folder: Path, eval_id: str) -> Path:
    """``<run dir>/records/<eval id>.json``."""
    return folder / "records" / f"{eval_id}.json"
