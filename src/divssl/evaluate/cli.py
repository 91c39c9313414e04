"""``divssl eval {linear,knn,finetune}``: evaluate a run on a task and write its results JSON.

Each command writes ``RUN_DIR/eval/<kind>_<taskslug>.json`` atomically (``--out DIR`` to write
elsewhere; required for ``--init random`` without ``--run``), prints a table of the numbers with
their bootstrap intervals, and says whether the cached features were reused. Bad input raises
:class:`~divssl.errors.ConfigError`, which the top-level ``divssl`` command maps to exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from divssl.errors import ConfigError
from divssl.evaluate.settings import (
    FinetuneSettings,
    KnnSettings,
    LinearSettings,
    validate_settings,
)
from divssl.progress import run_with_activity

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console()

RunOpt = Annotated[Path | None, typer.Option("--run", help="pretraining run directory")]
TaskOpt = Annotated[
    str, typer.Option("--task", help="task YAML file or pool spec with splits (world:classes=10)")
]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")]
InitOpt = Annotated[
    str, typer.Option(help="pretrained (the run's backbone.pt) or random (seeded init baseline)")
]
BackboneOpt = Annotated[str | None, typer.Option(help="backbone name for --init random")]
SizeOpt = Annotated[int | None, typer.Option("--image-size", help="input side for --init random")]
StemOpt = Annotated[
    bool | None, typer.Option("--cifar-stem/--no-cifar-stem", help="ResNet CIFAR stem (random)")
]
SeedOpt = Annotated[int, typer.Option(help="initialisation seed of --init random")]
EvalSeedOpt = Annotated[
    int, typer.Option(help="seed of label subsets, validation carve, order/augmentation, bootstrap")
]
BootOpt = Annotated[int, typer.Option("--n-boot", help="bootstrap resamples per interval")]
LevelOpt = Annotated[float, typer.Option(help="interval coverage")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="results folder (default RUN/eval)")]
DecodeOpt = Annotated[str, typer.Option(help="decode cache: memory or mmap")]
WorkersOpt = Annotated[int, typer.Option(help="decode processes")]
FeatBatchOpt = Annotated[int, typer.Option(help="images per feature-extraction batch")]


def parse_floats(text: str, field: str) -> list[float]:
    """``"1,5,10"`` -> ``[1.0, 5.0, 10.0]``; a bad item raises ConfigError naming ``field``."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise ConfigError(field, f"expected comma-separated numbers, got {text!r}") from exc
    if not values:
        raise ConfigError(field, "give at least one value")
    return values


def parse_ints(text: str, field: str) -> list[int]:
    """``"20,200"`` -> ``[20, 200]``; a bad item raises ConfigError naming ``field``."""
    values = parse_floats(text, field)
    if any(v != int(v) for v in values):
        raise ConfigError(field, f"expected comma-separated integers, got {text!r}")
    return [int(v) for v in values]


def _common_settings(eval_seed: int, n_boot: int, level: float) -> dict[str, Any]:
    return {"eval_seed": eval_seed, "n_boot": n_boot, "level": level}


def _check_cli_only(seed: int, workers: int) -> None:
    """Ranges of the options that only the CLI has (a study sets them per run)."""
    if not 0 <= seed <= 2**32 - 1:
        raise ConfigError("seed", f"must lie in [0, 2**32 - 1], got {seed}")
    if workers < 0:
        raise ConfigError("workers", f"must be >= 0, got {workers}")


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


def _common(
    run: Path | None, init: str, backbone: str | None, image_size: int | None,
    cifar_stem: bool | None, seed: int, device: str, n_boot: int, level: float, out: Path | None,
) -> dict[str, Any]:  # fmt: skip
    return {
        "run_dir": run,
        "init": init,
        "backbone": backbone,
        "image_size": image_size,
        "cifar_stem": cifar_stem,
        "seed": seed,
        "device": device,
        "n_boot": n_boot,
        "level": level,
        "out_dir": out,
    }


