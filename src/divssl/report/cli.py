"""``divssl report STUDY_DIR [--out DIR]``: write the study's HTML and Markdown report.

``app`` holds the single command ``report``; :mod:`divssl.cli` mounts it as a top-level command.
Bad input (no study folder, no results, unknown section) raises
:class:`~divssl.errors.ConfigError`, which ``divssl`` maps to exit code 2 before anything is
written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from divssl.report import build_report  # light: the builders' heavy imports are deferred there

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()


@app.command()
def report(
    study_dir: Annotated[Path, typer.Argument(help="study folder (holds results.parquet)")],
    out: Annotated[
        Path | None, typer.Option("--out", help="output folder (default STUDY_DIR/report)")
    ] = None,
) -> None:
    """HTML + Markdown report (tables, figures, intervals) computed from a study's results."""
    paths = build_report(study_dir, out)
    figures = sum(1 for k in paths if k.startswith("figures/") and k.endswith(".svg"))
    tables = sum(1 for k in paths if k.startswith("tables/"))
    console.print(f"report: {figures} figures, {tables} tables")
    print(paths["html"])
    print(paths["markdown"])
