"""Downstream evaluation: tasks, cached features, linear probe, kNN, fine-tuning, robustness, stats.

Plain-Python entry points for the study runner: :func:`run_linear`, :func:`run_knn`,
:func:`run_finetune` (each returns the results dict it writes to ``RUN_DIR/eval``). The command
line is ``divssl eval {linear,knn,finetune}`` (:mod:`divssl.evaluate.cli`).
"""

from divssl.evaluate.finetune import run_finetune
from divssl.evaluate.knn import knn_scores, run_knn
from divssl.evaluate.linear import label_fraction_indices, run_linear
from divssl.evaluate.robustness import bootstrap_band, effective_robustness, fit_baseline
from divssl.evaluate.stats import bootstrap_ci, paired_bootstrap, seed_summary
from divssl.evaluate.tasks import Task, open_task

__all__ = [
    "Task",
    "bootstrap_band",
    "bootstrap_ci",
    "effective_robustness",
    "fit_baseline",
    "knn_scores",
    "label_fraction_indices",
    "open_task",
    "paired_bootstrap",
    "run_finetune",
    "run_knn",
    "run_linear",
    "seed_summary",
]
