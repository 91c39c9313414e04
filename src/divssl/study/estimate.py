"""What ``divssl plan`` estimates beyond pretraining: the runs' evaluations and the wall time.

A study's wall time is pretraining plus evaluations, shared by its workers. Pretraining is timed
by :func:`divssl.study.plan.measure_plan`; this module adds the evaluations, measured where that
is cheap and counted where it is not:

* **features**: one forward pass per image of every split of the task (train, val, test, ood),
  once per run and task (the feature cache serves every evaluation of that run), at the
  encoder's forward rate, timed on a few batches of random images at the run's input size;
* **kNN**: its similarity GEMMs, ``2 * n_query * n_bank * D`` FLOPs per label fraction and query
  split, at a float32 GEMM rate timed here;
* **cached L-BFGS linear probe**: ``max_iter`` objective evaluations per weight decay and label
  fraction (the cap: an upper bound, warm-started solves usually stop earlier), each costing the
  probe's own NumPy objective timed on random features of the encoder's width, scaled by rows.

Fine-tuning, the SGD protocols and the report's reference baselines are not estimated; the plan
lists them as such. Times are per one worker's thread share (``cores // workers``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from divssl.errors import ConfigError
from divssl.evaluate.features import eval_mode
from divssl.evaluate.linear import DEFAULT_WEIGHT_DECAYS, NumpySoftmaxObjective
from divssl.evaluate.tasks import open_task
from divssl.pretrain.backbones import build_backbone

if TYPE_CHECKING:
    from divssl.study.jobs import PlannedEvaluation
    from divssl.study.plan import Plan, PlannedRun

SPLITS = ("train", "val", "test", "ood")
# Rows of the random features the probe objective is timed on (scaled linearly to n rows).
_TIMED_ROWS = 8192


@dataclass
class EvalRates:
    """Measured rates of this machine (at one worker's thread share).

    Attributes:
        forward_ips: (backbone, image size, cifar stem) -> forward images per second.
        feature_dim: the same key -> feature width D.
        gemm_flops: float32 GEMM FLOP/s (kNN similarities).
        probe_row_seconds: feature width D -> seconds per row of one probe objective evaluation
            (10 classes; scaled by K / 10 for other class counts).
    """

    forward_ips: dict[tuple[str, int, bool], float] = field(default_factory=dict)
    feature_dim: dict[tuple[str, int, bool], int] = field(default_factory=dict)
    gemm_flops: float = 0.0
    probe_row_seconds: dict[int, float] = field(default_factory=dict)


@dataclass
class RunEvalEstimate:
    """Estimated evaluation seconds of one run.

    Attributes:
        seconds: features + kNN + probes (``None`` when nothing could be estimated).
        not_estimated: evaluations left out (fine-tuning, SGD protocols).
    """

    seconds: float | None
    not_estimated: list[str]


def _encoder_key(cfg: dict[str, Any]) -> tuple[str, int, bool]:
    return str(cfg["backbone"]), int(cfg["image_size"]), bool(cfg.get("cifar_stem", False))


def task_shape(task_spec: str) -> tuple[dict[str, int], int]:
    """Images per split of a task (splits it does not have are left out) and its class count.

    Raises:
        ConfigError: the task cannot be opened (named as ``task``).
    """
    task = open_task(task_spec)
    sizes = {s: len(task.pool(s)) for s in SPLITS if task.has(s)}
    return sizes, len(task.pool("train").class_names or []) or 10


def _time_forward(key: tuple[str, int, bool], batch: int, repeats: int) -> tuple[float, int]:
    model, dim = build_backbone(key[0], key[1], key[2])
    x = torch.rand(batch, 3, key[1], key[1])
    with eval_mode(model), torch.inference_mode():
        model(x)  # warm-up (allocator, kernel selection)
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(x)
        seconds = time.perf_counter() - t0
    return batch * repeats / seconds, dim


def _time_gemm(size: int = 512, repeats: int = 5) -> float:
    a = torch.rand(size, size)
    b = torch.rand(size, size)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - t0)


def _time_probe_row(dim: int, classes: int = 10, repeats: int = 3) -> float:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((_TIMED_ROWS, dim))
    y = rng.integers(0, classes, _TIMED_ROWS)
    objective = NumpySoftmaxObjective(x, y, classes)
    theta = np.zeros(dim * classes + classes)
    objective(theta)
    t0 = time.perf_counter()
    for _ in range(repeats):
        objective(theta)
    return (time.perf_counter() - t0) / repeats / _TIMED_ROWS


def measure_eval_rates(plan: Plan, threads: int, batch: int = 256, repeats: int = 3) -> EvalRates:
    """Time the forward pass of every distinct encoder, a GEMM and the probe objective.

    Args:
        plan: the plan (its runs' backbones, image sizes and evaluations).
        threads: intra-op threads to measure with (one worker's share).
        batch: images per timed forward batch.
        repeats: timed batches per encoder.
    """
    rates = EvalRates()
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for run in plan.runs:
            if not run.evaluations:
                continue
            key = _encoder_key(run.config)
            if key not in rates.forward_ips:
                rates.forward_ips[key], rates.feature_dim[key] = _time_forward(key, batch, repeats)
        if rates.forward_ips:
            rates.gemm_flops = _time_gemm()
        torch.set_num_threads(1)  # probes run on one thread (divssl.threads.single_thread)
        for dim in sorted(set(rates.feature_dim.values())):
            rates.probe_row_seconds[dim] = _time_probe_row(dim)
    finally:
        torch.set_num_threads(saved)
    return rates


def evaluation_seconds(
    ev: PlannedEvaluation, sizes: dict[str, int], dim: int, classes: int, rates: EvalRates
) -> float | None:
    """Seconds of one kNN or cached L-BFGS evaluation on cached features (the module docstring
    says what is counted).

    Args:
        ev: the planned evaluation.
        sizes: images per split of its task.
        dim: feature width D of the run's encoder.
        classes: class count K of the task.
        rates: this machine's measured rates.

    Returns:
        Seconds, or ``None`` for what is not estimated (fine-tuning, SGD protocols).
    """
    st = ev.settings
    n_train = sizes.get("train", 0)
    queries = sum(sizes.get(s, 0) for s in ("test", "ood"))
    if st.kind == "knn":
        flops = sum(2.0 * queries * n_train * f / 100 * dim for f in st.fractions)
        return flops / rates.gemm_flops if rates.gemm_flops else None
    if st.kind != "linear" or st.protocol != "cached" or st.solver != "lbfgs":
        return None
    row = rates.probe_row_seconds.get(dim)
    if row is None:
        return None
    lambdas = len(st.weight_decays or DEFAULT_WEIGHT_DECAYS)
    # the path solves each lambda on the fitting rows, then one refit on all rows of the fraction
    fit_rows = sum(n_train * f / 100 * (1 - st.val_fraction) for f in st.fractions)
    all_rows = sum(n_train * f / 100 for f in st.fractions)
    return row * classes / 10 * st.max_iter * (lambdas * fit_rows + all_rows)


def estimate_run_evaluations(
    run: PlannedRun,
    rates: EvalRates,
    sizes: dict[str, dict[str, int]],
    classes: dict[str, int],
) -> RunEvalEstimate:
    """Estimated seconds of every evaluation a run owes (features once per task).

    Args:
        run: the planned run.
        rates: this machine's measured rates.
        sizes: task spec -> images per split (tasks that could not be opened are absent).
        classes: task spec -> class count.
    """
    key = _encoder_key(run.config)
    ips, dim = rates.forward_ips.get(key), rates.feature_dim.get(key)
    total, skipped, featurized = 0.0, [], set()
    for ev in run.evaluations:
        n = sizes.get(ev.task_spec)
        if n is None or not ips or not dim:
            skipped.append(ev.id)
            continue
        seconds = evaluation_seconds(ev, n, dim, classes.get(ev.task_spec, 10), rates)
        if seconds is None:
            skipped.append(ev.id)
            continue
        if ev.task_spec not in featurized:
            featurized.add(ev.task_spec)
            seconds += sum(n.values()) / ips
        total += seconds
    nothing = run.evaluations and len(skipped) == len(run.evaluations)
    return RunEvalEstimate(None if nothing else total, skipped)


def estimate_evaluations(plan: Plan, rates: EvalRates) -> list[RunEvalEstimate]:
    """:func:`estimate_run_evaluations` for every run; a task that cannot be opened leaves its
    evaluations unestimated (the study itself will report that error)."""
    sizes: dict[str, dict[str, int]] = {}
    classes: dict[str, int] = {}
    for spec in {ev.task_spec for run in plan.runs for ev in run.evaluations}:
        try:
            sizes[spec], classes[spec] = task_shape(spec)
        except (ConfigError, OSError, ValueError):
            continue
    return [estimate_run_evaluations(run, rates, sizes, classes) for run in plan.runs]
