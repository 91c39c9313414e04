"""Study-level progress: runs done / running / failed / total, images processed and an ETA.

The state is computed from what is on disk, so it is the same whichever backend runs the jobs
(local processes, Ray workers or SLURM array tasks sharing the study folder):

* ``events.jsonl`` (appended by every worker: ``start`` / ``done`` / ``skipped`` / ``failed``)
  tells which jobs are running now;
* a job is complete when its records exist (:func:`job_complete`), failed when ``failed.json``
  exists;
* images processed are each run's ``images_seen``: from ``summary.json`` when finished, else the
  last line of ``metrics.jsonl`` (the running count).

The ETA extrapolates the images processed since the display started: remaining images / (images
this session / seconds this session). :class:`StudyProgress` renders it as a rich live table on a
terminal and as plain lines otherwise (one per finished job; jobs that run in this process print
their own progress lines, :mod:`divssl.progress`, whose ETA format this module shares).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from rich.console import Console
from rich.live import Live
from rich.table import Table

from divssl.progress import format_eta
from divssl.study.jobs import BaselineJob, JobResult, PlanDoc, PretrainJob, job_dir, record_path

EVENTS_FILE = "events.jsonl"


class Event(TypedDict, total=False):
    """One line of ``events.jsonl``.

    Attributes:
        time: ``time.time()`` when it was appended.
        job: the job id (or ``distances`` / ``baselines``); kind: the job's kind.
        event: ``start``, ``done``, ``skipped`` or ``failed``.
        pid, host: the worker; error, stage: why and where a job failed.
    """

    time: float
    job: str
    kind: str
    event: str
    pid: int
    host: str
    error: str
    stage: str


@dataclass
class ProgressState:
    """A snapshot of a study.

    Attributes:
        total: jobs in the plan.
        done: jobs complete (including ones complete before this session).
        running: jobs started and not finished.
        failed: jobs whose last attempt failed.
        pending: the rest.
        images_total: sum of C over the pretraining runs.
        images_done: images processed so far (finished and running runs).
        rate: images per second during this session (``None`` before any progress).
        eta_seconds: remaining images / rate (``None`` without a rate).
        running_ids: the running jobs.
    """

    total: int
    done: int
    running: int
    failed: int
    pending: int
    images_total: int
    images_done: int
    rate: float | None
    eta_seconds: float | None
    running_ids: list[str] = field(default_factory=list)


def read_events(study_dir: str | Path, since: float = 0.0) -> list[Event]:
    """Events at or after ``since`` (a ``time.time()`` value); torn last lines are skipped."""
    path = Path(study_dir) / EVENTS_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being appended right now
        if float(event.get("time", 0.0)) >= since:
            out.append(event)
    return out


def append_event(study_dir: str | Path, event: Event) -> None:
    """Append one event line (``O_APPEND`` writes of one short line do not interleave)."""
    path = Path(study_dir) / EVENTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps({"time": time.time(), **event}, default=str) + "\n")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def pretrain_done(folder: Path) -> bool:
    """A pretraining run whose ``summary.json`` says completed and whose backbone exists."""
    summary = _read_json(folder / "summary.json")
    if not summary:
        return False
    return summary.get("status") == "completed" and (folder / "backbone.pt").is_file()


def job_complete(study_dir: str | Path, job: PretrainJob | BaselineJob) -> bool:
    """Pretraining finished (for runs) and every evaluation's record written."""
    folder = job_dir(Path(study_dir), job)
    if isinstance(job, PretrainJob) and not pretrain_done(folder):
        return False
    return all(record_path(folder, ev.id).is_file() for ev in job.owed)


def images_processed(folder: Path) -> int:
    """``images_seen`` of a run: final from ``summary.json``, else the last metrics line."""
    summary = _read_json(folder / "summary.json")
    if summary and "images_seen" in summary:
        return int(summary["images_seen"])
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return 0
    for line in reversed(path.read_text().splitlines()):
        try:
            return int(json.loads(line)["images_seen"])
        except (json.JSONDecodeError, KeyError):
            continue
    return 0


