"""Distribution distances between two sets of image features: FID, KID and VisualDNA.

* :func:`frechet_distance` / :func:`fid` — Fréchet distance between Gaussians fitted to two
  feature sets (Heusel et al. 2017), computed in float64; the trace of the matrix square root
  comes from two symmetric eigen-decompositions (equal to pytorch-fid's ``sqrtm`` to round-off).
* :func:`kid` — Kernel Inception Distance (Binkowski et al. 2018): the unbiased MMD² with the cubic
  polynomial kernel ``k(x, y) = (xᵀy / d + 1)³``, averaged over random subsets as in clean-fid and
  torch-fidelity.
* :func:`vdna` — VisualDNA (Ramtoula et al. 2023): per-neuron activation histograms compared with
  the 1-D Earth Mover's Distance, averaged over all neurons of all layers, binned over a fixed
  per-neuron range from a reference pool (:func:`vdna_ranges`) so that distances share units.
* :func:`rank_correlation` — Spearman's rho between distances and downstream accuracies (the SSL
  diversity paper's claim that lower distance goes with higher accuracy, as a number).

All functions take NumPy arrays (or anything ``np.asarray`` accepts) and return Python floats.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.stats

from divssl.threads import blas_threads, free_threads

# Eigenvalues of a covariance (or of sqrt(S1) S2 sqrt(S1)) below -_PSD_TOL * (largest eigenvalue)
# mean the input is not a covariance; smaller negative ones are float64 round-off and count as 0.
_PSD_TOL = 1e-6


# --------------------------------------------------------------------------- Fréchet distance


def _as_mean_cov(mu: np.ndarray, sigma: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"{name}: mean must be (D,) and covariance (D, D), got {mu.shape} and {sigma.shape}"
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{name}: mean and covariance must be finite")
    return mu, sigma


def _psd_eigvalsh(a: np.ndarray, name: str, vectors: bool = False):
    """Eigen-decomposition of a symmetric PSD matrix (symmetrised first), negatives clipped.

    Raises:
        ValueError: an eigenvalue below ``-_PSD_TOL`` times the largest one.
    """
    sym = 0.5 * (a + a.T)
    if vectors:
        vals, vecs = scipy.linalg.eigh(sym, check_finite=False)
    else:
        vals, vecs = scipy.linalg.eigh(sym, eigvals_only=True, check_finite=False), None
    top = max(float(vals.max(initial=0.0)), 0.0)
    if vals.size and float(vals.min()) < -_PSD_TOL * max(top, np.finfo(np.float64).tiny):
        raise ValueError(
            f"{name} is not positive semi-definite (eigenvalue {float(vals.min()):.3g}, "
            f"largest {top:.3g})"
        )
    return np.clip(vals, 0.0, None), vecs


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``Tr sqrt(sigma1 @ sigma2)`` from symmetric eigen-decompositions.

    With ``R = sqrt(sigma1)`` (from ``eigh(sigma1)``), ``sigma1 sigma2 = R (R sigma2 R) R^-1`` is
    similar to the symmetric PSD ``M = R sigma2 R``, so the eigenvalues of ``sigma1 sigma2`` are
    those of ``M`` (real, >= 0) and ``Tr sqrt(sigma1 sigma2) = sum_i sqrt(eig_i(M))``. Two
    ``eigh`` calls replace ``scipy.linalg.sqrtm`` of a non-symmetric matrix (Schur form, ~10x
    slower at D = 2048), and the result stays real and exact for singular covariances, where
    ``sqrtm`` needs the reference code's ``eps·I`` offset. The similarity argument holds for a
    singular ``sigma1`` too (by continuity: ``sigma1 + t I`` for t -> 0).
    """
    vals, vecs = _psd_eigvalsh(sigma1, "first covariance", vectors=True)
    root = (vecs * np.sqrt(vals)) @ vecs.T
    m = root @ sigma2 @ root
    eig, _ = _psd_eigvalsh(m, "sqrt(sigma1) sigma2 sqrt(sigma1)")
    return float(np.sqrt(eig).sum())


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``d² = ||mu1 - mu2||² + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^½)``, in float64, with
    ``Tr (sigma1 sigma2)^½`` the sum of the square roots of the eigenvalues of the symmetric
    ``sqrt(sigma1) sigma2 sqrt(sigma1)`` (see :func:`_trace_sqrt_product`). This equals
    pytorch-fid's ``calculate_frechet_distance`` (``scipy.linalg.sqrtm`` of the product) to
    round-off wherever ``sqrtm`` is accurate (tested to 1e-6 relative), and needs no ``eps·I``
    offset for rank-deficient covariances.

    Args:
        mu1: mean of shape (D,).
        sigma1: covariance of shape (D, D), symmetric positive semi-definite.
        mu2: mean of shape (D,).
        sigma2: covariance of shape (D, D), symmetric positive semi-definite.

    Returns:
        The squared Fréchet distance (as reported by FID).

    Raises:
        ValueError: mismatched shapes, non-finite values, or a covariance that is not PSD.
    """
    mu1, sigma1 = _as_mean_cov(mu1, sigma1, "first")
    mu2, sigma2 = _as_mean_cov(mu2, sigma2, "second")
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature widths differ: {mu1.shape[0]} vs {mu2.shape[0]}")
    diff = mu1 - mu2
    with blas_threads(free_threads()):  # LAPACK pools stall beside busy processes
        _psd_eigvalsh(sigma2, "second covariance")
        tr_covmean = _trace_sqrt_product(sigma1, sigma2)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def _check_features(feats: np.ndarray, name: str, min_rows: int) -> np.ndarray:
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {feats.shape}")
    if len(feats) < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} samples, got {len(feats)}")
    if not np.isfinite(feats).all():
        raise ValueError(f"{name} contains non-finite values")
    return feats


def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (ddof=1) of a feature set.

    Args:
        feats: features of shape (N, D), N >= 2.

    Returns:
        Mean of shape (D,) and covariance of shape (D, D), float64.
    """
    checked = _check_features(feats, "feats", 2)
    mean = checked.mean(axis=0)
    if np.may_share_memory(checked, feats):
        centred = checked - mean  # a new array: the caller's features are never modified
    else:  # float32 (cached) features were copied to float64 above: centre that copy in place
        centred = checked
        centred -= mean
    # One BLAS call: DSYRK computes the upper triangle of centred^T centred (half a GEMM's
    # FLOPs); centred.T is a Fortran-ordered view, so no copy is made.
    with blas_threads(free_threads()):
        upper = scipy.linalg.blas.dsyrk(1.0 / (len(feats) - 1), centred.T, lower=0)
    cov = np.triu(upper) + np.triu(upper, 1).T
    return mean, cov


