"""The ``divssl`` command line: one typed function per command.

Exit codes: 0 success; 2 bad input (the message names the field; nothing is written); 1 a run that
failed at run time (e.g. a non-finite loss; the run dir records the diagnosis).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from divssl.errors import ConfigError, RunFailed

app = typer.Typer(
    help="divssl: compute-normalized studies of pretraining data diversity.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


_MOUNTED: list[bool] = []


def _mount_subcommands() -> None:
    if _MOUNTED:  # main() may run more than once in a process (tests): mount once
        return
    _MOUNTED.append(True)
    from divssl.data.cli import app as data_app
    from divssl.data.cli_prep import app as prep_app
    from divssl.distances.cli import app as distance_app
    from divssl.evaluate.cli import app as eval_app
    from divssl.fit.cli import app as fit_app
    from divssl.report.cli import app as report_app
    from divssl.study.cli import app as study_app

    data_app.registered_commands.extend(prep_app.registered_commands)
    app.add_typer(data_app, name="data", help="Inspect, generate, subset and relabel pools.")
    app.add_typer(eval_app, name="eval", help="Linear probe, kNN and fine-tuning of a run.")
    app.registered_commands.extend(distance_app.registered_commands)
    app.registered_commands.extend(report_app.registered_commands)
    app.registered_commands.extend(study_app.registered_commands)
    app.registered_commands.extend(fit_app.registered_commands)


@app.command()
def pretrain(
    overrides: Annotated[
        list[str] | None, typer.Argument(help="KEY=VALUE overrides, e.g. budget.images=50000")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML experiment file")] = None,
    resume: Annotated[bool, typer.Option(help="continue from the run's last checkpoint")] = False,
) -> None:
    """One budgeted pretraining run -> run dir (config.yaml, summary.json, backbone.pt, ...)."""
    from divssl import distributed as dist
    from divssl.pretrain.config import load_config
    from divssl.pretrain.loop import pretrain as run_pretrain
    from divssl.pretrain.loop import read_summary

    cfg = load_config(config, overrides or [])
    try:
        run_dir = run_pretrain(cfg, resume=resume)
        is_main = dist.rank() == 0  # under torchrun only rank 0 writes and reports the run
    finally:
        dist.cleanup()  # under torchrun: gloo threads left running abort the rank at exit
    if not is_main:
        return
    summary = read_summary(run_dir)
    table = Table(title=f"run {run_dir}")
    table.add_column("field")
    table.add_column("value", justify="right")
    for key in (
        "method",
        "backbone",
        "budget_images",
        "images_seen",
        "unique_images",
        "epochs",
        "diversity",
        "steps",
        "flops_per_image",
        "total_flops",
        "wall_seconds",
        "images_per_second",
        "status",
    ):
        value = summary.get(key)
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    Console().print(table)
    print(run_dir)


@app.command()
def recipes(
    method: Annotated[str | None, typer.Option(help="only this method")] = None,
    recipe: Annotated[
        str | None, typer.Option(help="only this recipe: cifar, imagenet100, imagenet or small")
    ] = None,
    markdown: Annotated[bool, typer.Option(help="print docs/recipes.md's Markdown")] = False,
) -> None:
    """The recipe table: every hyperparameter of each method at each scale, with its source."""
    from divssl.pretrain.recipes import recipe_rows, recipes_markdown

    if markdown:
        sys.stdout.write(recipes_markdown(method, recipe))
        return
    rows = recipe_rows(method, recipe)
    table = Table(title="divssl recipes (docs/recipes.md)")
    for col in ("method", "recipe", "key", "value", "source", "note"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(row[c] for c in ("method", "recipe", "key", "value", "source", "note")))
    Console(width=200).print(table)


def main() -> None:
    """Console entry point mapping errors to exit codes."""
    _mount_subcommands()
    try:
        app(standalone_mode=False)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)
    except RunFailed as exc:
        console.print(f"[red]run failed:[/red] {exc}")
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click usage errors raised in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
