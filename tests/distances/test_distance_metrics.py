"""FID, KID, VisualDNA and the rank correlation against references written from their papers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.stats

from divssl.distances import fid, frechet_distance, kid, rank_correlation, vdna
from divssl.distances import metrics as metrics_module
from divssl.distances.metrics import VDNA_RANGE_SCALE, vdna_ranges


def _random_rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


# --------------------------------------------------------------------------- FID


def test_frechet_diagonal_matches_closed_form() -> None:
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.2, 3.0, 6), rng.uniform(0.2, 3.0, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2.0 * np.sqrt(s1 * s2))
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_commuting_full_covariances() -> None:
    # Covariances sharing eigenvectors: Tr sqrt(S1 S2) = sum sqrt(a_i b_i).
    rng = np.random.default_rng(1)
    q = _random_rotation(5, rng)
    a, b = rng.uniform(0.5, 2.0, 5), rng.uniform(0.5, 2.0, 5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2.0 * np.sqrt(a * b))
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-8)


def test_fid_samples_approach_population_value() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(0.0, 1.0, size=(20000, 3))
    y = rng.normal(1.0, 2.0, size=(20000, 3))
    expected = 3 * 1.0 + 3 * (1.0 + 4.0 - 2.0 * 2.0)
    assert fid(x, y) == pytest.approx(expected, rel=0.03)


def test_fid_identity_symmetry_and_order_invariance() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 16))
    y = rng.normal(size=(150, 16)) * 1.5 + 0.3
    assert abs(fid(x, x)) < 1e-8
    assert fid(x, y) == pytest.approx(fid(y, x), rel=1e-8)
    assert fid(x[rng.permutation(len(x))], y) == pytest.approx(fid(x, y), rel=1e-10)
    assert fid(x, y) > 1.0


def test_fid_singular_covariances_match_eigenvalue_reference() -> None:
    # More dimensions than samples: rank-deficient covariances.
    rng = np.random.default_rng(4)
    x = rng.normal(size=(20, 64))
    y = rng.normal(size=(25, 64)) + 0.2
    mu1, s1 = x.mean(0), np.cov(x, rowvar=False)
    mu2, s2 = y.mean(0), np.cov(y, rowvar=False)
    # Reference: the eigenvalues of S1 S2 are real and >= 0; Tr sqrt = sum of their roots.
    eig = np.clip(np.linalg.eigvals(s1 @ s2).real, 0.0, None)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * np.sqrt(eig).sum()
    got = fid(x, y)
    assert np.isfinite(got)
    assert got == pytest.approx(expected, rel=1e-4)
    assert abs(fid(x, x)) < 1e-4


def pytorch_fid_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's ``calculate_frechet_distance`` (mseitzer/pytorch-fid, src/pytorch_fid/
    fid_score.py), written here from its formula: sqrtm of the product, an eps offset when the
    root is not finite, the real part after a 1e-3 imaginary-part check."""
    import scipy.linalg

    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))  # pytorch-fid: disp=False, deprecated
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        assert np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)
        covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


@pytest.mark.parametrize(("n", "d"), [(600, 32), (1500, 128)])
def test_frechet_matches_pytorch_fid_formula(n: int, d: int) -> None:
    rng = np.random.default_rng(d)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    x = rng.normal(size=(n, d)) @ mix
    y = (rng.normal(size=(n, d)) * rng.uniform(0.5, 1.5, d)) @ mix + 0.1
    mu1, s1 = x.mean(0), np.cov(x, rowvar=False)
    mu2, s2 = y.mean(0), np.cov(y, rowvar=False)
    expected = pytorch_fid_distance(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)
    # fid() builds the same statistics (np.cov's, ddof=1) with its single DSYRK call.
    assert fid(x, y) == pytest.approx(expected, rel=1e-6)
    mu, cov = metrics_module.gaussian_stats(x)
    np.testing.assert_allclose(cov, s1, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mu, mu1, rtol=1e-12)
    assert np.array_equal(cov, cov.T)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gaussian_stats_leaves_input_untouched(dtype: type) -> None:
    # float32 (cached) features are centred in their float64 copy, float64 ones in a new array.
    x = (np.random.default_rng(7).normal(size=(10, 3)) + 5.0).astype(dtype)
    before = x.copy()
    mu, cov = metrics_module.gaussian_stats(x)
    assert np.array_equal(x, before) and x.dtype == dtype
    x64 = before.astype(np.float64)
    np.testing.assert_allclose(mu, x64.mean(0), rtol=1e-14)
    np.testing.assert_allclose(cov, np.cov(x64, rowvar=False), rtol=1e-12)


