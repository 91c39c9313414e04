"""A synthetic study folder for the report tests: fake but structured results.

Imported by the report tests as ``report_synth`` (a unique module name, unlike ``conftest``).

Columns follow ``divssl.study.results`` (one row per run x evaluation x split x setting x metric).
Values are a smooth function of the factors plus seeded noise, so every table and figure has data:
3 seeds x 3 subset sizes x 2 methods (linear at 10/100% labels, kNN k=20/200, two tasks),
compositions B / B+A_in_source / B+A_out_web plus an epoch-normalized B, fine-tuning traces with
ID/OOD points of from-scratch baselines and pretrained runs, FID/KID distances and the Vendi
score of the pool and of every run's subset (``vendi.csv``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

C = 60_000
METHODS = ("simclr", "byol")
SIZES = (6_000, 30_000, 60_000)
SEEDS = (0, 1, 2)
COMPOSITIONS = {"B": 30_000, "B+A_in_source": 60_000, "B+A_out_web": 60_000}


def _run_id(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]


def _noise(*parts: Any) -> float:
    seed = int(_run_id(*parts)[:8], 16)
    return float(np.random.default_rng(seed).normal(0.0, 0.01))


def _run(
    method: str,
    pool: str | None,
    composition: str | None,
    n: int,
    c: int,
    seed: int,
    normalization: str = "compute",
    fraction: float | None = None,
) -> dict[str, Any]:
    return {
        "run": _run_id(method, pool, composition, n, c, seed, normalization),
        "study": "synth", "kind": "pretrain", "baseline": False, "method": method,
        "backbone": "convnet_tiny", "image_size": 16, "pool": pool, "composition": composition,
        "source": "source", "budget_images": c, "unique_images": n, "epochs": c / n,
        "diversity": n / c, "normalization": normalization, "seed": seed,
        "subset.fraction": fraction,
    }  # fmt: skip


def _row(
    run: dict[str, Any],
    eval_kind: str,
    task: str,
    split: str,
    metric: str,
    value: float,
    fraction: float | None = None,
    k: int | None = None,
    point: int | None = None,
    n_test: int = 2000,
) -> dict[str, Any]:
    value = float(np.clip(value, 0.01, 0.99))
    return {
        **run,
        "eval": eval_kind,
        "eval_id": f"{eval_kind}-{task}",
        "task": task,
        "split": split,
        "label_fraction": fraction,
        "k": k,
        "eval_point": point,
        "metric": metric,
        "value": value,
        "ci_low": value - 0.02,
        "ci_high": value + 0.02,
        "n": n_test,
    }


def probe_rows() -> list[dict[str, Any]]:
    """Plain-pool subsets (Table 1, 2, 5 and Figure 4) and compositions (Figure 3)."""
    rows = []
    method_gain = {"simclr": 0.0, "byol": 0.03}
    for method in METHODS:
        for seed in SEEDS:
            for n in SIZES:
                run = _run(method, "world", None, n, C, seed, fraction=n / SIZES[-1])
                base = 0.35 + 0.08 * np.log10(n / SIZES[0]) + method_gain[method]
                for frac in (10.0, 100.0):
                    drop = 0.0 if frac == 100.0 else 0.1
                    for split, shift in (("id", 0.0), ("ood", -0.12)):
                        for metric, off in (("top1", 0.0), ("macro_f1", -0.02)):
                            v = base - drop + shift + off + _noise(run["run"], frac, split, metric)
                            rows.append(_row(run, "linear", "world_id", split, metric, v, frac))
                for k in (20, 200):
                    v = base - 0.04 - 0.01 * (k == 200) + _noise(run["run"], "knn", k)
                    rows.append(_row(run, "knn", "world_id", "id", "top1", v, 100.0, k))
                v = base - 0.15 + _noise(run["run"], "far")
                rows.append(_row(run, "linear", "world_far", "id", "top1", v, 100.0))
            for comp, n in COMPOSITIONS.items():
                gain = {"B": 0.0, "B+A_in_source": 0.03, "B+A_out_web": -0.01}[comp]
                for norm, c in (("compute", C), ("epoch", n)) if comp == "B" else (("compute", C),):
                    run = _run(method, None, comp, n, c, seed, norm)
                    epoch_drop = -0.04 if norm == "epoch" else 0.0
                    v = 0.55 + gain + epoch_drop + method_gain[method] + _noise(run["run"], "f3")
                    rows.append(_row(run, "linear", "world_id", "id", "top1", v, 100.0))
    return rows


def finetune_rows() -> list[dict[str, Any]]:
    """From-scratch baselines (the trend) and pretrained runs above it."""
    rows = []
    for seed in (0, 1, 2, 3):
        run = {
            "run": _run_id("scratch", seed),
            "study": "synth",
            "kind": "baseline",
            "baseline": True,
            "method": "scratch",
            "backbone": "convnet_tiny",
            "image_size": 16,
            "seed": seed,
            "normalization": None,
            "pool": None,
            "composition": None,
            "source": None,
        }
        for point in range(5):
            id_score = 0.30 + 0.08 * point + 0.02 * seed
            ood = 1 / (1 + np.exp(-(0.9 * np.log(id_score / (1 - id_score)) - 0.5)))
            for split, v in (("id", id_score), ("ood", ood + _noise(seed, point))):
                rows.append(
                    _row(run, "finetune", "world_id", split, "macro_f1", v, 100.0, point=point)
                )
    for seed in SEEDS:
        for n in (6_000, 60_000):
            run = _run("simclr", "world", None, n, C, seed, fraction=n / SIZES[-1])
            lift = 0.05 if n == 60_000 else 0.02
            for point in range(5):
                id_score = 0.40 + 0.07 * point
                ood = 1 / (1 + np.exp(-(0.9 * np.log(id_score / (1 - id_score)) - 0.5)))
                for split, v in (("id", id_score), ("ood", ood + lift + _noise(seed, n, point))):
                    rows.append(
                        _row(run, "finetune", "world_id", split, "macro_f1", v, 100.0, point=point)
                    )
    return rows


def distance_rows() -> list[dict[str, Any]]:
    """FID and KID between the pretraining sets and the task."""
    fid = {"world": 5.0, "B": 8.0, "B+A_in_source": 6.0, "B+A_out_web": 20.0}
    rows = []
    for a, value in fid.items():
        rows.append(
            {"a": a, "b": "world_id", "metric": "fid", "extractor": "inception", "value": value}
        )
        rows.append(
            {
                "a": a,
                "b": "world_id",
                "metric": "kid",
                "extractor": "inception",
                "value": value / 1000,
                "std": value / 10000,
            }
        )
    return rows


def vendi_score_of(n: int, composition: str | None) -> float:
    """A saturating measured diversity: grows with N, compositions with out-of-domain A higher."""
    extra = {"B+A_out_web": 15.0, "B+A_in_source": 5.0}.get(str(composition), 0.0)
    return 40.0 * (1.0 - np.exp(-n / 20_000)) + 1.0 + extra


def vendi_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """``vendi.csv`` rows: the pool, then one per pretraining run (``divssl.study.diversity``)."""
    rows: list[dict[str, Any]] = [
        {"kind": "pool", "name": "world", "run": None, "pool": "world", "n": 6000,
         "vendi": 41.5, "vendi_class_mean": 12.25, "classes": 10, "extractor": "pixels"}
    ]  # fmt: skip
    pre = frame[~frame["baseline"]].drop_duplicates("run")
    for rec in pre.to_dict("records"):
        comp = rec["composition"] if isinstance(rec["composition"], str) else None
        rows.append(
            {
                "kind": "subset",
                "name": rec["run"],
                "run": rec["run"],
                "pool": rec["pool"],
                "composition": comp,
                "unique_images": rec["unique_images"],
                "n": min(rec["unique_images"], 10_000),
                "vendi": vendi_score_of(rec["unique_images"], comp),
                "vendi_class_mean": 3.0,
                "classes": 10,
                "extractor": "pixels",
            }
        )
    return rows


def spec(sections: list[str] | None = None) -> dict[str, Any]:
    """The study spec as ``divssl.study`` stores it in ``STUDY_DIR/study.yaml``."""
    out: dict[str, Any] = {
        "name": "synth",
        "pools": {"world": "world:classes=10:per_class=600:size=16:seed=0"},
        "tasks": {
            "world_id": "world:classes=10:per_class=200:size=16:seed=0",
            "world_far": "world:classes=10:per_class=200:size=16:seed=7",
        },
        "base": {"backbone": "convnet_tiny", "image_size": 16, "batch_size": 256},
        "grid": [
            {
                "method": list(METHODS),
                "pool": ["world"],
                "subset.fraction": [0.1, 0.5, 1.0],
                "budget.images": [C],
                "seed": list(SEEDS),
            },
            {
                "method": list(METHODS),
                "composition": {
                    name: [{"pool": "world", "size": n, "prior": "in"}]
                    for name, n in COMPOSITIONS.items()
                },
                "budget.images": [C],
                "normalization": ["compute", "epoch"],
                "seed": list(SEEDS),
            },
        ],
        "evaluations": [
            {"kind": "knn", "task": "world_id", "k": [20, 200], "fractions": [100.0]},
            {"kind": "linear", "task": "world_id", "fractions": [10.0, 100.0]},
            {"kind": "linear", "task": "world_far", "fractions": [100.0]},
            {"kind": "finetune", "task": "world_id", "eval_points": 5, "scratch_seeds": [0, 1]},
        ],
    }
    out["report"] = {
        "contrasts": [
            {
                "name": "B+A_in vs B",
                "a": {"composition": "B+A_in_source"},
                "b": {"composition": "B"},
            }
        ],
        "contrast_metric": {"eval": "linear", "split": "id", "metric": "top1"},
    }
    if sections is not None:
        out["report"]["sections"] = sections
    return out


def make_study(
    root: Path,
    finetune: bool = True,
    distances: bool = True,
    sections: list[str] | None = None,
    fmt: str = "parquet",
    vendi: bool = True,
) -> Path:
    """Write a synthetic study folder and return it."""
    root.mkdir(parents=True, exist_ok=True)
    rows = probe_rows() + (finetune_rows() if finetune else [])
    frame = pd.DataFrame(rows)
    if fmt == "parquet":
        frame.to_parquet(root / "results.parquet", index=False)
    frame.to_csv(root / "results.csv", index=False)
    (root / "study.yaml").write_text(yaml.safe_dump(spec(sections), sort_keys=False))
    if distances:
        (root / "distances.json").write_text(json.dumps(distance_rows()))
    if vendi:
        pd.DataFrame(vendi_rows(frame)).to_csv(root / "vendi.csv", index=False)
    pre = frame[~frame["baseline"]].drop_duplicates("run")
    for rec in pre.to_dict("records"):
        run_dir = root / "runs" / rec["run"]
        run_dir.mkdir(parents=True, exist_ok=True)
        summary = {
            "method": rec["method"],
            "backbone": rec["backbone"],
            "budget_images": rec["budget_images"],
            "images_seen": rec["budget_images"],
            "unique_images": rec["unique_images"],
            "status": "completed",
            "device": "cpu",
            "precision": "fp32",
            "torch_version": "2.9.0+cpu",
            "global_batch": 256,
            "views_per_image": 2,
            "flops_per_image": 1.5e7,
            "total_flops": 1.5e7 * rec["budget_images"],
            "wall_seconds": 40.0,
        }
        (run_dir / "summary.json").write_text(json.dumps(summary))
        config = {
            "method": rec["method"],
            "backbone": "convnet_tiny",
            "image_size": 16,
            "batch_size": 256,
            "seed": int(rec["seed"]),
            "out": str(run_dir),
            "optim": {"name": "lars", "base_lr": 0.3},
        }
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return root
