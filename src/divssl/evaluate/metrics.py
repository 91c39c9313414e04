"""Classification metrics on label arrays: top-1, top-k, macro-F1, per-class accuracy, confusion.

Every metric takes ``(y_true, y_pred)`` arrays indexed by sample along axis 0, so the bootstraps in
:mod:`divssl.evaluate.stats` can resample rows: ``y_pred`` is either predicted labels (N,) or class
scores (N, K) (the arg-max is the prediction; top-k needs scores).

The metrics are written with ``np.bincount`` rather than ``sklearn.metrics`` because a bootstrap
calls them 10^3 times per interval, where sklearn's input validation dominates the run time; the
tests check them against ``sklearn.metrics`` (``accuracy_score``, ``top_k_accuracy_score``,
``f1_score(average="macro")``, ``confusion_matrix``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from divssl.errors import unknown_choice

Metric = Callable[[np.ndarray, np.ndarray], float]


def predictions(y_pred: np.ndarray) -> np.ndarray:
    """Predicted labels from labels (N,) or scores (N, K) (arg-max, first index on ties)."""
    y_pred = np.asarray(y_pred)
    return y_pred.argmax(axis=1) if y_pred.ndim == 2 else y_pred.astype(np.int64)


def top1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Top-1 accuracy in [0, 1].

    Args:
        y_true: (N,) int labels.
        y_pred: (N,) predicted labels or (N, K) scores.
    """
    return float(np.mean(predictions(y_pred) == np.asarray(y_true)))


def topk_hits(y_true: np.ndarray, scores: np.ndarray, k: int = 5) -> np.ndarray:
    """Per-sample top-k hits: the true class is among the k highest scores.

    Ties are broken towards the lower class index, as ``argsort`` with a stable sort does; with
    k >= K every sample is a hit.

    Args:
        y_true: (N,) int labels.
        scores: (N, K) class scores.
        k: number of guesses.

    Returns:
        (N,) bool.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"top-{k} accuracy needs (N, K) scores, got shape {scores.shape}")
    y_true = np.asarray(y_true)
    if k >= scores.shape[1]:
        return np.ones(len(y_true), dtype=bool)
    # rank of the true class = number of classes scoring strictly higher, plus ties with a lower
    # index (stable order); a hit when that rank is below k.
    true_score = scores[np.arange(len(y_true)), y_true][:, None]
    higher = (scores > true_score).sum(axis=1)
    tied_before = ((scores == true_score) & (np.arange(scores.shape[1]) < y_true[:, None])).sum(1)
    return higher + tied_before < k


def topk(y_true: np.ndarray, scores: np.ndarray, k: int = 5) -> float:
    """Top-k accuracy in [0, 1] (the mean of :func:`topk_hits`).

    Args:
        y_true: (N,) int labels.
        scores: (N, K) class scores.
        k: number of guesses.
    """
    return float(np.mean(topk_hits(y_true, scores, k)))


def top5(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Top-5 accuracy (see :func:`topk`)."""
    return topk(y_true, scores, 5)


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion counts C[i, j] = #samples of true class i predicted as j, shape (K, K) int64."""
    y_true = np.asarray(y_true, dtype=np.int64)
    pred = predictions(y_pred)
    flat = np.bincount(y_true * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-averaged F1 over the classes present in ``y_true``.

    F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c), averaged over classes c with at least one true sample
    (as ``sklearn.metrics.f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro")``).
    A prediction of a class absent from ``y_true`` is a false negative of the true class only.

    Args:
        y_true: (N,) int labels.
        y_pred: (N,) predicted labels or (N, K) scores.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    pred = predictions(y_pred)
    k = max(int(np.max(y_true, initial=0)), int(np.max(pred, initial=0))) + 1
    support = np.bincount(y_true, minlength=k)
    predicted = np.bincount(pred, minlength=k)
    tp = np.bincount(y_true[pred == y_true], minlength=k)
    present = support > 0
    denom = support[present] + predicted[present]  # = 2 TP + FP + FN
    return float(np.mean(2.0 * tp[present] / denom))


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Recall of each class, shape (K,) float64; NaN for classes absent from ``y_true``."""
    y_true = np.asarray(y_true, dtype=np.int64)
    pred = predictions(y_pred)
    support = np.bincount(y_true, minlength=num_classes).astype(np.float64)
    correct = np.bincount(y_true[pred == y_true], minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, correct / support, np.nan)


METRICS: dict[str, Metric] = {"top1": top1, "top5": top5, "macro_f1": macro_f1}


def get_metric(name: str | Metric) -> Metric:
    """A metric by name (``top1``, ``top5``, ``macro_f1``) or the callable itself."""
    if callable(name):
        return name
    if name not in METRICS:
        raise unknown_choice("metric", str(name), METRICS)
    return METRICS[name]
