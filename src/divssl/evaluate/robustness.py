"""Effective robustness: OOD score above the baseline trend of ID vs OOD scores.

Following Taori et al. (2020) and Miller et al. (2021, "accuracy on the line"), as used by
Ramanujan et al. (2023) with macro-F1 on iWildCam-WILDS: scores of a family of *baseline* models
(e.g. trained from scratch) are mapped with a link function (logit, or probit), a least-squares line
``t(ood) = intercept + slope * t(id)`` is fitted in that space, and a model's effective robustness
is its OOD score minus the baseline's prediction at its ID score, in score space:

    ER(id, ood) = ood - t^{-1}(intercept + slope * t(id)).

Scores are clipped to ``[1e-4, 1 - 1e-4]`` before the link so perfect or zero scores stay finite.
:func:`bootstrap_band` resamples the baseline *models* with replacement, refits the line and
reports the percentile band of the predicted OOD score on a grid of ID scores (the shaded 95%
bands of the robustness paper's figures).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special
from scipy.stats import norm

from divssl.errors import unknown_choice

CLIP = 1e-4

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
    """Bootstrap band of the baseline's predicted OOD score.

    Attributes:
        grid: (G,) ID scores.
        low: (G,) lower percentile of the predicted OOD score.
        high: (G,) upper percentile.
        center: (G,) prediction of the line fitted on all baseline models.
        level: coverage of the band.
        n_resamples: resamples used (degenerate ones, with a single distinct ID score, dropped).
    """

    grid: np.ndarray
    low: np.ndarray
    high: np.ndarray
    center: np.ndarray
    level: float
    n_resamples: int

    def to_dict(self) -> dict[str, object]:
        """JSON form (lists)."""
        return {
            "grid": self.grid.tolist(),
            "low": self.low.tolist(),
            "high": self.high.tolist(),
            "center": self.center.tolist(),
            "level": self.level,
            "n_resamples": self.n_resamples,
        }


def bootstrap_band(
    id_scores: np.ndarray,
    ood_scores: np.ndarray,
    grid: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    transform: str = "logit",
    level: float = 0.95,
) -> Band:
    """Percentile band of the baseline trend, resampling baseline models with replacement.

    Each resample draws m of the m baseline models with replacement, refits the line in link space
    and predicts OOD scores on ``grid``; the band is the ``(1 - level) / 2`` and ``(1 + level) / 2``
    quantiles per grid point, in score space. Resamples whose models share a single ID score have no
    line and are dropped (their count is reported via ``Band.n_resamples``).

    Args:
        id_scores: (m,) baseline ID scores.
        ood_scores: (m,) baseline OOD scores.
        grid: (G,) ID scores at which to evaluate the band.
        n_resamples: bootstrap resamples.
        seed: resampling seed.
        transform: ``"logit"`` or ``"probit"``.
        level: coverage of the band, in (0, 1).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    center_fit = fit_baseline(id_scores, ood_scores, transform)
    x = np.asarray(id_scores, dtype=np.float64)
    y = np.asarray(ood_scores, dtype=np.float64)
    tx, ty = transform_scores(x, transform), transform_scores(y, transform)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_resamples, len(x)))
    slope, intercept = _line_fit(tx[idx], ty[idx])
    ok = np.isfinite(slope)
    tg = transform_scores(np.asarray(grid, dtype=np.float64), transform)
    pred = inverse_transform(intercept[ok, None] + slope[ok, None] * tg[None, :], transform)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(pred, [alpha, 1.0 - alpha], axis=0)
    return Band(
        grid=np.asarray(grid, dtype=np.float64),
        low=low,
        high=high,
        center=center_fit.predict(grid),
        level=level,
        n_resamples=int(ok.sum()),
    )
