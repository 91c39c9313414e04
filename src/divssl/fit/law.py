"""The data-constrained law: effective images and the saturating accuracy curve.

Muennighoff et al. 2023 (*Scaling Data-Constrained Language Models*, NeurIPS, eq. 5) value
repeated data as *effective data*::

    C_eff(N, C) = U + U R* (1 - exp(-R / R*)),   U = min(N, C),   R = max(C / N - 1, 0)

with U the unique images seen, R = E - 1 the repetitions (E = C / N epochs) and R* the fitted
repetition decay: the r-th repetition of an image is worth R* (exp(-(r-1)/R*) - exp(-r/R*)) of a
fresh image, a half-life of R* ln 2 repetitions. R* -> infinity gives C_eff = C (repeats as good
as fresh images), R* -> 0 gives C_eff = U (repeats worthless). A run with N > C sees only C unique
images (U = C, R = 0).

The paper maps effective data to a loss with a power law; a probe's accuracy is bounded, so here
accuracy is a logistic in log C_eff between a floor and a fitted ceiling::

    acc(N, C) = floor + (ceiling - floor) * sigmoid(slope * (ln C_eff - mid))

(parameters ``r_star, ceiling, floor, slope, mid``; the floor can be fixed, e.g. at chance or at a
random-init encoder's accuracy). The plain power law in C the fit is compared with is
``acc(C) = ceiling - scale * C^(-alpha)``: it ignores N.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit

Array = NDArray[np.float64]


def unique_and_repetitions(n: ArrayLike, c: ArrayLike) -> tuple[Array, Array]:
    """Unique images seen U = min(N, C) and repetitions R = max(C / N - 1, 0).

    Args:
        n: unique images N of the pretraining set, shape (m,) or scalar, > 0.
        c: budget C (source images processed), same shape, > 0.

    Returns:
        (U, R), each of the broadcast shape.
    """
    n_arr = np.asarray(n, dtype=np.float64)
    c_arr = np.asarray(c, dtype=np.float64)
    return np.minimum(n_arr, c_arr), np.maximum(c_arr / n_arr - 1.0, 0.0)


def effective_images(n: ArrayLike, c: ArrayLike, r_star: float) -> Array:
    """C_eff = U + U R* (1 - exp(-R / R*)) (Muennighoff et al. 2023, eq. 5).

    Args:
        n: unique images N, shape (m,) or scalar.
        c: budget C, same shape.
        r_star: repetition decay R* >= 0 (``np.inf`` gives C_eff = C, ``0`` gives C_eff = U).

    Returns:
        Effective images, shape (m,) or scalar.
    """
    u, r = unique_and_repetitions(n, c)
    if np.isinf(r_star):
        return u * (1.0 + r)
    if r_star == 0.0:
        return u
    # -expm1(-x) = 1 - exp(-x), exact for small x
    return u + u * r_star * -np.expm1(-r / r_star)


def repetition_value(r: ArrayLike, r_star: float) -> Array:
    """Worth of one image in its r-th repetition relative to a fresh image.

    Going from R = r - 1 to R = r adds U images to C and U R* (e^{-(r-1)/R*} - e^{-r/R*}) to
    C_eff, so each repeated image is worth R* (e^{-(r-1)/R*} - e^{-r/R*}).

    Args:
        r: repetition number(s), r >= 1.
        r_star: repetition decay R*.
    """
    r_arr = np.asarray(r, dtype=np.float64)
    if np.isinf(r_star):
        return np.ones_like(r_arr)
    if r_star == 0.0:
        return np.zeros_like(r_arr)
    return r_star * (np.exp(-(r_arr - 1.0) / r_star) - np.exp(-r_arr / r_star))


@dataclass(frozen=True)
class LawParams:
    """Parameters of the data-constrained logistic law.

    Attributes:
        r_star: repetition decay R* (repetitions; ``inf`` = repeats as good as fresh images).
        ceiling: accuracy as C_eff -> infinity, in [0, 1].
        floor: accuracy as C_eff -> 0, in [0, 1].
        slope: logistic slope per unit of ln C_eff (>= 0).
        mid: ln C_eff at the curve's midpoint.
    """

    r_star: float
    ceiling: float
    floor: float
    slope: float
    mid: float

    def accuracy_at(self, c_eff: ArrayLike) -> Array:
        """acc = floor + (ceiling - floor) sigmoid(slope (ln C_eff - mid)); C_eff shape (m,)."""
        x = np.log(np.asarray(c_eff, dtype=np.float64))
        return self.floor + (self.ceiling - self.floor) * expit(self.slope * (x - self.mid))

    def predict(self, n: ArrayLike, c: ArrayLike) -> Array:
        """Predicted accuracy for unique images ``n`` and budget ``c`` (shape (m,) or scalar)."""
        return self.accuracy_at(effective_images(n, c, self.r_star))

    @property
    def half_life(self) -> float:
        """Repetitions after which a repeated image is worth half a fresh one: R* ln 2."""
        return float(self.r_star * np.log(2.0))


@dataclass(frozen=True)
class PowerLawParams:
    """``acc(C) = ceiling - scale * C^(-alpha)``: the plain power law in C (ignores N).

    Attributes:
        ceiling: accuracy as C -> infinity.
        scale: amplitude (>= 0).
        alpha: exponent (>= 0).
    """

    ceiling: float
    scale: float
    alpha: float

    def predict(self, n: ArrayLike, c: ArrayLike) -> Array:
        """Predicted accuracy (``n`` is ignored but broadcast), shape (m,) or scalar."""
        c_arr = np.asarray(c, dtype=np.float64) + 0.0 * np.asarray(n, dtype=np.float64)
        return self.ceiling - self.scale * np.power(c_arr, -self.alpha)
