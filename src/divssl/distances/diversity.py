"""The Vendi score: the effective number of distinct samples of one feature set.

Friedman & Dieng (2023, *The Vendi Score: A Diversity Evaluation Metric for Machine Learning*,
TMLR) define, for samples ``x_1 .. x_n`` and a positive semi-definite similarity kernel with
``k(x, x) = 1``, the kernel matrix ``K_ij = k(x_i, x_j)`` and

    VS = exp(-Σ_i λ_i log λ_i),   λ_i the eigenvalues of K / n   (0 log 0 = 0).

The eigenvalues of ``K / n`` are non-negative and sum to ``tr(K) / n = 1``, so VS is the
exponential of the Shannon entropy of a distribution: 1 when all samples are identical, n when
they are pairwise dissimilar (``K = I``), and in between the "effective number" of distinct
samples. Duplicating every sample leaves VS unchanged; it does not grow with n for a fixed
distribution, which is what makes it a measure of a pool's diversity rather than of its size.

Kernels (:data:`KERNELS`):

* ``cosine`` — ``k(x, y) = xᵀy / (‖x‖ ‖y‖)``, the kernel the paper uses on Inception and pixel
  features. With row-normalised features ``X̂`` (n × d), ``K / n = X̂ X̂ᵀ / n`` shares its non-zero
  eigenvalues with the d × d matrix ``X̂ᵀ X̂ / n`` (the "covariance form", the reference
  package's ``score_dual``), so VS costs O(n d²) time and O(d²) memory instead of O(n² d) and
  O(n²); the n × n form is used when n < d. Both are exact.
* ``rbf`` — ``k(x, y) = exp(-‖x - y‖² / (2 σ²))`` with bandwidth σ (default: the median pairwise
  distance of up to 1,000 seeded rows, the median heuristic). Exact (n × n) up to
  ``exact_max`` samples; above, the Nyström approximation ``K ≈ C W⁺ Cᵀ`` with m seeded landmark
  rows (``C = K(X, L)``, ``W = K(L, L)``), whose non-zero eigenvalues are those of the
  m × m matrix ``Φᵀ Φ / n`` with ``Φ = C W^(-1/2)``. Nyström eigenvalues sum to slightly less
  than 1, so they are renormalised to sum 1 before the entropy.

Values taken from the reference implementation (vertaix/Vendi-Score, ``vendi_score/vendi.py``):
the entropy ignores non-positive eigenvalues (``entropy_q``: ``p_ = p[p > 0]``) and features are
L2-normalised per row for the cosine kernel (``score_dual``: ``preprocessing.normalize(X,
axis=1)``). Pixel features resize images to 32 x 32 (``vendi_score/image_utils.py``,
``get_pixel_vectors(images, resize=32)``); see the ``pixels`` extractor.

The per-class average is the unweighted mean of VS over the classes' own feature sets: how
diverse the images of a class are, whatever the number of classes (the pool's VS mixes both).

All arithmetic is float64. Inputs may be float32 (the feature cache's dtype); the covariance form
reads them in row chunks, so a 50,000 x 2,048 float32 feature set needs no float64 copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg

from divssl.errors import ConfigError
from divssl.threads import blas_threads, free_threads

KERNELS = ("cosine", "rbf")
# Rows per float64 block of the covariance / Nyström accumulation (bounds temporary memory to
# _CHUNK x max(d, m) x 8 bytes: 64 MiB at d = 2048).
_CHUNK = 4096
# rbf: exact n x n eigenvalues up to this many samples (a 4,000² float64 matrix is 128 MiB).
EXACT_MAX = 4000
# rbf: Nyström landmarks above EXACT_MAX.
LANDMARKS = 1000
# rbf median heuristic: rows sampled for the median pairwise distance.
_MEDIAN_ROWS = 1000
# Nyström: eigenvalues of W below this fraction of the largest count as 0 (W's pseudo-inverse).
_PINV_RTOL = 1e-10


@dataclass(frozen=True)
class VendiResult:
    """A Vendi score with its per-class breakdown.

    Attributes:
        score: VS of all samples.
        n: number of samples.
        kernel: ``cosine`` or ``rbf``.
        form: how the eigenvalues were computed: ``covariance`` (d x d), ``gram`` (n x n),
            ``nystrom`` (m x m, approximate).
        per_class: class -> VS of that class's samples (empty without labels).
        class_counts: class -> number of samples.
        class_mean: unweighted mean of ``per_class`` (``None`` without labels).
        params: kernel settings used (``bandwidth``, ``landmarks``, ``seed``).
    """

    score: float
    n: int
    kernel: str
    form: str
    per_class: dict[str, float] = field(default_factory=dict)
    class_counts: dict[str, int] = field(default_factory=dict)
    class_mean: float | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "score": self.score,
            "n": self.n,
            "kernel": self.kernel,
            "form": self.form,
            "class_mean": self.class_mean,
            "per_class": dict(self.per_class),
            "class_counts": dict(self.class_counts),
            "params": dict(self.params),
        }


def entropy_score(eigenvalues: np.ndarray) -> float:
    """``exp(-Σ p log p)`` of eigenvalues normalised to sum 1 (non-positive ones dropped).

    Args:
        eigenvalues: eigenvalues of ``K / n``, shape (k,); round-off negatives are ignored as
            in the reference ``entropy_q``.

    Returns:
        The exponential of their Shannon entropy (in nats), >= 1.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    lam = lam[lam > 0]
    if lam.size == 0:
        raise ValueError("no positive eigenvalue: the kernel matrix is zero")
    p = lam / lam.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def _check(features: np.ndarray, name: str = "features") -> np.ndarray:
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {x.shape}")
    if len(x) == 0:
        raise ValueError(f"{name} needs at least 1 sample, got 0")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains non-finite values")
    return x


