"""``divssl data subset | relabel | synthesize``: orderings, label interventions, diffusion pools.

These commands are merged into the ``divssl data`` group by :mod:`divssl.cli`. Bad input raises
:class:`~divssl.errors.ConfigError` (exit code 2 in the main CLI, nothing written).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.command()
def subset(
    pool: Annotated[str, typer.Argument(help="pool spec, e.g. world:classes=10:per_class=200")],
    out: Annotated[Path, typer.Option("--out", help="ordering file to write (.json or .npz)")],
    seed: Annotated[int, typer.Option("--seed", help="subset seed")] = 0,
    balanced: Annotated[
        bool, typer.Option("--balanced", help="class-balanced nested prefixes")
    ] = False,
    size: Annotated[int | None, typer.Option("--size", help="print counts of this N")] = None,
    fraction: Annotated[
        float | None, typer.Option("--fraction", help="print counts of N = fraction * pool size")
    ] = None,
) -> None:
    """Write a seeded ordering of POOL (its first N entries are the subset of size N)."""
    from divssl.data.ordering import (
        class_counts,
        make_ordering,
        save_ordering,
        subset_positions,
        subset_size,
    )
    from divssl.data.pool import open_pool

    opened = open_pool(pool, field="pool")
    if size is not None or fraction is not None:
        subset_size(len(opened), size, fraction)  # validate before writing anything
    ordering = make_ordering(opened, seed=seed, balanced=balanced)
    save_ordering(ordering, out)
    typer.echo(f"ordering {ordering.hash}  pool manifest {ordering.pool_manifest}  -> {out}")
    if size is not None or fraction is not None:
        positions = subset_positions(ordering, size=size, fraction=fraction)
        typer.echo(f"subset N={len(positions)}")
        for name, count in class_counts(opened, positions).items():
            typer.echo(f"{name}\t{count}")


@app.command()
def relabel(
    pool: Annotated[str, typer.Argument(help="labelled pool spec")],
    hierarchy: Annotated[
        str, typer.Option("--hierarchy", help="JSON/CSV hierarchy file, or 'imagenet1k'")
    ] = "imagenet1k",
    count: Annotated[int | None, typer.Option("--count", help="target superclass count")] = None,
    depth: Annotated[int | None, typer.Option("--depth", help="cut at this depth")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="also write the report (and mapping) here")
    ] = None,
) -> None:
    """Coarsen POOL's labels through a class hierarchy; print the count and per-superclass sizes."""
    from divssl.data.hierarchy import resolve_hierarchy
    from divssl.data.interventions import pool_superclasses, relabel_report
    from divssl.data.pool import open_pool
    from divssl.io import atomic_write_json

    h = resolve_hierarchy(hierarchy)
    opened = open_pool(pool, field="pool")
    mapping = pool_superclasses(opened, h, count=count, depth=depth)
    report = relabel_report(opened, mapping, h)
    typer.echo(f"superclasses: {report.count}")
    typer.echo("superclass\tname\tclasses\timages")
    for sup, images in sorted(report.sizes.items(), key=lambda kv: (-kv[1], kv[0])):
        typer.echo(f"{sup}\t{report.names[sup]}\t{len(report.members[sup])}\t{images}")
    if json_out is not None:
        atomic_write_json(json_out, {**report.to_json(), "mapping": mapping})


@app.command()
def synthesize(
    classes: Annotated[
        Path, typer.Option("--classes", help="class list: 'name' or 'name<TAB>prompt' per line")
    ],
    per_class: Annotated[int, typer.Option("--per-class", help="images per class")],
    model: Annotated[Path, typer.Option("--model", help="local Stable Diffusion pipeline dir")],
    out: Annotated[Path, typer.Option("--out", help="output folder pool")],
    seed: Annotated[int, typer.Option("--seed")] = 0,
    steps: Annotated[int, typer.Option("--steps", help="denoising steps (paper: 50)")] = 50,
    guidance: Annotated[float, typer.Option("--guidance", help="guidance scale (paper)")] = 7.5,
    batch: Annotated[int, typer.Option("--batch", help="images per pipeline call")] = 4,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    size: Annotated[int | None, typer.Option("--size", help="pixels (default: model's)")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="auto, float32, float16")] = "auto",
) -> None:
    """Generate a synthetic folder pool with Stable Diffusion ('A photo of a {class}')."""
    from divssl.data.synthesize import read_class_list
    from divssl.data.synthesize import synthesize as run_synthesis

    def progress(done: int, total: int) -> None:
        typer.echo(f"{done}/{total} images", err=True)

    report = run_synthesis(
        read_class_list(classes),
        per_class,
        model,
        out,
        seed=seed,
        steps=steps,
        guidance=guidance,
        batch=batch,
        device=device,
        size=size,
        dtype=dtype,
        on_batch=progress,
    )
    typer.echo(
        f"generated {report.generated}, skipped {report.skipped} existing "
        f"({report.classes} classes x {report.per_class}) -> {report.out}"
    )
