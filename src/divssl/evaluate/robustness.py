"""Effective robustness: OOD score above the baseline trend of ID vs OOD scores.

Following Taori et al. (2020) and Miller et al. (2021, "accuracy on the line"), as used by
Ramanujan et al. (2023) with macro-F1 on iWildCam-WILDS: scores of a family of *baseline* models
(e.g. trained from scratch) are mapped with a link function (logit, or probit), a least-squares line
``t(ood) = intercept + slope * t(id)`` is fitted in that space, and a model's effective robustness
is its OOD score minus the baseline's prediction at its ID score, in score space:

    ER(id, ood) = ood - t^{-1}(intercept + slope * t(id)).

Scores are clipped to ``[1e-4, 1 - 1e-4]`` before the link so perfect or zero scores stay finite.
:func:`bootstrap_band` gives the band of the baseline trend on a grid of ID scores (the shaded 95%
bands of the robustness paper's figures). By default it is the pointwise OLS confidence interval
of the mean line in link space, ``yhat(x0) +- t_{m-2} s sqrt(1/m + (x0 - xbar)^2 / Sxx)``, mapped
back to score space: with the 10-25 baseline models of the papers it covers the true line at its
nominal level (``tests/evaluate/test_eval_robustness.py`` checks 0.95 by simulation), whereas the
percentile bootstrap over models (``method="percentile"``, kept for comparison) under-covers there
(about 0.88-0.91 at m = 10).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special
from scipy.stats import norm
from scipy.stats import t as student_t

from divssl.errors import unknown_choice

CLIP = 1e-4
BAND_METHODS = ("t", "percentile")

_LINKS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "logit": (special.logit, special.expit),
    "probit": (norm.ppf, norm.cdf),
}


def transform_scores(scores: np.ndarray | float, transform: str = "logit") -> np.ndarray:
    """Clip scores to [1e-4, 1 - 1e-4] and apply the link (``logit`` or ``probit``)."""
    forward, _ = _link(transform)
    return forward(np.clip(np.asarray(scores, dtype=np.float64), CLIP, 1.0 - CLIP))


def inverse_transform(values: np.ndarray | float, transform: str = "logit") -> np.ndarray:
    """Map link-space values back to scores in (0, 1)."""
    _, inverse = _link(transform)
    return inverse(np.asarray(values, dtype=np.float64))


def _link(transform: str) -> tuple[Callable, Callable]:
    if transform not in _LINKS:
        raise unknown_choice("transform", transform, _LINKS)
    return _LINKS[transform]


@dataclass(frozen=True)
class Baseline:
    """A baseline trend ``t(ood) = intercept + slope * t(id)`` in link space.

    Attributes:
        slope: slope of the line in link space.
        intercept: intercept of the line in link space.
        transform: ``"logit"`` or ``"probit"``.
        n_models: number of baseline models it was fitted on.
    """

    slope: float
    intercept: float
    transform: str
    n_models: int

    def predict(self, id_scores: np.ndarray | float) -> np.ndarray:
        """Baseline OOD score (score space) at the given ID scores; same shape as the input."""
        t = transform_scores(id_scores, self.transform)
        return inverse_transform(self.intercept + self.slope * t, self.transform)

    def to_dict(self) -> dict[str, float | int | str]:
        """JSON form."""
        return {
            "slope": self.slope,
            "intercept": self.intercept,
            "transform": self.transform,
            "n_models": self.n_models,
        }


def _line_fit(tx: np.ndarray, ty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares lines along the last axis: tx, ty (..., m) -> slope, intercept (...)."""
    mx = tx.mean(axis=-1, keepdims=True)
    my = ty.mean(axis=-1, keepdims=True)
    sxx = ((tx - mx) ** 2).sum(axis=-1)
    sxy = ((tx - mx) * (ty - my)).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = sxy / sxx
    intercept = my[..., 0] - slope * mx[..., 0]
    return slope, intercept


