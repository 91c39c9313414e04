"""``divssl distance``: FID / KID / VisualDNA between pools, printed like the paper's Table 3,
and the Vendi score of each pool (``--metric vendi``: one pool at a time, no ``--b`` needed).

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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from divssl.errors import ConfigError

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


VENDI_TITLE = "Vendi score ↑ (effective number of distinct images)"


def render_vendi(scores: dict[str, Any], console: Console) -> None:
    """Print one row per pool: images, Vendi score, per-class mean and number of classes."""
    labels, shared = short_labels(list(scores))
    table = Table(title=VENDI_TITLE, caption=shared or None)
    for name in ("pool", "images", "Vendi", "per-class mean", "classes"):
        table.add_column(name, justify="left" if name == "pool" else "right", overflow="fold")
    for spec, res in scores.items():
        mean = "—" if res.class_mean is None else f"{res.class_mean:.4g}"
        table.add_row(labels[spec], str(res.n), f"{res.score:.4g}", mean, str(len(res.per_class)))
    console.print(table)


def _validate(
    metric: list[str],
    max_images: int,
    out: Path,
    kid_subsets: int,
    kid_subset_size: int,
    vdna_bins: int,
    batch_size: int,
    b: list[str] | None = None,
    vendi_kernel: str = "cosine",
) -> list[str]:
    from divssl.distances.diversity import KERNELS
    from divssl.distances.pipeline import ALL_METRICS, METRICS, parse_metrics

    metrics = parse_metrics(metric, ALL_METRICS)
    pair = [m for m in metrics if m in METRICS]
    if pair and not b:
        raise ConfigError("b", f"{', '.join(pair)} compare(s) two pools: give at least one --b")
    if vendi_kernel not in KERNELS:
        raise ConfigError("vendi_kernel", f"unknown kernel {vendi_kernel!r}", KERNELS)
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
    vendi_kernel: str = "cosine",
) -> dict[str, Any]:
    """Validate, extract (cached), compute, print and save; returns the saved JSON object.

    Pair metrics (FID, KID, VisualDNA) fill an a x b matrix; ``vendi`` scores every pool given
    (``--a`` and ``--b``) on its own, with its per-class mean for labelled pools.

    Raises:
        ConfigError: any bad input, before any feature is computed.
    """
    from divssl.data.pool import open_pool
    from divssl.distances.extractors import get_extractor
    from divssl.distances.pipeline import (
        METRICS,
        distance_matrix,
        pool_features,
        pool_vendi,
        reference_ranges,
        tables_to_csv,
    )
    from divssl.io import atomic_write_json, atomic_write_text

    console = console or Console()
    settings = (max_images, out, kid_subsets, kid_subset_size, vdna_bins, batch_size)
    metrics = _validate(metric, *settings, b, vendi_kernel)
    pair = [m for m in metrics if m in METRICS]
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
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        for spec, pool in pools.items():
            task = progress.add_task(spec, total=min(len(pool), max_images))
            feats[spec] = pool_features(
                pool,
                ext,
                max_images,
                seed,
                with_acts,
                batch_size,
                progress=lambda n, task=task: progress.advance(task, n),
            )
        ranges = None
        if ref_pool is not None:
            ranges = reference_ranges(ref_pool, ext, max_images, seed, batch_size)
    tables = {}
    if pair:
        tables = distance_matrix(
            {s: feats[s] for s in dict.fromkeys(a)},
            {s: feats[s] for s in dict.fromkeys(b)},
            pair,
            kid_subsets=kid_subsets,
            kid_subset_size=kid_subset_size,
            vdna_bins=vdna_bins,
            seed=seed,
            vdna_fixed_ranges=ranges,
            vdna_reference=reference,
        )
    vendi_scores = {}
    if "vendi" in metrics:
        for spec, f in feats.items():
            try:
                vendi_scores[spec] = pool_vendi(pools[spec], f, vendi_kernel, seed=seed)
            except ValueError as exc:  # e.g. an all-zero feature vector (a black image, pixels)
                raise ConfigError("pool", f"{spec}: Vendi score undefined: {exc}") from exc
    render_tables(tables, console)
    if vendi_scores:
        render_vendi(vendi_scores, console)
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
    if vendi_scores:
        result["vendi"] = {s: v.to_dict() for s, v in vendi_scores.items()}
    if ref_pool is not None:
        result["vdna_reference"] = {"spec": reference, "manifest_hash": ref_pool.manifest_hash()}
    if out.suffix.lower() == ".csv":
        atomic_write_text(out, tables_to_csv(tables, vendi_scores))
    else:
        atomic_write_json(out, result)
    console.print(f"saved {out}")
    return result


@app.command("distance")
def distance(
    a: list[str] = typer.Option(..., "--a", help="Pool spec of a row (repeatable)."),
    b: list[str] = typer.Option(
        [],
        "--b",
        help="Pool spec of a column (repeatable); not needed for --metric vendi, which scores "
        "each pool on its own.",
    ),
    metric: list[str] = typer.Option(
        ["fid"],
        "--metric",
        help="Comma-separated subset of fid,kid,vdna (between pools) and vendi (the Vendi "
        "score of each pool: effective number of distinct images) (repeatable).",
    ),
    extractor: str = typer.Option(
        ...,
        "--extractor",
        help="inception, dinov2_vitb14, mugs_vitb16, pixels (no weights), run:DIR, tv:NAME or "
        "timm:NAME.",
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
    vendi_kernel: str = typer.Option(
        "cosine", "--vendi-kernel", help="Vendi similarity kernel: cosine (exact) or rbf."
    ),
) -> None:
    """FID / KID / VisualDNA between every --a pool and every --b pool; Vendi score of each."""
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
        vendi_kernel=vendi_kernel,
    )
