"""``divssl plan | run | results | quickstart``: studies from the command line.

The top-level CLI (:mod:`divssl.cli`) merges these commands into ``divssl``. Bad input raises
:class:`~divssl.errors.ConfigError` (exit code 2, nothing written); ``divssl run`` exits with 1
when a job failed (the other jobs still ran; ``failed.json`` in the run folder says why).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

# The study modules (plan, runner, results) import torch and pandas; `divssl --help` imports this
# module to list the commands, so each command imports them when it runs (deferred on purpose).

app = typer.Typer(no_args_is_help=True, add_completion=False)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a study parameter: NAME=VALUE (repeatable)"),
]
OutOption = Annotated[
    Path | None, typer.Option("--out", help="study folder (default: the spec's out or runs/NAME)")
]


def _console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr)
    if not console.is_terminal:
        console = Console(stderr=stderr, width=200)  # piped: wide lines, not 80 columns
    return console


def _print_plan(plan: Any, console: Console) -> None:
    from divssl.study.plan import plan_summary, plan_table

    console.print(plan_table(plan))
    for line in plan_summary(plan):
        console.print(line, markup=False, highlight=False)


@app.command("plan")
def plan_command(
    study: Annotated[Path, typer.Argument(help="study spec (YAML)")],
    set_: SetOption = None,
    out: OutOption = None,
    measure: Annotated[
        bool, typer.Option("--measure/--no-measure", help="time real steps of each model here")
    ] = True,
    measure_steps: Annotated[int, typer.Option(help="timed steps per model")] = 5,
    measure_warmup: Annotated[int, typer.Option(help="untimed warm-up steps per model")] = 2,
    measure_batch: Annotated[
        int | None, typer.Option(help="images per timed step (default: the run's batch)")
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
) -> None:
    """Expand STUDY.yaml into runs: C, N, E, D, steps, PFLOPs and a measured time estimate.

    Writes nothing except the throughput cache (STUDY_DIR/throughput.json, with --measure).
    """
    from divssl.study.plan import build_plan, measure_plan
    from divssl.study.spec import load_study

    plan = build_plan(load_study(study, set_ or []), out)
    if measure:
        measure_plan(plan, device, measure_steps, measure_warmup, measure_batch)
    _print_plan(plan, _console())


@app.command("run")
def run_command(
    study: Annotated[Path, typer.Argument(help="study spec (YAML)")],
    backend: Annotated[str, typer.Option(help="local | ray | slurm")] = "local",
    out: OutOption = None,
    set_: SetOption = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: start a local Ray)")
    ] = None,
    executor: Annotated[
        str, typer.Option(help="SLURM backend: slurm (sbatch arrays) | local (submitit local)")
    ] = "slurm",
    workers: Annotated[
        int | None, typer.Option(help="local backend: parallel worker processes")
    ] = None,
) -> None:
    """Run every job of STUDY.yaml (skipping finished ones, resuming interrupted ones)."""
    from divssl.study.plan import build_plan
    from divssl.study.spec import load_study

    plan = build_plan(load_study(study, set_ or []), out)
    outcome = _run(plan, backend, address, executor, workers)
    if outcome.failed:
        raise typer.Exit(1)


def _run(plan: Any, backend: str, address: str | None, executor: str, workers: int | None) -> Any:
    from divssl.study.runner import run_study

    console = _console()
    _print_plan(plan, console)
    outcome = run_study(
        plan,
        backend,
        address=address,
        executor=executor,
        workers=workers,
        console=_console(stderr=True),
    )
    console.print(
        f"{outcome.count('done')} done, {outcome.count('skipped')} already complete, "
        f"{outcome.count('locked')} run by another runner, {len(outcome.failed)} failed; "
        f"{outcome.rows} result rows -> {outcome.study_dir / 'results.parquet'}",
        markup=False,
        highlight=False,
    )
    for failure in outcome.failed:
        console.print(
            f"failed {failure['id']}: {failure.get('error')}", markup=False, highlight=False
        )
    if outcome.distances_error:
        console.print(f"distances not computed: {outcome.distances_error}", markup=False)
    if outcome.vendi_error:
        console.print(f"Vendi scores not computed: {outcome.vendi_error}", markup=False)
    return outcome


@app.command("results")
def results_command(
    study_dir: Annotated[Path, typer.Argument(help="study folder")],
    where: Annotated[
        list[str] | None, typer.Option("--where", help="filter KEY=VALUE (repeatable)")
    ] = None,
    export: Annotated[
        Path | None, typer.Option("--export", help="write the filtered rows (.csv | .parquet)")
    ] = None,
    raw: Annotated[bool, typer.Option(help="print rows instead of the mean over seeds")] = False,
    limit: Annotated[int, typer.Option(help="rows printed at most")] = 200,
) -> None:
    """Print a study's results (mean, 95% t-interval and n over seeds) and export them."""
    from divssl.study.jobs import read_plan
    from divssl.study.results import export_results, filter_results, load_results, summarize

    read_plan(study_dir)  # a clear error for a folder that is not a study
    frame = filter_results(load_results(study_dir), where or [])
    console = _console()
    shown = frame if raw else summarize(frame)
    console.print(_frame_table(shown, limit, f"{len(frame)} rows of {study_dir}"))
    if export is not None:
        path = export_results(frame, export)
        console.print(f"exported {len(frame)} rows -> {path}", markup=False, highlight=False)


