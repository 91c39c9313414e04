"""Fitting the data-constrained law: least squares, bootstrap over seeds, leave-one-run-out.

Every model is fitted by ``scipy.optimize.least_squares`` (trust-region reflective, bounds) on
one point per run (no averaging over seeds, so every seed weighs the same), from several starts
(R* on a log grid for the law), keeping the lowest cost.

* **Interval of R*** (and of every answer): a bootstrap over seeds, stratified by condition
  (N, C): each replicate resamples the runs of every condition with replacement (adjusted for
  the few seeds, :func:`bootstrap_over_seeds`) and refits; the 2.5/97.5 percentiles of the
  replicates form the 95% interval.
* **Held-out check**: leave-one-run-out prediction error (each run predicted by the fit on all
  others), for the law and for the models it is compared with: the same logistic with repeats
  as good as fresh images (R* = inf, C_eff = C), with repeats worthless (R* = 0, C_eff = U), and
  the plain power law in C (``acc = ceiling - scale C^-alpha``).
* **Identifiability**: a grid must vary both N and C, hold runs that repeat data (N < C) at two
  or more repetition levels R, and have more conditions than parameters; otherwise
  :func:`check_identifiable` raises :class:`~divssl.errors.ConfigError` before any fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from divssl.errors import ConfigError
from divssl.fit.law import (
    Array,
    LawParams,
    PowerLawParams,
    effective_images,
    repetition_value,
    unique_and_repetitions,
)

LOG_R_STAR_BOUNDS = (math.log(1e-2), math.log(1e4))  # R* in [0.01, 10^4] repetitions
SLOPE_MAX = 50.0  # per unit of ln C_eff: steeper than any measured curve
R_STAR_STARTS = (0.3, 3.0, 30.0, 300.0)  # repetitions; the law's multi-start grid
LEVEL = 0.95


@dataclass(frozen=True)
class FitData:
    """One point per run.

    Attributes:
        n: unique images N, shape (m,).
        c: budget C, shape (m,).
        y: accuracy in [0, 1], shape (m,).
        runs: run ids, length m.
        seeds: seeds, shape (m,).
    """

    n: Array
    c: Array
    y: Array
    runs: tuple[str, ...]
    seeds: Array

    def __post_init__(self) -> None:
        m = len(self.y)
        if not (len(self.n) == len(self.c) == len(self.runs) == len(self.seeds) == m):
            raise ValueError("n, c, y, runs and seeds must have the same length")

    @property
    def conditions(self) -> np.ndarray[Any, np.dtype[np.intp]]:
        """Condition index of every run (distinct (N, C) pairs in sorted order), shape (m,)."""
        pairs = np.stack([self.n, self.c], axis=1)
        _, inverse = np.unique(pairs, axis=0, return_inverse=True)
        return inverse.reshape(-1)

    def subset(self, idx: Sequence[int] | Array) -> FitData:
        """The runs at positions ``idx`` (repeats allowed)."""
        i = np.asarray(idx, dtype=np.int64)
        return FitData(
            self.n[i], self.c[i], self.y[i], tuple(self.runs[j] for j in i), self.seeds[i]
        )


@dataclass(frozen=True)
class Model:
    """A model fitted by least squares.

    Attributes:
        key: short name (``law``, ``repeats_as_new``, ``repeats_worthless``, ``power_c``).
        label: display name.
        names: names of the free parameters, in the order of the vector.
        lower: lower bounds, shape (p,).
        upper: upper bounds, shape (p,).
        build: parameter vector -> :class:`LawParams` or :class:`PowerLawParams`.
        starts: data -> start vectors.
    """

    key: str
    label: str
    names: tuple[str, ...]
    lower: Array
    upper: Array
    build: Callable[[Array], LawParams | PowerLawParams]
    starts: Callable[[FitData], list[Array]]

    @property
    def n_params(self) -> int:
        """Number of free parameters."""
        return len(self.names)


def law_model(floor: float | None = None, r_star: float | None = None) -> Model:
    """The data-constrained logistic law.

    Args:
        floor: fixed floor accuracy, or None to fit it.
        r_star: fixed R* (``inf``: repeats as new; ``0``: repeats worthless), or None to fit it.
    """
    names = (["log_r_star"] if r_star is None else []) + ["ceiling"]
    names += (["floor"] if floor is None else []) + ["slope", "mid"]
    bounds = {
        "log_r_star": LOG_R_STAR_BOUNDS,
        "ceiling": (0.0, 1.0),
        "floor": (0.0, 1.0),
        "slope": (0.0, SLOPE_MAX),
        "mid": (-50.0, 100.0),
    }

    def build(theta: Array) -> LawParams:
        v = dict(zip(names, (float(t) for t in theta), strict=True))
        return LawParams(
            r_star=math.exp(v["log_r_star"]) if r_star is None else float(r_star),
            ceiling=v["ceiling"],
            floor=v["floor"] if floor is None else float(floor),
            slope=v["slope"],
            mid=v["mid"],
        )

    def starts(data: FitData) -> list[Array]:
        out = []
        for rs in R_STAR_STARTS if r_star is None else (r_star,):
            x = np.log(effective_images(data.n, data.c, rs))
            v = {
                "log_r_star": math.log(rs) if r_star is None else 0.0,
                "ceiling": min(1.0, float(data.y.max()) + 0.02),
                "floor": max(0.0, float(data.y.min()) - 0.02),
                "slope": 1.0 / max(float(x.std()), 0.1),
                "mid": float(np.median(x)),
            }
            out.append(np.array([v[k] for k in names]))
        return out

    if r_star is None:
        key, label = "law", "data-constrained law (R* fitted)"
    elif math.isinf(r_star):
        key, label = "repeats_as_new", "same logistic, repeats as new (R* = inf, C_eff = C)"
    elif r_star == 0.0:
        key, label = "repeats_worthless", "same logistic, repeats worthless (R* = 0, C_eff = U)"
    else:
        key, label = f"law_r{r_star:g}", f"same logistic, R* = {r_star:g}"
    lo = np.array([bounds[k][0] for k in names])
    hi = np.array([bounds[k][1] for k in names])
    return Model(key, label, tuple(names), lo, hi, build, starts)


def power_model() -> Model:
    """``acc(C) = ceiling - scale * C^(-alpha)``, parameters (ceiling, log scale, alpha)."""
    names = ("ceiling", "log_scale", "alpha")

    def build(theta: Array) -> PowerLawParams:
        return PowerLawParams(float(theta[0]), math.exp(float(theta[1])), float(theta[2]))

    def starts(data: FitData) -> list[Array]:
        out = []
        top = min(1.0, float(data.y.max()) + 0.02)
        gap = max(top - float(data.y.min()), 1e-3)
        for alpha in (0.1, 0.5, 1.0):
            scale = gap * float(np.min(data.c)) ** alpha
            out.append(np.array([top, math.log(scale), alpha]))
        return out

    lo = np.array([0.0, -50.0, 0.0])
    hi = np.array([1.0, 100.0, 5.0])
    return Model("power_c", "power law in C (ignores N)", names, lo, hi, build, starts)


# ------------------------------------------------------------------------------- identifiable


class UnidentifiableGrid(ConfigError):
    """A grid that cannot identify R* (a :class:`ConfigError` on the field ``grid``).

    Attributes:
        grid: short description of the grid (its N, C and repetition levels).
    """

    def __init__(self, message: str, grid: str) -> None:
        super().__init__("grid", message)
        self.grid = grid


def check_identifiable(data: FitData, n_params: int) -> None:
    """Refuse a grid that cannot identify R* (before any fit).

    Raises:
        UnidentifiableGrid: (a ConfigError, field ``grid``) one N or one C, no runs with
            repeats (N < C), repeats at a single repetition level, or no more distinct (N, C)
            conditions than parameters.
    """
    pairs = sorted({(float(a), float(b)) for a, b in zip(data.n, data.c, strict=True)})
    ns, cs = sorted({p[0] for p in pairs}), sorted({p[1] for p in pairs})
    _, r = unique_and_repetitions([p[0] for p in pairs], [p[1] for p in pairs])
    repeat_levels = sorted({round(float(v), 9) for v in r if v > 0})
    problems = []
    if len(ns) < 2 or len(cs) < 2:
        problems.append(
            f"it needs at least two values of N and two of C, got N in {_fmt(ns)} and C in "
            f"{_fmt(cs)}: R* is identified by comparing the same N at different C and the same C "
            "with different N"
        )
    if not repeat_levels:
        problems.append("no run repeats data (every run has N >= C, so R = 0): add runs with N < C")
    elif len(repeat_levels) < 2:
        problems.append(
            f"repeats occur at one repetition level only (R = {repeat_levels[0]:g}): R* needs two "
            "or more levels of R = C / N - 1 > 0"
        )
    if len(pairs) <= n_params:
        problems.append(
            f"{len(pairs)} distinct (N, C) conditions for {n_params} parameters: it needs at least "
            f"{n_params + 1}"
        )
    if problems:
        levels = _fmt(repeat_levels) if repeat_levels else "none"
        raise UnidentifiableGrid(
            "the study's grid does not identify the data-constrained fit: " + "; ".join(problems),
            f"N in {_fmt(ns)}, C in {_fmt(cs)}, repetitions R > 0 in {levels}",
        )


def _fmt(values: Sequence[float]) -> str:
    return "{" + ", ".join(f"{v:g}" for v in values) + "}"


# ------------------------------------------------------------------------------------ fitting


@dataclass
class FitResult:
    """One model fitted to one data set.

    Attributes:
        model: the model.
        theta: best parameter vector, shape (p,).
        params: built parameters.
        cost: 0.5 * sum of squared residuals.
        residuals: observed - predicted per run, shape (m,).
        at_bounds: names of parameters that ended on a bound.
    """

    model: Model
    theta: Array
    params: LawParams | PowerLawParams
    cost: float
    residuals: Array
    at_bounds: list[str] = field(default_factory=list)

    @property
    def rmse(self) -> float:
        """Root mean squared residual (accuracy units)."""
        return float(np.sqrt(np.mean(self.residuals**2)))


def _residual_fn(model: Model, data: FitData) -> Callable[[Array], Array]:
    def residuals(theta: Array) -> Array:
        return model.build(theta).predict(data.n, data.c) - data.y

    return residuals


def fit_model(model: Model, data: FitData, starts: Sequence[Array] | None = None) -> FitResult:
    """Least-squares fit of ``model`` from each start (default: the model's own), best kept.

    Args:
        model: what to fit.
        data: one point per run.
        starts: start vectors, shape (p,) each; clipped into the bounds.

    Returns:
        The fit with the lowest cost.
    """
    fun = _residual_fn(model, data)
    best = None
    for x0 in starts if starts is not None else model.starts(data):
        x0 = np.clip(np.asarray(x0, dtype=np.float64), model.lower, model.upper)
        sol = least_squares(
            fun, x0, bounds=(model.lower, model.upper), method="trf", x_scale="jac", max_nfev=2000
        )
        if np.isfinite(sol.cost) and (best is None or sol.cost < best.cost):
            best = sol
    if best is None:
        raise ValueError(f"{model.key}: no start gave a finite fit")
    theta = best.x
    span = model.upper - model.lower
    hit = (theta - model.lower <= 1e-6 * span) | (model.upper - theta <= 1e-6 * span)
    return FitResult(
        model=model,
        theta=theta,
        params=model.build(theta),
        cost=float(best.cost),
        residuals=-best.fun,
        at_bounds=[n for n, h in zip(model.names, hit, strict=True) if h],
    )


def _warm_starts(model: Model, theta: Array) -> list[Array]:
    """The full fit's vector, and for the law the same with R* 10x smaller and larger."""
    starts = [theta]
    if "log_r_star" in model.names:
        i = model.names.index("log_r_star")
        for shift in (-math.log(10.0), math.log(10.0)):
            t = theta.copy()
            t[i] += shift
            starts.append(t)
    return starts


def leave_one_out(model: Model, data: FitData, full: FitResult) -> Array:
    """Leave-one-run-out prediction errors: observed - predicted by the fit on the other runs.

    Returns:
        Errors, shape (m,).
    """
    errors = np.empty(len(data.y))
    everyone = np.arange(len(data.y))
    for i in everyone:
        rest = data.subset(everyone[everyone != i])
        fit = fit_model(model, rest, _warm_starts(model, full.theta))
        errors[i] = data.y[i] - float(fit.params.predict(data.n[i], data.c[i]))
    return errors


def bootstrap_over_seeds(
    model: Model, data: FitData, full: FitResult, n_boot: int, seed: int
) -> list[LawParams | PowerLawParams]:
    """Refit on ``n_boot`` resamples of the runs within each (N, C) condition.

    A plain resample of k seeds has a variance (k - 1) / k of theirs (a third too small at k = 3),
    so each resampled run is moved away from its condition's mean by sqrt(k / (k - 1)): the
    adjusted stratified bootstrap (Davison & Hinkley 1997, *Bootstrap Methods and their
    Application*, sec. 3.7). Conditions with one run keep it as it is.

    Returns:
        The replicates' parameters (empty when no condition has two or more runs).
    """
    cond = data.conditions
    groups = [np.flatnonzero(cond == k) for k in np.unique(cond)]
    if all(len(g) < 2 for g in groups):
        return []
    rng = np.random.default_rng(seed)
    means = {int(k): float(data.y[g].mean()) for k, g in zip(np.unique(cond), groups, strict=True)}
    inflate = [math.sqrt(len(g) / (len(g) - 1)) if len(g) > 1 else 0.0 for g in groups]
    out = []
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        scale = np.concatenate([np.full(len(g), f) for g, f in zip(groups, inflate, strict=True)])
        centre = np.array([means[int(k)] for k in cond[idx]])
        y = np.clip(centre + scale * (data.y[idx] - centre), 0.0, 1.0)
        sample = FitData(data.n[idx], data.c[idx], y, tuple(data.runs[j] for j in idx),
                         data.seeds[idx])  # fmt: skip
        out.append(fit_model(model, sample, _warm_starts(model, full.theta)).params)
    return out


def interval(values: Sequence[float] | Array, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates; (nan, nan) when there are none."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)] if arr.size else arr
    if arr.size == 0:
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(arr, [tail, 100.0 - tail])
    return float(lo), float(hi)


# ------------------------------------------------------------------------------------ answers


def best_n(params: LawParams, c: float, epsilon: float, points: int = 4001) -> dict[str, float]:
    """The smallest N whose predicted accuracy at budget ``c`` is within ``epsilon`` of the best.

    N is searched on a log grid over [1, C] (``points`` values; N > C sees only C unique images).

    Returns:
        ``{"n": smallest N, "epochs": C / N, "accuracy": its accuracy, "best_accuracy": ...,
        "best_n": N of the best}``.
    """
    grid = np.geomspace(1.0, float(c), points)
    acc = params.predict(grid, np.full_like(grid, float(c)))
    top = int(np.argmax(acc))
    first = int(np.flatnonzero(acc >= acc[top] - epsilon)[0])
    return {
        "n": float(grid[first]),
        "epochs": float(c) / float(grid[first]),
        "accuracy": float(acc[first]),
        "best_accuracy": float(acc[top]),
        "best_n": float(grid[top]),
    }


def repetition_table(params: LawParams, c: float, max_epochs: int) -> list[dict[str, float]]:
    """Predicted accuracy at budget ``c`` for E = 1..max_epochs (N = C / E), with the accuracy
    lost by each extra repetition and the worth of a repeated image relative to a fresh one.

    Returns:
        One dict per E: ``epochs``, ``repetitions`` (E - 1), ``n``, ``accuracy``,
        ``lost_vs_previous`` (accuracy at E - 1 minus at E; nan for E = 1), ``image_value``.
    """
    rows: list[dict[str, float]] = []
    for e in range(1, max_epochs + 1):
        n = float(c) / e
        acc = float(params.predict(n, float(c)))
        rows.append(
            {
                "epochs": float(e),
                "repetitions": float(e - 1),
                "n": n,
                "accuracy": acc,
                "lost_vs_previous": rows[-1]["accuracy"] - acc if rows else math.nan,
                "image_value": float(repetition_value(e - 1, params.r_star)) if e > 1 else 1.0,
            }
        )
    return rows


def seed_noise(data: FitData) -> tuple[float, int]:
    """Pooled within-condition standard deviation over seeds (the error no model can beat).

    Returns:
        (pooled std, degrees of freedom); (nan, 0) without repeated conditions.
    """
    cond = data.conditions
    ss, dof = 0.0, 0
    for k in np.unique(cond):
        y = data.y[cond == k]
        if len(y) > 1:
            ss += float(((y - y.mean()) ** 2).sum())
            dof += len(y) - 1
    return (math.sqrt(ss / dof), dof) if dof else (math.nan, 0)


def lack_of_fit(data: FitData, residuals: Array) -> list[dict[str, Any]]:
    """Per condition: mean residual over its runs and whether it lies beyond 2 standard errors
    (pooled seed std / sqrt(runs)), a sign that the law's shape misses that condition.

    Returns:
        One dict per condition: ``n``, ``c``, ``runs``, ``mean_residual``, ``se``, ``outside``.
    """
    cond = data.conditions
    sd, _ = seed_noise(data)
    rows = []
    for k in np.unique(cond):
        sel = cond == k
        runs = int(sel.sum())
        se = sd / math.sqrt(runs) if math.isfinite(sd) else math.nan
        mean = float(residuals[sel].mean())
        rows.append(
            {
                "n": float(data.n[sel][0]),
                "c": float(data.c[sel][0]),
                "runs": runs,
                "mean_residual": mean,
                "se": se,
                "outside": bool(math.isfinite(se) and abs(mean) > 2.0 * se),
            }
        )
    return rows