def test_non_psd_or_non_finite_covariance_is_rejected() -> None:
    bad = np.diag([1.0, -0.5])
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(np.zeros(2), bad, np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), bad)
    with pytest.raises(ValueError, match="finite"):
        frechet_distance(np.zeros(2), np.eye(2) * np.nan, np.zeros(2), np.eye(2))
    # Round-off negatives of a singular covariance are zeros, not errors.
    tiny = np.diag([1.0, -1e-12])
    assert frechet_distance(np.zeros(2), tiny, np.zeros(2), tiny) == pytest.approx(0.0, abs=1e-9)


def test_frechet_shape_errors() -> None:
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError):
        fid(np.zeros((1, 3)), np.zeros((5, 3)))


# --------------------------------------------------------------------------- KID


def _mmd2_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with k(a, b) = (a.b / d + 1)^3, by explicit double sums."""
    d = x.shape[1]

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (float(a @ b) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2.0 * xy


def test_kid_matches_direct_reference() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(25, 4)), rng.normal(size=(25, 4)) + 0.3
    # subset_size >= n draws every row (a permutation), and MMD² ignores order.
    res = kid(x, y, subsets=3, subset_size=100)
    assert res.subset_size == 25
    assert res.mean == pytest.approx(_mmd2_reference(x, y), rel=1e-10)
    assert res.std == pytest.approx(0.0, abs=1e-12)


def test_kid_is_unbiased_for_one_distribution() -> None:
    values = []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        a, b = rng.normal(size=(40, 8)), rng.normal(size=(40, 8))
        values.append(kid(a, b, subsets=1, subset_size=40, seed=seed).mean)
    values_arr = np.array(values)
    stderr = values_arr.std(ddof=1) / np.sqrt(len(values_arr))
    assert abs(values_arr.mean()) < 3.0 * stderr
    # A biased (V-statistic) estimator would sit clearly above zero: check we are not that.
    assert values_arr.min() < 0.0


def test_kid_shifted_distribution_is_clearly_positive() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) + 0.5
    same = kid(a, rng.normal(size=(300, 8)), subsets=20, subset_size=200)
    shifted = kid(a, b, subsets=20, subset_size=200)
    assert shifted.mean > 10.0 * shifted.std / np.sqrt(20)
    assert shifted.mean > 20.0 * abs(same.mean)


def test_kid_seed_determinism_and_errors() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(60, 3))
    assert kid(a, b, 5, 20, seed=1) == kid(a, b, 5, 20, seed=1)
    assert kid(a, b, 5, 20, seed=1).mean != kid(a, b, 5, 20, seed=2).mean
    with pytest.raises(ValueError):
        kid(a, rng.normal(size=(60, 4)))
    with pytest.raises(ValueError):
        kid(a, b, subsets=0)


# --------------------------------------------------------------------------- VisualDNA


def test_vdna_neuron_emd_equals_scipy_wasserstein() -> None:
    rng = np.random.default_rng(8)
    bins = 50
    a = {"l1": rng.normal(size=(300, 4)), "l2": rng.gamma(2.0, size=(200, 3))}
    b = {"l1": rng.normal(0.4, 1.3, size=(250, 4)), "l2": rng.gamma(3.0, size=(220, 3))}
    res = vdna(a, b, bins=bins)
    support = np.arange(bins, dtype=float)
    all_values = []
    for layer in a:
        for j in range(a[layer].shape[1]):
            lo = min(a[layer][:, j].min(), b[layer][:, j].min())
            hi = max(a[layer][:, j].max(), b[layer][:, j].max())
            ha, _ = np.histogram(a[layer][:, j], bins=bins, range=(lo, hi))
            hb, _ = np.histogram(b[layer][:, j], bins=bins, range=(lo, hi))
            ref = scipy.stats.wasserstein_distance(support, support, ha, hb)
            assert res.per_neuron[layer][j] == pytest.approx(ref, rel=1e-9, abs=1e-12)
            all_values.append(ref)
        assert res.per_layer[layer] == pytest.approx(res.per_neuron[layer].mean())
    assert res.mean == pytest.approx(np.mean(all_values), rel=1e-9)
    assert res.bins == bins


def test_vdna_identity_symmetry_and_extremes() -> None:
    rng = np.random.default_rng(9)
    x = {"l": rng.normal(size=(100, 5))}
    y = {"l": rng.normal(1.0, size=(80, 5))}
    assert vdna(x, x).mean == 0.0
    assert vdna(x, y, bins=100).mean == pytest.approx(vdna(y, x, bins=100).mean, rel=1e-12)
    # All of A at the range minimum, all of B at its maximum: mass moves bins - 1 bins.
    lo, hi = {"l": np.zeros((10, 2))}, {"l": np.ones((12, 2))}
    assert vdna(lo, hi, bins=20).mean == pytest.approx(19.0)
    # A constant neuron has distance 0, not NaN.
    const = {"l": np.full((10, 1), 3.0)}
    assert vdna(const, const).mean == 0.0


def test_vdna_spatial_samples_equal_flattened_samples() -> None:
    rng = np.random.default_rng(10)
    a3, b3 = rng.normal(size=(20, 3, 6)), rng.normal(0.5, size=(30, 3, 6))
    flat_a = np.moveaxis(a3, 2, 1).reshape(-1, 3)
    flat_b = np.moveaxis(b3, 2, 1).reshape(-1, 3)
    assert vdna({"l": a3}, {"l": b3}, 30).mean == pytest.approx(
        vdna({"l": flat_a}, {"l": flat_b}, 30).mean, rel=1e-12
    )


def test_vdna_errors() -> None:
    x = {"l": np.zeros((4, 2))}
    with pytest.raises(ValueError):
        vdna(x, {"m": np.zeros((4, 2))})
    with pytest.raises(ValueError):
        vdna(x, {"l": np.zeros((4, 3))})
    with pytest.raises(ValueError):
        vdna(x, x, bins=1)


# Reference for fixed ranges: bramtoula/vdna, src/vdna/utils/settings.py
# (range_scale_for_norm_params = 1.2) and src/vdna/networks/feature_extraction_model.py
# (mins_per_neuron * range_scale, maxs_per_neuron * range_scale).
LIBRARY_RANGE_SCALE = 1.2


def test_vdna_range_scale_matches_the_library() -> None:
    assert VDNA_RANGE_SCALE == LIBRARY_RANGE_SCALE


def test_vdna_ranges_are_scaled_reference_min_max_or_quantiles() -> None:
    rng = np.random.default_rng(11)
    ref = {"a": rng.normal(size=(200, 3)), "b": rng.gamma(2.0, size=(50, 2, 4))}
    ranges = vdna_ranges(ref)
    np.testing.assert_array_equal(ranges["a"][0], 1.2 * ref["a"].min(axis=0))
    np.testing.assert_array_equal(ranges["a"][1], 1.2 * ref["a"].max(axis=0))
    # (N, C, S): every position is a sample of its neuron.
    np.testing.assert_array_equal(ranges["b"][1], 1.2 * ref["b"].max(axis=(0, 2)))
    robust = vdna_ranges(ref, quantile=0.01)
    np.testing.assert_allclose(robust["a"][0], 1.2 * np.quantile(ref["a"], 0.01, axis=0))
    np.testing.assert_allclose(robust["a"][1], 1.2 * np.quantile(ref["a"], 0.99, axis=0))
    with pytest.raises(ValueError):
        vdna_ranges(ref, quantile=0.5)
    with pytest.raises(ValueError):
        vdna_ranges({})


def test_vdna_with_fixed_ranges_clamps_and_matches_numpy_histograms() -> None:
    rng = np.random.default_rng(12)
    bins = 40
    a = {"l": rng.normal(size=(300, 3))}
    b = {"l": rng.normal(0.7, 1.5, size=(260, 3))}
    ranges = {"l": np.array([[-1.5, -2.0, -1.0], [1.5, 2.5, 1.0]])}
    res = vdna(a, b, bins=bins, ranges=ranges)
    assert res.fixed_ranges
    support = np.arange(bins, dtype=float)
    for j in range(3):
        lo, hi = ranges["l"][:, j]
        # The library clamps into the range before binning (torch.clamp).
        ha, _ = np.histogram(np.clip(a["l"][:, j], lo, hi), bins=bins, range=(lo, hi))
        hb, _ = np.histogram(np.clip(b["l"][:, j], lo, hi), bins=bins, range=(lo, hi))
        ref = scipy.stats.wasserstein_distance(support, support, ha, hb)
        assert res.per_neuron["l"][j] == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_one_outlier_image_does_not_shrink_the_fixed_range_distance() -> None:
    # Issue 10: with the pair's joint min / max one outlier image shrank the distance ~8x.
    rng = np.random.default_rng(13)
    c = 16
    reference = {"l": rng.normal(size=(2000, c))}
    a = {"l": rng.normal(size=(500, c))}
    b = {"l": rng.normal(0.5, 1.0, size=(500, c))}
    b_outlier = {"l": np.concatenate([b["l"], np.full((1, c), 40.0)])}
    ranges = vdna_ranges(reference)
    clean = vdna(a, b, ranges=ranges).mean
    with_outlier = vdna(a, b_outlier, ranges=ranges).mean
    assert with_outlier == pytest.approx(clean, rel=0.05)
    # The pair-dependent joint range (the old behaviour) is shrunk several-fold by it.
    joint_clean, joint_outlier = vdna(a, b).mean, vdna(a, b_outlier).mean
    assert joint_outlier < joint_clean / 3


def test_vdna_bad_ranges() -> None:
    x = {"l": np.zeros((4, 2))}
    with pytest.raises(ValueError, match="no layer"):
        vdna(x, x, ranges={"m": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="shape"):
        vdna(x, x, ranges={"l": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="lower <= upper"):
        vdna(x, x, ranges={"l": np.array([[1.0, 0.0], [0.0, 1.0]])})


# --------------------------------------------------------------------------- rank correlation


def test_rank_correlation_against_pearson_of_ranks() -> None:
    rng = np.random.default_rng(11)
    keys = [(f"pool{i}", "task") for i in range(8)]
    dist = dict(zip(keys, rng.uniform(0, 10, 8), strict=True))
    acc = {k: 1.0 - 0.05 * v + rng.normal(0, 0.1) for k, v in dist.items()}
    acc[("extra", "task")] = 0.5  # keys present on one side only are ignored
    rho, p, n = rank_correlation(dist, acc)
    ranks_d = np.argsort(np.argsort([dist[k] for k in keys]))
    ranks_a = np.argsort(np.argsort([acc[k] for k in keys]))
    assert n == 8
    assert rho == pytest.approx(np.corrcoef(ranks_d, ranks_a)[0, 1], rel=1e-12)
    assert rho < 0.0
    assert 0.0 <= p <= 1.0


def test_rank_correlation_perfectly_inverse_and_too_few() -> None:
    dist = {i: float(i) for i in range(5)}
    acc = {i: 10.0 - i for i in range(5)}
    assert rank_correlation(dist, acc).rho == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        rank_correlation({1: 1.0, 2: 2.0}, {1: 0.5, 2: 0.4})