def fid(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet Inception Distance between two feature sets.

    Args:
        feats_a: features of shape (N_a, D), N_a >= 2.
        feats_b: features of shape (N_b, D), N_b >= 2.

    Returns:
        :func:`frechet_distance` of their means and covariances (ddof=1).
    """
    mu_a, sigma_a = gaussian_stats(feats_a)
    mu_b, sigma_b = gaussian_stats(feats_b)
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)


# --------------------------------------------------------------------------- KID


@dataclass(frozen=True)
class KIDResult:
    """KID over random subsets.

    Attributes:
        mean: mean of the per-subset unbiased MMD² estimates.
        std: their standard deviation (ddof=0, as torch-fidelity reports).
        subsets: number of subsets.
        subset_size: samples per subset and side (clipped to the smaller set).
    """

    mean: float
    std: float
    subsets: int
    subset_size: int


def polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the kernel ``k(a, b) = (aᵀb / d + 1)³``.

    ``MMD² = Σ_{i≠j} k(x_i, x_j) / (m(m-1)) + Σ_{i≠j} k(y_i, y_j) / (n(n-1))
    - 2 Σ_{i,j} k(x_i, y_j) / (m n)``.

    Args:
        x: features of shape (m, d), m >= 2.
        y: features of shape (n, d), n >= 2.
    """
    m, n, d = len(x), len(y), x.shape[1]
    k_xx = (x @ x.T / d + 1.0) ** 3
    k_yy = (y @ y.T / d + 1.0) ** 3
    k_xy = (x @ y.T / d + 1.0) ** 3
    term_xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    term_yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(term_xx + term_yy - 2.0 * k_xy.mean())


def kid(
    feats_a: np.ndarray,
    feats_b: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> KIDResult:
    """Kernel Inception Distance: unbiased polynomial-kernel MMD² averaged over subsets.

    Each subset draws ``subset_size`` rows without replacement from each side (clipped to the
    smaller sample size), as clean-fid's ``kernel_distance`` and torch-fidelity do.

    Args:
        feats_a: features of shape (N_a, D).
        feats_b: features of shape (N_b, D).
        subsets: number of random subsets (>= 1).
        subset_size: rows per subset and side (>= 2 after clipping).
        seed: seed of the subset draws (``numpy.random.default_rng``).

    Returns:
        Mean and standard deviation over subsets.

    Raises:
        ValueError: bad shapes, widths that differ, or fewer than 2 rows on a side.
    """
    a = _check_features(feats_a, "feats_a", 2)
    b = _check_features(feats_b, "feats_b", 2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature widths differ: {a.shape[1]} vs {b.shape[1]}")
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"need subsets >= 1 and subset_size >= 2, got {subsets}, {subset_size}")
    m = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for s in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        values[s] = polynomial_mmd2(x, y)
    return KIDResult(float(values.mean()), float(values.std()), subsets, m)


# --------------------------------------------------------------------------- VisualDNA


# The VisualDNA library (bramtoula/vdna) bins every neuron over a fixed range computed once on a
# reference dataset: ExtractionSettings.range_scale_for_norm_params = 1.2
# (src/vdna/utils/settings.py), applied as [1.2 * min, 1.2 * max] of each neuron's reference
# activations by get_pre_hist_norm_params_from_min_max (src/vdna/networks/
# feature_extraction_model.py, `mins_per_neuron[...] * range_scale`), with values clamped into
# the range before binning (histogram_per_channel, src/vdna/utils/stats.py, `torch.clamp`).
VDNA_RANGE_SCALE = 1.2


@dataclass(frozen=True)
class VDNAResult:
    """VisualDNA Earth Mover's Distances.

    Attributes:
        mean: EMD averaged over all neurons of all layers (bin units), as the VDNA library's
            ``EMD(vdna1, vdna2)`` does.
        per_layer: mean EMD over the neurons of each layer.
        per_neuron: EMD of every neuron, shape (C,) per layer.
        bins: histogram bins per neuron.
        fixed_ranges: ``True`` when binned over given reference ranges, ``False`` for the
            pair's own joint min / max.
    """

    mean: float
    per_layer: dict[str, float]
    per_neuron: dict[str, np.ndarray] = field(repr=False)
    bins: int
    fixed_ranges: bool = False


def vdna_ranges(
    acts: Mapping[str, np.ndarray], scale: float = VDNA_RANGE_SCALE, quantile: float = 0.0
) -> dict[str, np.ndarray]:
    """Fixed per-neuron histogram ranges from a reference pool's activations.

    As the VisualDNA library: ``[scale * min, scale * max]`` per neuron (scale 1.2). Note that this
    scales the values, not the width around the centre: a neuron whose reference minimum is
    positive gets a lower edge above that minimum, and smaller values are clamped into the first
    bin, exactly as in the library. ``quantile = q > 0`` replaces min / max by the q and 1 - q
    quantiles (robust to outlier images in the reference pool itself).

    Args:
        acts: layer -> reference activations (N, C) or (N, C, S) (every position a sample).
        scale: multiplier of both edges (library: 1.2).
        quantile: 0 for min / max, else the lower quantile q in (0, 0.5).

    Returns:
        layer -> (2, C) float64 array, row 0 the lower edges, row 1 the upper edges.

    Raises:
        ValueError: no layers, bad activations, ``scale <= 0`` or ``quantile`` not in [0, 0.5).
    """
    if not acts:
        raise ValueError("vdna_ranges needs at least one layer")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if not 0.0 <= quantile < 0.5:
        raise ValueError(f"quantile must be in [0, 0.5), got {quantile}")
    out: dict[str, np.ndarray] = {}
    for layer, value in acts.items():
        x = _neuron_samples(value, f"acts[{layer!r}]")
        if quantile == 0.0:
            lo, hi = x.min(axis=0), x.max(axis=0)
        else:
            lo, hi = np.quantile(x, [quantile, 1.0 - quantile], axis=0)
        out[layer] = np.stack([lo, hi]).astype(np.float64) * scale
    return out


def _check_ranges(ranges: Mapping[str, np.ndarray], layer: str, width: int) -> np.ndarray:
    if layer not in ranges:
        raise ValueError(f"ranges has no layer {layer!r} (has {sorted(ranges)})")
    r = np.asarray(ranges[layer], dtype=np.float64)
    if r.shape != (2, width):
        raise ValueError(f"ranges[{layer!r}] must have shape (2, {width}), got {r.shape}")
    if not np.isfinite(r).all() or np.any(r[0] > r[1]):
        raise ValueError(f"ranges[{layer!r}] must be finite with lower <= upper edges")
    return r


def _neuron_samples(acts: np.ndarray, name: str) -> np.ndarray:
    """(N, C) or (N, C, S) activations -> (samples, C) float64 samples per neuron."""
    acts = np.asarray(acts)
    if acts.ndim == 3:
        acts = np.moveaxis(acts, 2, 1).reshape(-1, acts.shape[1])
    if acts.ndim != 2 or len(acts) == 0:
        raise ValueError(f"{name} must be (N, C) or (N, C, S) with N >= 1, got {acts.shape}")
    if not np.isfinite(acts).all():
        raise ValueError(f"{name} contains non-finite values")
    return acts


def neuron_histograms(
    acts: np.ndarray, lo: np.ndarray, hi: np.ndarray, bins: int, chunk: int = 1 << 24
) -> np.ndarray:
    """Per-neuron histograms over equal-width bins of ``[lo, hi]`` (last bin closed).

    Written with ``np.bincount`` over flat (neuron, bin) ids because ``np.histogram`` handles one
    range at a time and a Python loop over 10⁴ neurons is slow.

    Args:
        acts: samples of shape (N, C).
        lo: per-neuron lower edge, shape (C,).
        hi: per-neuron upper edge, shape (C,); where ``hi == lo`` everything falls in bin 0.
        bins: number of bins.
        chunk: rows x neurons processed at once (bounds the temporary memory).

    Returns:
        Counts of shape (C, bins), int64.
    """
    n, c = acts.shape
    width = np.where(hi > lo, hi - lo, 1.0)
    counts = np.zeros(c * bins, dtype=np.int64)
    rows = max(1, chunk // max(c, 1))
    offsets = np.arange(c, dtype=np.int64) * bins
    for start in range(0, n, rows):
        block = np.asarray(acts[start : start + rows], dtype=np.float64)
        idx = np.floor((block - lo) / width * bins).astype(np.int64)
        np.clip(idx, 0, bins - 1, out=idx)
        counts += np.bincount((idx + offsets).ravel(), minlength=c * bins)
    return counts.reshape(c, bins)


def histogram_emd(hist_a: np.ndarray, hist_b: np.ndarray) -> np.ndarray:
    """1-D Earth Mover's Distance between rows of two histograms, in bin units.

    With equal-width bins the optimal transport cost is the L1 distance between the two
    normalised CDFs summed over bins (as in the VDNA library's ``earth_movers_distance``).

    Args:
        hist_a: counts of shape (C, bins).
        hist_b: counts of shape (C, bins).

    Returns:
        EMD per row, shape (C,).
    """
    cdf_a = np.cumsum(hist_a, axis=1, dtype=np.float64) / hist_a.sum(axis=1, keepdims=True)
    cdf_b = np.cumsum(hist_b, axis=1, dtype=np.float64) / hist_b.sum(axis=1, keepdims=True)
    return np.abs(cdf_a - cdf_b).sum(axis=1)


def vdna(
    acts_a: Mapping[str, np.ndarray],
    acts_b: Mapping[str, np.ndarray],
    bins: int = 1000,
    ranges: Mapping[str, np.ndarray] | None = None,
) -> VDNAResult:
    """VisualDNA distance: per-neuron histogram EMD averaged over neurons.

    For every neuron, both datasets' activations are binned into ``bins`` equal-width bins over
    the neuron's range, values outside it clamped into the end bins; the two normalised
    histograms are compared with the 1-D EMD in bin units (:func:`histogram_emd`), then averaged
    over neurons.

    The range should be fixed per extractor and layer (``ranges``, from :func:`vdna_ranges` on a
    declared reference pool, as the VDNA library does), so that every distance of a study is in
    the same units and one outlier image cannot stretch the bins. Without ``ranges`` the pair's
    own joint min / max is used: then the units depend on the pair compared and a single outlier
    shrinks the distance several-fold (kept for backward compatibility; the distance pipeline
    always passes reference ranges).

    Activations are ``(N, C)`` per image (the extractors spatially average conv maps and average
    ViT tokens per image) or ``(N, C, S)``, where every one of the S positions counts as a sample
    of the neuron, as the VDNA library does when it histograms every spatial activation.

    Args:
        acts_a: layer name -> activations of dataset A.
        acts_b: layer name -> activations of dataset B (same layers and widths).
        bins: histogram bins per neuron (>= 2).
        ranges: layer -> (2, C) lower / upper edges per neuron (:func:`vdna_ranges`); ``None``
            for the pair's joint min / max.

    Returns:
        Overall mean EMD, per-layer means and per-neuron values.

    Raises:
        ValueError: different layers, widths, no layers, ``bins < 2`` or bad ``ranges``.
    """
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    if set(acts_a) != set(acts_b) or not acts_a:
        raise ValueError(f"layers differ or are empty: {sorted(acts_a)} vs {sorted(acts_b)}")
    per_neuron: dict[str, np.ndarray] = {}
    for layer in acts_a:
        a = _neuron_samples(acts_a[layer], f"acts_a[{layer!r}]")
        b = _neuron_samples(acts_b[layer], f"acts_b[{layer!r}]")
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"layer {layer!r}: widths differ, {a.shape[1]} vs {b.shape[1]}")
        if ranges is not None:
            lo, hi = _check_ranges(ranges, layer, a.shape[1])
        else:
            lo = np.minimum(a.min(axis=0), b.min(axis=0)).astype(np.float64)
            hi = np.maximum(a.max(axis=0), b.max(axis=0)).astype(np.float64)
        per_neuron[layer] = histogram_emd(
            neuron_histograms(a, lo, hi, bins), neuron_histograms(b, lo, hi, bins)
        )
    all_neurons = np.concatenate(list(per_neuron.values()))
    return VDNAResult(
        mean=float(all_neurons.mean()),
        per_layer={k: float(v.mean()) for k, v in per_neuron.items()},
        per_neuron=per_neuron,
        bins=bins,
        fixed_ranges=ranges is not None,
    )


# --------------------------------------------------------------------------- rank correlation


class RankCorrelation(NamedTuple):
    """Spearman's rank correlation with its two-sided p-value and the number of pairs."""

    rho: float
    p: float
    n: int


def rank_correlation(
    distances: Mapping[Hashable, float], accuracies: Mapping[Hashable, float]
) -> RankCorrelation:
    """Spearman's rho between distances and accuracies over their shared keys.

    Keys are typically ``(pretraining pool, task)`` pairs. A negative rho means that lower
    distance goes with higher accuracy, the SSL-diversity paper's claim (Section 6, Table 3).

    Args:
        distances: key -> distance.
        accuracies: key -> accuracy.

    Returns:
        ``(rho, p, n)`` from ``scipy.stats.spearmanr`` over the ``n`` shared keys.

    Raises:
        ValueError: fewer than 3 shared keys.
    """
    keys = [k for k in distances if k in accuracies]
    if len(keys) < 3:
        raise ValueError(f"need at least 3 shared keys, got {len(keys)}")
    d = np.array([float(distances[k]) for k in keys])
    acc = np.array([float(accuracies[k]) for k in keys])
    res = scipy.stats.spearmanr(d, acc)
    return RankCorrelation(float(res.statistic), float(res.pvalue), len(keys))
