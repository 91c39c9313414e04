"""The Vendi score against a direct O(n²) implementation and cases with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from divssl.distances import diversity as vendi_module
from divssl.distances.diversity import KERNELS, median_bandwidth, vendi, vendi_score
from divssl.errors import ConfigError


def direct_vendi(kernel_matrix: np.ndarray) -> float:
    """Friedman & Dieng (2023), Eq. 1: exp(-Σ λ log λ), λ the eigenvalues of K / n, 0 log 0 = 0."""
    n = len(kernel_matrix)
    lam = np.linalg.eigvalsh(kernel_matrix / n)
    lam = lam[lam > 1e-15]
    return float(np.exp(-np.sum(lam * np.log(lam))))


def cosine_kernel(x: np.ndarray) -> np.ndarray:
    """K_ij = x_iᵀ x_j / (‖x_i‖ ‖x_j‖), written out pair by pair."""
    n = len(x)
    k = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            k[i, j] = x[i] @ x[j] / (np.linalg.norm(x[i]) * np.linalg.norm(x[j]))
    return k


def rbf_kernel(x: np.ndarray, sigma: float) -> np.ndarray:
    """K_ij = exp(-‖x_i - x_j‖² / (2 σ²)), pair by pair."""
    n = len(x)
    k = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            k[i, j] = np.exp(-np.sum((x[i] - x[j]) ** 2) / (2 * sigma**2))
    return k


# ------------------------------------------------------------------------ against the definition


@pytest.mark.parametrize(("n", "d"), [(60, 8), (6, 20), (40, 40), (1, 5)])
def test_cosine_equals_direct_definition(n: int, d: int) -> None:
    # n >= d takes the d x d covariance form, n < d the n x n Gram form; both must equal Eq. 1.
    x = np.random.default_rng(n * 100 + d).normal(size=(n, d))
    assert vendi_score(x) == pytest.approx(direct_vendi(cosine_kernel(x)), rel=1e-10)


def test_cosine_covariance_form_in_chunks_equals_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    # Row blocks of 7 (not a divisor of n) must accumulate to the same covariance.
    monkeypatch.setattr(vendi_module, "_CHUNK", 7)
    x = np.random.default_rng(5).normal(size=(50, 4)).astype(np.float32)
    expected = direct_vendi(cosine_kernel(x.astype(np.float64)))
    assert vendi(x).form == "covariance"
    assert vendi_score(x) == pytest.approx(expected, rel=1e-9)


def test_rbf_exact_equals_direct_definition() -> None:
    x = np.random.default_rng(6).normal(size=(40, 3))
    assert vendi_score(x, "rbf", bandwidth=1.3) == pytest.approx(
        direct_vendi(rbf_kernel(x, 1.3)), rel=1e-10
    )


def test_rbf_median_heuristic_is_the_median_distance() -> None:
    x = np.random.default_rng(7).normal(size=(30, 4))
    dists = [np.linalg.norm(x[i] - x[j]) for i in range(30) for j in range(i + 1, 30)]
    assert median_bandwidth(x) == pytest.approx(np.median(dists), rel=1e-10)
    assert vendi_score(x, "rbf") == pytest.approx(
        direct_vendi(rbf_kernel(x, float(np.median(dists)))), rel=1e-9
    )


def test_nystrom_with_every_row_a_landmark_is_exact() -> None:
    # With L = X (landmarks capped at n), C W⁺ Cᵀ = K K⁺ K = K: the eigenvalues are exact.
    x = np.random.default_rng(8).normal(size=(60, 3))
    result = vendi(x, kernel="rbf", bandwidth=1.0, exact_max=10, landmarks=100)
    assert result.form == "nystrom"
    exact = direct_vendi(rbf_kernel(x, 1.0))
    assert result.score == pytest.approx(exact, rel=1e-6)
    fewer = vendi_score(x, "rbf", bandwidth=1.0, exact_max=10, landmarks=20)
    assert fewer != pytest.approx(exact, rel=1e-6)  # a real approximation below n landmarks


def test_nystrom_close_to_exact_on_clustered_data() -> None:
    # Five clusters: K's spectrum decays fast; the approximation error shrinks with landmarks.
    rng = np.random.default_rng(9)
    centres = rng.normal(scale=10.0, size=(5, 4))
    x = centres[rng.integers(0, 5, 600)] + rng.normal(scale=0.3, size=(600, 4))
    exact = direct_vendi(rbf_kernel(x, 2.0))
    errors = [
        abs(vendi_score(x, "rbf", bandwidth=2.0, exact_max=100, landmarks=m) / exact - 1.0)
        for m in (25, 100, 400)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[1] < 0.02 and errors[2] < 1e-3


# ------------------------------------------------------------------------ known answers


@pytest.mark.parametrize("kernel", KERNELS)
def test_identical_samples_score_one(kernel: str) -> None:
    x = np.tile(np.random.default_rng(10).normal(size=(1, 6)), (25, 1))
    assert vendi_score(x, kernel, bandwidth=1.0) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("n", [1, 2, 7, 30])
def test_orthogonal_samples_score_n(n: int) -> None:
    # Rows of a random orthogonal matrix, scaled: K = I, VS = n (n <= d: Gram form).
    q, _ = np.linalg.qr(np.random.default_rng(n).normal(size=(30, 30)))
    x = q[:n] * np.random.default_rng(n + 1).uniform(0.5, 3.0, size=(n, 1))
    assert vendi_score(x) == pytest.approx(n, rel=1e-9)


def test_reference_package_examples() -> None:
    # vertaix/Vendi-Score README: k(a, b) = [a == b] on [0,0,0,0] -> 1, [0,0,1,1] -> 2,
    # [0,1,2,3] -> 4. The indicator kernel is the cosine kernel of one-hot vectors.
    onehot = np.eye(4)
    for samples, expected in (([0, 0, 0, 0], 1.0), ([0, 0, 1, 1], 2.0), ([0, 1, 2, 3], 4.0)):
        assert vendi_score(onehot[samples]) == pytest.approx(expected, rel=1e-12)


def test_unequal_modes_give_exp_entropy_of_proportions() -> None:
    # Orthogonal modes with proportions p: K / n has eigenvalues p, so VS = exp(H(p)).
    counts = np.array([10, 30, 60])
    x = np.repeat(np.eye(3), counts, axis=0)
    p = counts / counts.sum()
    assert vendi_score(x) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-12)


# ------------------------------------------------------------------------ invariants


def test_permutation_and_row_scale_invariance() -> None:
    rng = np.random.default_rng(11)
    x = rng.normal(size=(80, 10))
    base = vendi_score(x)
    assert vendi_score(x[rng.permutation(80)]) == pytest.approx(base, rel=1e-10)
    assert vendi_score(x * rng.uniform(0.1, 10.0, size=(80, 1))) == pytest.approx(base, rel=1e-10)
    assert 1.0 <= base <= 10.0  # at most min(n, d) for the cosine kernel


@pytest.mark.parametrize("shape", [(50, 6), (5, 12)])
def test_duplicating_every_sample_leaves_the_score_unchanged(shape: tuple[int, int]) -> None:
    x = np.random.default_rng(12).normal(size=shape)
    assert vendi_score(np.concatenate([x, x, x])) == pytest.approx(vendi_score(x), rel=1e-9)


def test_duplicating_some_samples_lowers_the_score() -> None:
    x = np.eye(5)
    assert vendi_score(np.concatenate([x, x[:1], x[:1], x[:1]])) < vendi_score(x)


def test_union_of_orthogonal_equal_sized_sets() -> None:
    # Disjoint supports, equal sizes: λ(A ∪ B) = λ(A)/2 ∪ λ(B)/2, so VS = 2 sqrt(VS_A VS_B).
    rng = np.random.default_rng(13)
    a = np.hstack([rng.normal(size=(40, 4)), np.zeros((40, 4))])
    b = np.hstack([np.zeros((40, 4)), rng.normal(size=(40, 4))])
    expected = 2.0 * np.sqrt(vendi_score(a) * vendi_score(b))
    assert vendi_score(np.concatenate([a, b])) == pytest.approx(expected, rel=1e-9)


# ------------------------------------------------------------------------ per class


def test_per_class_scores_and_mean() -> None:
    rng = np.random.default_rng(14)
    x = rng.normal(size=(90, 5))
    labels = np.repeat([0, 1, 2], 30)
    labels[:3] = -1  # unlabelled: in the overall score only
    result = vendi(x, labels, class_names=["cat", "dog", "owl"])
    expected = {
        name: direct_vendi(cosine_kernel(x[labels == i])) for i, name in enumerate(["cat", "dog"])
    }
    expected["owl"] = direct_vendi(cosine_kernel(x[labels == 2]))
    assert result.per_class == pytest.approx(expected, rel=1e-9)
    assert result.class_counts == {"cat": 27, "dog": 30, "owl": 30}
    assert result.class_mean == pytest.approx(np.mean(list(expected.values())), rel=1e-12)
    assert result.score == pytest.approx(direct_vendi(cosine_kernel(x)), rel=1e-9)
    assert result.n == 90


def test_classes_of_identical_images_score_one_each() -> None:
    x = np.repeat(np.eye(4), 10, axis=0)
    result = vendi(x, np.repeat(np.arange(4), 10))
    assert result.per_class == pytest.approx({str(i): 1.0 for i in range(4)})
    assert result.class_mean == pytest.approx(1.0)
    assert result.score == pytest.approx(4.0)
    assert vendi(x).per_class == {} and vendi(x).class_mean is None


# ------------------------------------------------------------------------ bad input


def test_bad_input_is_refused() -> None:
    with pytest.raises(ConfigError, match="kernel"):
        vendi_score(np.eye(3), "poly")
    with pytest.raises(ConfigError, match="bandwidth"):
        vendi_score(np.eye(3), "rbf", bandwidth=0.0)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        vendi_score(np.ones(5))
    with pytest.raises(ValueError, match="at least 1"):
        vendi_score(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        vendi_score(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="all zero"):
        vendi_score(np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="labels must have shape"):
        vendi(np.eye(3), np.array([0, 1]))


# ------------------------------------------------------------------------ reference values

# Values taken from the reference implementation, with their source (vertaix/Vendi-Score).
REFERENCE = {
    # vendi_score/image_utils.py, get_pixel_vectors(images, resize=32)
    "pixel_resize": 32,
}


def test_pixel_features_follow_the_reference_resize() -> None:
    from divssl.distances import extractors

    assert REFERENCE["pixel_resize"] == extractors.PIXELS_SIZE
    assert extractors.get_extractor("pixels").input_size == REFERENCE["pixel_resize"]


def test_round_off_negative_eigenvalues_are_ignored() -> None:
    # vendi_score/vendi.py, entropy_q: p_ = p[p > 0] (a rank-deficient K has ±1e-17 eigenvalues).
    assert vendi_module.entropy_score(np.array([0.5, 0.5, -1e-17, 0.0])) == pytest.approx(2.0)
