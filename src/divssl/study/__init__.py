"""Studies: spec -> plan -> jobs on a backend (local, Ray, SLURM) -> results store.

Python entry points: :func:`load_study` (spec file -> validated :class:`Study`),
:func:`build_plan` (-> :class:`Plan`: runs with C, N, E, D, hashes, FLOPs), :func:`measure_plan`
(measured throughput), :func:`run_study` (-> :class:`StudyOutcome`), :func:`load_results`
(``results.parquet`` as a DataFrame). The command line is ``divssl plan | run | results |
quickstart`` (:mod:`divssl.study.cli`).

The typed objects that cross the seams: the evaluation settings models a study embeds
(:mod:`divssl.evaluate.settings`, :mod:`divssl.distances.settings`), the jobs of ``plan.json``
(:class:`PlanDoc`, :class:`PretrainJob`, :class:`BaselineJob`, :mod:`divssl.study.jobs`) that
every backend's worker (:func:`execute_job`, :mod:`divssl.study.worker`) reads back, and one
results row (:class:`ResultRecord`, :mod:`divssl.study.results`) that the report reads.
"""

from divssl.study.jobs import BaselineJob, PlanDoc, PretrainJob, read_plan
from divssl.study.plan import Plan, PlannedRun, build_plan, measure_plan
from divssl.study.results import (
    ResultRecord,
    filter_results,
    load_results,
    summarize,
    write_results,
)
from divssl.study.runner import StudyOutcome, run_study
from divssl.study.spec import Study, load_study, study_from_tree
from divssl.study.worker import execute_job

__all__ = [
    "BaselineJob",
    "Plan",
    "PlanDoc",
    "PlannedRun",
    "PretrainJob",
    "ResultRecord",
    "Study",
    "StudyOutcome",
    "build_plan",
    "execute_job",
    "filter_results",
    "load_results",
    "load_study",
    "measure_plan",
    "read_plan",
    "run_study",
    "study_from_tree",
    "summarize",
    "write_results",
]
