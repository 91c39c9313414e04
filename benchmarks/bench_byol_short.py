"""Why BYOL does not learn in ~10^2-step runs on the world: kNN and feature rank per variant.

Each variant pretrains ``convnet_tiny`` at 16 px on the default world with BYOL and
``recipe=small`` (C = ``--budget`` images, batch 256 unless a variant says otherwise), plus the
variant's overrides, then reports on the world task's ID test split:

* kNN top-1 (k = 20, T = 0.07, cosine; the protocol of ``divssl eval knn``);
* the effective rank of the backbone features, ``exp(H(p))`` with ``p_i = s_i^2 / sum s^2`` over
  the singular values of the centred (N, D) test features (Roy & Vetterli, 2007): a collapsing
  representation loses rank;
* the mean pairwise cosine similarity of the features.

A random-init encoder and SimCLR (``recipe=small``) are the reference rows. Example::

    python benchmarks/bench_byol_short.py --budget 15000
    python benchmarks/bench_byol_short.py --budget 15000 --variants base fixed_target simclr
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from divssl.evaluate.features import load_encoder, task_features
from divssl.evaluate.knn import knn_scores
from divssl.evaluate.tasks import open_task
from divssl.pretrain.config import load_config
from divssl.pretrain.loop import pretrain

POOL = "world:classes=10:per_class=1000:size=16:seed=0"
TASK = "world:classes=10:per_class=200:size=16:seed=0"

_SYM_VIEWS = [
    f"augment.{v}.{k}={x}"
    for v in ("view1", "view2")
    for k, x in (
        ("brightness", 0.4),
        ("contrast", 0.4),
        ("saturation", 0.4),
        ("hue", 0.1),
        ("blur_p", 0.0),
        ("solarize_p", 0.0),
    )
]
# name: (method, overrides on top of recipe=small)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "base": ("byol", []),
    "fixed_target": ("byol", ["method_args.base_tau=1.0", "method_args.final_tau=1.0"]),
    "no_ema": ("byol", ["method_args.base_tau=0.0", "method_args.final_tau=0.0"]),
    "wd0": ("byol", ["optim.weight_decay=0", "optim.final_weight_decay=0"]),
    "simclr_views": ("byol", _SYM_VIEWS),
    "batch64": ("byol", ["batch_size=64"]),
    "sgd": ("byol", ["optim.name=sgd", "optim.base_lr=0.05"]),
    "simclr": ("simclr", []),
}


def feature_stats(features: np.ndarray) -> dict[str, float]:
    """Effective rank and mean pairwise cosine similarity of (N, D) features."""
    x = features.astype(np.float64)
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    p = s**2 / (s**2).sum()
    p = p[p > 0]
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    return {
        "effective_rank": float(np.exp(-(p * np.log(p)).sum())),
        "mean_cos": float((xn @ xn.T).mean()),
    }


def score(run_dir: Path | None) -> dict[str, float]:
    """kNN top-1 and feature statistics of a run's backbone (random init for ``None``)."""
    if run_dir is None:
        enc = load_encoder(None, init="random", backbone="convnet_tiny", image_size=16)
    else:
        enc = load_encoder(run_dir)
    feats = task_features(enc, open_task(TASK), torch.device("cpu"))
    train, test = feats["train"], feats["test"]
    pred = knn_scores(train.features, train.labels, test.features, 10, k=20).argmax(1)
    return {"knn_top1": float((pred == test.labels).mean()), **feature_stats(test.features)}


def main() -> None:
    """Run the variants and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--budget", type=int, default=15_000, help="C, images per run")
    parser.add_argument("--out", type=Path, default=None, help="runs folder (default: temp)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="divssl-byol-"))
    rows: list[dict[str, Any]] = [{"variant": "random init", **score(None), "seconds": 0.0}]
    for name in args.variants:
        method, extra = VARIANTS[name]
        overrides = [f"data.pool={POOL}", f"method={method}", "recipe=small"]
        overrides += [f"budget.images={args.budget}", "tracking=none", f"out={root / name}"]
        t0 = time.perf_counter()
        run = pretrain(load_config(None, overrides + extra))
        seconds = time.perf_counter() - t0
        rows.append({"variant": name, **score(run), "seconds": seconds})
    print(f"C = {args.budget:,}")
    print("| variant | kNN top-1 (ID test) | effective rank | mean cos | pretrain s |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['variant']} | {100 * r['knn_top1']:.1f}% | {r['effective_rank']:.1f} | "
            f"{r['mean_cos']:.2f} | {r['seconds']:.0f} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
