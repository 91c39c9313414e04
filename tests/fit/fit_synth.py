"""Synthetic data for the fit tests: accuracies simulated from the law, written as a study.

Imported by the fit and report tests as ``fit_synth`` (a unique module name). The simulation
computes C_eff and the logistic from the formulas here (Muennighoff et al. 2023, eq. 5), not
through :mod:`divssl.fit.law`, so it is an independent reference.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

TRUE = {"r_star": 8.0, "ceiling": 0.78, "floor": 0.32, "slope": 1.1, "mid": math.log(15_000.0)}
BUDGETS = (10_000, 30_000, 100_000, 300_000)
SIZES = (300, 1_000, 3_000, 10_000, 30_000)
SEEDS = (0, 1, 2)


def law_accuracy(n: float, c: float, p: dict[str, float] = TRUE) -> float:
    """The law written from the paper's formula, one scalar at a time."""
    u = min(n, c)
    r = max(c / n - 1.0, 0.0)
    c_eff = u + u * p["r_star"] * (1.0 - math.exp(-r / p["r_star"]))
    z = p["slope"] * (math.log(c_eff) - p["mid"])
    return p["floor"] + (p["ceiling"] - p["floor"]) / (1.0 + math.exp(-z))


def simulate(
    noise: float = 0.01,
    seed: int = 0,
    budgets: Sequence[float] = BUDGETS,
    sizes: Sequence[float] = SIZES,
    seeds: Sequence[int] = SEEDS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(N, C, accuracy, seed) arrays over the grid, accuracy = law + N(0, noise^2)."""
    rng = np.random.default_rng(seed)
    rows = [(n, c, s) for c in budgets for n in sizes for s in seeds]
    n = np.array([r[0] for r in rows], dtype=float)
    c = np.array([r[1] for r in rows], dtype=float)
    y = np.array([law_accuracy(a, b) for a, b in zip(n, c, strict=True)])
    y = np.clip(y + rng.normal(0.0, noise, len(y)), 0.0, 1.0)
    return n, c, y, np.array([r[2] for r in rows], dtype=float)


def _run_id(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]


def results_rows(
    methods: Sequence[str] = ("simclr",), noise: float = 0.01, **grid: Any
) -> list[dict[str, Any]]:
    """Long-format records (``divssl.study.results`` columns): linear and kNN, ID and OOD."""
    rows = []
    for m_i, method in enumerate(methods):
        n, c, y, seeds = simulate(noise=noise, seed=m_i, **grid)
        for a, b, v, s in zip(n, c, y, seeds, strict=True):
            run = {
                "study": "synth_fit", "run": _run_id(method, a, b, s), "kind": "pretrain",
                "baseline": False, "method": method, "backbone": "convnet_tiny",
                "image_size": 16, "pool": "world", "composition": None, "source": "source",
                "budget_images": int(b), "unique_images": int(a), "epochs": b / a,
                "diversity": a / b, "normalization": "compute", "seed": int(s),
                "subset.size": int(a), "budget.images": int(b),
            }  # fmt: skip
            for ev, shift in (("linear", 0.0), ("knn", -0.05)):
                for split, drop in (("id", 0.0), ("ood", 0.1)):
                    value = float(np.clip(v + shift - drop, 0.0, 1.0))
                    rows.append(
                        {
                            **run, "eval": ev, "eval_id": f"{ev}-world_id", "task": "world_id",
                            "split": split, "label_fraction": 100.0,
                            "k": 20 if ev == "knn" else None, "eval_point": None,
                            "metric": "top1", "value": value, "ci_low": value - 0.02,
                            "ci_high": value + 0.02, "n": 2000,
                        }
                    )  # fmt: skip
    return rows


def make_study(
    root: Path,
    methods: Sequence[str] = ("simclr",),
    sections: Sequence[str] = ("fit",),
    **grid: Any,
) -> Path:
    """A study folder with ``results.parquet`` and ``study.yaml`` (no runs)."""
    from divssl.study.results import to_frame

    root.mkdir(parents=True, exist_ok=True)
    frame = to_frame(results_rows(methods, **grid))
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    (root / "results.parquet").write_bytes(buf.getvalue())
    spec = {
        "name": "synth_fit",
        "report": {
            "sections": list(sections),
            "contrast_metric": {"eval": "linear", "split": "id", "metric": "top1"},
        },
    }
    (root / "study.yaml").write_text(yaml.safe_dump(spec))
    return root


def frame(methods: Sequence[str] = ("simclr",), **grid: Any) -> pd.DataFrame:
    """The results table as the store returns it."""
    from divssl.study.results import to_frame

    return to_frame(results_rows(methods, **grid))
