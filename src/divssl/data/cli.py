"""``divssl data`` commands: ``inspect``, ``world``, ``fractaldb``, ``index-shards``.

Bad input raises :class:`~divssl.errors.ConfigError` (the main CLI turns it into exit code 2,
writing nothing). Generated pools are written atomically: to a temporary sibling folder (or file)
that is renamed into place once complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from PIL import Image
from rich.console import Console

from divssl.data.inspect import inspect_pool, render_report
from divssl.data.pool import CorruptImage, Pool, open_pool, parse_spec
from divssl.data.readers.wds import index_shards
from divssl.errors import ConfigError
from divssl.io import atomic_write, atomic_write_json

app = typer.Typer(help="Pools: inspect, generate, index WebDataset shards.", no_args_is_help=True)

FORMATS = ("folder", "npz")


def _pool_meta(pool: Pool, fmt: str) -> dict[str, Any]:
    return {
        "spec": pool.spec,
        "source": pool.source,
        "manifest_hash": pool.manifest_hash(),
        "num_samples": len(pool),
        "class_names": pool.class_names,
        "format": fmt,
    }


def _iter_images(pool: Pool) -> Any:
    for i in range(len(pool)):
        try:
            yield i, pool.read(i)
        except CorruptImage:
            continue


def _write_folder(pool: Pool, folder: Path) -> int:
    """PNG files ``<class>/<index:08d>.png`` (flat when unlabelled); returns images written."""
    labels, names = pool.labels, pool.class_names
    written = 0
    for i, image in _iter_images(pool):
        sub = folder
        if labels is not None and names is not None and 0 <= labels[i] < len(names):
            sub = folder / names[int(labels[i])]
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(image)).save(sub / f"{i:08d}.png")
        written += 1
    return written


def _replace_dir(tmp: Path, out: Path) -> None:
    if out.exists():
        if not out.is_dir() or any(out.iterdir()):
            raise ConfigError("--out", f"{out} exists and is not an empty folder")
        out.rmdir()
    os.replace(tmp, out)


def _write_npz(pool: Pool, path: Path) -> int:
    pairs = list(_iter_images(pool))
    if len({img.shape for _, img in pairs}) > 1:
        raise ConfigError("--format", "npz needs images of one size; use --format folder")
    images = np.stack([img for _, img in pairs]) if pairs else np.zeros((0, 1, 1, 3), np.uint8)
    # Any values: numpy's savez stub types **kwds against its allow_pickle: bool keyword.
    arrays: dict[str, Any] = {"images": images}
    if pool.labels is not None:
        arrays["labels"] = np.asarray(pool.labels, dtype=np.int64)[[i for i, _ in pairs]]
    if pool.class_names is not None:
        arrays["class_names"] = np.asarray(pool.class_names, dtype=str)
    atomic_write(path, lambda fh: np.savez(fh, **arrays), mode="wb")  # uncompressed: mmap-able
    return len(pairs)


def export_pool(pool: Pool, out: str | Path, fmt: str = "folder") -> Path:
    """Write a pool to disk as a PNG image folder or an uncompressed ``.npz``.

    Args:
        pool: the pool (corrupt samples are left out).
        out: output folder (``folder``); for ``npz`` a ``.npz`` file path, or a folder that
            receives ``pool.npz``.
        fmt: ``"folder"`` or ``"npz"``.

    Returns:
        The folder or file written. A ``pool.json`` (spec, source, manifest hash, count) is
        written beside the images so that ``folder:root=...`` keeps the source tag.

    Raises:
        ConfigError: unknown format, or ``out`` is a non-empty folder.
    """
    if fmt not in FORMATS:
        raise ConfigError("--format", f"unknown value {fmt!r}", FORMATS)
    out = Path(out).expanduser()
    meta = _pool_meta(pool, fmt)
    if fmt == "npz":
        path = out if out.suffix == ".npz" else out / "pool.npz"
        if path.exists():
            raise ConfigError("--out", f"{path} exists")
        meta["num_written"] = _write_npz(pool, path)
        atomic_write_json(
            path.with_name(f"{path.stem}.json" if out.suffix == ".npz" else "pool.json"), meta
        )
        return path
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError("--out", f"{out} exists and is not an empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the pool folder is meant to be shared
    try:
        meta["num_written"] = _write_folder(pool, tmp)
        atomic_write_json(tmp / "pool.json", meta)
        _replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _generator_spec(name: str, spec: str) -> str:
    text = spec.strip()
    if text == name or text.startswith(f"{name}:"):
        full = text
    elif text and "=" in text.split(":", 1)[0]:
        full = f"{name}:{text}"  # keys only, e.g. "classes=10:size=16"
    else:
        full = text or name
    if parse_spec(full, "spec")[0] != name:
        raise ConfigError("spec", f"expected a {name} spec, got {spec!r}", [name])
    return full


def _generate(name: str, spec: str, out: Path, fmt: str) -> None:
    pool = open_pool(_generator_spec(name, spec), field="spec")
    path = export_pool(pool, out, fmt)
    Console().print(f"wrote {len(pool)} images ({pool.manifest_hash()}) to {path}")


@app.command("inspect")
def inspect_command(
    pool: Annotated[str, typer.Argument(help="pool spec, e.g. folder:root=/data/x")],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="also write the report as JSON")
    ] = None,
    workers: Annotated[int, typer.Option(help="decoding processes")] = 0,
    vendi: Annotated[
        bool, typer.Option("--vendi/--no-vendi", help="measure the pool's Vendi score")
    ] = True,
    vendi_extractor: Annotated[
        str,
        typer.Option(
            help="features of the Vendi score: pixels (default, fast, no weights) or an opt-in "
            "network (inception, run:DIR, ...; slower)"
        ),
    ] = "pixels",
    vendi_weights: Annotated[
        str | None, typer.Option(help="weights file of --vendi-extractor")
    ] = None,
    vendi_max_images: Annotated[
        int, typer.Option(help="images sampled (seeded) for the Vendi score")
    ] = 5000,
) -> None:
    """Counts per class and source, image sizes, corrupt files, the manifest hash and the
    Vendi score (effective number of distinct images; pixel features unless asked)."""
    report = inspect_pool(
        pool, workers, vendi_extractor if vendi else None, vendi_weights, vendi_max_images
    )
    if json_out is not None:
        atomic_write_json(json_out, report)
    Console().print(render_report(report))


@app.command("world")
def world_command(
    spec: Annotated[str, typer.Argument(help="world spec, e.g. world:classes=10:size=32")],
    out: Annotated[Path, typer.Option(help="output folder (or .npz file)")],
    fmt: Annotated[str, typer.Option("--format", help="folder | npz")] = "folder",
) -> None:
    """Generate a world pool and write it to disk."""
    _generate("world", spec, out, fmt)


@app.command("fractaldb")
def fractaldb_command(
    spec: Annotated[str, typer.Argument(help="fractaldb spec, e.g. fractaldb:categories=100")],
    out: Annotated[Path, typer.Option(help="output folder (or .npz file)")],
    fmt: Annotated[str, typer.Option("--format", help="folder | npz")] = "folder",
) -> None:
    """Generate a FractalDB pool and write it to disk."""
    _generate("fractaldb", spec, out, fmt)


@app.command("index-shards")
def index_shards_command(
    urls: Annotated[str, typer.Argument(help="shards: brace pattern, glob, folder or list file")],
    verify: Annotated[
        bool, typer.Option(help="also decode every image and record corrupt samples")
    ] = False,
    workers: Annotated[int, typer.Option(help="processes, one shard each")] = 0,
) -> None:
    """Count the samples of WebDataset shards into index.json beside them (exact budgets)."""
    if workers < 0:
        raise ConfigError("--workers", f"must be >= 0, got {workers}")
    path = index_shards(urls, verify=verify, workers=workers)
    Console().print(f"wrote {path}")
