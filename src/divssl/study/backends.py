"""Backends: where a study's jobs run. Each calls :func:`divssl.study.worker.execute_job`.

* ``local``: one job after another in this process, or one worker process per slot of visible
  GPUs (``gpus_per_run`` GPUs each, ``CUDA_VISIBLE_DEVICES`` set per worker before torch starts
  CUDA), or ``workers`` CPU processes sharing the cores.
* ``ray``: an existing cluster (``--address``) or a local Ray started on demand with
  ``ray.init(num_cpus=...)``; every job is a ``@ray.remote(num_gpus=..., num_cpus=...)`` task.
* ``slurm``: submitit job arrays (``AutoExecutor``: partition, time limit, GPUs per node, CPUs,
  memory from ``resources``); ``--executor local`` runs the same array with submitit's local
  executor (subprocesses on this machine).

A run with ``gpus_per_run > 1`` is launched as DDP with ``torch.distributed.run`` (torchrun) in
its job, on whatever backend (:mod:`divssl.study.ddp`). All backends write to the same study
folder (a shared filesystem on clusters); jobs lock themselves, so several runners — even on
different backends — never run the same job twice.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, cast

import torch

from divssl.errors import ConfigError, unknown_choice
from divssl.study.jobs import JobResult
from divssl.study.plan import Plan
from divssl.study.worker import execute_job
from divssl.threads import apply_worker_share, cpu_cores, worker_env, worker_share

BACKENDS = ("local", "ray", "slurm")
EXECUTORS = ("slurm", "local")
OnResult = Callable[[JobResult], None]


def _execute(study_dir: str, job_id: str) -> JobResult:
    """One job (a module-level function: pickled by process pools, Ray and submitit)."""
    return execute_job(study_dir, job_id)


# --------------------------------------------------------------------------------- local


def _init_worker(slots: Any, threads: int, workers: int) -> None:
    """Worker-process initializer: claim one device slot before torch initialises CUDA, and
    take this worker's share of the cores (thread variables for every runtime, torch's pool,
    and ``DIVSSL_CONCURRENT_WORKERS`` for ``threads: auto`` in the job)."""
    slot = slots.get()
    if slot is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = slot
    apply_worker_share(threads, workers)


def _execute_with_share(study_dir: str, job_id: str, threads: int) -> JobResult:
    """:func:`_execute` in a Ray/submitit task after taking ``threads`` cores (its CPUs)."""
    apply_worker_share(threads, max(1, cpu_cores() // threads))
    return _execute(study_dir, job_id)


class LocalBackend:
    """Jobs on this machine.

    Args:
        slots: one entry per parallel worker: the ``CUDA_VISIBLE_DEVICES`` value it gets, or
            ``None`` (no GPU pinning). A single slot runs the jobs in this process.
    """

    name = "local"

    def __init__(self, slots: Sequence[str | None]) -> None:
        if not slots:
            raise ConfigError("resources.workers", "need at least one worker")
        self.slots = list(slots)

    @property
    def in_process(self) -> bool:
        """Jobs run in this process (one slot)."""
        return len(self.slots) == 1

    def run(self, study_dir: str, job_ids: Sequence[str], on_result: OnResult) -> list[JobResult]:
        """Run every job; ``on_result`` is called as each one finishes."""
        if len(self.slots) == 1:
            results = []
            for job_id in job_ids:
                result = self._in_process(study_dir, job_id)
                on_result(result)
                results.append(result)
            return results
        return self._in_pool(study_dir, job_ids, on_result)

    def _in_process(self, study_dir: str, job_id: str) -> JobResult:
        slot = self.slots[0]
        if slot is None:
            return _execute(study_dir, job_id)
        previous = os.environ.get("CUDA_VISIBLE_DEVICES")
        os.environ["CUDA_VISIBLE_DEVICES"] = slot  # effective only before CUDA starts here
        try:
            return _execute(study_dir, job_id)
        finally:
            if previous is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = previous

    def _in_pool(
        self, study_dir: str, job_ids: Sequence[str], on_result: OnResult
    ) -> list[JobResult]:
        ctx = mp.get_context("spawn")  # fresh interpreters: CUDA is not yet initialised
        queue = ctx.Queue()
        for slot in self.slots:
            queue.put(slot)
        workers = len(self.slots)
        threads = worker_share(workers)
        results = []
        # Spawned interpreters inherit this environment (the pool starts them at the first
        # submit), so OpenMP/BLAS start with the share before the initializer runs; the parent's
        # own values are restored once every job is submitted.
        saved = {k: os.environ.get(k) for k in worker_env(threads, workers)}
        os.environ.update(worker_env(threads, workers))
        pool = ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(queue, threads, workers)
        )
        try:
            futures = {pool.submit(_execute, study_dir, j): j for j in job_ids}
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        with pool:
            for future in as_completed(futures):
                result = _result_or_failure(future.result, futures[future])
                on_result(result)
                results.append(result)
        return results


def _ray_result(ref: Any) -> JobResult:
    """The job result a ray task returned (blocks until it is done)."""
    import ray

    return cast(JobResult, ray.get(ref))


def _result_or_failure(get: Callable[[], JobResult], job_id: str) -> JobResult:
    """A worker that died (segfault, OOM kill) is a failed job, not a crashed study."""
    try:
        return get()
    except Exception as exc:  # the job itself records ordinary errors; this is the process
        return {"id": job_id, "status": "failed", "error": f"worker died: {exc!r}"}


def visible_gpus() -> list[str]:
    """GPU ids this process may use (``CUDA_VISIBLE_DEVICES`` order, else 0..n-1)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def local_slots(gpus_per_run: int, workers: int | None, gpus: Sequence[str]) -> list[str | None]:
    """Worker slots: groups of ``gpus_per_run`` GPUs, or ``workers`` unpinned CPU workers.

    Raises:
        ConfigError: more GPUs per run than visible, or more workers than GPU groups.
    """
    if workers is not None and workers < 1:
        raise ConfigError("resources.workers", f"must be >= 1, got {workers}")
    if gpus_per_run < 1 or not gpus:
        return [None] * (workers or 1)
    groups = len(gpus) // gpus_per_run
    if groups < 1:
        raise ConfigError(
            "resources.gpus_per_run", f"{gpus_per_run} GPUs per run but only {len(gpus)} visible"
        )
    n = workers or groups
    if n > groups:
        raise ConfigError(
            "resources.workers",
            f"{n} workers need {n * gpus_per_run} GPUs; {len(gpus)} are visible",
        )
    return [",".join(gpus[i * gpus_per_run : (i + 1) * gpus_per_run]) for i in range(n)]


