"""Uncertainty for every reported number: bootstrap CIs, seed summaries, paired bootstrap tests.

* :func:`bootstrap_ci` resamples the *test samples* with replacement and reports the percentile
  interval of the metric (Efron & Tibshirani 1993, ch. 13).
* :func:`seed_summary` summarises repeated runs (seeds): mean, sample std (ddof=1), n and the
  Student-t 95% interval ``mean +- t_{n-1, 0.975} * std / sqrt(n)``.
* :func:`paired_bootstrap` compares two predictors on the *same* test set: both are scored on the
  same resampled indices, so the interval is of the paired difference; the two-sided p-value is
  the share of bootstrap differences at least as far from the observed one as the observed one is
  from 0 (the bootstrap distribution shifted to the null, Efron & Tibshirani 1993, sec. 16.4;
  Koehn 2004), with the +1 correction so it is never exactly 0.

Intervals are written as ``{"value", "ci_low", "ci_high", "n"}`` dicts (``n`` = samples the value
was computed from) in every evaluation JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from divssl.evaluate.metrics import (
    Metric,
    confusion_counts,
    get_metric,
    predictions,
    topk_hits,
)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval.

    Attributes:
        value: the estimate on the full sample.
        ci_low: lower end of the interval.
        ci_high: upper end of the interval.
        n: number of samples (test images, or seeds) behind ``value``.
    """

    value: float
    ci_low: float
    ci_high: float
    n: int

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON form; undefined ends (NaN) become ``None``."""
        return {
            "value": _finite_or_none(self.value),
            "ci_low": _finite_or_none(self.ci_low),
            "ci_high": _finite_or_none(self.ci_high),
            "n": int(self.n),
        }


@dataclass(frozen=True)
class SeedSummary:
    """Summary of one number over repeated runs.

    Attributes:
        mean: sample mean.
        std: sample standard deviation (ddof=1); NaN for n = 1.
        n: number of runs.
        ci_low: lower end of the t-based interval; NaN for n = 1.
        ci_high: upper end of the t-based interval; NaN for n = 1.
    """

    mean: float
    std: float
    n: int
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON form; undefined values (NaN) become ``None``."""
        return {
            "value": _finite_or_none(self.mean),
            "std": _finite_or_none(self.std),
            "ci_low": _finite_or_none(self.ci_low),
            "ci_high": _finite_or_none(self.ci_high),
            "n": int(self.n),
        }


@dataclass(frozen=True)
class PairedResult:
    """Paired comparison of two predictors on the same test set (a minus b).

    Attributes:
        difference: metric(a) - metric(b) on the full test set.
        ci_low: lower percentile end of the bootstrap differences.
        ci_high: upper percentile end of the bootstrap differences.
        p_value: two-sided bootstrap p-value of "no difference".
        n: number of test samples.
    """

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON form."""
        return {
            "value": _finite_or_none(self.difference),
            "ci_low": _finite_or_none(self.ci_low),
            "ci_high": _finite_or_none(self.ci_high),
            "p_value": _finite_or_none(self.p_value),
            "n": int(self.n),
        }


def check_stats_args(n_boot: int, level: float) -> None:
    """Validate bootstrap options before any compute starts.

    Raises:
        ConfigError: fewer than 1 resample, or a level outside (0, 1).
    """
    from divssl.errors import ConfigError

    if n_boot < 1:
        raise ConfigError("n_boot", f"must be >= 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ConfigError("level", f"must lie in (0, 1), got {level}")


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _mean_of_hits(y_true: np.ndarray, hits: np.ndarray) -> float:
    return float(np.mean(hits))


def _compact(metric: str | Metric, y_true: np.ndarray, y_pred: np.ndarray) -> tuple[Metric, Any]:
    """Reduce (N, K) scores once, before resampling, to what the metric needs per sample.

    top-1/top-5 become a per-sample hit vector whose mean is the metric, macro-F1 the predicted
    labels; resampling (N,) vectors instead of (N, K) scores keeps a 1000-resample interval on a
    50k x 1000 test set in seconds. Callables are left as they are.
    """

    if metric in ("top1", "top5") and np.asarray(y_pred).ndim == 2:
        k = 1 if metric == "top1" else 5
        return _mean_of_hits, topk_hits(y_true, y_pred, k).astype(np.float64)
    if metric == "macro_f1":
        return get_metric(metric), predictions(y_pred)
    return get_metric(metric), y_pred


def _bootstrap_values(
    y_true: np.ndarray, preds: Sequence[np.ndarray], metric: Metric, n: int, seed: int
) -> np.ndarray:
    """Metric of each prediction array on shared resamples, shape (n, len(preds))."""
    out = np.empty((n, len(preds)))
    rng = np.random.default_rng(seed)
    for r in range(n):
        # Drawn one resample at a time so memory stays O(N) for 10^5-image test sets.
        idx = rng.integers(0, len(y_true), size=len(y_true))
        for j, pred in enumerate(preds):
            out[r, j] = metric(y_true[idx], pred[idx])
    return out


def bootstrap_ci(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    metric: str | Metric,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Percentile bootstrap interval of a metric over test samples.

    Args:
        y_true: (N,) int labels.
        y_pred: (N,) predicted labels or (N, K) scores.
        metric: ``"top1"``, ``"top5"``, ``"macro_f1"`` or a callable ``(y_true, y_pred) -> float``.
        n: number of bootstrap resamples.
        seed: resampling seed.
        level: coverage of the interval.

    Returns:
        The metric on the full test set with its percentile interval.
    """
    _check_level(level)
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if len(y_true) == 0 or len(y_true) != len(y_pred):
        raise ValueError(f"need equal, non-zero lengths, got {len(y_true)} and {len(y_pred)}")
    value = get_metric(metric)(y_true, y_pred)
    fn, compact = _compact(metric, y_true, y_pred)
    boots = _bootstrap_values(y_true, [compact], fn, n, seed)[:, 0]
    low, high = _percentiles(boots, level)
    return Interval(value, low, high, len(y_true))