def _frame_table(frame: Any, limit: int, title: str) -> Any:
    """Rows as a rich table; columns with one value for every row go to the caption."""
    from rich.table import Table

    from divssl.study.results import format_cell

    table = Table(title=title)
    if frame.empty:
        table.add_column("no results yet")
        return table
    present = [c for c in frame.columns if frame[c].notna().any()]
    fixed = [c for c in present if frame[c].nunique(dropna=False) == 1 and len(frame) > 1]
    cols = [c for c in present if c not in fixed]
    for col in cols:
        table.add_column(str(col), overflow="fold")
    for _, row in frame.head(limit).iterrows():
        table.add_row(*[format_cell(row[c]) for c in cols])
    notes = [", ".join(f"{c}={format_cell(frame[c].iloc[0])}" for c in fixed)] if fixed else []
    if len(frame) > limit:
        notes.append(f"first {limit} of {len(frame)} rows (use --export for all)")
    table.caption = "; ".join(notes) or None
    return table


def quickstart_spec() -> Path:
    """The packaged ``quickstart.yaml``."""
    from importlib.resources import files

    return Path(str(files("divssl").joinpath("studies/quickstart.yaml")))


@app.command("quickstart")
def quickstart_command(
    out: Annotated[Path, typer.Option("--out", help="study folder")] = Path("runs/quickstart"),
    backend: Annotated[str, typer.Option(help="local | ray | slurm")] = "local",
    workers: Annotated[int | None, typer.Option(help="local worker processes")] = None,
) -> None:
    """The embedded demo: diversity at fixed compute, B vs B+A_in vs B+A_out, compute- vs
    epoch-normalized baselines and ID vs OOD, on the procedural world (minutes on a laptop)."""
    from divssl.study.plan import build_plan
    from divssl.study.spec import load_study

    plan = build_plan(load_study(quickstart_spec()), out)
    outcome = _run(plan, backend, None, "local", workers)
    console = _console()
    try:
        from divssl.report import build_report
    except ImportError:  # the report is optional here: no report module, no report lines
        paths: dict[str, Path] = {}
    else:
        paths = dict(build_report(outcome.study_dir)) if outcome.rows else {}
    for name, path in paths.items():
        console.print(f"report {name}: {path}", markup=False, highlight=False)
    if outcome.failed:
        raise typer.Exit(1)
