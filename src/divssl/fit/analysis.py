"""The whole fit of a study: law, intervals, held-out check, comparison and answers.

:func:`fit_points` takes one point per run (:class:`~divssl.fit.fitting.FitData`) and the
settings (:class:`FitSettings`) and returns a :class:`FitOutcome`, whose :meth:`FitOutcome.to_dict`
is what ``divssl fit`` writes to ``STUDY_DIR/fit.json`` and what the report's
"data-constrained fit" section renders.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from divssl.errors import ConfigError
from divssl.fit.fitting import (
    FitData,
    FitResult,
    best_n,
    bootstrap_over_seeds,
    check_identifiable,
    fit_model,
    interval,
    lack_of_fit,
    law_model,
    leave_one_out,
    power_model,
    repetition_table,
    seed_noise,
)
from divssl.fit.law import LawParams, effective_images, unique_and_repetitions


@dataclass(frozen=True)
class FitSettings:
    """Settings of ``divssl fit`` (shared by the CLI and the report section).

    Attributes:
        floor: fixed floor accuracy in [0, 1] (e.g. chance, or a random-init encoder), or None to
            fit it.
        n_boot: bootstrap replicates over seeds (0: no interval).
        seed: bootstrap seed.
        epsilon: tolerance of the "smallest N within epsilon of the best" answer (accuracy units).
        predict: (N, C) pairs to predict.
        best_n_at: budgets C at which to answer the smallest N (default: every C of the study).
        max_epochs: rows E = 1..max_epochs of the repetition table.
        compare: also fit the models the law is compared with (with their LOO error).
    """

    floor: float | None = None
    n_boot: int = 200
    seed: int = 0
    epsilon: float = 0.01
    predict: tuple[tuple[float, float], ...] = ()
    best_n_at: tuple[float, ...] = ()
    max_epochs: int = 10
    compare: bool = True

    def __post_init__(self) -> None:
        if self.floor is not None and not 0.0 <= self.floor <= 1.0:
            raise ConfigError("--floor", f"must be 'fit' or a number in [0, 1], got {self.floor}")
        if self.n_boot != 0 and not 10 <= self.n_boot <= 100_000:
            raise ConfigError("--n-boot", f"must be 0 or in [10, 100000], got {self.n_boot}")
        if not 0.0 <= self.epsilon < 1.0:
            raise ConfigError("--epsilon", f"must lie in [0, 1), got {self.epsilon}")
        if not 1 <= self.max_epochs <= 1000:
            raise ConfigError("--max-epochs", f"must lie in [1, 1000], got {self.max_epochs}")
        for n, c in self.predict:
            if not (n > 0 and c > 0 and math.isfinite(n) and math.isfinite(c)):
                raise ConfigError("--predict", f"N and C must be positive, got N={n}, C={c}")
        for c in self.best_n_at:
            if not (c >= 1 and math.isfinite(c)):
                raise ConfigError("--best-n-at", f"C must be >= 1, got {c}")


@dataclass
class FitOutcome:
    """Everything ``divssl fit`` reports.

    Attributes:
        data: the points (one per run).
        settings: the settings used.
        law: the data-constrained law fitted to all runs.
        loo: the law's leave-one-run-out errors, shape (m,).
        replicates: bootstrap replicates' law parameters (empty: no interval).
        comparison: per model key, ``{"fit": FitResult, "loo": errors}`` (the law included).
        selection: which records were fitted (eval, task, split, metric, ...).
    """

    data: FitData
    settings: FitSettings
    law: FitResult
    loo: np.ndarray
    replicates: list[LawParams]
    comparison: dict[str, dict[str, Any]] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> LawParams:
        """The law's parameters."""
        assert isinstance(self.law.params, LawParams)
        return self.law.params

    def r_star_interval(self) -> tuple[float, float]:
        """95% bootstrap-over-seeds interval of R* (nan without replicates)."""
        return interval([p.r_star for p in self.replicates])

    def predict(self, n: float, c: float) -> dict[str, float]:
        """Predicted accuracy at (N, C) with its bootstrap interval."""
        lo, hi = interval([float(p.predict(n, c)) for p in self.replicates])
        return {
            "n": float(n),
            "c": float(c),
            "accuracy": float(self.params.predict(n, c)),
            "ci_low": lo,
            "ci_high": hi,
        }

    def best_n(self, c: float) -> dict[str, float]:
        """Smallest N within epsilon of the best at budget C, with its bootstrap interval."""
        eps = self.settings.epsilon
        out = {"c": float(c), "epsilon": eps, **best_n(self.params, c, eps)}
        lo, hi = interval([best_n(p, c, eps)["n"] for p in self.replicates])
        out.update({"n_ci_low": lo, "n_ci_high": hi})
        return out

    def budgets(self) -> list[float]:
        """The budgets C the answers are given at (the settings' or every C of the study)."""
        return list(self.settings.best_n_at) or sorted({float(c) for c in self.data.c})

    def verdict(self) -> str:
        """One computed sentence: does the law beat the power law in C, and the seed noise?"""
        law = _rmse(self.loo)
        noise, _ = seed_noise(self.data)
        parts = [f"leave-one-run-out RMSE {100 * law:.2f} pp"]
        if math.isfinite(noise):
            parts.append(f"seed noise (pooled std) {100 * noise:.2f} pp")
        power = self.comparison.get("power_c")
        if power is not None:
            p = _rmse(power["loo"])
            better = "better than" if law < p else "no better than"
            parts.append(f"{better} the power law in C ({100 * p:.2f} pp)")
        bad = sum(r["outside"] for r in lack_of_fit(self.data, self.law.residuals))
        conds = len(np.unique(self.data.conditions))
        parts.append(f"{bad} of {conds} conditions off the curve by more than 2 standard errors")
        if "log_r_star" in self.law.at_bounds:
            parts.append("R* ended on a bound of [0.01, 10^4]: the grid does not pin it down")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (numbers as floats, nan as None)."""
        p = self.params
        lo, hi = self.r_star_interval()
        u, r = unique_and_repetitions(self.data.n, self.data.c)
        ceff = effective_images(self.data.n, self.data.c, p.r_star)
        pred = p.predict(self.data.n, self.data.c)
        noise, dof = seed_noise(self.data)
        out: dict[str, Any] = {
            "law": (
                "acc = floor + (ceiling - floor) * sigmoid(slope * (ln C_eff - mid)), "
                "C_eff = U + U R* (1 - exp(-R / R*)), U = min(N, C), R = max(C / N - 1, 0) "
                "(Muennighoff et al. 2023, eq. 5)"
            ),
            "selection": self.selection,
            "settings": {
                "floor": "fit" if self.settings.floor is None else self.settings.floor,
                "n_boot": self.settings.n_boot,
                "seed": self.settings.seed,
                "epsilon": self.settings.epsilon,
                "level": 0.95,
            },
            "runs": len(self.data.y),
            "conditions": int(len(np.unique(self.data.conditions))),
            "params": {
                "r_star": p.r_star,
                "r_star_ci": [lo, hi],
                "half_life_repetitions": p.half_life,
                "ceiling": p.ceiling,
                "floor": p.floor,
                "slope": p.slope,
                "mid": p.mid,
                "at_bounds": self.law.at_bounds,
                "bootstrap_replicates": len(self.replicates),
            },
            "rmse": self.law.rmse,
            "loo_rmse": _rmse(self.loo),
            "loo_mae": float(np.mean(np.abs(self.loo))),
            "seed_noise_std": noise,
            "seed_noise_dof": dof,
            "verdict": self.verdict(),
            "points": [
                {
                    "run": self.data.runs[i],
                    "seed": float(self.data.seeds[i]),
                    "n": float(self.data.n[i]),
                    "c": float(self.data.c[i]),
                    "epochs": float(self.data.c[i] / self.data.n[i]),
                    "unique": float(u[i]),
                    "repetitions": float(r[i]),
                    "c_eff": float(ceff[i]),
                    "accuracy": float(self.data.y[i]),
                    "predicted": float(pred[i]),
                    "residual": float(self.law.residuals[i]),
                    "loo_error": float(self.loo[i]),
                }
                for i in range(len(self.data.y))
            ],
            "lack_of_fit": lack_of_fit(self.data, self.law.residuals),
            "comparison": [
                {
                    "model": key,
                    "label": entry["fit"].model.label,
                    "params": len(entry["fit"].model.names),
                    "rmse": entry["fit"].rmse,
                    "loo_rmse": _rmse(entry["loo"]),
                    "loo_mae": float(np.mean(np.abs(entry["loo"]))),
                    "values": _param_dict(entry["fit"]),
                }
                for key, entry in self.comparison.items()
            ],
            "predictions": [self.predict(n, c) for n, c in self.settings.predict],
            "best_n": [self.best_n(c) for c in self.budgets()],
            "repetitions": {
                str(int(c)) if float(c).is_integer() else str(c): repetition_table(
                    p, c, self.settings.max_epochs
                )
                for c in self.budgets()
            },
        }
        return _clean(out)


def _param_dict(fit: FitResult) -> dict[str, float]:
    params = fit.params
    return {k: float(v) for k, v in vars(params).items()}


def _rmse(errors: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(errors) ** 2)))


def _clean(value: Any) -> Any:
    """nan / inf -> None (strict JSON), numpy scalars -> Python."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def fit_points(
    data: FitData, settings: FitSettings, selection: dict[str, Any] | None = None
) -> FitOutcome:
    """Fit the law (and, with ``settings.compare``, the models it is compared with).

    Raises:
        ConfigError: a grid that cannot identify R* (:func:`check_identifiable`).
    """
    model = law_model(floor=settings.floor)
    check_identifiable(data, model.n_params)
    law = fit_model(model, data)
    loo = leave_one_out(model, data, law)
    reps = bootstrap_over_seeds(model, data, law, settings.n_boot, settings.seed)
    comparison: dict[str, dict[str, Any]] = {"law": {"fit": law, "loo": loo}}
    if settings.compare:
        others = [
            law_model(floor=settings.floor, r_star=math.inf),
            law_model(floor=settings.floor, r_star=0.0),
            power_model(),
        ]
        for other in others:
            fit = fit_model(other, data)
            comparison[other.key] = {"fit": fit, "loo": leave_one_out(other, data, fit)}
    return FitOutcome(
        data=data,
        settings=settings,
        law=law,
        loo=loo,
        replicates=[p for p in reps if isinstance(p, LawParams)],
        comparison=comparison,
        selection=selection or {},
    )


def parse_pairs(items: Sequence[str], option: str) -> tuple[tuple[float, float], ...]:
    """``N,C`` strings -> pairs.

    Raises:
        ConfigError: not two numbers.
    """
    out = []
    for item in items:
        parts = item.replace(" ", "").split(",")
        try:
            n, c = (float(p) for p in parts)
        except ValueError:
            raise ConfigError(option, f"expected N,C (two numbers), got {item!r}") from None
        out.append((n, c))
    return tuple(out)
