"""Intra-op thread counts, decided per process and per phase, so that a busy machine stays fast.

torch runs its OpenMP intra-op pool with one thread per core. Every parallel kernel splits its
work evenly across the pool and joins at a barrier; when another process holds a core, one pool
thread is descheduled for a whole scheduler time slice and every barrier waits for it. On small
tensors (thousands of kernels per second) this collapses throughput far below a fair share
(measured on 2 cores: 0.37x of the quiet speed beside one busy Python loop, and an L-BFGS probe
went from 88 s to over 15 minutes). The policy:

* **Tiny-tensor phases** (view generation, linear probes, kNN, feature statistics) run on one
  intra-op thread (:func:`single_thread`): their kernels are too small to gain from a pool, and a
  single thread cannot wait for a descheduled sibling. Heavy dense algebra of these phases goes
  through NumPy/SciPy BLAS instead.
* **Training** uses ``threads`` intra-op threads: an explicit count from the config, or ``auto``
  = this worker's share of the cores (``cores // concurrent workers``; the study backends export
  the worker count in ``DIVSSL_CONCURRENT_WORKERS``), capped by the cores other processes leave
  free (measured from ``/proc/stat`` minus this process's own CPU time) and re-checked every few
  seconds while training (:class:`ThreadPolicy`). ``deterministic`` runs keep one fixed count, so
  their floating-point reduction order never changes mid-run.
* **Worker processes** of a study get their share through the environment
  (:func:`worker_env`: ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ...)
  before torch starts, and through ``torch.set_num_threads`` (:func:`apply_worker_share`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

# Environment variable naming how many worker processes share this machine's cores.
WORKERS_ENV = "DIVSSL_CONCURRENT_WORKERS"
# Thread-count variables read by OpenMP, MKL, OpenBLAS, BLIS, Accelerate and numexpr at start-up.
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
# How often (seconds) the training policy re-measures the free cores.
RECHECK_SECONDS = 5.0
# Length (seconds) of the first free-core measurement when no earlier sample exists.
FIRST_SAMPLE_SECONDS = 0.25


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask / cpuset, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _positive_int(raw: str | None) -> int:
    try:
        return max(1, int(raw or ""))
    except ValueError:
        return 1


def concurrent_workers(environ: Mapping[str, str] | None = None) -> int:
    """Processes sharing the cores: study workers (``DIVSSL_CONCURRENT_WORKERS``) times the DDP
    ranks of this worker on this node (torchrun's ``LOCAL_WORLD_SIZE``); 1 when neither is set."""
    env = os.environ if environ is None else environ
    return _positive_int(env.get(WORKERS_ENV)) * _positive_int(env.get("LOCAL_WORLD_SIZE"))


def worker_share(workers: int, cores: int | None = None) -> int:
    """Intra-op threads of one of ``workers`` concurrent processes: ``max(1, cores // workers)``."""
    return max(1, (cpu_cores() if cores is None else cores) // max(1, workers))


def worker_env(threads: int, workers: int) -> dict[str, str]:
    """Environment of a worker process: its thread share for every runtime, and the worker count.

    Args:
        threads: intra-op threads of the worker.
        workers: concurrent workers on the machine (exported as ``DIVSSL_CONCURRENT_WORKERS``).
    """
    env = {name: str(threads) for name in THREAD_ENV_VARS}
    env[WORKERS_ENV] = str(workers)
    return env


def apply_worker_share(threads: int, workers: int) -> None:
    """Give this (worker) process its share: environment for runtimes not yet started, and
    ``torch.set_num_threads`` for torch's pool."""
    os.environ.update(worker_env(threads, workers))
    torch.set_num_threads(threads)


@contextmanager
def single_thread(device: torch.device | str = "cpu") -> Iterator[None]:
    """Run a tiny-tensor phase on one intra-op thread (a no-op off the CPU).

    Args:
        device: the phase's compute device; only ``cpu`` changes the thread count.
    """
    if torch.device(device).type != "cpu":
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@dataclass
class CpuSample:
    """One reading of machine-wide busy CPU time and this process's CPU time, in seconds."""

    wall: float
    machine_busy: float
    own: float


def _machine_busy_seconds() -> float | None:
    """Busy (non-idle, non-iowait) CPU seconds of the whole machine since boot, or ``None``."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def sample_cpu() -> CpuSample | None:
    """Current CPU counters (``None`` where ``/proc/stat`` does not exist)."""
    busy = _machine_busy_seconds()
    if busy is None:
        return None
    t = os.times()
    return CpuSample(time.perf_counter(), busy, t.user + t.system)


def others_busy_cores(before: CpuSample, after: CpuSample) -> float:
    """Cores other processes kept busy between two samples (machine busy minus our own)."""
    wall = after.wall - before.wall
    if wall <= 0:
        return 0.0
    others = (after.machine_busy - before.machine_busy) - (after.own - before.own)
    return max(0.0, others / wall)


def free_core_threads(share: int, others: float, cores: int) -> int:
    """Threads that fit beside other processes: ``round(cores - others)``, within [1, share].

    A pool larger than the free cores makes every parallel kernel wait for a descheduled thread,
    so the count never exceeds what is free; rounding (not flooring) keeps a light background
    load (a browser at 0.3 core) from halving a quiet machine's pool.
    """
    free = math.floor(cores - others + 0.5)
    return max(1, min(share, free))


_LAST_SAMPLE: list[CpuSample] = []  # the previous free-core reading of :func:`free_threads`
_LAST_THREADS: list[int] = []


def free_threads(share: int | None = None, min_window: float = 0.05) -> int:
    """Threads for a heavy dense phase starting now (FID's eigen-decompositions, covariances):
    the worker's share capped by the cores other processes left free since the previous call
    (a fresh 0.1 s reading when there is none, or when it is older than
    :data:`RECHECK_SECONDS`; the previous answer when it is younger than ``min_window``)."""
    cores = cpu_cores()
    share = worker_share(concurrent_workers(), cores) if share is None else share
    if share <= 1:
        return 1
    now = sample_cpu()
    if now is None:
        return share
    last = _LAST_SAMPLE[0] if _LAST_SAMPLE else None
    if last is not None and now.wall - last.wall < min_window and _LAST_THREADS:
        return min(share, _LAST_THREADS[0])
    if last is None or now.wall - last.wall > RECHECK_SECONDS:
        time.sleep(0.1)
        last, now = now, sample_cpu() or now
    threads = free_core_threads(share, others_busy_cores(last, now), cores)
    _LAST_SAMPLE[:] = [now]
    _LAST_THREADS[:] = [threads]
    return threads


@contextmanager
def blas_threads(threads: int) -> Iterator[None]:
    """Limit NumPy/SciPy's BLAS and LAPACK pools (OpenBLAS, MKL, BLIS) to ``threads`` in a block.

    Their pools suffer the same barrier stalls as torch's when another process holds a core
    (measured under load: ``eigh`` of a 1024 x 1024 covariance 1.6 s on one thread, 5-16 s on
    two), so dense phases run with :func:`free_threads` threads.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=max(1, threads), user_api="blas"):
        yield


@dataclass
class ThreadPolicy:
    """Training-phase intra-op threads: explicit, or ``auto`` and adapted to the machine's load.

    Args:
        setting: ``"auto"`` or an explicit thread count (>= 1).
        device: the training device; off the CPU the pool only feeds the host side, and the
            policy sets the share once without adapting.
        adaptive: re-measure free cores every :data:`RECHECK_SECONDS` (``auto`` only; disabled
            for deterministic runs).
    """

    setting: int | str = "auto"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    adaptive: bool = True
    threads: int = 0
    share: int = 0
    history: list[int] = field(default_factory=list)
    _last: CpuSample | None = None
    _saved: int = 0

    def start(self) -> int:
        """Decide and apply the first thread count; returns it (:meth:`restore` undoes it)."""
        self._saved = torch.get_num_threads()
        if self.setting != "auto":
            self.share = int(self.setting)
            self._apply(self.share)
            return self.threads
        cores = cpu_cores()
        self.share = worker_share(concurrent_workers(), cores)
        threads = self.share
        if self.device.type == "cpu" and self.share > 1:
            first = sample_cpu()
            if first is not None:
                time.sleep(FIRST_SAMPLE_SECONDS)
                self._last = sample_cpu()
                if self._last is not None:
                    others = others_busy_cores(first, self._last)
                    threads = free_core_threads(self.share, others, cores)
        self._apply(threads)
        return self.threads

    def maybe_adapt(self) -> int:
        """Re-measure the free cores when the last sample is older than the recheck interval.

        Costs one ``/proc/stat`` read per call after the interval (microseconds); a no-op for
        explicit counts, deterministic runs and non-CPU devices.
        """
        if (
            self.setting != "auto"
            or not self.adaptive
            or self.device.type != "cpu"
            or self.share <= 1
            or self._last is None
        ):
            return self.threads
        if time.perf_counter() - self._last.wall < RECHECK_SECONDS:
            return self.threads
        now = sample_cpu()
        if now is None:
            return self.threads
        others = others_busy_cores(self._last, now)
        self._last = now
        threads = free_core_threads(self.share, others, cpu_cores())
        if threads != self.threads:
            self._apply(threads)
        return self.threads

    def _apply(self, threads: int) -> None:
        self.threads = threads
        self.history.append(threads)
        torch.set_num_threads(threads)

    def restore(self) -> None:
        """Give the process back the thread count it had before :meth:`start`."""
        if self._saved:
            torch.set_num_threads(self._saved)

    def record(self) -> dict[str, object]:
        """What ``summary.json`` records: setting, share and the thread counts used."""
        return {
            "setting": self.setting,
            "share": self.share,
            "used": sorted(set(self.history)),
            "final": self.threads,
        }
