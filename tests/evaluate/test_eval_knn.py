"""Weighted kNN against a hand-computed 2-D case."""

from __future__ import annotations

import math

import numpy as np
import pytest

from divssl.errors import ConfigError
from divssl.evaluate.knn import knn_scores

# Four train points in 2-D and one query; cosine similarities are computed by hand below.
TRAIN = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]], dtype=np.float32)
LABELS = np.array([0, 1, 1, 0])
QUERY = np.array([[1.0, 0.2]], dtype=np.float32)
NORM_Q = math.sqrt(1.04)
SIM = [1 / NORM_Q, 0.2 / NORM_Q, 1.2 / (NORM_Q * math.sqrt(2)), -1 / NORM_Q]


def test_weighted_votes_by_hand() -> None:
    # k = 3 picks points 0 (label 0), 2 and 1 (label 1). A majority vote says 1; with T = 0.07
    # the nearest neighbour's weight exp(s/T) dominates and class 0 wins.
    scores = knn_scores(TRAIN, LABELS, QUERY, num_classes=2, k=3, temperature=0.07)
    expected = [math.exp(SIM[0] / 0.07), math.exp(SIM[2] / 0.07) + math.exp(SIM[1] / 0.07)]
    np.testing.assert_allclose(scores[0], expected, rtol=1e-4)
    assert scores.argmax(1)[0] == 0
    # With a large temperature the weights are nearly equal and the two label-1 votes win.
    flat = knn_scores(TRAIN, LABELS, QUERY, num_classes=2, k=3, temperature=100.0)
    expected_flat = [math.exp(SIM[0] / 100), math.exp(SIM[2] / 100) + math.exp(SIM[1] / 100)]
    np.testing.assert_allclose(flat[0], expected_flat, rtol=1e-5)
    assert flat.argmax(1)[0] == 1


def test_k_clipped_and_scale_invariant() -> None:
    all_four = knn_scores(TRAIN, LABELS, QUERY, 2, k=200)
    by_hand = [math.exp(SIM[0] / 0.07) + math.exp(SIM[3] / 0.07)]
    by_hand.append(math.exp(SIM[1] / 0.07) + math.exp(SIM[2] / 0.07))
    np.testing.assert_allclose(all_four[0], by_hand, rtol=1e-4)
    scaled = knn_scores(TRAIN * 7, LABELS, QUERY * 0.1, 2, k=200)
    np.testing.assert_allclose(scaled, all_four, rtol=1e-5)


def test_batching_does_not_change_scores() -> None:
    rng = np.random.default_rng(0)
    bank, labels, queries = (
        rng.normal(size=(50, 8)),
        rng.integers(0, 3, 50),
        rng.normal(size=(9, 8)),
    )
    one = knn_scores(bank, labels, queries, 3, k=5, batch_size=2)
    # float32 GEMM kernels differ by the query block's shape (a few ulp in the similarities,
    # amplified by exp(s / 0.07)), so equality holds to float32 round-off, not bitwise.
    many = knn_scores(bank, labels, queries, 3, k=5, batch_size=100)
    np.testing.assert_allclose(one, many, rtol=1e-5)
    with pytest.raises(ConfigError):
        knn_scores(bank, labels, queries, 3, k=0)
