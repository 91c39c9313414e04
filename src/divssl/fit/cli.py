"""``divssl fit STUDY_DIR``: the data-constrained fit of a study's results.

``app`` holds the single command ``fit``; :mod:`divssl.cli` mounts it as a top-level command. Bad
input (no study folder, an unknown selection, a grid that cannot identify R*) raises
:class:`~divssl.errors.ConfigError` (exit code 2) before anything is fitted or written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from divssl.errors import ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)


def parse_floor(text: str) -> float | None:
    """``fit`` -> None (fitted); a number in [0, 1] -> fixed floor.

    Raises:
        ConfigError: anything else.
    """
    if text.strip().lower() == "fit":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(
            "--floor", f"expected 'fit' or a number in [0, 1], got {text!r}"
        ) from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError("--floor", f"expected 'fit' or a number in [0, 1], got {text!r}")
    return value


@app.command("fit")
def fit_command(
    study_dir: Annotated[Path, typer.Argument(help="study folder (holds plan.json / results)")],
    eval_: Annotated[
        str | None, typer.Option("--eval", help="linear | knn | finetune (default: first present)")
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="downstream task (default: the only one)")
    ] = None,
    split: Annotated[str | None, typer.Option(help="id | ood (default id)")] = None,
    metric: Annotated[
        str | None, typer.Option(help="top1 | top5 | macro_f1 (default top1)")
    ] = None,
    label_fraction: Annotated[
        float | None, typer.Option(help="linear-probe label fraction in % (default: the largest)")
    ] = None,
    k: Annotated[int | None, typer.Option(help="kNN neighbours (default: the smallest)")] = None,
    where: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE filter on the results (repeatable)")
    ] = None,
    floor: Annotated[
        str, typer.Option(help="'fit' or a fixed floor accuracy in [0, 1] (e.g. random init)")
    ] = "fit",
    n_boot: Annotated[int, typer.Option(help="bootstrap replicates over seeds (0: none)")] = 200,
    seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
    predict: Annotated[
        list[str] | None, typer.Option(help="N,C: predicted accuracy there (repeatable)")
    ] = None,
    best_n_at: Annotated[
        list[float] | None,
        typer.Option(help="C: smallest N within epsilon of the best there (default: every C)"),
    ] = None,
    epsilon: Annotated[
        float, typer.Option(help="tolerance of the best-N answer (accuracy, 0.01 = 1 point)")
    ] = 0.01,
    max_epochs: Annotated[int, typer.Option(help="rows E = 1..max of the repetition table")] = 10,
    out: Annotated[
        Path | None, typer.Option("--out", help="JSON file (default STUDY_DIR/fit.json)")
    ] = None,
) -> None:
    """Fit accuracy = logistic(ln C_eff(N, C)) with repetition decay R* (Muennighoff et al.)."""
    from divssl.fit.analysis import FitSettings, fit_points, parse_pairs
    from divssl.fit.select import Selection, load_study_results, select_points
    from divssl.io import atomic_write_text

    if out is not None and out.suffix.lower() != ".json":
        raise ConfigError("--out", f"must be a .json file, got {out}")
    settings = FitSettings(
        floor=parse_floor(floor),
        n_boot=n_boot,
        seed=seed,
        epsilon=epsilon,
        predict=parse_pairs(predict or [], "--predict"),
        best_n_at=tuple(best_n_at or ()),
        max_epochs=max_epochs,
    )
    selection = Selection(
        eval=eval_,
        task=task,
        split=split,
        metric=metric,
        label_fraction=label_fraction,
        k=k,
        where=tuple(where or ()),
    )
    data, resolved = select_points(load_study_results(study_dir), selection)
    outcome = fit_points(data, settings, resolved)
    doc = outcome.to_dict()
    path = out if out is not None else Path(study_dir) / "fit.json"
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    _print(doc, Console(width=200))
    print(path)


def _pct(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{100 * value:.{digits}f}"


def _count(value: Any) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _num(value: Any) -> str:
    return "—" if value is None else f"{value:.4g}"


def _print(doc: dict[str, Any], console: Console) -> None:
    p = doc["params"]
    lo, hi = p["r_star_ci"]
    sel = ", ".join(f"{k}={v}" for k, v in doc["selection"].items() if v not in (None, []))
    console.print(f"[bold]data-constrained fit[/bold] ({doc['runs']} runs, {sel})")
    console.print(doc["law"], highlight=False)
    console.print(
        f"R* = {_num(p['r_star'])} [{_num(lo)}, {_num(hi)}] (95% bootstrap over seeds, "
        f"{p['bootstrap_replicates']} replicates); half-life {_num(p['half_life_repetitions'])} "
        f"repetitions; ceiling {_pct(p['ceiling'])}%, floor {_pct(p['floor'])}%"
        + (f"; on a bound: {', '.join(p['at_bounds'])}" if p["at_bounds"] else ""),
        highlight=False,
    )
    console.print(f"verdict: {doc['verdict']}", highlight=False)
    table = Table(title="models (accuracy errors in percentage points)")
    for col in ("model", "params", "RMSE", "leave-one-run-out RMSE"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in doc["comparison"]:
        table.add_row(
            row["label"], str(row["params"]), _pct(row["rmse"], 2), _pct(row["loo_rmse"], 2)
        )
    console.print(table)
    best = Table(
        title=f"smallest N within {100 * doc['settings']['epsilon']:.1f} points of the best"
    )
    for col in ("C", "N", "95% CI of N", "E = C/N", "accuracy %", "best %"):
        best.add_column(col, justify="right")
    for row in doc["best_n"]:
        best.add_row(
            f"{row['c']:,.0f}",
            f"{row['n']:,.0f}",
            f"[{_count(row['n_ci_low'])}, {_count(row['n_ci_high'])}]",
            f"{row['epochs']:.3g}",
            _pct(row["accuracy"]),
            _pct(row["best_accuracy"]),
        )
    console.print(best)
    c_top, reps = list(doc["repetitions"].items())[-1]
    lost = ", ".join(f"E {r['epochs']:.0f}: {_pct(r['lost_vs_previous'], 2)}" for r in reps[1:])
    console.print(
        f"accuracy lost (points) by each extra repetition at C = {float(c_top):,.0f} "
        f"(N = C / E): {lost}",
        highlight=False,
    )
    for row in doc["predictions"]:
        console.print(
            f"predicted at N = {row['n']:,.0f}, C = {row['c']:,.0f}: {_pct(row['accuracy'])}% "
            f"[{_pct(row['ci_low'])}, {_pct(row['ci_high'])}]",
            highlight=False,
        )
