"""Metrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from divssl.errors import ConfigError
from divssl.evaluate import metrics as M


@pytest.fixture
def scored() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 500)
    scores = rng.normal(size=(500, 7)) + 1.5 * np.eye(7)[y]
    return y, scores


def test_top1_top5_match_sklearn(scored: tuple[np.ndarray, np.ndarray]) -> None:
    y, scores = scored
    assert M.top1(y, scores) == pytest.approx(skm.accuracy_score(y, scores.argmax(1)))
    assert M.top1(y, scores.argmax(1)) == M.top1(y, scores)
    ref = skm.top_k_accuracy_score(y, scores, k=5, labels=np.arange(7))
    assert M.top5(y, scores) == pytest.approx(ref)
    assert M.topk(y, scores, 1) == pytest.approx(M.top1(y, scores))
    assert M.topk(y, scores, 7) == 1.0


def test_topk_ties_by_hand() -> None:
    # Class 2 ties with class 0 and 1 at the top: stable order puts 0 and 1 first.
    scores = np.array([[1.0, 1.0, 1.0, 0.0]])
    assert M.topk(np.array([2]), scores, 2) == 0.0
    assert M.topk(np.array([2]), scores, 3) == 1.0
    assert M.topk(np.array([0]), scores, 1) == 1.0


def test_macro_f1_over_present_classes(scored: tuple[np.ndarray, np.ndarray]) -> None:
    y, scores = scored
    pred = scores.argmax(1)
    ref = skm.f1_score(y, pred, labels=np.unique(y), average="macro")
    assert M.macro_f1(y, pred) == pytest.approx(ref)
    # Class 6 absent from y_true but predicted: excluded from the average, errors still count.
    keep = y != 6
    y2, pred2 = y[keep], pred[keep]
    assert 6 in pred2
    ref2 = skm.f1_score(y2, pred2, labels=np.unique(y2), average="macro")
    assert M.macro_f1(y2, pred2) == pytest.approx(ref2)
    # Hand case: y=[0,0,1], pred=[0,1,1] -> F1_0 = 2/3, F1_1 = 2/3.
    assert M.macro_f1(np.array([0, 0, 1]), np.array([0, 1, 1])) == pytest.approx(2 / 3)


def test_confusion_and_per_class(scored: tuple[np.ndarray, np.ndarray]) -> None:
    y, scores = scored
    conf = M.confusion_counts(y, scores, 7)
    np.testing.assert_array_equal(conf, skm.confusion_matrix(y, scores.argmax(1), labels=range(7)))
    acc = M.per_class_accuracy(y, scores, 8)
    np.testing.assert_allclose(acc[:7], np.diag(conf) / conf.sum(1))
    assert np.isnan(acc[7])


def test_get_metric_errors() -> None:
    assert M.get_metric("top1") is M.top1
    with pytest.raises(ConfigError, match="macro_f1"):
        M.get_metric("top3")
    with pytest.raises(ValueError):
        M.topk(np.array([0]), np.array([0]), 5)
