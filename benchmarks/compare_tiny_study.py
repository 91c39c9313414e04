"""Run a tiny study (kNN, linear, fine-tuning + a from-scratch baseline) or compare two runs of it.

A refactor that must leave results unchanged is checked by running this study with the old and
the new source tree and comparing (run ids, evaluation ids and every number must agree):

    PYTHONPATH=OLD/src python benchmarks/compare_tiny_study.py run /tmp/old
    PYTHONPATH=NEW/src python benchmarks/compare_tiny_study.py run /tmp/new
    python benchmarks/compare_tiny_study.py compare /tmp/old /tmp/new

About a minute per run on one core.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

TASK = "world:classes=4:per_class=8:size=16:seed=0"
TREE = {
    "name": "tiny-compare",
    "pools": {"w": "world:classes=4:per_class=16:size=16:seed=0"},
    "tasks": {"wt": TASK},
    "base": {"backbone": "convnet_tiny", "image_size": 16, "batch_size": 32, "log_every": 1,
             "checkpoint_every": 1, "tracking": "none", "budget.images": 64, "optim.name": "sgd"},
    "grid": {"pool": ["w"], "subset.fraction": [0.5, 1.0], "seed": [0]},
    "evaluations": [
        {"kind": "knn", "task": "wt", "k": [3, 5], "n_boot": 10},
        {"kind": "linear", "task": "wt", "fractions": [50, 100], "n_boot": 10, "max_iter": 50},
        {"kind": "finetune", "task": "wt", "epochs": 1, "batch_size": 8, "eval_points": 2,
         "n_boot": 10, "scratch_seeds": [0]},
    ],
}  # fmt: skip
# what legitimately differs between two runs: timings and where the files are
VOLATILE = {"wall_seconds", "seconds", "path", "run_dir", "feature_cache"}
KEYS = ["run", "eval_id", "split", "label_fraction", "k", "eval_point", "metric"]
NUMBERS = ["value", "ci_low", "ci_high", "n", "budget_images", "unique_images", "images_seen"]


def run(out: Path) -> None:
    import torch
    from rich.console import Console

    from divssl.study.plan import build_plan
    from divssl.study.runner import run_study
    from divssl.study.spec import study_from_tree

    torch.set_num_threads(1)
    plan = build_plan(study_from_tree(TREE), out, count_flops=False)
    outcome = run_study(plan, console=Console(file=io.StringIO()))
    print([r["status"] for r in outcome.results], outcome.rows, "rows")


def _stable(doc: object) -> object:
    if isinstance(doc, dict):
        return {k: _stable(v) for k, v in doc.items() if k not in VOLATILE}
    if isinstance(doc, list):
        return [_stable(v) for v in doc]
    return doc


def compare(a: Path, b: Path) -> int:
    import pandas as pd

    old, new = pd.read_csv(a / "results.csv"), pd.read_csv(b / "results.csv")
    merged = old.merge(new, on=KEYS, suffixes=("_old", "_new"))
    problems = []
    if not len(old) == len(new) == len(merged):
        problems.append(f"rows: {len(old)} old, {len(new)} new, {len(merged)} matched")
    for col in NUMBERS:
        x, y = merged[f"{col}_old"], merged[f"{col}_new"]
        if not ((x == y) | (x.isna() & y.isna())).all():
            problems.append(f"{col} differs")
    for name in ("runs", "baselines"):
        ids = [sorted(p.name for p in (root / name).iterdir()) for root in (a, b)]
        if ids[0] != ids[1]:
            problems.append(f"{name} ids differ: {ids}")
    for path in sorted(a.glob("*/*/eval/*/*.json")):
        other = b / path.relative_to(a)
        old_res, new_res = json.loads(path.read_text()), json.loads(other.read_text())
        if _stable(old_res) != _stable(new_res):
            problems.append(f"{path.relative_to(a)} differs")
    print("\n".join(problems) or f"identical: {len(merged)} rows, every evaluation file")
    return 1 if problems else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run").add_argument("out", type=Path)
    cmp = sub.add_parser("compare")
    cmp.add_argument("a", type=Path)
    cmp.add_argument("b", type=Path)
    args = ap.parse_args()
    if args.cmd == "run":
        run(args.out)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
