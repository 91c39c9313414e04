"""Short runs on Fashion-MNIST: does SSL beat raw pixels and a random-init encoder?

For each run directory given (already pretrained with ``divssl pretrain``) and for a random-init
encoder of the same backbone and input size, prints kNN (k = 20, T = 0.07, full 60k labelled
memory bank) and, with ``--linear``, the cached linear probe (L-BFGS, weight-decay sweep) top-1 on
the official test split and the ``ood`` split, next to raw-pixel kNN / logistic regression at the
same input size (:mod:`divssl.evaluate.baselines`). Used to choose the design of
``studies/fashion_mnist.yaml`` (see ``docs/results_fashion_mnist.md``)::

    divssl pretrain method=simclr backbone=convnet_tiny image_size=28 budget.images=60000 \
        data.pool=idx:root=/usr/share/datasets/fashion-mnist out=runs/fm_simclr
    python benchmarks/realdata_short_runs.py runs/fm_simclr --pixels --linear
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

TASK = "idx:root=/usr/share/datasets/fashion-mnist"


def _top1(entry: dict, split: str) -> float:
    return round(100.0 * entry[split]["top1"]["value"], 2)


def main() -> None:
    from divssl.evaluate.baselines import pixel_knn, pixel_logreg, task_pixels
    from divssl.evaluate.knn import run_knn
    from divssl.evaluate.linear import run_linear

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--task", default=TASK)
    ap.add_argument("--pixels", action="store_true", help="also the raw-pixel baselines")
    ap.add_argument("--random", action="store_true", help="also a random-init encoder")
    ap.add_argument("--linear", action="store_true", help="also the linear probe (slower)")
    ap.add_argument("--fractions", default="100", help="label percentages, comma-separated")
    args = ap.parse_args()
    fractions = [float(f) for f in args.fractions.split(",")]
    # the L-BFGS cap these figures were measured with (run_linear's default until the linear
    # settings were unified on the study default of 1000; converged solves take 14-40 steps)
    probe = {"max_iter": 3000}
    rows = []
    sizes = set()
    for run in args.runs:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        sizes.add((str(cfg["backbone"]), int(cfg["image_size"])))
        knn = run_knn(run, args.task, ks=[20], fractions=fractions, n_boot=200, write=False)
        for e in knn["results"]:
            rows.append((str(run), "knn", e["fraction"], _top1(e, "test"), _top1(e, "ood")))
        if args.linear:
            lin = run_linear(run, args.task, fractions=fractions, n_boot=200, write=False, **probe)
            for e in lin["results"]:
                rows.append((str(run), "linear", e["fraction"], _top1(e, "test"), _top1(e, "ood")))
        print(*rows[-len(fractions) * (2 if args.linear else 1) :], sep="\n", flush=True)
    if args.random:
        for backbone, size in sorted(sizes):
            common = {"init": "random", "backbone": backbone, "image_size": size, "write": False}
            knn = run_knn(None, args.task, ks=[20], fractions=fractions, n_boot=200, **common)
            for e in knn["results"]:
                rows.append((f"random {backbone}@{size}", "knn", e["fraction"],
                             _top1(e, "test"), _top1(e, "ood")))  # fmt: skip
            if args.linear:
                lin = run_linear(
                    None, args.task, fractions=fractions, n_boot=200, **common, **probe
                )
                for e in lin["results"]:
                    rows.append((f"random {backbone}@{size}", "linear", e["fraction"],
                                 _top1(e, "test"), _top1(e, "ood")))  # fmt: skip
            print(*rows[-2:], sep="\n", flush=True)
    if args.pixels:
        for size in sorted({s for _, s in sizes} or {28}):
            splits, k = task_pixels(args.task, size)
            for e in pixel_knn(
                splits, k, ks=[20], temperature=0.07, fractions=fractions, n_boot=200
            ):
                rows.append(
                    (f"pixels@{size}", "knn", e["fraction"], _top1(e, "test"), _top1(e, "ood"))
                )
            if args.linear:
                for e in pixel_logreg(splits, k, fractions=fractions, n_boot=200):
                    rows.append((f"pixels@{size}", "logreg", e["fraction"], _top1(e, "test"),
                                 _top1(e, "ood")))  # fmt: skip
            print(*rows[-2:], sep="\n", flush=True)
    print(
        "\n| encoder | probe | labels % | test top-1 | ood top-1 |\n| --- | --- | --- | --- | --- |"
    )
    for r in rows:
        print("| " + " | ".join(str(v) for v in r) + " |")


if __name__ == "__main__":
    main()
