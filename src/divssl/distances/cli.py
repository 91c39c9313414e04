"""``divssl distance``: FID / KID / VisualDNA between pools, printed like the paper's Table 3.

``app`` holds the single command ``distance``; ``divssl.cli`` mounts it as a top-level command.
Every input is validated (pools opened, extractor and weights loaded) before any feature is
computed; bad input raises :class:`~divssl.errors.ConfigError` (exit code 2 in ``divssl.cli``)
and writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from divssl.errors import ConfigError
from divssl.progress import Progress

app = typer.Typer(add_completion=False, help="Distribution distances between pools.")

_OUT_SUFFIXES = (".json", ".csv")


def _format(value: float, std: float | None) -> str:
    # Four significant digits: feature scales (and so distances) differ by orders of magnitude
    # between extractors.
    return f"{value:.4g} ± {std:.2g}" if std is not None else f"{value:.4g}"


def short_labels(specs: list[str]) -> tuple[dict[str, str], str]:
    """Label each pool spec by the ``:``-parts it does not share with all the others.

    Returns:
        spec -> label, and the shared parts (``""`` when nothing is shared).
    """
    parts = {s: s.split(":") for s in dict.fromkeys(specs)}
    if len(parts) < 2:
        return {s: s for s in parts}, ""
    common = set.intersection(*(set(p) for p in parts.values()))
    labels = {s: ":".join(x for x in p if x not in common) or s for s, p in parts.items()}
    shared = ":".join(x for x in next(iter(parts.values())) if x in common)
    return labels, shared


def render_tables(tables: dict[str, Any], console: Console) -> None:
    """Print one table per metric: rows are a-pools, columns b-pools (like the paper's Table 3).

    Pools are labelled by what tells them apart; the shared spec parts go in the caption.
    """
    titles = {"fid": "FID ↓", "kid": "KID ↓ (mean ± std over subsets)", "vdna": "VisualDNA EMD ↓"}
    for metric, table in tables.items():
        labels, shared = short_labels([*table.rows, *table.cols])
        rich_table = Table(title=titles.get(metric, metric), caption=shared or None)
        rich_table.add_column("a \\ b", style="bold", overflow="fold")
        for col in table.cols:
            rich_table.add_column(labels[col], justify="right", overflow="fold")
        for i, row in enumerate(table.rows):
            cells = [
                _format(
                    float(table.values[i, j]),
                    None if table.std is None else float(table.std[i, j]),
                )
                for j in range(len(table.cols))
            ]
            rich_table.add_row(labels[row], *cells)
        console.print(rich_table)


def _validate(
    metric: list[str],
    max_images: int,
    out: Path,
    kid_subsets: int,
    kid_subset_size: int,
    vdna_bins: int,
    batch_size: int,
) -> list[str]:
    from divssl.distances.pipeline import parse_metrics

    metrics = parse_metrics(metric)
    if max_images < 2:
        raise ConfigError("max_images", f"must be at least 2, got {max_images}")
    if out.suffix.lower() not in _OUT_SUFFIXES:
        raise ConfigError("out", f"unsupported file type {out.suffix!r}", _OUT_SUFFIXES)
    if kid_subsets < 1 or kid_subset_size < 2:
        raise ConfigError("kid_subsets", "need --kid-subsets >= 1 and --kid-subset-size >= 2")
    if vdna_bins < 2:
        raise ConfigError("vdna_bins", f"must be at least 2, got {vdna_bins}")
    if batch_size < 1:
        raise ConfigError("batch_size", f"must be at least 1, got {batch_size}")
    return metrics


def run_distance(
    a: list[str],
    b: list[str],
    metric: list[str],
    extractor: str,
    weights: Path | None = None,
    max_images: int = 50000,
    seed: int = 0,
    out: Path = Path("distances.json"),
    layers: str | None = None,
    input_size: int | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    vdna_bins: int = 1000,
    batch_size: int = 64,
    device: str = "cpu",
    console: Console | None = None,
    vdna_reference: str | None = None,
) -> dict[str, Any]:
    """Validate, extract (cached), compute, print and save; returns the saved JSON object.

    Raises:
        ConfigError: any bad input, before any feature is computed.
    """
    from divssl.data.pool import open_pool
    from divssl.distances.extractors import get_extractor
    from divssl.distances.pipeline import (
        distance_matrix,
        pool_features,
        reference_ranges,
        tables_to_csv,
    )
    from divssl.io import atomic_write_json, atomic_write_text

    console = console or Console()
    metrics = _validate(
        metric, max_images, out, kid_subsets, kid_subset_size, vdna_bins, batch_size
    )
    specs = list(dict.fromkeys([*a, *b]))
    pools = {s: open_pool(s, field="a" if s in a else "b") for s in specs}
    with_acts = "vdna" in metrics
    # VisualDNA bins over fixed ranges of a declared reference pool (default: the first --a).
    reference = vdna_reference or a[0]
    ref_pool = None
    if with_acts:
        ref_pool = pools.get(reference) or open_pool(reference, field="vdna_reference")
    layer_list = [x.strip() for x in layers.split(",") if x.strip()] if layers else None
    ext = get_extractor(extractor, weights, input_size=input_size, layers=layer_list, device=device)
    feats = {}
    for spec, pool in pools.items():
        # A bar on a terminal, plain lines in a log (nothing moves on a feature-cache hit).
        with Progress(f"features {spec}", min(len(pool), max_images), unit="image") as bar:
            feats[spec] = pool_features(
                pool,
                ext,
                max_images,
                seed,
                with_acts,
                batch_size,
                progress=lambda n, bar=bar: bar.advance(n),
            )
    ranges = None
    if ref_pool is not None:
        ranges = reference_ranges(ref_pool, ext, max_images, seed, batch_size)
    tables = distance_matrix(
        {s: feats[s] for s in dict.fromkeys(a)},
        {s: feats[s] for s in dict.fromkeys(b)},
        metrics,
        kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size,
        vdna_bins=vdna_bins,
        seed=seed,
        vdna_fixed_ranges=ranges,
        vdna_reference=reference,
    )
    render_tables(tables, console)
    result = {
        "extractor": {
            "name": ext.name,
            "identity": ext.identity,
            "input_size": ext.input_size,
            "layers": ext.layers,
        },
        "max_images": max_images,
        "seed": seed,
        "pools": {
            s: {
                "n_images": int(len(f.indices)),
                "corrupt": int(f.corrupt),
                "manifest_hash": pools[s].manifest_hash(),
            }
            for s, f in feats.items()
        },
        "metrics": {m: t.to_dict() for m, t in tables.items()},
    }
    if ref_pool is not None:
        result["vdna_reference"] = {"spec": reference, "manifest_hash": ref_pool.manifest_hash()}
    if out.suffix.lower() == ".csv":
        atomic_write_text(out, tables_to_csv(tables))
    else:
        atomic_write_json(out, result)
    console.print(f"saved {out}")
    return result


@app.command("distance")
def distance(
    a: list[str] = typer.Option(..., "--a", help="Pool spec of a row (repeatable)."),
    b: list[str] = typer.Option(..., "--b", help="Pool spec of a column (repeatable)."),
    metric: list[str] = typer.Option(
        ["fid"], "--metric", help="Comma-separated subset of fid,kid,vdna (repeatable)."
    ),
    extractor: str = typer.Option(
        ...,
        "--extractor",
        help="inception, dinov2_vitb14, mugs_vitb16, run:DIR, tv:NAME or timm:NAME.",
    ),
    weights: Path | None = typer.Option(
        None, "--weights", help="Local state_dict file (or $DIVSSL_<NAME>_WEIGHTS)."
    ),
    max_images: int = typer.Option(50000, "--max-images", help="Images sampled per pool."),
    seed: int = typer.Option(0, "--seed", help="Seed of the image sample and KID subsets."),
    out: Path = typer.Option(
        Path("distances.json"), "--out", help="Result file: .json (full) or .csv (long)."
    ),
    layers: str | None = typer.Option(
        None, "--layers", help="Comma-separated module names hooked for VisualDNA."
    ),
    input_size: int | None = typer.Option(
        None, "--input-size", help="Override the extractor's input side (px)."
    ),
    kid_subsets: int = typer.Option(100, "--kid-subsets"),
    kid_subset_size: int = typer.Option(1000, "--kid-subset-size"),
    vdna_bins: int = typer.Option(1000, "--vdna-bins"),
    batch_size: int = typer.Option(64, "--batch-size"),
    device: str = typer.Option("cpu", "--device"),
    vdna_reference: str | None = typer.Option(
        None,
        "--vdna-reference",
        help="Pool whose activations fix VisualDNA's per-neuron ranges (default: first --a).",
    ),
) -> None:
    """FID / KID / VisualDNA between every --a pool and every --b pool."""
    run_distance(
        a,
        b,
        metric,
        extractor,
        weights,
        max_images,
        seed,
        out,
        layers,
        input_size,
        kid_subsets,
        kid_subset_size,
        vdna_bins,
        batch_size,
        device,
        vdna_reference=vdna_reference,
    )
