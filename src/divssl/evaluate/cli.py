"""``divssl eval {linear,knn,finetune}``: evaluate a run on a task and write its results JSON.

Each command writes ``RUN_DIR/eval/<kind>_<taskslug>.json`` atomically (``--out DIR`` to write
elsewhere; required for ``--init random`` without ``--run``), prints a table of the numbers with
their bootstrap intervals, and says whether the cached features were reused. The options of each
command are generated from its settings model (:mod:`divssl.evaluate.settings`) and
:class:`~divssl.evaluate.settings.RunOptions`, so the CLI, study specs and the Python functions
share one set of defaults and ranges. Bad input raises
:class:`~divssl.errors.ConfigError`, which the top-level ``divssl`` command maps to exit code 2.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from divssl.evaluate.settings import (
    FinetuneSettings,
    KnnSettings,
    LinearSettings,
    RunOptions,
)
from divssl.options import settings_command
from divssl.progress import run_with_activity

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console()

TASK = inspect.Parameter(
    "task",
    inspect.Parameter.KEYWORD_ONLY,
    annotation=Annotated[
        str,
        typer.Option("--task", help="task YAML file or pool spec with splits (world:classes=10)"),
    ],
)
RUN = inspect.Parameter(
    "run",
    inspect.Parameter.KEYWORD_ONLY,
    default=None,
    annotation=Annotated[Path | None, typer.Option("--run", help="pretraining run directory")],
)


def _fmt(interval: dict[str, Any] | None) -> str:
    if not interval or interval.get("value") is None:
        return "-"
    low, high = interval.get("ci_low"), interval.get("ci_high")
    text = f"{100 * interval['value']:.2f}"
    if low is not None and high is not None:
        text += f" [{100 * low:.1f}, {100 * high:.1f}]"
    return text


def _cache_line(result: dict[str, Any]) -> str:
    parts = [
        f"{split}: {'hit' if rec['cache_hit'] else 'computed'}"
        for split, rec in result.get("feature_cache", {}).items()
    ]
    return "feature cache - " + ", ".join(parts) if parts else ""


def _print_rows(
    title: str,
    keys: list[str],
    rows: list[dict[str, Any]],
    num_classes: int,
    footer: str,
) -> None:
    """One table row per (result, split); top-5 only where K > 5 (else it is always 100%)."""
    metrics = ["top1", "top5", "macro_f1"] if num_classes > 5 else ["top1", "macro_f1"]
    table = Table(title=title)
    for key in [*keys, "split"]:
        table.add_column(key, justify="right")
    for metric in metrics:
        table.add_column(f"{metric} % [CI]", justify="right")
    for row in rows:
        for split in ("test", "ood"):
            if split in row:
                cells = [str(row[k]) for k in keys] + [split]
                table.add_row(*cells, *[_fmt(row[split].get(m)) for m in metrics])
    console.print(table)
    if footer:
        console.print(footer)


def _linear(settings: LinearSettings, options: RunOptions, task: str, run: Path | None) -> None:
    from divssl.evaluate.linear import run_linear  # torch: deferred so `divssl --help` stays fast

    result = run_with_activity(  # a spinner on a terminal, lines in a log
        f"linear probe on {task}", run_linear, run, task, settings, options
    )
    rows = [{**r, "chosen": _setting(r["chosen"])} for r in result["results"]]
    _print_rows(
        f"linear probe ({result['protocol']}) on {result['task']['name']}",
        ["fraction", "n_train", "chosen"],
        rows,
        result["num_classes"],
        _cache_line(result),
    )
    console.print(f"wrote {result['path']}")


def _setting(chosen: dict[str, Any]) -> str:
    text = f"wd={chosen['weight_decay']:g}"
    if chosen.get("lr") is not None:
        text += f" lr={chosen['lr']:g}"
    return text


def _knn(settings: KnnSettings, options: RunOptions, task: str, run: Path | None) -> None:
    from divssl.evaluate.knn import run_knn  # torch: deferred so `divssl --help` stays fast

    result = run_with_activity(  # a spinner on a terminal, lines in a log
        f"kNN on {task}", run_knn, run, task, settings, options
    )
    _print_rows(
        f"kNN on {result['task']['name']}",
        ["fraction", "k"],
        result["results"],
        result["num_classes"],
        _cache_line(result),
    )
    console.print(f"wrote {result['path']}")


def _finetune(settings: FinetuneSettings, options: RunOptions, task: str, run: Path | None) -> None:
    from divssl.evaluate.finetune import run_finetune  # torch: deferred (`divssl --help`)

    result = run_finetune(run, task, settings, options)
    rows = [{**p, "epoch": f"{p['epoch']:.2f}"} for p in result["points"]]
    _print_rows(
        f"fine-tuning on {result['task']['name']}",
        ["step", "epoch"],
        rows,
        result["num_classes"],
        "",
    )
    console.print(f"wrote {result['path']}")


# Each command's options are generated from its settings model and RunOptions (divssl.options).
app.command("linear")(
    settings_command(
        [LinearSettings, RunOptions],
        [TASK, RUN],
        _linear,
        "Linear probe (L-BFGS sweep on cached features, or SGD on images) at label fractions.",
    )
)
app.command("knn")(
    settings_command(
        [KnnSettings, RunOptions],
        [TASK, RUN],
        _knn,
        "Weighted kNN (cosine, exp(sim/T) votes) on cached features.",
    )
)
app.command("finetune")(
    settings_command(
        [FinetuneSettings, RunOptions],
        [TASK, RUN],
        _finetune,
        "Full fine-tuning with a linear head; ID and OOD metrics at evenly spaced points.",
    )
)