def _check_scores(id_scores: np.ndarray, ood_scores: np.ndarray) -> None:
    if id_scores.ndim != 1 or id_scores.shape != ood_scores.shape:
        raise ValueError(
            f"id_scores and ood_scores must be 1-D of equal length, got {id_scores.shape} and "
            f"{ood_scores.shape}"
        )
    for name, s in (("id_scores", id_scores), ("ood_scores", ood_scores)):
        if not np.all(np.isfinite(s)) or s.min() < 0.0 or s.max() > 1.0:
            raise ValueError(f"{name} must be finite scores in [0, 1]")


def fit_baseline(
    id_scores: np.ndarray, ood_scores: np.ndarray, transform: str = "logit"
) -> Baseline:
    """Fit the baseline line by least squares in link space.

    Args:
        id_scores: (m,) ID scores (accuracy or macro-F1, in [0, 1]) of the baseline models.
        ood_scores: (m,) OOD scores of the same models.
        transform: ``"logit"`` (default) or ``"probit"``.

    Raises:
        ValueError: fewer than two distinct ID scores (the line is undefined) or bad scores.
    """
    _link(transform)
    x = np.asarray(id_scores, dtype=np.float64)
    y = np.asarray(ood_scores, dtype=np.float64)
    _check_scores(x, y)
    tx, ty = transform_scores(x, transform), transform_scores(y, transform)
    if len(x) < 2 or np.ptp(tx) == 0.0:
        raise ValueError("fit_baseline needs at least two baseline models with distinct ID scores")
    slope, intercept = _line_fit(tx, ty)
    return Baseline(float(slope), float(intercept), transform, len(x))


def effective_robustness(
    id_score: np.ndarray | float, ood_score: np.ndarray | float, baseline: Baseline
) -> np.ndarray | float:
    """OOD score minus the baseline's predicted OOD score at the same ID score (vectorised).

    Args:
        id_score: scalar or (m,) ID scores in [0, 1].
        ood_score: scalar or (m,) OOD scores in [0, 1].
        baseline: from :func:`fit_baseline`.

    Returns:
        A float for scalar input, else an array of the broadcast shape.
    """
    er = np.asarray(ood_score, dtype=np.float64) - baseline.predict(id_score)
    return float(er) if er.ndim == 0 else er


@dataclass(frozen=True)
class Band:
    """Pointwise confidence band of the baseline's predicted OOD score.

    Attributes:
        grid: (G,) ID scores.
        low: (G,) lower edge of the predicted OOD score.
        high: (G,) upper edge.
        center: (G,) prediction of the line fitted on all baseline models.
        level: coverage of the band.
        n_resamples: bootstrap resamples used (``method="percentile"``; degenerate ones, with a
            single distinct ID score, dropped); 0 for the closed-form ``t`` band.
        method: ``"t"`` (OLS t-interval in link space) or ``"percentile"`` (bootstrap).
    """

    grid: np.ndarray
    low: np.ndarray
    high: np.ndarray
    center: np.ndarray
    level: float
    n_resamples: int
    method: str = "t"

    def describe(self) -> str:
        """Short legend text, e.g. ``"95% t-interval band"``."""
        if self.method == "t":
            return f"{self.level:.0%} OLS t-interval band"
        return f"{self.level:.0%} bootstrap band ({self.n_resamples} resamples)"

    def to_dict(self) -> dict[str, object]:
        """JSON form (lists)."""
        return {
            "grid": self.grid.tolist(),
            "low": self.low.tolist(),
            "high": self.high.tolist(),
            "center": self.center.tolist(),
            "level": self.level,
            "n_resamples": self.n_resamples,
            "method": self.method,
        }