@app.command()
def linear(
    task: TaskOpt,
    run: RunOpt = None,
    fractions: Annotated[str, typer.Option(help="label percentages")] = "1,5,10,50,100",
    protocol: Annotated[str, typer.Option(help="cached (features) or sgd (images)")] = "cached",
    solver: Annotated[str, typer.Option(help="lbfgs or sgd (cached protocol)")] = "lbfgs",
    weight_decays: Annotated[
        str | None, typer.Option(help="lambda grid, e.g. 1e-6,1e-4,1e-2 (default per solver)")
    ] = None,
    lrs: Annotated[str | None, typer.Option(help="SGD LR grid per 256 images")] = None,
    val_fraction: Annotated[float, typer.Option(help="validation share of each class")] = 0.1,
    epochs: Annotated[int, typer.Option(help="SGD epochs")] = 100,
    batch_size: Annotated[int, typer.Option(help="SGD batch size")] = 256,
    max_iter: Annotated[int, typer.Option(help="L-BFGS iteration cap")] = 300,
    standardize: Annotated[
        bool, typer.Option(help="standardise features with the fitting data's statistics")
    ] = True,
    eval_seed: EvalSeedOpt = 0,
    device: DeviceOpt = "auto",
    init: InitOpt = "pretrained",
    backbone: BackboneOpt = None,
    image_size: SizeOpt = None,
    cifar_stem: StemOpt = None,
    seed: SeedOpt = 0,
    n_boot: BootOpt = 1000,
    level: LevelOpt = 0.95,
    feature_batch_size: FeatBatchOpt = 256,
    decode_cache: DecodeOpt = "memory",
    workers: WorkersOpt = 0,
    out: OutOpt = None,
) -> None:
    """Linear probe (L-BFGS sweep on cached features, or SGD on images) at label fractions."""
    from divssl.evaluate.linear import run_linear

    settings = validate_settings(
        LinearSettings,
        {
            "fractions": parse_floats(fractions, "fractions"),
            "protocol": protocol,
            "solver": solver,
            "weight_decays": (
                parse_floats(weight_decays, "weight_decays") if weight_decays else None
            ),
            "lrs": parse_floats(lrs, "lrs") if lrs else None,
            "val_fraction": val_fraction,
            "epochs": epochs,
            "batch_size": batch_size,
            "max_iter": max_iter,
            "feature_batch_size": feature_batch_size,
            **_common_settings(eval_seed, n_boot, level),
        },
    )
    _check_cli_only(seed, workers)
    result = run_with_activity(  # a spinner on a terminal, lines in a log
        f"linear probe on {task}",
        run_linear,
        task_spec=task,
        **settings.model_dump(exclude={"n_boot", "level"}),
        standardize=standardize,
        decode_cache=decode_cache,
        workers=workers,
        **_common(run, init, backbone, image_size, cifar_stem, seed, device, n_boot, level, out),
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


@app.command()
def knn(
    task: TaskOpt,
    run: RunOpt = None,
    k: Annotated[str, typer.Option("--k", help="neighbour counts")] = "20,200",
    temperature: Annotated[float, typer.Option(help="vote temperature T")] = 0.07,
    fractions: Annotated[str, typer.Option(help="label percentages of the bank")] = "100",
    eval_seed: EvalSeedOpt = 0,
    device: DeviceOpt = "auto",
    init: InitOpt = "pretrained",
    backbone: BackboneOpt = None,
    image_size: SizeOpt = None,
    cifar_stem: StemOpt = None,
    seed: SeedOpt = 0,
    n_boot: BootOpt = 1000,
    level: LevelOpt = 0.95,
    feature_batch_size: FeatBatchOpt = 256,
    decode_cache: DecodeOpt = "memory",
    workers: WorkersOpt = 0,
    out: OutOpt = None,
) -> None:
    """Weighted kNN (cosine, exp(sim/T) votes) on cached features."""
    from divssl.evaluate.knn import run_knn

    settings = validate_settings(
        KnnSettings,
        {
            "k": parse_ints(k, "k"),
            "temperature": temperature,
            "fractions": parse_floats(fractions, "fractions"),
            "feature_batch_size": feature_batch_size,
            **_common_settings(eval_seed, n_boot, level),
        },
    )
    _check_cli_only(seed, workers)
    result = run_with_activity(  # a spinner on a terminal, lines in a log
        f"kNN on {task}",
        run_knn,
        task_spec=task,
        ks=settings.k,
        **settings.model_dump(exclude={"k", "n_boot", "level"}),
        decode_cache=decode_cache,
        workers=workers,
        **_common(run, init, backbone, image_size, cifar_stem, seed, device, n_boot, level, out),
    )
    rows = result["results"]
    _print_rows(
        f"kNN on {result['task']['name']}",
        ["fraction", "k"],
        rows,
        result["num_classes"],
        _cache_line(result),
    )
    console.print(f"wrote {result['path']}")


@app.command()
def finetune(
    task: TaskOpt,
    run: RunOpt = None,
    epochs: Annotated[int, typer.Option(help="passes over the train split")] = 12,
    batch_size: Annotated[int, typer.Option(help="images per step")] = 64,
    lr: Annotated[float, typer.Option("--lr", help="peak LR per 256 images")] = 0.01,
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay")] = 1e-4,
    momentum: Annotated[float, typer.Option(help="SGD momentum")] = 0.9,
    warmup_fraction: Annotated[float, typer.Option(help="share of steps warming up")] = 0.0,
    eval_points: Annotated[int, typer.Option(help="ID/OOD evaluations through training")] = 5,
    eval_seed: EvalSeedOpt = 0,
    device: DeviceOpt = "auto",
    init: InitOpt = "pretrained",
    backbone: BackboneOpt = None,
    image_size: SizeOpt = None,
    cifar_stem: StemOpt = None,
    seed: SeedOpt = 0,
    n_boot: BootOpt = 1000,
    level: LevelOpt = 0.95,
    decode_cache: DecodeOpt = "memory",
    workers: WorkersOpt = 0,
    out: OutOpt = None,
) -> None:
    """Full fine-tuning with a linear head; ID and OOD metrics at evenly spaced points."""
    from divssl.evaluate.finetune import run_finetune

    settings = validate_settings(
        FinetuneSettings,
        {
            "epochs": epochs,
            "batch_size": batch_size,
            "base_lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "warmup_fraction": warmup_fraction,
            "eval_points": eval_points,
            **_common_settings(eval_seed, n_boot, level),
        },
    )
    _check_cli_only(seed, workers)
    result = run_finetune(
        task_spec=task,
        **settings.model_dump(exclude={"scratch_seeds", "n_boot", "level"}),
        decode_cache=decode_cache,
        workers=workers,
        **_common(run, init, backbone, image_size, cifar_stem, seed, device, n_boot, level, out),
    )
    rows = [{**p, "epoch": f"{p['epoch']:.2f}"} for p in result["points"]]
    _print_rows(
        f"fine-tuning on {result['task']['name']}",
        ["step", "epoch"],
        rows,
        result["num_classes"],
        "",
    )
    console.print(f"wrote {result['path']}")
