"""``divssl distance``: FID / KID / VisualDNA between pools (the paper's Table 3), Vendi per pool.

``app`` holds the single command ``distance``; ``divssl.cli`` mounts it as a top-level command.
Every input is validated (pools opened, extractor and weights loaded) before any feature is
computed; bad input raises :class:`~divssl.errors.ConfigError` (exit code 2 in ``divssl.cli``)
and writes nothing.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from divssl.distances.settings import DistanceSettings
from divssl.errors import ConfigError
from divssl.options import settings_command
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


def _check_out(out: Path) -> None:
    if out.suffix.lower() not in _OUT_SUFFIXES:
        raise ConfigError("out", f"unsupported file type {out.suffix!r}", _OUT_SUFFIXES)


def run_distance(
    settings: DistanceSettings,
    *,
    out: Path = Path("distances.json"),
    device: str = "cpu",
    console: Console | None = None,
) -> dict[str, Any]:
    """Validate, extract (cached), compute, print and save; returns the saved JSON object.

    Args:
        settings: pools, metrics, extractor and their parameters.
        out: result file, ``.json`` (full) or ``.csv`` (long).
        device: where the extractor runs.
        console: where tables and progress go.

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
    _check_out(out)
    a, b, metrics = settings.a, settings.b, list(settings.metric)
    max_images, seed, batch_size = settings.max_images, settings.seed, settings.batch_size
    specs = list(dict.fromkeys([*a, *b]))
    pools = {s: open_pool(s, field="a" if s in a else "b") for s in specs}
    with_acts = "vdna" in metrics
    # VisualDNA bins over fixed ranges of a declared reference pool (default: the first --a).
    reference = settings.vdna_reference or a[0]
    ref_pool = None
    if with_acts:
        ref_pool = pools.get(reference) or open_pool(reference, field="vdna_reference")
    ext = get_extractor(
        settings.extractor,
        settings.weights,
        input_size=settings.input_size,
        layers=settings.layers,
        device=device,
    )
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
                progress=bar.advance,
            )
        ranges = None
        if ref_pool is not None:
            ranges = reference_ranges(ref_pool, ext, max_images, seed, batch_size)
    pair = [m for m in metrics if m in METRICS]
    tables = {}
    if pair:
        tables = distance_matrix(
            {s: feats[s] for s in dict.fromkeys(a)},
            {s: feats[s] for s in dict.fromkeys(b)},
            pair,
            kid_subsets=settings.kid_subsets,
            kid_subset_size=settings.kid_subset_size,
            vdna_bins=settings.vdna_bins,
            seed=seed,
            vdna_fixed_ranges=ranges,
            vdna_reference=reference,
        )
    vendi_scores = {}
    if "vendi" in metrics:
        for spec, f in feats.items():
            try:
                vendi_scores[spec] = pool_vendi(pools[spec], f, settings.vendi_kernel, seed=seed)
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


def _distance(settings: DistanceSettings, out: Path, device: str) -> None:
    run_distance(settings, out=out, device=device)


OUT = inspect.Parameter(
    "out",
    inspect.Parameter.KEYWORD_ONLY,
    default=Path("distances.json"),
    annotation=Annotated[
        Path, typer.Option("--out", help="Result file: .json (full) or .csv (long).")
    ],
)
DEVICE = inspect.Parameter(
    "device",
    inspect.Parameter.KEYWORD_ONLY,
    default="cpu",
    annotation=Annotated[str, typer.Option("--device", help="where the extractor runs")],
)
# The options are generated from DistanceSettings (divssl.options), the model studies embed.
app.command("distance")(
    settings_command(
        [DistanceSettings],
        [OUT, DEVICE],
        _distance,
        "FID / KID / VisualDNA between every --a pool and every --b pool; Vendi score of each.",
    )
)