# ----------------------------------------------------------------------------------- ray


class RayBackend:
    """Jobs as Ray tasks on a cluster (``address``) or a Ray started here (never in this process).

    Args:
        address: ``ray://host:10001``, ``host:6379`` or ``auto``; ``None`` starts a local Ray.
        num_cpus: CPUs of a local Ray (default: all of this machine).
        gpus_per_run: ``num_gpus`` of each task.
        cpus_per_run: ``num_cpus`` of each task (capped by a local Ray's CPUs).
    """

    name = "ray"
    in_process = False

    def __init__(
        self, address: str | None, num_cpus: int | None, gpus_per_run: int, cpus_per_run: int
    ) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.gpus_per_run = gpus_per_run
        self.cpus_per_run = cpus_per_run

    def run(self, study_dir: str, job_ids: Sequence[str], on_result: OnResult) -> list[JobResult]:
        """Submit every job, collect results as they finish, shut down a Ray started here."""
        import ray  # optional dependency (divssl[ray]): deferred

        started = False
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                ray.init(
                    num_cpus=self.num_cpus or os.cpu_count(),
                    include_dashboard=False,
                    log_to_driver=False,
                )
            started = True
        try:
            cpus = self.cpus_per_run
            if not self.address:
                cpus = min(cpus, int(ray.available_resources().get("CPU", cpus)) or 1)
            task = ray.remote(num_gpus=self.gpus_per_run, num_cpus=cpus, max_retries=0)(
                _execute_with_share
            )
            pending = {task.remote(study_dir, j, max(1, int(cpus))): j for j in job_ids}
            results = []
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    job_id = pending.pop(ref)
                    result = _result_or_failure(functools.partial(_ray_result, ref), job_id)
                    on_result(result)
                    results.append(result)
            return results
        finally:
            if started:
                ray.shutdown()