def compute_state(
    study_dir: str | Path,
    plan_doc: PlanDoc,
    since: float,
    images_at_start: int,
    now: float | None = None,
) -> ProgressState:
    """The study's state from disk (see the module docstring).

    Args:
        study_dir: the study folder.
        plan_doc: ``plan.json``.
        since: when this session started (``time.time()``).
        images_at_start: images processed when the session started (for the rate).
        now: the current time (default ``time.time()``).
    """
    root = Path(study_dir)
    now = time.time() if now is None else now
    last: dict[str, str] = {}
    for event in read_events(root, since):
        last[str(event["job"])] = str(event["event"])
    done = running = failed = 0
    running_ids = []
    images_total = images_done = 0
    for job in plan_doc.jobs:
        folder = job_dir(root, job)
        if isinstance(job, PretrainJob):
            images_total += job.budget_images
            images_done += min(images_processed(folder), job.budget_images)
        if job_complete(root, job):
            done += 1
        elif last.get(job.id) == "start":
            running += 1
            running_ids.append(job.id)
        elif (folder / "failed.json").is_file():
            failed += 1
    total = len(plan_doc.jobs)
    gained = images_done - images_at_start
    elapsed = now - since
    rate = gained / elapsed if gained > 0 and elapsed > 0 else None
    eta = (images_total - images_done) / rate if rate else None
    return ProgressState(
        total,
        done,
        running,
        failed,
        total - done - running - failed,
        images_total,
        images_done,
        rate,
        eta,
        running_ids,
    )


def total_images_done(study_dir: str | Path, plan_doc: PlanDoc) -> int:
    """Images processed by all pretraining runs of the plan so far."""
    root = Path(study_dir)
    return sum(min(images_processed(job_dir(root, j)), j.budget_images) for j in plan_doc.runs)


def state_line(state: ProgressState) -> str:
    """One plain-text line of the state."""
    return (
        f"runs {state.done}/{state.total} done, {state.running} running, "
        f"{state.failed} failed | images {state.images_done:,}/{state.images_total:,}"
        + (f" ({state.rate:,.0f} img/s)" if state.rate else "")
        + f" | ETA {format_eta(state.eta_seconds)}"
    )


class StudyProgress:
    """Live display of a study while its backend runs (a rich table on a terminal).

    Args:
        study_dir: the study folder.
        plan_doc: ``plan.json``.
        console: rich console; a live table when it is a terminal, plain lines otherwise.
        live: allow the live table (off when jobs run in this process: their own progress bars
            would fight it for the terminal).
    """

    def __init__(
        self, study_dir: str | Path, plan_doc: PlanDoc, console: Console, live: bool = True
    ) -> None:
        self.study_dir = Path(study_dir)
        self.plan_doc = plan_doc
        self.console = console
        self.allow_live = live
        self.since = time.time()
        self.images_at_start = total_images_done(self.study_dir, plan_doc)
        self.live: Live | None = None

    def state(self) -> ProgressState:
        """The current state."""
        return compute_state(self.study_dir, self.plan_doc, self.since, self.images_at_start)

    def table(self) -> Table:
        """Rich table of the current state."""
        s = self.state()
        table = Table(title=f"study {self.plan_doc.study}")
        for col in ("done", "running", "failed", "pending", "total", "images", "img/s", "ETA"):
            table.add_column(col, justify="right")
        table.add_row(
            str(s.done),
            str(s.running),
            str(s.failed),
            str(s.pending),
            str(s.total),
            f"{s.images_done:,}/{s.images_total:,}",
            f"{s.rate:,.0f}" if s.rate else "-",
            format_eta(s.eta_seconds),
        )
        return table

    def __enter__(self) -> StudyProgress:
        if self.allow_live and self.console.is_terminal:
            self.live = Live(
                get_renderable=self.table,
                console=self.console,
                refresh_per_second=1,
                transient=False,
            )
            self.live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def job_finished(self, result: JobResult) -> None:
        """Print a plain line per finished job unless the live table shows it."""
        if self.live is None:
            text = f"[{result.get('status')}] {result.get('kind', 'job')} {result.get('id')}"
            if result.get("error"):
                text += f": {result['error']}"
            self.console.print(
                text + " | " + state_line(self.state()), markup=False, highlight=False
            )
