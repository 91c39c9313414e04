"""Linear-probe cost: the cached-feature L-BFGS sweep against the SGD-on-images protocol.

On a world task, extracts (and caches) the frozen features once, then times

* ``cached``: the full sweep of weight decays (each solved down the regularisation path), the choice
  and the refit, on cached features;
* ``cached (hit)``: reading the cached features back;
* ``sgd``: solo-learn's protocol, E epochs of SGD on augmented images through the frozen backbone
  (one setting, so no sweep or refit: the cheapest case of that protocol).

Each row reports the median of ``--repeats`` timed runs after one untimed warm-up (CUDA is
synchronised before each clock read) and the test top-1 of the resulting probe. The backbone is
a random-init ``convnet_tiny`` unless ``--run DIR`` names a pretraining run.

``--features NxD`` (repeatable, e.g. ``10000x512`` and ``50000x2048``) adds issue 13's
comparison on cached features of that size (synthetic, 10 overlapping Gaussian classes, a
10,000-image test set), each timed once in the same run:

* ``divssl probe``: the default cached probe (7 weight decays solved down the regularisation
  path, validation choice, refit), its L-BFGS evaluations and seconds per evaluation;
* ``sklearn probe``: scikit-learn doing the same job (same carve, standardisation, lambdas,
  warm starts and gradient tolerances, choice and refit; :func:`sklearn_probe`);
* the chosen weight decay's single cold fit (``fit_lbfgs``) and ``LogisticRegression`` (lbfgs)
  at the same weight decay (``C = 1 / (n lambda)``), default ``tol=1e-4`` and divssl's tolerance;
* ``sgd 100 epochs``: the SGD protocol on the same cached features (``solver=sgd``, solo-learn's
  LR 0.1 per 256, batch 256, no weight decay).

It prints seconds, test top-1 and the speed ratios (goals: >= 50x faster than 100 SGD epochs at
equal accuracy +- 0.5 pt; no slower than sklearn), and the work of each in passes of an
(n, D) x (D, K) product over the features (``probe_gemm_passes``: 2 per L-BFGS evaluation, float64;
``sgd_gemm_passes``: 3 per SGD epoch, float32), which bounds the ratio the design can reach.
``--skip-world`` leaves out the world rows.

Example::

    python benchmarks/bench_probe.py --classes 10 --per-class 500 --size 16 --epochs 10
    python benchmarks/bench_probe.py --device cuda --json out.json
    python benchmarks/bench_probe.py --skip-world --features 10000x512 --features 50000x2048
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=10, help="world classes K")
    parser.add_argument("--per-class", type=int, default=500, help="train images per class")
    parser.add_argument("--size", type=int, default=16, help="image side")
    parser.add_argument("--run", type=Path, default=None, help="run dir (default: random init)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the SGD protocol")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument(
        "--features", action="append", default=[], help="NxD cached-feature comparison (repeat)"
    )
    parser.add_argument("--sgd-epochs", type=int, default=100, help="epochs of the SGD row")
    parser.add_argument("--skip-world", action="store_true", help="only the --features rows")
    parser.add_argument(
        "--sklearn-threads",
        type=int,
        default=1,
        help="BLAS/OpenMP threads of the scikit-learn rows (0: the libraries' default, one per "
        "core; divssl's probe uses one)",
    )
    return parser.parse_args(argv)


def synthetic_features(
    n: int, dim: int, seed: int, classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) float32 features of overlapping Gaussian classes, and (n,) labels."""
    rng = np.random.default_rng([seed, dim])
    centers = np.random.default_rng(dim).normal(size=(classes, dim)) * (3.0 / np.sqrt(dim))
    y = rng.integers(0, classes, n)
    x = centers[y] + rng.normal(size=(n, dim))
    return x.astype(np.float32), y


def sklearn_probe(
    x: np.ndarray, y: np.ndarray, weight_decays: tuple[float, ...], seed: int = 0
) -> tuple[float, Any, list[dict[str, Any]]]:
    """scikit-learn doing divssl's probe job: the same validation carve and standardisation, the
    same lambdas from the largest down, warm-started (``warm_start=True``), each at divssl's
    gradient tolerance (scikit-learn's ``tol`` bounds the same max-|gradient|, since its lbfgs
    objective is divssl's at ``C = 1 / (n lambda)``), the choice on validation and the refit.

    Returns:
        The chosen lambda, the refitted classifier and per-lambda records.
    """
    from sklearn.linear_model import LogisticRegression

    from divssl.evaluate.linear import GRAD_TOL_FLOOR, GRAD_TOL_REL, Standardizer, stratified_split

    def tol(lam: float) -> float:
        return max(GRAD_TOL_REL * lam, GRAD_TOL_FLOOR)

    fit_idx, val_idx = stratified_split(y, 0.1, seed)
    scaler = Standardizer.fit(x[fit_idx])
    xf, xv = scaler(x[fit_idx]).astype(np.float64), scaler(x[val_idx])
    clf = LogisticRegression(warm_start=True, max_iter=100_000)
    records = []
    for lam in sorted(weight_decays, reverse=True):
        clf.set_params(C=1.0 / (len(fit_idx) * lam), tol=tol(lam))
        t0 = time.perf_counter()
        clf.fit(xf, y[fit_idx])
        records.append({"weight_decay": lam, "seconds": time.perf_counter() - t0,
                        "iterations": int(clf.n_iter_[0]),
                        "val_top1": float(np.mean(clf.predict(xv) == y[val_idx]))})  # fmt: skip
    best = max(records, key=lambda r: (r["val_top1"], r["weight_decay"]))
    lam = best["weight_decay"]
    full = Standardizer.fit(x)
    refit = LogisticRegression(C=1.0 / (len(y) * lam), tol=tol(lam), max_iter=100_000)
    refit.fit(full(x).astype(np.float64), y)
    return lam, (full, refit), records


