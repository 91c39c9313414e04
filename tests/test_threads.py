"""Thread policy: shares, free-core arithmetic, phase contexts and the adaptive training policy."""

from __future__ import annotations

import pytest
import torch

from divssl import threads as th


@pytest.fixture(autouse=True)
def _restore_threads():
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


def test_worker_share_and_env() -> None:
    assert th.worker_share(1, cores=8) == 8
    assert th.worker_share(3, cores=8) == 2
    assert th.worker_share(16, cores=8) == 1  # never zero
    env = th.worker_env(2, 4)
    assert all(env[name] == "2" for name in th.THREAD_ENV_VARS)
    assert env[th.WORKERS_ENV] == "4"
    assert th.concurrent_workers({th.WORKERS_ENV: "3"}) == 3
    assert th.concurrent_workers({}) == 1
    assert th.concurrent_workers({th.WORKERS_ENV: "x"}) == 1
    assert th.concurrent_workers({th.WORKERS_ENV: "2", "LOCAL_WORLD_SIZE": "2"}) == 4


def test_others_busy_cores_subtracts_our_own_time() -> None:
    before = th.CpuSample(wall=10.0, machine_busy=100.0, own=5.0)
    # 2 s wall: the machine was busy 3.8 core-seconds, 2.0 of them ours -> 0.9 cores of others.
    after = th.CpuSample(wall=12.0, machine_busy=103.8, own=7.0)
    assert th.others_busy_cores(before, after) == pytest.approx(0.9)
    assert th.others_busy_cores(after, after) == 0.0


@pytest.mark.parametrize(
    ("others", "share", "cores", "expected"),
    [(0.0, 2, 2, 2), (0.3, 2, 2, 2), (0.9, 2, 2, 1), (1.8, 2, 2, 1), (2.5, 8, 8, 6), (0, 4, 8, 4)],
)
def test_free_core_threads(others: float, share: int, cores: int, expected: int) -> None:
    assert th.free_core_threads(share, others, cores) == expected


def test_single_thread_restores_and_skips_non_cpu() -> None:
    torch.set_num_threads(2)
    with th.single_thread("cpu"):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with th.single_thread("meta"):
        assert torch.get_num_threads() == 2


def test_explicit_setting_is_applied_never_adapted_and_restored() -> None:
    torch.set_num_threads(2)
    policy = th.ThreadPolicy(1, torch.device("cpu"))
    assert policy.start() == 1 and torch.get_num_threads() == 1
    assert policy.maybe_adapt() == 1
    assert policy.record() == {"setting": 1, "share": 1, "used": [1], "final": 1}
    policy.restore()
    assert torch.get_num_threads() == 2


def test_auto_policy_drops_to_free_cores_and_comes_back(monkeypatch) -> None:
    clock = {"wall": 0.0, "busy": 0.0, "own": 0.0}

    def fake_sample() -> th.CpuSample:
        return th.CpuSample(clock["wall"], clock["busy"], clock["own"])

    def advance(seconds: float, others: float, own: float) -> None:
        clock["wall"] += seconds
        clock["busy"] += seconds * (others + own)
        clock["own"] += seconds * own

    monkeypatch.setattr(th, "cpu_cores", lambda: 2)
    monkeypatch.setattr(th, "sample_cpu", fake_sample)
    monkeypatch.setattr(th.time, "perf_counter", lambda: clock["wall"])
    monkeypatch.setattr(th.time, "sleep", lambda s: advance(s, others=1.0, own=0.0))
    monkeypatch.delenv(th.WORKERS_ENV, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    policy = th.ThreadPolicy("auto", torch.device("cpu"))
    assert policy.start() == 1  # one busy process on two cores: one thread
    assert policy.share == 2
    advance(1.0, others=0.0, own=1.0)
    assert policy.maybe_adapt() == 1  # too soon to re-measure
    advance(th.RECHECK_SECONDS, others=0.05, own=1.0)
    assert policy.maybe_adapt() == 2 and torch.get_num_threads() == 2  # the machine is free
    advance(th.RECHECK_SECONDS, others=1.0, own=1.0)
    assert policy.maybe_adapt() == 1
    assert policy.record()["used"] == [1, 2]
    frozen = th.ThreadPolicy("auto", torch.device("cpu"), adaptive=False)
    frozen.start()
    advance(th.RECHECK_SECONDS, others=0.0, own=1.0)
    assert frozen.maybe_adapt() == frozen.threads == 1  # deterministic runs keep their count


def test_auto_share_follows_concurrent_workers(monkeypatch) -> None:
    monkeypatch.setattr(th, "cpu_cores", lambda: 8)
    monkeypatch.setenv(th.WORKERS_ENV, "4")
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    policy = th.ThreadPolicy("auto", torch.device("meta"))  # off the CPU: the share, no probing
    assert policy.start() == 2 and policy.share == 2


def test_blas_threads_limits_numpy_blas_in_the_block() -> None:
    from threadpoolctl import threadpool_info

    def blas_counts() -> list[int]:
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    before = blas_counts()
    with th.blas_threads(1):
        assert blas_counts() and all(n == 1 for n in blas_counts())
    assert blas_counts() == before


def test_free_threads_reads_load_since_previous_call(monkeypatch) -> None:
    samples = iter(
        [
            th.CpuSample(0.0, 0.0, 0.0),
            th.CpuSample(0.1, 0.1, 0.0),  # fresh 0.1 s reading: 1 core of others
            th.CpuSample(2.0, 0.1 + 1.9 * 0.1, 0.0),  # since then: 0.1 core of others
            th.CpuSample(2.01, 0.0, 0.0),  # 10 ms later: the previous answer is reused
        ]
    )
    monkeypatch.setattr(th, "cpu_cores", lambda: 2)
    monkeypatch.setattr(th, "sample_cpu", lambda: next(samples))
    monkeypatch.setattr(th.time, "sleep", lambda s: None)
    monkeypatch.setattr(th, "_LAST_SAMPLE", [])
    monkeypatch.setattr(th, "_LAST_THREADS", [])
    monkeypatch.delenv(th.WORKERS_ENV, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert th.free_threads() == 1
    assert th.free_threads() == 2
    assert th.free_threads() == 2
    assert th.free_threads(share=1) == 1  # a share of one needs no reading