def seed_summary(values: Sequence[float] | np.ndarray, level: float = 0.95) -> SeedSummary:
    """Mean, sample std (ddof=1), n and Student-t interval of a number over repeated runs.

    Args:
        values: one value per seed.
        level: coverage of the interval (0.95 by default).
    """
    _check_level(level)
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("seed_summary needs at least one value")
    mean = float(x.mean())
    if x.size == 1:
        return SeedSummary(mean, math.nan, 1, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = float(sps.t.ppf((1.0 + level) / 2.0, df=x.size - 1)) * std / math.sqrt(x.size)
    return SeedSummary(mean, std, int(x.size), mean - half, mean + half)


def paired_bootstrap(
    y_true: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    metric: str | Metric,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedResult:
    """Paired bootstrap comparison of two predictors on one test set.

    Args:
        y_true: (N,) int labels.
        pred_a: (N,) labels or (N, K) scores of predictor a.
        pred_b: (N,) labels or (N, K) scores of predictor b.
        metric: metric name or callable.
        n: number of resamples.
        seed: resampling seed.
        level: coverage of the interval of the difference.

    Returns:
        ``metric(a) - metric(b)``, its percentile interval and the two-sided p-value
        ``(1 + #{|d* - d| >= |d|}) / (n + 1)``.
    """
    _check_level(level)
    y_true, pred_a, pred_b = np.asarray(y_true), np.asarray(pred_a), np.asarray(pred_b)
    if not len(y_true) == len(pred_a) == len(pred_b) or len(y_true) == 0:
        raise ValueError("y_true, pred_a and pred_b need the same non-zero length")
    full = get_metric(metric)
    observed = full(y_true, pred_a) - full(y_true, pred_b)
    fn, compact_a = _compact(metric, y_true, pred_a)
    _, compact_b = _compact(metric, y_true, pred_b)
    boots = _bootstrap_values(y_true, [compact_a, compact_b], fn, n, seed)
    diffs = boots[:, 0] - boots[:, 1]
    low, high = _percentiles(diffs, level)
    # Tolerance so that float noise in identical predictors (all diffs 0) does not flip the count.
    extreme = np.abs(diffs - observed) >= abs(observed) - 1e-12
    p_value = (1.0 + float(extreme.sum())) / (n + 1.0)
    return PairedResult(observed, low, high, min(p_value, 1.0), len(y_true))


CONFUSION_MAX_CLASSES = 50


def per_class_intervals(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, level: float = 0.95
) -> list[dict[str, float | int | None]]:
    """Accuracy of each class (recall) with its Wilson score interval.

    A class's accuracy is a binomial proportion over its own test images, so the interval is the
    Wilson interval of ``scipy.stats.binomtest``; classes absent from ``y_true`` get ``None``.

    Returns:
        K dicts ``{"value", "ci_low", "ci_high", "n"}`` (``n`` = test images of the class).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    pred = predictions(y_pred)
    support = np.bincount(y_true, minlength=num_classes)
    correct = np.bincount(y_true[pred == y_true], minlength=num_classes)
    out: list[dict[str, float | int | None]] = []
    for hits, n in zip(correct.tolist(), support.tolist(), strict=True):
        if n == 0:
            out.append({"value": None, "ci_low": None, "ci_high": None, "n": 0})
            continue
        ci = sps.binomtest(hits, n).proportion_ci(confidence_level=level, method="wilson")
        out.append({"value": hits / n, "ci_low": ci.low, "ci_high": ci.high, "n": n})
    return out


def metric_report(
    y_true: np.ndarray,
    scores: np.ndarray,
    num_classes: int,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    metrics: Sequence[str] = ("top1", "top5", "macro_f1"),
) -> dict[str, object]:
    """Every metric of one evaluated split with its interval.

    Args:
        y_true: (N,) int labels.
        scores: (N, K) class scores (probabilities, logits or vote weights).
        num_classes: K.
        n_boot: bootstrap resamples per interval.
        seed: resampling seed (the same resamples for every metric).
        level: interval coverage.
        metrics: metric names.

    Returns:
        ``{metric: {"value", "ci_low", "ci_high", "n"}}`` (percentile bootstrap over test images),
        ``"per_class_accuracy"`` (K such dicts, Wilson intervals), ``"n"`` and, for K <= 50,
        ``"confusion"`` (K x K counts, rows = true class).
    """
    report: dict[str, object] = {
        name: bootstrap_ci(y_true, scores, name, n_boot, seed, level).to_dict() for name in metrics
    }
    report["per_class_accuracy"] = per_class_intervals(y_true, scores, num_classes, level)
    if num_classes <= CONFUSION_MAX_CLASSES:
        report["confusion"] = confusion_counts(y_true, scores, num_classes).tolist()
    report["n"] = int(len(y_true))
    return report