def _t_band(
    tx: np.ndarray, ty: np.ndarray, tg: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise OLS confidence interval of the mean line at link-space points ``tg``.

    ``yhat(x0) +- t_{m-2, (1 + level) / 2} * s * sqrt(1/m + (x0 - xbar)^2 / Sxx)`` with
    ``s^2 = SSE / (m - 2)`` (e.g. Montgomery, Peck & Vining, *Introduction to Linear Regression
    Analysis*, Sec. 2.4.2). Hand-written (rather than statsmodels' ``get_prediction``) because
    it is five lines and statsmodels is not a dependency.

    Args:
        tx: (m,) link-space ID scores, m >= 3.
        ty: (m,) link-space OOD scores.
        tg: (G,) link-space grid.
        level: coverage in (0, 1).

    Returns:
        Lower and upper edges (G,) in link space.
    """
    m = len(tx)
    slope, intercept = _line_fit(tx, ty)
    resid = ty - (intercept + slope * tx)
    s2 = float((resid**2).sum()) / (m - 2)
    sxx = float(((tx - tx.mean()) ** 2).sum())
    se = np.sqrt(s2 * (1.0 / m + (tg - tx.mean()) ** 2 / sxx))
    half = student_t.ppf((1.0 + level) / 2.0, m - 2) * se
    fit = intercept + slope * tg
    return fit - half, fit + half


def bootstrap_band(
    id_scores: np.ndarray,
    ood_scores: np.ndarray,
    grid: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    transform: str = "logit",
    level: float = 0.95,
    method: str = "t",
) -> Band:
    """Pointwise band of the baseline trend on ``grid`` (t-interval by default).

    ``method="t"`` (default): the OLS confidence interval of the mean line in link space (see
    :func:`_t_band`), mapped back to score space; exact under the usual linear-model assumptions
    (normal, equal-variance residuals in link space), so it holds at the papers' 10-25 baseline
    models. It needs at least 3 models (m - 2 degrees of freedom).

    ``method="percentile"``: each resample draws m of the m baseline models with replacement,
    refits the line in link space and predicts OOD scores on ``grid``; the band is the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles per grid point. Resamples whose models
    share a single ID score have no line and are dropped (``Band.n_resamples`` counts the rest).
    It under-covers with few models (about 0.88-0.91 at m = 10 for a 95% band).

    Args:
        id_scores: (m,) baseline ID scores.
        ood_scores: (m,) baseline OOD scores.
        grid: (G,) ID scores at which to evaluate the band.
        n_resamples: bootstrap resamples (``percentile`` only).
        seed: resampling seed (``percentile`` only).
        transform: ``"logit"`` or ``"probit"``.
        level: coverage of the band, in (0, 1).
        method: ``"t"`` or ``"percentile"``.

    Raises:
        ConfigError: unknown ``method`` or ``transform``.
        ValueError: bad level or scores, fewer than two distinct ID scores, or fewer than three
            models for ``method="t"``.
    """
    if method not in BAND_METHODS:
        raise unknown_choice("method", method, BAND_METHODS)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    center_fit = fit_baseline(id_scores, ood_scores, transform)
    x = np.asarray(id_scores, dtype=np.float64)
    y = np.asarray(ood_scores, dtype=np.float64)
    tx, ty = transform_scores(x, transform), transform_scores(y, transform)
    grid = np.asarray(grid, dtype=np.float64)
    tg = transform_scores(grid, transform)
    if method == "t":
        if len(x) < 3:
            raise ValueError(f"the t-interval band needs at least 3 baseline models, got {len(x)}")
        lo_t, hi_t = _t_band(tx, ty, tg, level)
        return Band(
            grid=grid,
            low=inverse_transform(lo_t, transform),
            high=inverse_transform(hi_t, transform),
            center=center_fit.predict(grid),
            level=level,
            n_resamples=0,
            method="t",
        )
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_resamples, len(x)))
    slope, intercept = _line_fit(tx[idx], ty[idx])
    ok = np.isfinite(slope)
    pred = inverse_transform(intercept[ok, None] + slope[ok, None] * tg[None, :], transform)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(pred, [alpha, 1.0 - alpha], axis=0)
    return Band(
        grid=grid,
        low=low,
        high=high,
        center=center_fit.predict(grid),
        level=level,
        n_resamples=int(ok.sum()),
        method="percentile",
    )
