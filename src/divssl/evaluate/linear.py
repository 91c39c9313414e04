"""Linear probe on a frozen backbone, with a hyperparameter sweep trained in one pass.

Two protocols:

``cached`` (default; the CLIP / DINOv2 linear-eval recipe)
    Multinomial logistic regression on cached eval-transform features, standardised with the
    statistics of the data it is fitted on. The S settings of the sweep are stored as one
    ``(S, D, K)`` weight tensor (plus ``(S, K)`` biases). Per setting s:

        L_s(W, b) = (1/n) sum_i CE(x_i W + b, y_i) + (lambda_s / 2) ||W||_F^2   (b unpenalised)

    Solver ``lbfgs`` (default) minimises each L_s on its own, full-batch, in float64 (NumPy
    BLAS on the CPU, torch on an accelerator), from the largest lambda to the smallest, each
    warm-started at the previous optimum or its extrapolation along the path (the
    regularisation path), and stops on a gradient tolerance proportional to lambda; the
    convergence of every lambda is recorded (:class:`FitInfo`). The only hyperparameter is
    lambda (weight decay); this is scikit-learn's ``LogisticRegression`` objective
    ``C sum_i CE_i + 1/2 ||W||^2`` divided by ``C n``, i.e. ``C = 1 / (n lambda)``, and the
    weights agree with scikit-learn's to 1e-3 down to lambda = 1e-6. (An earlier version summed
    all S objectives into one batched L-BFGS run: one line search for problems whose conditioning
    differs by 10^6 stalled at small lambda.) Solver ``sgd`` runs minibatch SGD (momentum 0.9,
    cosine LR) for E epochs over a lambda x LR grid.

``sgd`` (solo-learn's standard protocol)
    SGD on *augmented* images (``get_preset("supervised")``: random resized crop + flip) through
    the frozen backbone in eval mode for E epochs, momentum 0.9, cosine LR, batch 256, LR per 256
    images. Validation and test use the cached eval features. The features are standardised with
    the fitting subset's eval-feature statistics, a frozen affine-free BatchNorm in front of the
    head as in the MoCo v3 / MAE linear probes; solo-learn has none (``standardize=False``), which
    leaves a fixed LR at the mercy of the feature scale (a random-init ``convnet_tiny`` has feature
    std ~0.02, where LR 0.1 barely moves the head in 10 epochs).

In both, the setting is chosen on a validation split carved from the (label-fraction) train set
(seeded, class-stratified, 10% by default; the task's ``val`` split when it has one), then refitted
on the full train set with the chosen setting; test (and OOD) metrics come with bootstrap
intervals and the chosen setting is recorded.

Label fractions (the SSL-diversity paper's Table 5): 1, 5, 10, 50, 100% of the labelled train set,
class-stratified and nested (see :func:`label_fraction_indices`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ValidationError, model_validator
from torch import nn

from divssl.errors import ConfigError, RunFailed
from divssl.evaluate.settings import (
    Count,
    Fraction01Closed,
    LinearSettings,
    ProbeSettings,
    RunOptions,
    Seed,
    settings_error,
    split_settings,
)
from divssl.pretrain.augment import IMAGENET_NORM, Normalization, run_normalization
from divssl.pretrain.budget import scaled_lr, warmup_cosine
from divssl.threads import blas_threads, single_thread

# lambda of L_s; with standardised features the useful range is ~1e-6 (many labels) to ~1 (few).
DEFAULT_WEIGHT_DECAYS: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
DEFAULT_SGD_LRS: tuple[float, ...] = (0.1,)  # per 256 images, scaled with the batch (solo-learn)


# ----------------------------------------------------------------------------------- subsets


def check_fractions(fractions: Sequence[float]) -> list[float]:
    out = sorted({float(f) for f in fractions})
    if not out or out[0] <= 0 or out[-1] > 100:
        raise ConfigError("fractions", f"percentages must lie in (0, 100], got {list(fractions)}")
    return out


def label_fraction_indices(
    labels: np.ndarray, fractions: Sequence[float], seed: int = 0
) -> dict[float, np.ndarray]:
    """Nested, class-stratified subsets of a labelled train set.

    Each class c is shuffled once (seeded); the subset for percentage f holds the first
    ``max(1, round(f / 100 * n_c))`` images of every class. Because the per-class prefix only grows
    with f, a fraction's subset contains every smaller one's; on a class-balanced train set every
    class gets the same count; 100% is the full set.

    Args:
        labels: (N,) int labels of the train set.
        fractions: percentages in (0, 100].
        seed: subset seed.

    Returns:
        percentage -> sorted int64 indices into ``labels``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    pct = check_fractions(fractions)
    rng = np.random.default_rng([seed, 0x5EED])
    classes = np.unique(labels)
    perms = {int(c): rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    out: dict[float, np.ndarray] = {}
    for f in pct:
        parts = [p[: max(1, round(f / 100.0 * len(p)))] for p in perms.values()]
        out[f] = np.sort(np.concatenate(parts)).astype(np.int64)
    return out


def stratified_split(
    labels: np.ndarray, val_fraction: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Carve a class-stratified validation split.

    Per class with n_c >= 2 images, ``max(1, round(val_fraction * n_c))`` images (at most
    n_c - 1) go to validation; classes with one image stay in the fit split. Hand-written rather
    than ``sklearn.model_selection.train_test_split(stratify=...)``, which rejects classes with a
    single image, the normal case at 1% labels.

    Args:
        labels: (N,) int labels.
        val_fraction: share of each class held out, in (0, 1).
        seed: split seed.

    Returns:
        Sorted fit indices and sorted validation indices into ``labels``.

    Raises:
        ConfigError: a bad fraction, or no class has two images (nothing to validate on).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError("val_fraction", f"must lie in (0, 1), got {val_fraction}")
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng([seed, 0x7A1])
    fit, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(len(idx) - 1, max(1, round(val_fraction * len(idx)))) if len(idx) > 1 else 0
        val.append(idx[:n_val])
        fit.append(idx[n_val:])
    val_idx = np.sort(np.concatenate(val)).astype(np.int64)
    if len(val_idx) == 0:
        raise ConfigError(
            "fractions",
            "every class has a single labelled image, so no validation split can be carved; "
            "use a larger fraction, a single setting, or a task with a 'val' split",
        )
    return np.sort(np.concatenate(fit)).astype(np.int64), val_idx


# ----------------------------------------------------------------------------------- heads


@dataclass(frozen=True)
class ProbeSetting:
    """One point of the sweep.

    Attributes:
        weight_decay: lambda of the L2 penalty ``lambda / 2 ||W||^2``.
        lr: learning rate per 256 images (SGD); ``None`` for L-BFGS, which has none.
    """

    weight_decay: float
    lr: float | None = None


@dataclass
class Standardizer:
    """Feature standardisation with the statistics of the fitting data.

    Attributes:
        mean: (D,) feature means.
        std: (D,) feature standard deviations (constant features get 1).
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def identity(cls, dim: int) -> Standardizer:
        """The no-op standardiser of D-dimensional features."""
        return cls(np.zeros(dim), np.ones(dim))

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        """Statistics of (N, D) features (population std, ddof=0, as sklearn's StandardScaler)."""
        mean = x.mean(axis=0, dtype=np.float64)
        std = x.std(axis=0, dtype=np.float64)
        std[std < 1e-12] = 1.0
        return cls(mean, std)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(N, D) -> standardised (N, D) float32."""
        return ((x - self.mean) / self.std).astype(np.float32)

    def torch(self, x: torch.Tensor) -> torch.Tensor:
        """The same map on a (B, D) tensor (any device)."""
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device)
        return (x - mean) / std


@dataclass
class LinearHeads:
    """S linear classifiers stored as one batched tensor.

    Attributes:
        weight: (S, D, K).
        bias: (S, K).
    """

    weight: torch.Tensor
    bias: torch.Tensor

    @classmethod
    def zeros(
        cls, n_settings: int, dim: int, num_classes: int, device: torch.device, dtype: torch.dtype
    ) -> LinearHeads:
        """Zero-initialised heads (the objective is convex, so the start only affects speed)."""
        w = torch.zeros(n_settings, dim, num_classes, device=device, dtype=dtype)
        b = torch.zeros(n_settings, num_classes, device=device, dtype=dtype)
        return cls(w.requires_grad_(), b.requires_grad_())

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(n, D) features -> (S, n, K) logits (contiguous, so the softmax backward stays fast)."""
        return torch.matmul(x, self.weight) + self.bias[:, None, :]

    def select(self, index: int) -> LinearHeads:
        """The single head ``index`` as a (1, D, K) head, detached."""
        return LinearHeads(
            self.weight[index : index + 1].detach().clone(),
            self.bias[index : index + 1].detach().clone(),
        )

    @torch.no_grad()
    def predict_proba(self, x: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """Softmax probabilities of every head, shape (S, n, K) float32 numpy."""
        dev, dtype = self.weight.device, self.weight.dtype
        outs = []
        for start in range(0, len(x), batch_size):
            xb = torch.as_tensor(x[start : start + batch_size], device=dev, dtype=dtype)
            outs.append(torch.softmax(self.logits(xb), dim=-1).float().cpu().numpy())
        if not outs:
            k = self.weight.shape[-1]
            return np.zeros((self.weight.shape[0], 0, k), dtype=np.float32)
        return np.concatenate(outs, axis=1)


@dataclass
class FitInfo:
    """Diagnostics of a fit.

    Attributes:
        iterations: L-BFGS iterations (summed over the settings) or SGD steps.
        converged: every L-BFGS setting met its gradient tolerance (always True for SGD's fixed
            schedule).
        grad_max: largest final max-|gradient| over the settings (L-BFGS; ``None`` for SGD).
        seconds: wall time.
        per_setting: L-BFGS only, one record per weight decay in the order given:
            ``weight_decay``, ``iterations``, ``evaluations``, ``objective`` (final value),
            ``grad_max``, ``tolerance``, ``converged``, ``extrapolated_start`` (see
            :func:`_path_start`), ``seconds``.
    """

    iterations: int
    converged: bool
    grad_max: float | None
    seconds: float
    per_setting: list[dict[str, Any]] = field(default_factory=list)


# Stopping rule of each L-BFGS solve: max |gradient| <= max(GRAD_TOL_REL * lambda, GRAD_TOL_FLOOR).
# The objective is lambda-strongly convex in W, so ||W - W*|| <= ||grad|| / lambda: a tolerance
# proportional to lambda bounds the weights' distance to the optimum alike at every lambda (a
# fixed 1e-6 left the weights 5% off at lambda = 1e-6). The floor sits above the float64
# round-off of the mean-loss gradient, where line searches stall (measured: ~3e-10 at 2,000 x 64
# features, lambda = 1e-6); at the floor the weights were within 1e-4 of scikit-learn's
# tol=1e-12 solution.
GRAD_TOL_REL = 1e-4
GRAD_TOL_FLOOR = 1e-9
# L-BFGS history length (SciPy's ``maxcor``; its default is 10).
LBFGS_MEMORY = 20


# Rows per chunk of the NumPy objective: a (chunk, D) float64 slice of about 1 MiB stays in the
# CPU cache between its two GEMMs (logits, then X^T residual), so X streams from memory once per
# evaluation instead of twice (measured at 10k x 512, one thread, load ~3 on 2 cores: 13.6 ms
# chunked at 256 rows against 29.6 ms for two whole-matrix GEMMs; under load ~10, where other
# processes share the cache, 26-30 ms against 32 ms).
_CHUNK_BYTES = 1 << 20
_MIN_CHUNK_ROWS = 64


class NumpySoftmaxObjective:
    """``L(W, b) = (1/n) sum_i CE(x_i W + b, y_i) + (lambda / 2) ||W||_F^2`` and its gradient, in
    float64 NumPy BLAS on the CPU (the fast default; see :func:`fit_lbfgs`).

    Hand-written rather than scikit-learn's private ``LinearModelLoss``: the same formula, but each
    cache-sized chunk of X is used for both GEMMs while it is in cache, and the value, gradient
    layout and warm starts are ours to control.

    Args:
        x: (n, D) float64 C-contiguous features.
        y: (n,) int64 labels in [0, K).
        num_classes: K.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, num_classes: int):
        self.x = np.ascontiguousarray(x, dtype=np.float64)
        self.y = np.asarray(y, dtype=np.int64)
        self.k = num_classes
        self.dim = self.x.shape[1]
        self.chunk = max(_MIN_CHUNK_ROWS, _CHUNK_BYTES // (8 * max(1, self.dim)))
        self.weight_decay = 0.0
        self.evaluations = 0

    def unpack(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat (D*K + K,) parameters -> W (D, K), b (K,) (views)."""
        return theta[: self.dim * self.k].reshape(self.dim, self.k), theta[self.dim * self.k :]

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Objective value and flat gradient (what ``scipy.optimize.minimize(jac=True)`` takes)."""
        self.evaluations += 1
        w, b = self.unpack(theta)
        n = len(self.x)
        grad = np.zeros_like(theta)
        g_w, g_b = self.unpack(grad)
        nll = 0.0
        for lo in range(0, n, self.chunk):
            xc, yc = self.x[lo : lo + self.chunk], self.y[lo : lo + self.chunk]
            rows = np.arange(len(yc))
            z = xc @ w
            z += b
            z -= z.max(axis=1, keepdims=True)  # log-sum-exp shift: exp never overflows
            true_logit = z[rows, yc]
            np.exp(z, out=z)
            norm = z.sum(axis=1, keepdims=True)
            nll += float(np.log(norm).sum() - true_logit.sum())
            z /= norm  # softmax probabilities
            z[rows, yc] -= 1.0  # residual p - onehot(y): the gradient of CE w.r.t. the logits
            g_w += xc.T @ z
            g_b += z.sum(axis=0)
        grad /= n
        g_w += self.weight_decay * w
        value = nll / n + 0.5 * self.weight_decay * float(np.vdot(w, w))
        return value, grad


class _SoftmaxObjective:
    """``L(W, b) = (1/n) sum_i CE(x_i W + b, y_i) + (lambda / 2) ||W||_F^2`` and its gradient, in
    float64 on a torch device (two GEMMs per evaluation, chunked over samples): the path for
    features on an accelerator.

    Args:
        x: (n, D) float64 features on the device.
        y: (n,) int64 labels.
        num_classes: K.
        chunk_size: samples per chunk (memory O(chunk * K)).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, num_classes: int, chunk_size: int):
        self.x, self.y, self.k, self.chunk = x, y, num_classes, chunk_size
        self.dim = x.shape[1]
        self.weight_decay = 0.0
        self.evaluations = 0

    def unpack(self, theta: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat (D*K + K,) parameters -> W (D, K), b (K,) on the device."""
        t = torch.from_numpy(theta).to(self.x.device)
        return t[: self.dim * self.k].view(self.dim, self.k), t[self.dim * self.k :]

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Objective value and flat gradient (what ``scipy.optimize.minimize(jac=True)`` takes)."""
        self.evaluations += 1
        w, b = self.unpack(theta)
        n = len(self.x)
        loss = torch.zeros((), dtype=torch.float64, device=w.device)
        g_w = self.weight_decay * w
        g_b = torch.zeros_like(b)
        for lo in range(0, n, self.chunk):
            xc, yc = self.x[lo : lo + self.chunk], self.y[lo : lo + self.chunk]
            logits = torch.addmm(b, xc, w)
            logp = torch.log_softmax(logits, dim=1)
            loss -= logp.gather(1, yc[:, None]).sum()
            resid = logp.exp_()
            resid[torch.arange(len(yc), device=yc.device), yc] -= 1.0
            g_w = g_w.addmm(xc.T, resid, alpha=1.0 / n)
            g_b += resid.sum(0) / n
        value = loss / n + 0.5 * self.weight_decay * (w * w).sum()
        grad = torch.cat([g_w.reshape(-1), g_b]).cpu().numpy()
        return float(value), grad


def _path_start(
    objective: Callable[[np.ndarray], tuple[float, np.ndarray]],
    theta: np.ndarray,
    solved: Sequence[tuple[float, np.ndarray]],
    lam: float,
) -> tuple[np.ndarray, bool]:
    """Starting point of the solve at ``lam`` on the regularisation path.

    After two solved lambdas, the optimum's path is extrapolated linearly in log(lambda) (a secant
    predictor: ``theta_k + r (theta_k - theta_{k-1})`` with
    ``r = log(lambda_k / lam) / log(lambda_{k-1} / lambda_k)``); the extrapolated point is kept
    only when its objective at ``lam`` is no higher than that of the previous optimum (one
    evaluation each). Measured on the default grid (evaluations of the whole path, guard
    included): Fashion-MNIST pixels 1,000 x 784, 3,211 against 5,005 (-36%); synthetic
    10,000 x 512 features (``benchmarks/bench_probe.py``), 458 against 526 (-13%).
    Only the start changes: every solve still stops on the same gradient tolerance.

    Args:
        objective: the objective at ``lam`` (value and gradient of flat parameters).
        theta: (P,) the previous optimum (or the initial point).
        solved: (lambda, optimum) pairs solved so far, in order.
        lam: the lambda about to be solved.

    Returns:
        The start and whether it is the extrapolated one.
    """
    if len(solved) < 2:
        return theta, False
    (lam_a, theta_a), (lam_b, theta_b) = solved[-2], solved[-1]
    if not lam_a > lam_b > lam:
        return theta, False
    ratio = math.log(lam_b / lam) / math.log(lam_a / lam_b)
    guess = theta_b + ratio * (theta_b - theta_a)
    if objective(guess)[0] <= objective(theta)[0]:
        return guess, True
    return theta, False


def fit_lbfgs(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    weight_decays: Sequence[float],
    device: torch.device | str = "cpu",
    max_iter: int = 3000,
    tolerance_grad: float = GRAD_TOL_REL,
    chunk_size: int = 65536,
    dtype: torch.dtype = torch.float64,
    threads: int = 1,
    init: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[LinearHeads, FitInfo]:
    """Fit one multinomial logistic regression per weight decay, each solved on its own.

    The weight decays are solved from the largest to the smallest, each warm-started at the
    previous solution (the regularisation path: the optimum moves little between neighbouring
    lambdas, and the well-conditioned large-lambda problems are cheap), with SciPy's L-BFGS-B
    driving an analytic float64 objective: NumPy BLAS on the CPU (the default), torch on an
    accelerator ``device``. Each solve stops when
    ``max |gradient| <= max(tolerance_grad * lambda, 1e-9)`` (see :data:`GRAD_TOL_REL`), and
    its convergence is recorded. On the CPU the BLAS runs on ``threads`` threads (one by
    default: the GEMMs are thin, and one thread cannot stall on a descheduled sibling when
    another process holds a core; see :mod:`divssl.threads`).

    This is scikit-learn's ``LogisticRegression(solver="lbfgs")`` problem: its L-BFGS minimises
    the mean loss plus ``l2_reg_strength / 2 ||W||^2`` with ``l2_reg_strength = 1 / (C n)``
    (scikit-learn 1.9.1, ``sklearn/linear_model/_logistic.py``, ``_logistic_regression_path``;
    mean loss in ``_linear_loss.py``), so ``C = 1 / (n lambda)`` and its ``tol`` is a bound on
    the same max-|gradient| as ``tolerance_grad * lambda`` here.

    Args:
        x: (n, D) float features (already standardised).
        y: (n,) int labels in [0, K).
        num_classes: K.
        weight_decays: lambda_s of each head (> 0).
        device: compute device of the objective.
        max_iter: L-BFGS iteration cap per weight decay.
        tolerance_grad: gradient tolerance relative to lambda.
        chunk_size: samples per chunk of the torch objective (accelerators).
        dtype: parameter dtype (float64; the tight tolerances need it).
        threads: CPU BLAS threads of the objective.
        init: starting (W (D, K), b (K,)) of the first (largest-lambda) solve; zeros if None.

    Returns:
        The S fitted heads (in the order of ``weight_decays``) and fit diagnostics.
    """
    import scipy.optimize

    if any(wd <= 0 for wd in weight_decays):
        raise ConfigError(
            "weight_decays", "L-BFGS needs every weight decay > 0 (else no optimum may exist)"
        )
    if dtype != torch.float64:
        raise ConfigError("dtype", "the L-BFGS probe solves in float64")
    start = time.perf_counter()
    dev = torch.device(device)
    d, k = np.shape(x)[1], num_classes
    theta = np.zeros(d * k + k)
    if init is not None:
        w0, b0 = (np.asarray(v, dtype=np.float64) for v in init)
        if w0.shape != (d, k) or b0.shape != (k,):
            raise ValueError(f"init must be W ({d}, {k}) and b ({k},)")
        theta = np.concatenate([w0.reshape(-1), b0])
    with ExitStack() as stack:
        objective: NumpySoftmaxObjective | _SoftmaxObjective
        if dev.type == "cpu":
            # NumPy/SciPy BLAS on ``threads`` threads; torch's pool is not used at all.
            stack.enter_context(blas_threads(threads))
            objective = NumpySoftmaxObjective(np.asarray(x), np.asarray(y), k)
        else:
            xt = torch.as_tensor(np.asarray(x), device=dev).to(torch.float64)
            yt = torch.as_tensor(np.asarray(y), device=dev, dtype=torch.long)
            objective = _SoftmaxObjective(xt, yt, k, chunk_size)
        weights = np.zeros((len(weight_decays), d, k))
        biases = np.zeros((len(weight_decays), k))
        records: dict[int, dict[str, Any]] = {}
        order = sorted(range(len(weight_decays)), key=lambda i: -weight_decays[i])
        solved: list[tuple[float, np.ndarray]] = []  # (lambda, optimum) in solving order
        for i in order:
            lam = float(weight_decays[i])
            tol = max(tolerance_grad * lam, GRAD_TOL_FLOOR)
            objective.weight_decay = lam
            objective.evaluations = 0
            t0 = time.perf_counter()
            start_point, extrapolated = _path_start(objective, theta, solved, lam)
            res = scipy.optimize.minimize(
                objective,
                start_point,
                jac=True,
                method="L-BFGS-B",
                options={"maxiter": max_iter, "maxfun": 2 * max_iter, "gtol": tol, "ftol": 0.0,
                         "maxcor": LBFGS_MEMORY},
            )  # fmt: skip
            theta = res.x
            solved.append((lam, theta))
            grad_max = float(np.abs(res.jac).max())
            w, b = theta[: d * k].reshape(d, k), theta[d * k :]
            weights[i] = w
            biases[i] = b - b.mean()  # softmax is shift-invariant; centre for uniqueness
            records[i] = {
                "weight_decay": lam,
                "iterations": int(res.nit),
                "evaluations": objective.evaluations,
                "objective": float(res.fun),
                "grad_max": grad_max,
                "tolerance": tol,
                "converged": grad_max <= tol,
                "extrapolated_start": extrapolated,
                "seconds": time.perf_counter() - t0,
            }
    per = [records[i] for i in range(len(weight_decays))]
    heads = LinearHeads(torch.from_numpy(weights).to(dev), torch.from_numpy(biases).to(dev))
    info = FitInfo(
        iterations=sum(r["iterations"] for r in per),
        converged=all(r["converged"] for r in per),
        grad_max=max(r["grad_max"] for r in per),
        seconds=time.perf_counter() - start,
        per_setting=per,
    )
    return heads, info


BatchFn = Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]]


def fit_sgd(
    n: int,
    batch: BatchFn,
    dim: int,
    num_classes: int,
    settings: Sequence[ProbeSetting],
    epochs: int,
    batch_size: int = 256,
    momentum: float = 0.9,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[LinearHeads, FitInfo]:
    """Train S heads with minibatch SGD (momentum, cosine LR) for a fixed number of epochs.

    Each step draws a batch of sample indices (a fresh seeded permutation per epoch, last partial
    batch kept), asks ``batch`` for its (b, D) features and labels, and updates every head
    ``s`` with its own LR ``scaled_lr(lr_s, batch_size) * cosine(step)`` and L2 ``lambda_s``.

    Args:
        n: number of training samples.
        batch: indices (b,) -> features (b, D) float tensor and labels (b,) long, on ``device``.
        dim: D.
        num_classes: K.
        settings: the (weight decay, lr) grid.
        epochs: passes over the data.
        batch_size: samples per step.
        momentum: heavy-ball momentum.
        seed: order seed.
        device: compute device.
    """
    if epochs < 1:
        raise ConfigError("epochs", f"must be >= 1, got {epochs}")
    if any(st.lr is None or st.lr <= 0 for st in settings):
        raise ConfigError("lrs", "SGD needs a positive learning rate per setting")
    start = time.perf_counter()
    dev = torch.device(device)
    heads = LinearHeads.zeros(len(settings), dim, num_classes, dev, torch.float32)
    base = torch.tensor([scaled_lr(float(st.lr or 0.0), batch_size) for st in settings], device=dev)
    lam = torch.tensor([st.weight_decay for st in settings], device=dev)
    bufs = [torch.zeros_like(heads.weight), torch.zeros_like(heads.bias)]
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    rng = np.random.default_rng([seed, 0x56D])
    step = 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for lo in range(0, n, batch_size):
            feats, labels = batch(order[lo : lo + batch_size])
            logits = heads.logits(feats)
            loss = F.cross_entropy(
                logits.reshape(-1, num_classes), labels.repeat(len(settings)), reduction="sum"
            ) / len(labels)
            if not torch.isfinite(loss):
                raise RunFailed(f"linear-probe loss is {float(loss)} at step {step}; lower the LR")
            grads = torch.autograd.grad(loss, [heads.weight, heads.bias])
            lr = base * warmup_cosine(step, total, 1.0)
            # Hand-written update: torch.optim.SGD has one LR per parameter group, while here the
            # S heads with their own LR and weight decay are slices of a single tensor.
            with torch.no_grad():
                g_w = grads[0] + lam[:, None, None] * heads.weight
                for buf, g, p, shape in (
                    (bufs[0], g_w, heads.weight, (-1, 1, 1)),
                    (bufs[1], grads[1], heads.bias, (-1, 1)),
                ):
                    buf.mul_(momentum).add_(g)
                    p.sub_(lr.view(shape) * buf)
            step += 1
    heads.weight.requires_grad_(False)
    heads.bias.requires_grad_(False)
    return heads, FitInfo(step, True, None, time.perf_counter() - start)


# ----------------------------------------------------------------------------------- sweep


class ProbeConfig(ProbeSettings):
    """Settings of one probe fit: :class:`~divssl.evaluate.settings.ProbeSettings` (protocol,
    solver, weight_decays, lrs, val_fraction, epochs, batch_size, max_iter, standardize; their
    defaults and ranges live there) plus what the caller of the fit decides.

    Attributes:
        seed: seed of label-fraction subsets, the validation carve, SGD order and augmentation
            (``run_linear`` passes the settings' ``eval_seed``).
        momentum: SGD momentum (0.9, solo-learn's linear.yaml ``optimizer.momentum``).
        threads: CPU intra-op threads of the L-BFGS objective (1: see :mod:`divssl.threads`).

    The ``sgd`` protocol always fits with SGD (``solver`` is set to ``sgd``). Invalid values
    raise :class:`~divssl.errors.ConfigError` naming the field.
    """

    seed: Seed = 0
    momentum: Fraction01Closed = 0.9
    threads: Count = 1

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise settings_error(exc) from None

    @model_validator(mode="after")
    def _sgd_protocol_fits_with_sgd(self) -> ProbeConfig:
        if self.protocol == "sgd":
            self.solver = "sgd"
        return self

    @classmethod
    def from_settings(cls, settings: LinearSettings, **extra: Any) -> ProbeConfig:
        """The fitting part of a linear evaluation's settings (``seed`` = its ``eval_seed``)."""
        fit = settings.model_dump(include=set(ProbeSettings.model_fields))
        return cls(**fit, seed=settings.eval_seed, **extra)

    def settings(self) -> list[ProbeSetting]:
        """The sweep grid (weight decay x LR for SGD; weight decay for L-BFGS)."""
        if self.solver == "lbfgs":
            wds = self.weight_decays or DEFAULT_WEIGHT_DECAYS
            return [ProbeSetting(float(w)) for w in wds]
        wds = self.weight_decays or (0.0,)
        lrs = self.lrs or DEFAULT_SGD_LRS
        return [ProbeSetting(float(w), float(lr)) for w in wds for lr in lrs]


@dataclass
class ProbeResult:
    """A probe fitted on one train subset.

    Attributes:
        chosen: the selected setting.
        sweep: per setting, its validation top-1 (empty when the grid has one setting).
        predict: (n, D) eval features -> (n, K) class probabilities.
        n_fit: images the sweep was trained on.
        n_val: validation images.
        n_train: images of the final refit.
        fits: diagnostics of the sweep and the refit.
    """

    chosen: ProbeSetting
    sweep: list[dict[str, Any]]
    predict: Callable[[np.ndarray], np.ndarray]
    n_fit: int
    n_val: int
    n_train: int
    fits: dict[str, FitInfo] = field(default_factory=dict)


def _choose(settings: Sequence[ProbeSetting], val_acc: np.ndarray) -> int:
    """Best validation accuracy; ties go to the stronger weight decay, then the smaller LR."""
    keys = [
        (acc, st.weight_decay, -(st.lr or 0.0)) for acc, st in zip(val_acc, settings, strict=True)
    ]
    return max(range(len(settings)), key=lambda i: keys[i])


def _val_accuracy(probs: np.ndarray, y_val: np.ndarray) -> np.ndarray:
    """(S, n, K) probabilities -> (S,) top-1 accuracy."""
    return (probs.argmax(-1) == y_val[None, :]).mean(axis=1)


Predictor = Callable[[np.ndarray], np.ndarray]
FitFn = Callable[[np.ndarray, Sequence[ProbeSetting]], tuple[Predictor, FitInfo]]


def _select_and_refit(
    x: np.ndarray,
    y: np.ndarray,
    cfg: ProbeConfig,
    fit: FitFn,
    val: tuple[np.ndarray, np.ndarray] | None,
) -> ProbeResult:
    """Sweep every setting on the fit part, choose on validation, refit the choice on all.

    Args:
        x: (n, D) eval features of the train subset (validation inputs).
        y: (n,) labels of the train subset.
        cfg: probe settings.
        fit: (indices into the subset, grid) -> (features (m, D) -> probabilities (S, m, K), info).
        val: explicit validation (features, labels); else a stratified carve of the subset.
    """
    settings = cfg.settings()
    sweep: list[dict[str, Any]] = []
    fits: dict[str, FitInfo] = {}
    chosen, n_fit, n_val = settings[0], len(y), 0
    if len(settings) > 1:
        if val is None:
            fit_idx, val_idx = stratified_split(y, cfg.val_fraction, cfg.seed)
            x_val, y_val = x[val_idx], y[val_idx]
        else:
            fit_idx, (x_val, y_val) = np.arange(len(y)), val
        predict_all, fits["sweep"] = fit(fit_idx, settings)
        acc = _val_accuracy(predict_all(x_val), y_val)
        chosen = settings[_choose(settings, acc)]
        sweep = [{**asdict(st), "val_top1": float(a)} for st, a in zip(settings, acc, strict=True)]
        n_fit, n_val = len(fit_idx), len(y_val)
    predict_final, fits["refit"] = fit(np.arange(len(y)), [chosen])
    return ProbeResult(chosen, sweep, lambda f: predict_final(f)[0], n_fit, n_val, len(y), fits)


def probe_features(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    cfg: ProbeConfig,
    device: torch.device | str = "cpu",
    val: tuple[np.ndarray, np.ndarray] | None = None,
) -> ProbeResult:
    """Cached protocol: sweep on (fit, val), choose, refit on all of (x, y).

    Features are standardised with the statistics of the data each fit sees (unless
    ``cfg.standardize`` is False).

    Args:
        x: (n, D) train features (raw).
        y: (n,) train labels.
        num_classes: K.
        cfg: probe settings.
        device: compute device.
        val: optional explicit validation (features, labels), e.g. the task's ``val`` split.
    """

    sweep_heads: dict[float, tuple[np.ndarray, np.ndarray]] = {}  # lambda -> (W, b) of the sweep

    def fit(sel: np.ndarray, grid: Sequence[ProbeSetting]) -> tuple[Predictor, FitInfo]:
        scaler = Standardizer.fit(x[sel]) if cfg.standardize else Standardizer.identity(x.shape[1])
        xs, ys = scaler(x[sel]), y[sel]
        if cfg.solver == "lbfgs":
            wds = [st.weight_decay for st in grid]
            # The refit (one lambda, all images) starts at the sweep's optimum for that lambda:
            # the same problem on 10% more data, so it converges in a few iterations.
            init = sweep_heads.get(wds[0]) if len(wds) == 1 else None
            heads, info = fit_lbfgs(
                xs, ys, num_classes, wds, device, max_iter=cfg.max_iter, threads=cfg.threads,
                init=init,
            )  # fmt: skip
            for i, wd in enumerate(wds):
                sweep_heads[wd] = (heads.weight[i].cpu().numpy(), heads.bias[i].cpu().numpy())
        else:
            xt = torch.as_tensor(xs, device=device)
            yt = torch.as_tensor(ys, device=device, dtype=torch.long)
            heads, info = fit_sgd(
                len(xs), lambda idx: (xt[idx], yt[idx]), xs.shape[1], num_classes, grid,
                cfg.epochs, cfg.batch_size, cfg.momentum, cfg.seed, device,
            )  # fmt: skip
        return (lambda f: heads.predict_proba(scaler(f))), info

    # Every phase here is tiny for a thread pool (validation predictions, SGD steps); the L-BFGS
    # objective's BLAS has its own ``cfg.threads`` limit (see :func:`fit_lbfgs`).
    with single_thread(device):
        return _select_and_refit(x, y, cfg, fit, val)


def probe_images(
    model: nn.Module,
    images: np.ndarray,
    subset: np.ndarray,
    y: np.ndarray,
    eval_features: np.ndarray,
    num_classes: int,
    feat_dim: int,
    image_size: int,
    cfg: ProbeConfig,
    device: torch.device,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    norm: Normalization = IMAGENET_NORM,
) -> ProbeResult:
    """SGD protocol: heads trained on augmented views through the frozen backbone.

    Args:
        model: the frozen backbone (kept in eval mode; its weights and BN statistics never change).
        images: (N, H, W, 3) uint8 images of the whole train split (may be memory-mapped).
        subset: (n,) indices of the label-fraction subset into ``images``.
        y: (n,) labels of the subset.
        eval_features: (n, D) cached eval-transform features of the subset (validation).
        num_classes: K.
        feat_dim: D.
        image_size: crop side S.
        cfg: probe settings (solver is SGD).
        device: compute device.
        val: optional explicit validation (features, labels).
        norm: the run's input normalisation (the statistics of its eval transform).
    """
    from divssl.evaluate.features import autocast, eval_mode
    from divssl.pretrain.augment import get_preset, make_views

    preset = get_preset("supervised", image_size, norm=norm)
    gen = torch.Generator(device=device)
    model.to(device)

    def fit(sel: np.ndarray, grid: Sequence[ProbeSetting]) -> tuple[Predictor, FitInfo]:
        scaler = (
            Standardizer.fit(eval_features[sel])
            if cfg.standardize
            else Standardizer.identity(feat_dim)
        )

        def batch(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            pos = np.sort(sel[idx])  # sorted reads are faster on memory-mapped images
            x = torch.from_numpy(np.ascontiguousarray(images[subset[pos]])).to(device)
            (view,) = make_views(x.permute(0, 3, 1, 2), preset, gen)
            with eval_mode(model), torch.no_grad(), autocast(device):
                feats = model(view).float()
            return scaler.torch(feats), torch.as_tensor(y[pos], device=device)

        gen.manual_seed(cfg.seed)
        heads, info = fit_sgd(
            len(sel), batch, feat_dim, num_classes, grid, cfg.epochs, cfg.batch_size,
            cfg.momentum, cfg.seed, device,
        )  # fmt: skip
        return (lambda f: heads.predict_proba(scaler(f))), info

    return _select_and_refit(eval_features, y, cfg, fit, val)


# ----------------------------------------------------------------------------------- runner


def run_linear(
    run_dir: str | Path | None,
    task_spec: str,
    settings: LinearSettings | None = None,
    options: RunOptions | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Linear probe of a run (or a random-init backbone) on a task, at several label fractions.

    Args:
        run_dir: the pretraining run (``None`` only with ``init="random"`` and ``out_dir``).
        task_spec: task YAML path or pool spec with splits (see :func:`open_task`).
        settings: what is measured (:class:`~divssl.evaluate.settings.LinearSettings`: label
            fractions, protocol, solver, grids, ...; its defaults when ``None``).
        options: where it runs (:class:`~divssl.evaluate.settings.RunOptions`: init, device,
            decode cache, ``out_dir``, ``write``; the results go to
            ``<out_dir>/linear[-sgd]_<task>.json``, default ``RUN_DIR/eval``).
        **kwargs: fields of either model, as a convenience that builds (or updates) them:
            ``run_linear(run, task, fractions=[10, 100], device="cpu")``.

    Returns:
        The results dict that is written.

    Raises:
        ConfigError: a keyword no model declares or a value out of range, before any compute.
    """
    from divssl.evaluate.features import (
        encoder_recipe,
        load_encoder,
        load_split_images,
        resolve_device,
        results_header,
        results_path,
        task_features,
    )
    from divssl.evaluate.stats import metric_report
    from divssl.evaluate.tasks import open_task
    from divssl.io import atomic_write_json

    settings, options = split_settings(LinearSettings, settings, options, kwargs)
    start = time.perf_counter()
    cfg = ProbeConfig.from_settings(settings)
    fractions, protocol, eval_seed = settings.fractions, settings.protocol, settings.eval_seed
    n_boot, level = settings.n_boot, settings.level
    feature_batch_size, decode_cache = settings.feature_batch_size, options.decode_cache
    workers, out_dir = options.workers, options.out_dir
    pct = check_fractions(fractions)
    dev = resolve_device(options.device)
    task = open_task(task_spec)
    encoder = load_encoder(run_dir, **options.encoder_args())
    kind = "linear" if protocol == "cached" else "linear-sgd"
    path = results_path(kind, task, encoder, out_dir) if options.write else None
    feats = task_features(encoder, task, dev, feature_batch_size, decode_cache, workers)
    train = feats["train"]
    k = task.num_classes
    images = None
    if cfg.protocol == "sgd":
        images, labels, _ = load_split_images(
            task, "train", encoder.image_size, decode_cache, workers, encoder_recipe(encoder)
        )
        if not np.array_equal(labels, train.labels):
            raise ConfigError("task.train", "decoded images and cached features disagree")
    val = (feats["val"].features, feats["val"].labels) if "val" in feats else None
    subsets = label_fraction_indices(train.labels, pct, cfg.seed)
    results = []
    for f in pct:
        idx = subsets[f]
        if cfg.protocol == "cached":
            probe = probe_features(train.features[idx], train.labels[idx], k, cfg, dev, val)
        else:
            assert images is not None
            probe = probe_images(
                encoder.model, images, idx, train.labels[idx], train.features[idx], k,
                encoder.feat_dim, encoder.image_size, cfg, dev, val,
                run_normalization(encoder.run_config),
            )  # fmt: skip
        entry: dict[str, Any] = {
            "fraction": f,
            "n_train": probe.n_train,
            "n_fit": probe.n_fit,
            "n_val": probe.n_val,
            "chosen": asdict(probe.chosen),
            "sweep": probe.sweep,
            "fits": {name: asdict(info) for name, info in probe.fits.items()},
        }
        for split in ("test", "ood"):
            if split in feats:
                scores = probe.predict(feats[split].features)
                entry[split] = metric_report(
                    feats[split].labels, scores, k, n_boot, eval_seed, level
                )
        results.append(entry)
    out = results_header(kind, task, encoder, dev)
    out.update(
        {
            "protocol": cfg.protocol,
            "config": {**cfg.model_dump(), "settings": [asdict(s) for s in cfg.settings()]},
            "fractions": pct,
            "feature_cache": {split: sf.record() for split, sf in feats.items()},
            "stats": {"n_boot": n_boot, "level": level, "seed": eval_seed},
            "results": results,
            "wall_seconds": round(time.perf_counter() - start, 3),
        }
    )
    if path is not None:
        out["path"] = str(path)
        atomic_write_json(path, out)
    return out
