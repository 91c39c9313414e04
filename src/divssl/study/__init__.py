"""Studies: spec -> plan -> jobs on a backend (local, Ray, SLURM) -> results store.

Python entry points: :func:`load_study` (spec file -> validated :class:`Study`),
:func:`build_plan` (-> :class:`Plan`: runs with C, N, E, D, hashes, FLOPs), :func:`measure_plan`
(measured throughput), :func:`run_study` (-> :class:`StudyOutcome`), :func:`load_results`
(``results.parquet`` as a DataFrame). The command line is ``divssl plan | run | results |
quickstart`` (:mod:`divssl.study.cli`).
"""

from divssl.study.plan import Plan, PlannedRun, build_plan, measure_plan
from divssl.study.results import filter_results, load_results, summarize, write_results
from divssl.study.runner import StudyOutcome, execute_job, run_study
from divssl.study.spec import Study, load_study, study_from_tree

__all__ = [
    "Plan",
    "PlannedRun",
    "Study",
    "StudyOutcome",
    "build_plan",
    "execute_job",
    "filter_results",
    "load_results",
    "load_study",
    "measure_plan",
    "run_study",
    "study_from_tree",
    "summarize",
    "write_results",
]
