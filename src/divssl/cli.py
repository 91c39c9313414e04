"""The ``divssl`` command line: one typed function per command.

Exit codes: 0 success; 2 bad input (the message names the field; nothing is written); 1 a run that
failed at run time (e.g. a non-finite loss; the run dir records the diagnosis).

Stage commands are loaded on use: :data:`LAZY_COMMANDS` names the module of each one, and
``divssl --help`` lists them from that table without importing a stage (no torch, pandas or
matplotlib before the help text). The command functions of this module import their stage when
called.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from divssl.errors import ConfigError, RunFailed

# name -> (module with a typer `app`, "group" to mount that app under the name or "command" to
# take its command of that name, the help line `divssl --help` shows). The help lines equal the
# commands' own (tests/test_cli.py checks), in the order `divssl --help` lists them.
LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "distance": (
        "divssl.distances.cli",
        "command",
        "FID / KID / VisualDNA between every --a pool and every --b pool; Vendi score of each.",
    ),
    "report": (
        "divssl.report.cli",
        "command",
        "HTML + Markdown report (tables, figures, intervals) computed from a study's results.",
    ),
    "plan": (
        "divssl.study.cli",
        "command",
        "Expand STUDY.yaml into runs: C, N, E, D, steps, PFLOPs and a measured time estimate.",
    ),
    "run": (
        "divssl.study.cli",
        "command",
        "Run every job of STUDY.yaml (skipping finished ones, resuming interrupted ones).",
    ),
    "results": (
        "divssl.study.cli",
        "command",
        "Print a study's results (mean, 95% t-interval and n over seeds) and export them.",
    ),
    "quickstart": (
        "divssl.study.cli",
        "command",
        "The embedded demo: diversity at fixed compute, B vs B+A_in vs B+A_out, compute- vs "
        "epoch-normalized baselines and ID vs OOD, on the procedural world (minutes on a laptop).",
    ),
    "fit": (
        "divssl.fit.cli",
        "command",
        "Fit accuracy = logistic(ln C_eff(N, C)) with repetition decay R* (Muennighoff et al.).",
    ),
    "data": ("divssl.data.cli", "group", "Inspect, generate, subset and relabel pools."),
    "eval": ("divssl.evaluate.cli", "group", "Linear probe, kNN and fine-tuning of a run."),
}


def load_command(name: str) -> Any:
    """The click command of a lazy stage command (importing its stage).

    Raises:
        KeyError: ``name`` is not in :data:`LAZY_COMMANDS`.
    """
    module_name, kind, help_line = LAZY_COMMANDS[name]
    sub_app = importlib.import_module(module_name).app
    if kind == "group":
        if name == "data":  # `divssl data` also holds the preparation commands (subset, ...)
            from divssl.data.cli_prep import app as prep_app

            known = {_command_name(c) for c in sub_app.registered_commands}
            sub_app.registered_commands.extend(
                c for c in prep_app.registered_commands if _command_name(c) not in known
            )
        group = typer.main.get_group(sub_app)
        group.name, group.help = name, help_line
        return group
    commands = typer.main.get_group(_single_app(sub_app)).commands
    return commands[name]


def _command_name(info: typer.models.CommandInfo) -> str:
    return info.name or (info.callback.__name__ if info.callback else "")


def _single_app(sub_app: typer.Typer) -> typer.Typer:
    # A typer app of one command builds a bare command, not a group; wrap it so that the
    # command is found by name either way.
    wrapper = typer.Typer()
    wrapper.registered_commands.extend(sub_app.registered_commands)
    wrapper.callback()(lambda: None)
    return wrapper


class LazyGroup(TyperGroup):
    """The top-level group: its own commands plus :data:`LAZY_COMMANDS`, imported on use."""

    # Contexts and commands are typer's own click classes (typer vendors click), hence `Any`.
    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *LAZY_COMMANDS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        own = super().get_command(ctx, cmd_name)
        if own is not None or cmd_name not in LAZY_COMMANDS:
            return own
        # For listings (help): a stub with the help line; resolve_command loads the real one.
        help_line = LAZY_COMMANDS[cmd_name][2]
        return TyperCommand(cmd_name, help=help_line, short_help=help_line)

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name = str(args[0]) if args else None
        if name in LAZY_COMMANDS and name not in self.commands:
            self.add_command(load_command(name), name)
        return super().resolve_command(ctx, args)


app = typer.Typer(
    cls=LazyGroup,
    help="divssl: compute-normalized studies of pretraining data diversity.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


@app.command()
def pretrain(
    overrides: Annotated[
        list[str] | None, typer.Argument(help="KEY=VALUE overrides, e.g. budget.images=50000")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML experiment file")] = None,
    resume: Annotated[bool, typer.Option(help="continue from the run's last checkpoint")] = False,
    step_limit: Annotated[
        int | None,
        typer.Option(
            "--step-limit",
            help="stop after this many steps in total, with a checkpoint (status interrupted; "
            "continue with --resume): for time-sliced cluster jobs",
        ),
    ] = None,
) -> None:
    """One budgeted pretraining run -> run dir (config.yaml, summary.json, backbone.pt, ...)."""
    from divssl import distributed as dist
    from divssl.pretrain.config import config_to_dict, load_config
    from divssl.pretrain.loop import pretrain as run_pretrain
    from divssl.pretrain.loop import read_summary

    cfg = load_config(config, overrides or [])
    try:
        run_dir = run_pretrain(cfg, resume=resume, step_limit=step_limit)
        is_main = dist.rank() == 0  # under torchrun only rank 0 writes and reports the run
    finally:
        dist.cleanup()  # under torchrun: gloo threads left running abort the rank at exit
    if not is_main:
        return
    if cfg.tracking == "mlflow" and read_summary(run_dir).get("status") == "completed":
        log_standalone_run(run_dir, config_to_dict(cfg))
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


def log_standalone_run(run_dir: Path, config: dict[str, Any]) -> str:
    """Log a single ``divssl pretrain`` run to MLflow (``mlflow_uri``, default a SQLite store
    ``mlflow.db`` beside the run dir): params, the metrics.jsonl series, summary and config.

    Study runs are logged by the study runner instead, with their grid factors and evaluations.

    Returns:
        The MLflow run id.
    """
    from divssl.study.tracking import log_job

    plan_doc = {"study": "divssl-pretrain"}
    job = {"id": run_dir.name, "kind": "pretrain", "config": config, "factors": {}}
    return log_job(run_dir.parent, plan_doc, job, run_dir, rows=[])


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