def _normalized_rows(block: np.ndarray) -> np.ndarray:
    """float64 copy of ``block`` with unit-norm rows; zero rows have no cosine similarity."""
    b = np.array(block, dtype=np.float64)
    norms = np.linalg.norm(b, axis=1)
    if (norms == 0).any():
        raise ValueError(
            f"{int((norms == 0).sum())} feature vector(s) are all zero: the cosine kernel is "
            "undefined for them (k(x, x) must be 1)"
        )
    return b / norms[:, None]


def _cosine_eigenvalues(x: np.ndarray) -> tuple[np.ndarray, str]:
    """Eigenvalues of ``K / n`` for the cosine kernel: d x d covariance form when n >= d."""
    n, d = x.shape
    if n < d:
        xn = _normalized_rows(x)
        return scipy.linalg.eigvalsh(xn @ xn.T / n, check_finite=False), "gram"
    acc = np.zeros((d, d), dtype=np.float64, order="F")
    for start in range(0, n, _CHUNK):
        xn = _normalized_rows(x[start : start + _CHUNK])
        # DSYRK: upper triangle of acc += xnᵀ xn / n (half a GEMM); xn.T is a Fortran view.
        acc = scipy.linalg.blas.dsyrk(1.0 / n, xn.T, beta=1.0, c=acc, lower=0, overwrite_c=1)
    return scipy.linalg.eigvalsh(acc, lower=False, check_finite=False), "covariance"


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances, shape (len(a), len(b)), clipped at 0 (round-off)."""
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d2, 0.0)


def median_bandwidth(x: np.ndarray, seed: int = 0, rows: int = _MEDIAN_ROWS) -> float:
    """Median pairwise Euclidean distance of at most ``rows`` seeded rows (median heuristic).

    Raises:
        ValueError: fewer than 2 rows, or every sampled pair at distance 0.
    """
    if len(x) < 2:
        raise ValueError("the median heuristic needs at least 2 samples; pass bandwidth")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(x), min(rows, len(x)), replace=False))
    s = np.asarray(x[idx], dtype=np.float64)
    d2 = _sq_dists(s, s)[np.triu_indices(len(s), 1)]
    med = float(np.sqrt(np.median(d2)))
    if med <= 0:
        raise ValueError("median pairwise distance is 0; pass bandwidth explicitly")
    return med


def _rbf(a: np.ndarray, b: np.ndarray, bandwidth: float) -> np.ndarray:
    return np.exp(-_sq_dists(a, b) / (2.0 * bandwidth**2))


def _rbf_eigenvalues(
    x: np.ndarray, bandwidth: float, exact_max: int, landmarks: int, seed: int
) -> tuple[np.ndarray, str]:
    n = len(x)
    if n <= exact_max:
        xf = np.asarray(x, dtype=np.float64)
        return scipy.linalg.eigvalsh(_rbf(xf, xf, bandwidth) / n, check_finite=False), "gram"
    rng = np.random.default_rng(seed)
    m = min(landmarks, n)
    lm = np.asarray(x[np.sort(rng.choice(n, m, replace=False))], dtype=np.float64)
    w_vals, w_vecs = scipy.linalg.eigh(_rbf(lm, lm, bandwidth), check_finite=False)
    keep = w_vals > _PINV_RTOL * w_vals.max()
    proj = w_vecs[:, keep] / np.sqrt(w_vals[keep])  # W^(-1/2) on W's range, (m, r)
    acc = np.zeros((proj.shape[1],) * 2, dtype=np.float64)
    for start in range(0, n, _CHUNK):
        phi = _rbf(np.asarray(x[start : start + _CHUNK], dtype=np.float64), lm, bandwidth) @ proj
        acc += phi.T @ phi / n
    return scipy.linalg.eigvalsh(acc, check_finite=False), "nystrom"


def _eigenvalues(
    x: np.ndarray,
    kernel: str,
    bandwidth: float | None,
    exact_max: int,
    landmarks: int,
    seed: int,
) -> tuple[np.ndarray, str, dict[str, Any]]:
    if kernel == "cosine":
        vals, form = _cosine_eigenvalues(x)
        return vals, form, {}
    bw = median_bandwidth(x, seed) if bandwidth is None else float(bandwidth)
    vals, form = _rbf_eigenvalues(x, bw, exact_max, landmarks, seed)
    params = {"bandwidth": bw}
    if form == "nystrom":
        params.update({"landmarks": landmarks, "seed": seed})
    return vals, form, params


def _check_settings(kernel: str, bandwidth: float | None, exact_max: int, landmarks: int) -> None:
    if kernel not in KERNELS:
        raise ConfigError("kernel", f"unknown kernel {kernel!r}", KERNELS)
    if bandwidth is not None and not (np.isfinite(bandwidth) and bandwidth > 0):
        raise ConfigError("bandwidth", f"must be a finite number > 0, got {bandwidth}")
    if exact_max < 1 or landmarks < 1:
        raise ConfigError("landmarks", f"need exact_max >= 1 and landmarks >= 1, got {landmarks}")


def vendi_score(
    features: np.ndarray,
    kernel: str = "cosine",
    *,
    bandwidth: float | None = None,
    exact_max: int = EXACT_MAX,
    landmarks: int = LANDMARKS,
    seed: int = 0,
) -> float:
    """Vendi score of one feature set (Friedman & Dieng 2023).

    Args:
        features: (N, D) features, N >= 1 (float32 or float64).
        kernel: ``cosine`` (exact, O(N D²) covariance form) or ``rbf``.
        bandwidth: rbf σ; ``None`` for the median heuristic.
        exact_max: rbf: exact eigenvalues up to this N, Nyström above.
        landmarks: rbf: Nyström landmark rows.
        seed: rbf: seed of the median-heuristic sample and the landmarks.

    Returns:
        VS in [1, N].

    Raises:
        ConfigError: unknown kernel or bad kernel settings.
        ValueError: bad shape, non-finite values, or (cosine) an all-zero feature vector.
    """
    result = vendi(
        features,
        None,
        kernel,
        bandwidth=bandwidth,
        exact_max=exact_max,
        landmarks=landmarks,
        seed=seed,
    )
    return result.score


def vendi(
    features: np.ndarray,
    labels: np.ndarray | None = None,
    kernel: str = "cosine",
    *,
    class_names: Sequence[str] | None = None,
    bandwidth: float | None = None,
    exact_max: int = EXACT_MAX,
    landmarks: int = LANDMARKS,
    seed: int = 0,
) -> VendiResult:
    """Vendi score of a feature set and, with labels, of each class and their mean.

    Args:
        features: (N, D) features.
        labels: (N,) integer labels, ``-1`` for unlabelled samples (left out of the per-class
            scores, kept in the overall one); ``None`` for no per-class scores.
        kernel: ``cosine`` or ``rbf`` (see :func:`vendi_score`).
        class_names: names of labels ``0 .. C-1`` (keys of ``per_class``; else ``str(label)``).
        bandwidth: rbf σ, shared by every class (the median heuristic runs on all samples once).
        exact_max: rbf: exact eigenvalues up to this N, Nyström above.
        landmarks: rbf: Nyström landmark rows.
        seed: rbf: seed of the median heuristic and the landmarks.

    Returns:
        A :class:`VendiResult`.
    """
    _check_settings(kernel, bandwidth, exact_max, landmarks)
    x = _check(features)
    if kernel == "rbf" and bandwidth is None:
        bandwidth = median_bandwidth(x, seed)
    with blas_threads(free_threads()):  # LAPACK pools stall beside busy processes
        vals, form, params = _eigenvalues(x, kernel, bandwidth, exact_max, landmarks, seed)
        score = entropy_score(vals)
        per_class: dict[str, float] = {}
        counts: dict[str, int] = {}
        if labels is not None:
            lab = np.asarray(labels).astype(np.int64)
            if lab.shape != (len(x),):
                raise ValueError(f"labels must have shape ({len(x)},), got {lab.shape}")
            for label in np.unique(lab[lab >= 0]).tolist():
                name = _class_name(label, class_names)
                rows = x[lab == label]
                counts[name] = len(rows)
                per_class[name] = entropy_score(
                    _eigenvalues(rows, kernel, bandwidth, exact_max, landmarks, seed)[0]
                )
    mean = float(np.mean(list(per_class.values()))) if per_class else None
    return VendiResult(score, len(x), kernel, form, per_class, counts, mean, params)


def _class_name(label: int, names: Sequence[str] | None) -> str:
    if names is not None and 0 <= label < len(names):
        return str(names[label])
    return str(label)
