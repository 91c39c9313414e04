"""The data-constrained fit (``divssl fit STUDY_DIR``): how many unique images a budget needs.

Accuracy is modelled as a logistic in the log of *effective images*
C_eff(N, C) = U + U R* (1 - exp(-R / R*)) (Muennighoff et al. 2023), fitted by least squares,
with a bootstrap interval over seeds for R*, residuals, a leave-one-run-out check and a comparison
with a plain power law in C. :mod:`divssl.fit.law` holds the formulas, :mod:`divssl.fit.fitting`
the estimation, :mod:`divssl.fit.select` the reading of a study's results and
:mod:`divssl.fit.analysis` the whole fit.
"""

from divssl.fit.analysis import FitOutcome, FitSettings, fit_points
from divssl.fit.fitting import FitData, check_identifiable
from divssl.fit.law import LawParams, PowerLawParams, effective_images, repetition_value
from divssl.fit.select import Selection, load_study_results, points_from_arrays, select_points

__all__ = [
    "FitData",
    "FitOutcome",
    "FitSettings",
    "LawParams",
    "PowerLawParams",
    "Selection",
    "check_identifiable",
    "effective_images",
    "fit_points",
    "load_study_results",
    "points_from_arrays",
    "repetition_value",
    "select_points",
]