def bench_features(
    n: int, dim: int, sgd_epochs: int, device: torch.device, sklearn_threads: int = 1
) -> list[dict]:
    """Issue 13's cached-probe comparison at one size (each row timed once, same run)."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from divssl.evaluate.linear import (
        DEFAULT_WEIGHT_DECAYS,
        ProbeConfig,
        Standardizer,
        fit_lbfgs,
        probe_features,
    )

    x, y = synthetic_features(n, dim, seed=0)
    x_test, y_test = synthetic_features(10_000, dim, seed=1)
    k = int(y.max()) + 1
    rows: list[dict[str, Any]] = []

    def clock(fn: Callable[[], Any]) -> tuple[float, Any]:
        start = time.perf_counter()
        out = fn()
        return time.perf_counter() - start, out

    t_probe, probe = clock(lambda: probe_features(x, y, k, ProbeConfig(), device))
    wd = probe.chosen.weight_decay
    acc = float(np.mean(probe.predict(x_test).argmax(1) == y_test))
    per = [r for f in probe.fits.values() for r in f.per_setting]
    evals = sum(r["evaluations"] for r in per)
    rows.append({"row": "divssl probe: 7 wd path + choice + refit", "seconds": t_probe,
                 "top1": acc, "chosen_wd": wd, "evaluations": evals,
                 "seconds_per_evaluation": sum(r["seconds"] for r in per) / evals,
                 "converged": all(f.converged for f in probe.fits.values()),
                 "sweep": per})  # fmt: skip
    sk_limit = sklearn_threads if sklearn_threads > 0 else None
    with threadpool_limits(limits=sk_limit):
        t_skp, (sk_wd, (sk_scaler, sk_clf), sk_records) = clock(
            lambda: sklearn_probe(x, y, DEFAULT_WEIGHT_DECAYS)
        )
    rows.append({"row": "sklearn probe: same path, tolerances, choice, refit", "seconds": t_skp,
                 "top1": float(np.mean(sk_clf.predict(sk_scaler(x_test)) == y_test)),
                 "chosen_wd": sk_wd, "sweep": sk_records})  # fmt: skip
    scaler = Standardizer.fit(x)
    xs, xt = scaler(x), scaler(x_test)
    t_one, (heads, info) = clock(lambda: fit_lbfgs(xs, y, k, [wd], device))
    acc_one = float(np.mean(heads.predict_proba(xt)[0].argmax(1) == y_test))
    rows.append({"row": f"divssl fit_lbfgs, wd {wd:g} only (cold)", "seconds": t_one,
                 "top1": acc_one, "iterations": info.iterations,
                 "tolerance": info.per_setting[0]["tolerance"],
                 "converged": info.converged})  # fmt: skip
    x64 = xs.astype(np.float64)
    for tol in sorted({1e-4, info.per_setting[0]["tolerance"]}, reverse=True):
        clf = LogisticRegression(C=1.0 / (n * wd), tol=tol, max_iter=100_000)
        with threadpool_limits(limits=sk_limit):
            t_sk, _ = clock(lambda c=clf: c.fit(x64, y))
        rows.append({"row": f"sklearn lbfgs, wd {wd:g}, tol {tol:g} (cold)", "seconds": t_sk,
                     "top1": float(np.mean(clf.predict(xt) == y_test)),
                     "iterations": int(clf.n_iter_[0])})  # fmt: skip
    sgd_cfg = ProbeConfig(solver="sgd", epochs=sgd_epochs, weight_decays=(0.0,))
    t_sgd, sgd = clock(lambda: probe_features(x, y, k, sgd_cfg, device))
    sgd_acc = float(np.mean(sgd.predict(x_test).argmax(1) == y_test))
    rows.append({"row": f"sgd {sgd_epochs} epochs (cached features)", "seconds": t_sgd,
                 "top1": sgd_acc, "seconds_per_epoch": t_sgd / sgd_epochs})  # fmt: skip
    for row in rows:
        row.update({"n": n, "dim": dim})
    # Work accounting (multiply-adds): an L-BFGS evaluation is two passes of (n, D) x (D, K) in
    # float64 (logits, then X^T residual); an SGD epoch is three (forward, weight and input
    # gradients; autograd computes the last although the features need none) in float32.
    ratios = {
        "sgd_over_probe": t_sgd / t_probe,
        "sklearn_probe_over_probe": t_skp / t_probe,
        "sklearn_tol1e-4_over_single_fit": rows[3]["seconds"] / t_one,
        "top1_probe_minus_sgd_pt": 100 * (acc - sgd_acc),
        "top1_probe_minus_sklearn_probe_pt": 100 * (acc - rows[1]["top1"]),
        "probe_gemm_passes": 2 * evals,
        "sgd_gemm_passes": 3 * sgd_epochs,
    }
    rows.append({"row": "ratios", "n": n, "dim": dim, "sklearn_threads": sklearn_threads,
                 **ratios})  # fmt: skip
    return rows


def _timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, Any]:
    """Median seconds of ``fn`` over ``repeats`` runs after one warm-up, and its last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark, print a table and return its rows."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("DIVSSL_CACHE", tempfile.mkdtemp(prefix="divssl-bench-"))
    from divssl.evaluate.features import (
        load_encoder,
        load_split_images,
        resolve_device,
        split_features,
    )
    from divssl.evaluate.linear import ProbeConfig, probe_features, probe_images
    from divssl.evaluate.tasks import open_task
    from divssl.io import atomic_write_json

    device = resolve_device(args.device)
    feature_rows: list[dict[str, Any]] = []
    for size in args.features:
        n, dim = (int(v) for v in size.lower().split("x"))
        feature_rows += bench_features(n, dim, args.sgd_epochs, device, args.sklearn_threads)
        for row in feature_rows:
            if row["n"] == n and row["dim"] == dim:
                extra = {k: v for k, v in row.items() if k not in ("sweep", "row")}
                print(f"{row['row']:<44} {extra}", flush=True)
    if args.skip_world:
        if args.json:
            atomic_write_json(args.json, {"device": str(device), "features": feature_rows})
        return feature_rows
    task = open_task(f"world:classes={args.classes}:per_class={args.per_class}:size={args.size}")
    if args.run is not None:
        enc = load_encoder(args.run)
    else:
        enc = load_encoder(init="random", backbone="convnet_tiny", image_size=args.size)
    start = time.perf_counter()
    train = split_features(enc, task, "train", device)
    test = split_features(enc, task, "test", device)
    extract_s = time.perf_counter() - start
    hit_s, _ = _timed(lambda: split_features(enc, task, "train", device), device, args.repeats)
    k = task.num_classes

    def top1(probe: Any) -> float:
        return float(np.mean(probe.predict(test.features).argmax(1) == test.labels))

    cached_cfg = ProbeConfig(seed=0)
    cached_s, cached = _timed(
        lambda: probe_features(train.features, train.labels, k, cached_cfg, device),
        device,
        args.repeats,
    )
    images, labels, _ = load_split_images(task, "train", enc.image_size)
    sgd_cfg = ProbeConfig(protocol="sgd", epochs=args.epochs, seed=0)
    sgd_s, sgd = _timed(
        lambda: probe_images(
            enc.model,
            images,
            np.arange(len(labels)),
            labels,
            train.features,
            k,
            enc.feat_dim,
            enc.image_size,
            sgd_cfg,
            device,
        ),  # fmt: skip
        device,
        max(1, args.repeats - 2),
    )
    n = len(train.labels)
    rows = [
        {"row": "extract (train+test)", "seconds": extract_s, "images": n + len(test.labels)},
        {"row": "cached (hit, train)", "seconds": hit_s, "images": n},
        {
            "row": f"cached L-BFGS sweep x{len(cached_cfg.settings())} + refit",
            "seconds": cached_s,
            "images": n,
            "top1": top1(cached),
            "chosen_wd": cached.chosen.weight_decay,
        },
        {
            "row": f"sgd protocol, {args.epochs} epochs",
            "seconds": sgd_s,
            "images": n * args.epochs,
            "top1": top1(sgd),
        },
    ]
    print(
        f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
        f"python={platform.python_version()} N_train={n} D={enc.feat_dim} K={k}"
    )
    print(f"{'row':<36} {'seconds':>9} {'images':>9} {'top1':>7}")
    for row in rows:
        acc = f"{100 * row['top1']:.1f}" if "top1" in row else "-"
        print(f"{row['row']:<36} {row['seconds']:>9.3f} {row['images']:>9} {acc:>7}")
    if args.json:
        atomic_write_json(
            args.json, {"device": str(device), "rows": rows, "features": feature_rows}
        )
    return rows + feature_rows


if __name__ == "__main__":
    main()
