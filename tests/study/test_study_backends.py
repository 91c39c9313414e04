"""Backends: local worker slots and CUDA_VISIBLE_DEVICES, Ray (local), SLURM arrays through
submitit's local executor, and DDP runs launched with torchrun."""

from __future__ import annotations

import os
import sys

import pandas as pd
import pytest

from divssl.errors import ConfigError
from divssl.io import read_json
from divssl.study.backends import (
    LocalBackend,
    RayBackend,
    SlurmBackend,
    local_slots,
    make_backend,
    slurm_parameters,
)
from divssl.study.ddp import ddp_command
from divssl.study.plan import build_plan
from divssl.study.progress import job_complete
from divssl.study.runner import prepare_study, run_study
from divssl.study.spec import study_from_tree

from .conftest import tiny_tree


def _prepared(tmp_path, **changes):
    tree = tiny_tree(**changes)
    tree["grid"] = {"pool": ["w"], "seed": [0, 1]}
    plan = build_plan(study_from_tree(tree), tmp_path / "s", count_flops=False)
    doc = prepare_study(plan)
    return plan, doc


def test_local_slots_group_visible_gpus():
    assert local_slots(1, None, ["0", "1", "2"]) == ["0", "1", "2"]
    assert local_slots(2, None, ["0", "1", "2", "3", "4"]) == ["0,1", "2,3"]
    assert local_slots(1, 2, ["3", "5", "7"]) == ["3", "5"]
    assert local_slots(0, None, ["0"]) == [None]  # CPU runs are not pinned
    assert local_slots(1, 3, []) == [None, None, None]
    with pytest.raises(ConfigError) as err:
        local_slots(4, None, ["0", "1"])
    assert err.value.field == "resources.gpus_per_run"
    with pytest.raises(ConfigError) as err:
        local_slots(1, 3, ["0", "1"])
    assert err.value.field == "resources.workers"


def test_make_backend_reads_resources(tmp_path):
    tree = tiny_tree(
        resources={
            "gpus_per_run": 0,
            "workers": 2,
            "partition": "gpu",
            "time_min": 90,
            "mem_gb": 32,
            "slurm_extra": {"account": "x"},
        }
    )
    plan = build_plan(study_from_tree(tree), tmp_path, count_flops=False)
    local = make_backend("local", plan)
    assert isinstance(local, LocalBackend) and local.slots == [None, None]
    params = slurm_parameters(plan)
    assert params["slurm_partition"] == "gpu" and params["timeout_min"] == 90
    assert params["gpus_per_node"] == 0 and params["mem_gb"] == 32
    assert params["slurm_additional_parameters"] == {"account": "x"}
    with pytest.raises(ConfigError) as err:
        make_backend("kubernetes", plan)
    assert err.value.field == "--backend" and "ray" in err.value.choices


@pytest.mark.slow
def test_local_workers_each_get_their_cuda_visible_devices(tmp_path):
    plan, doc = _prepared(tmp_path)
    seen = []
    results = LocalBackend(["7", "9"]).run(
        str(plan.study_dir), [r.id for r in plan.runs], seen.append
    )
    assert len(seen) == 2 and sorted(r["id"] for r in results) == sorted(r.id for r in plan.runs)
    assert all(r["status"] == "done" for r in results)
    assert {r["cuda_visible_devices"] for r in results} <= {"7", "9"}
    assert all(job_complete(plan.study_dir, j) for j in doc.jobs)


@pytest.mark.slow
def test_slurm_array_through_submitits_local_executor(tmp_path):
    plan, doc = _prepared(tmp_path)
    params = {**slurm_parameters(plan), "timeout_min": 10}
    backend = SlurmBackend(plan.study_dir / "slurm", "local", params, poll_seconds=0.2)
    results = backend.run(str(plan.study_dir), [r.id for r in plan.runs], lambda r: None)
    assert [r["status"] for r in results] == ["done", "done"]
    assert len({r["pid"] for r in results}) == 2  # one process per array task
    assert all(job_complete(plan.study_dir, j) for j in doc.jobs)
    assert list((plan.study_dir / "slurm").glob("*_log.out"))  # submitit's per-task logs


def test_slurm_needs_sbatch_unless_local(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError) as err:
        SlurmBackend(tmp_path, "slurm", {})
    assert "--executor local" in str(err.value)
    with pytest.raises(ConfigError) as err:
        SlurmBackend(tmp_path, "pbs", {})
    assert err.value.field == "--executor"


@pytest.mark.slow
def test_ray_backend_on_a_local_ray(tmp_path):
    plan, doc = _prepared(tmp_path)
    seen = []
    backend = RayBackend(None, num_cpus=2, gpus_per_run=0, cpus_per_run=1)
    results = backend.run(str(plan.study_dir), [r.id for r in plan.runs], seen.append)
    assert sorted(r["status"] for r in results) == ["done", "done"] and len(seen) == 2
    assert len({r["pid"] for r in results}) >= 1
    assert all(job_complete(plan.study_dir, j) for j in doc.jobs)
    import ray

    assert not ray.is_initialized()  # a Ray started by the backend is shut down again


def test_ddp_command_uses_torchrun():
    from pathlib import Path

    cmd = ddp_command(Path("/s/configs/x.yaml"), 4)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in cmd and "--nproc_per_node=4" in cmd
    assert cmd[-3:] == ["-m", "divssl.study.ddp", "/s/configs/x.yaml"]


@pytest.mark.slow
def test_multi_gpu_runs_launch_ddp_with_torchrun(tmp_path, quiet_console):
    tree = tiny_tree(resources={"gpus_per_run": 2})
    tree["grid"] = {"pool": ["w"]}
    tree["base"]["device"] = "cpu"  # two gloo ranks on this CPU stand in for two GPUs
    plan = build_plan(study_from_tree(tree), tmp_path / "s", count_flops=False)
    outcome = run_study(plan, console=quiet_console)
    assert outcome.results[0]["status"] == "done", outcome.results
    (run,) = plan.runs
    summary = read_json(run.run_dir / "summary.json")
    assert summary["world_size"] == 2 and summary["images_seen"] == 64
    assert (run.run_dir / "ddp.log").is_file()
    assert len(pd.read_parquet(plan.study_dir / "results.parquet")) == 6


def test_pool_worker_initializer_takes_its_thread_share(monkeypatch) -> None:
    import queue

    import torch

    from divssl import threads as th
    from divssl.study.backends import _init_worker

    saved = torch.get_num_threads()
    for name in (*th.THREAD_ENV_VARS, th.WORKERS_ENV, "CUDA_VISIBLE_DEVICES"):
        monkeypatch.setenv(name, "0")  # recorded, so teardown restores the original state
        monkeypatch.delenv(name)
    slots: queue.Queue = queue.Queue()
    slots.put("3")
    try:
        _init_worker(slots, 1, 2)
        assert torch.get_num_threads() == 1
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
        assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "1"
        assert th.concurrent_workers() == 2
    finally:
        torch.set_num_threads(saved)