# --------------------------------------------------------------------------------- slurm


class SlurmBackend:
    """Jobs as one submitit job array (SLURM, or submitit's local executor).

    Args:
        folder: submitit's folder (logs, pickled jobs): ``STUDY_DIR/slurm``.
        executor: ``slurm`` or ``local``.
        parameters: ``AutoExecutor.update_parameters`` keywords.
        poll_seconds: how often finished jobs are collected.
    """

    name = "slurm"
    in_process = False

    def __init__(
        self, folder: Path, executor: str, parameters: dict[str, Any], poll_seconds: float = 1.0
    ) -> None:
        if executor not in EXECUTORS:
            raise unknown_choice("--executor", executor, EXECUTORS)
        if executor == "slurm" and shutil.which("sbatch") is None:
            raise ConfigError(
                "--backend",
                "SLURM is not available here (no sbatch on PATH); "
                "use --executor local to run the job array on this machine",
            )
        self.folder = folder
        self.executor = executor
        self.parameters = parameters
        self.poll_seconds = poll_seconds

    def run(self, study_dir: str, job_ids: Sequence[str], on_result: OnResult) -> list[JobResult]:
        """Submit the array and collect results as tasks finish."""
        import submitit  # optional dependency (divssl[slurm]): deferred

        ex = submitit.AutoExecutor(folder=str(self.folder), cluster=self.executor)
        ex.update_parameters(**self.parameters)
        jobs = ex.map_array(_execute, [study_dir] * len(job_ids), list(job_ids))
        pending = dict(zip(job_ids, jobs, strict=True))
        results = []
        while pending:
            finished = [j for j, job in pending.items() if job.done()]
            for job_id in finished:
                job = pending.pop(job_id)
                result = _result_or_failure(job.result, job_id)
                on_result(result)
                results.append(result)
            if pending and not finished:
                time.sleep(self.poll_seconds)
        return results


def slurm_parameters(plan: Plan) -> dict[str, Any]:
    """``AutoExecutor`` parameters from the study's ``resources``."""
    res = plan.study.resources
    params: dict[str, Any] = {
        "name": f"divssl-{plan.study.name}",
        "timeout_min": res.time_min,
        "gpus_per_node": plan.gpus_per_run,
        "tasks_per_node": 1,  # DDP is started by torchrun inside the task
        "cpus_per_task": res.cpus_per_run,
        "slurm_array_parallelism": res.array_parallelism,
    }
    if res.partition:
        params["slurm_partition"] = res.partition
    if res.mem_gb:
        params["mem_gb"] = res.mem_gb
    if res.slurm_extra:
        params["slurm_additional_parameters"] = dict(res.slurm_extra)
    return params


def make_backend(
    name: str,
    plan: Plan,
    *,
    address: str | None = None,
    executor: str = "slurm",
    workers: int | None = None,
) -> LocalBackend | RayBackend | SlurmBackend:
    """Build a backend from its name and the study's ``resources``.

    Raises:
        ConfigError: unknown backend or executor, impossible resources, SLURM missing.
    """
    res = plan.study.resources
    if name == "local":
        slots = local_slots(plan.gpus_per_run, workers or res.workers, visible_gpus())
        return LocalBackend(slots)
    if name == "ray":
        return RayBackend(address, res.ray_num_cpus, plan.gpus_per_run, res.cpus_per_run)
    if name == "slurm":
        return SlurmBackend(plan.study_dir / "slurm", executor, slurm_parameters(plan))
    raise unknown_choice("--backend", name, BACKENDS)
