"""Where a study's seed-to-seed variance comes from, and the smallest difference it resolves.

Reads finished study folders (``divssl quickstart --out DIR``, ``divssl run STUDY.yaml``; several
folders are pooled, e.g. the quickstart plus ``benchmarks/quickstart_variance_extra.yaml``'s extra
seeds), evaluates every completed run on its cached frozen features (the features the study's
probes used) and separates the spread of a run's ID top-1 into its sources:

* **SSL seed**: runs of one condition that differ only in ``seed`` (initialisation, sample order,
  augmentation): the pooled within-condition variance, minus the parts below;
* **probe selection**: a linear probe chooses its weight decay on a 10 % validation carve;
  choosing again on other carves (``--carves``) of the same features, with scikit-learn's
  converged probe, gives the variance the choice alone adds;
* **probe convergence**: the study's own linear probe (its record: test top-1, chosen weight
  decay, unconverged solves) against scikit-learn's ``LogisticRegression`` (lbfgs, default
  tolerance, ``C = 1 / (n lambda)``, the same minimiser) at one weight decay on the same
  standardised features;
* **test-set size**: the part of two runs' score difference that comes from the finite test
  split, ``var_i(c_a,i - c_b,i) / n`` per pair of runs of a condition (``c``: per-image
  correctness), halved per run; it shrinks as 1 / n_test;
* **data** (which subset): conditions that differ only in ``subset.seed`` give the between-subset
  variance by a one-way random-effects ANOVA; in a study whose subsets are fixed it is 0 by design
  and the contrasts are conditional on the subsets drawn.

Evaluations compared on the same features: weighted kNN (k = 20, T = 0.07, as the study runs it),
the study's linear probe (from its records), scikit-learn with the weight decay chosen on the
seed-0 carve, and scikit-learn at one weight decay for every run (the best validation top-1
averaged over all runs and carves: chosen once, on validation, never on test).

Last, for every contrast in the study's ``report.contrasts``, the smallest difference the design
resolves: with per-run standard deviation s (pooled over conditions) and n seeds per side the
95 % interval of a - b has half-width ``t(0.975, 2n - 2) * s * sqrt(2 / n)`` (paired over runs:
``t(0.975, n - 1) * s_d / sqrt(n)``, s_d the sd of the paired differences); an observed difference
larger than that is declared resolved, and a true difference of
``(t(0.975) + t(0.80)) * s * sqrt(2 / n)`` is resolved with 80 % probability. ``--seeds`` adds
projections for other seed counts.

Usage::

    python benchmarks/quickstart_variance.py STUDY_DIR [STUDY_DIR ...] [--carves 5]
        [--lambdas 1e-4 1e-3 ...] [--seeds 3 5 8] [--json OUT.json]

Cost: kNN is instant; each scikit-learn path costs one fit per weight decay, on all train images
and on each carve (measured under load, load average ~17 on 2 cores: ~25 s per run with three
weight decays and three carves). ``--lambdas`` with no value skips scikit-learn.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

EVALS = ("knn20", "linear", "sk_selected", "sk_fixed")
EVAL_NAMES = {
    "knn20": "kNN (k=20)",
    "linear": "divssl linear (study's probe)",
    "sk_selected": "sklearn linear, lambda on val",
    "sk_fixed": "sklearn linear, one lambda",
}
SPLITS = ("test", "ood")


@dataclass
class Run:
    """One completed pretraining run of the study.

    Attributes:
        run_id: job id (its folder under ``runs/``).
        path: run directory.
        cell: the run's condition, every grid value except ``seed``.
        seed: the run's seed.
        task_spec: the task the study's linear probe evaluates on.
        linear: the study's linear-probe settings (max_iter, val_fraction, weight_decays).
    """

    run_id: str
    path: Path
    cell: dict[str, Any]
    seed: int
    task_spec: str
    linear: dict[str, Any]
    correct: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    path_test: dict[str, np.ndarray] = field(default_factory=dict)
    val_acc: np.ndarray | None = None
    carve_acc: list[float] = field(default_factory=list)
    diag: dict[str, Any] = field(default_factory=dict)


def cell_key(cell: dict[str, Any]) -> str:
    """A condition as a short readable string."""
    return ", ".join(f"{k}={v}" for k, v in sorted(cell.items()) if v not in (None, ""))


def load_runs(study_dir: Path) -> list[Run]:
    """Completed pretraining runs of a study folder (those with a ``backbone.pt``)."""
    from divssl.study.results import read_plan

    plan = read_plan(study_dir)
    runs = []
    for job in plan["jobs"]:
        if job.get("kind") != "pretrain":
            continue
        path = study_dir / "runs" / job["id"]
        if not (path / "backbone.pt").is_file():
            continue
        evals = {e["kind"]: e for e in job.get("evaluations", [])}
        lin = evals.get("linear") or evals.get("knn")
        if lin is None:
            continue
        factors = {k: v for k, v in job.get("factors", {}).items() if k != "seed"}
        for key in ("pool", "composition", "normalization"):
            if job.get(key) is not None:
                factors[key] = job[key]
        config = job.get("config", {})
        factors.setdefault("subset.seed", (config.get("subset") or {}).get("seed", 0))
        runs.append(
            Run(
                run_id=job["id"],
                path=path,
                cell=factors,
                seed=int(job.get("factors", {}).get("seed", config.get("seed", 0))),
                task_spec=lin["task_spec"],
                linear={
                    "max_iter": int(lin.get("max_iter") or 1000),
                    "val_fraction": float(lin.get("val_fraction") or 0.1),
                    "weight_decays": lin.get("weight_decays"),
                },
            )
        )
    return runs


def _standardize(fit: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    from divssl.evaluate.linear import Standardizer

    scaler = Standardizer.fit(fit)
    return [scaler(fit), *(scaler(x) for x in others)]


def sklearn_path(
    x: np.ndarray, y: np.ndarray, lambdas: list[float], evals: list[np.ndarray]
) -> tuple[list[list[np.ndarray]], list[bool]]:
    """scikit-learn's converged multinomial logistic regression at every lambda.

    The objective ``C sum_i CE_i + 1/2 ||W||^2`` with ``C = 1 / (n lambda)`` is divssl's
    ``(1/n) sum_i CE_i + lambda/2 ||W||^2`` scaled by ``C n`` (same minimiser); solved largest
    lambda first, each warm-started at the previous optimum.

    Args:
        x: (n, D) standardised fit features.
        y: (n,) labels.
        lambdas: weight decays.
        evals: feature matrices (m, D) to predict.

    Returns:
        Per lambda (in the given order), the predicted labels of each of ``evals``; per lambda,
        whether lbfgs met its tolerance before ``max_iter``.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    order = sorted(range(len(lambdas)), key=lambda i: -lambdas[i])
    preds: list[list[np.ndarray]] = [[] for _ in lambdas]
    converged = [True] * len(lambdas)
    clf = LogisticRegression(tol=1e-8, max_iter=20000, warm_start=True)
    for i in order:
        clf.set_params(C=1.0 / (len(y) * lambdas[i]))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit(x, y)
        converged[i] = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        preds[i] = [clf.predict(e) for e in evals]
    return preds, converged


def read_linear_record(run: Run) -> None:
    """The study's own linear probe of the run (100 % labels), from its eval JSON: test and OOD
    top-1, the chosen weight decay and the convergence of its sweep."""
    for path in sorted(run.path.glob("eval/linear-*/linear_*.json")):
        doc = json.loads(path.read_text())
        for entry in doc.get("results", []):
            if float(entry["fraction"]) != 100.0:
                continue
            for split in SPLITS:
                if split in entry:
                    run.scores.setdefault("linear", {})[split] = entry[split]["top1"]["value"]
            sweep = entry["fits"].get("sweep", {})
            run.diag["divssl_chosen"] = entry["chosen"]["weight_decay"]
            run.diag["divssl_unconverged"] = [
                s["weight_decay"] for s in sweep.get("per_setting", []) if not s["converged"]
            ]
            run.diag["divssl_sweep_val"] = {
                str(s["weight_decay"]): s["val_top1"] for s in entry["sweep"]
            }


def evaluate_run(run: Run, carves: int, lambdas: list[float]) -> None:
    """kNN and scikit-learn probes of one run on its cached features.

    Fills ``run.correct`` (per evaluation and split, per-image correctness), ``run.path_test``
    (per lambda, the test/OOD correctness of the probe fitted on all train images),
    ``run.val_acc`` (carve x lambda validation top-1) and ``run.carve_acc`` (per carve, the test
    top-1 of the lambda that carve chooses: the selection noise).
    """
    import torch

    from divssl.evaluate.features import load_encoder, task_features
    from divssl.evaluate.knn import knn_scores
    from divssl.evaluate.linear import stratified_split
    from divssl.evaluate.tasks import open_task

    task = open_task(run.task_spec)
    feats = task_features(load_encoder(run.path), task, torch.device("cpu"))
    k = task.num_classes
    xtr, ytr = feats["train"].features, feats["train"].labels
    splits = {s: (feats[s].features, feats[s].labels) for s in SPLITS if s in feats}
    correct: dict[str, dict[str, np.ndarray]] = {e: {} for e in EVALS if e != "linear"}
    for s, (x, y) in splits.items():
        correct["knn20"][s] = knn_scores(xtr, ytr, x, k, k=20).argmax(1) == y
    read_linear_record(run)
    if lambdas:
        xs, *xe = _standardize(xtr, *(x for x, _ in splits.values()))
        preds, conv = sklearn_path(xs, ytr, lambdas, xe)
        run.diag["sklearn_converged"] = all(conv)
        for j, (s, (_, y)) in enumerate(splits.items()):
            run.path_test[s] = np.stack([p[j] == y for p in preds])  # (L, m)
        val = []
        for carve in range(carves):
            fit_idx, val_idx = stratified_split(ytr, run.linear["val_fraction"], carve)
            xf, xv = _standardize(xtr[fit_idx], xtr[val_idx])
            vp, _ = sklearn_path(xf, ytr[fit_idx], lambdas, [xv])
            acc = np.array([float((p[0] == ytr[val_idx]).mean()) for p in vp])
            val.append(acc)
            chosen = _choose(acc)
            run.carve_acc.append(float(run.path_test["test"][chosen].mean()))
            if carve == 0:
                for s in splits:
                    correct["sk_selected"][s] = run.path_test[s][chosen]
        run.val_acc = np.array(val)
    run.correct = correct
    for name, by_split in correct.items():
        for s, c in by_split.items():
            run.scores.setdefault(name, {})[s] = float(c.mean())


def _choose(val_acc: np.ndarray) -> int:
    """Index of the best validation accuracy; ties go to the larger lambda (divssl's rule;
    lambdas are sorted ascending)."""
    return len(val_acc) - 1 - int(np.argmax(val_acc[::-1]))


def pooled_within(values: dict[str, list[float]]) -> tuple[float, int]:
    """Pooled within-condition variance of per-run values and its degrees of freedom."""
    ss, df = 0.0, 0
    for vals in values.values():
        if len(vals) >= 2:
            v = np.asarray(vals, dtype=np.float64)
            ss += float(((v - v.mean()) ** 2).sum())
            df += len(v) - 1
    return (ss / df if df else float("nan")), df


def test_set_variance(cells: dict[str, list[Run]], name: str, split: str = "test") -> float:
    """Per-run variance from the finite test split: mean over pairs of runs of one condition of
    ``var_i(c_a,i - c_b,i) / (2 n)`` (NaN without per-image correctness)."""
    terms = []
    for runs in cells.values():
        have = [r for r in runs if split in r.correct.get(name, {})]
        for a, b in itertools.combinations(have, 2):
            d = a.correct[name][split].astype(np.float64) - b.correct[name][split]
            terms.append(d.var() / (2 * len(d)))
    return float(np.mean(terms)) if terms else float("nan")


def data_variance(runs: list[Run], name: str) -> tuple[float, int] | None:
    """Between-subset variance (one-way random-effects ANOVA over ``subset.seed``) within
    conditions that differ only in ``subset.seed``; ``None`` when no condition varies it."""
    groups: dict[str, dict[int, list[float]]] = {}
    for r in runs:
        if "test" not in r.scores.get(name, {}):
            continue
        rest = {k: v for k, v in r.cell.items() if k != "subset.seed"}
        by_subset = groups.setdefault(cell_key(rest), {})
        by_subset.setdefault(int(r.cell["subset.seed"]), []).append(r.scores[name]["test"])
    estimates = []
    for by_subset in groups.values():
        sizes = [len(v) for v in by_subset.values()]
        if len(by_subset) < 2 or min(sizes) < 2:
            continue
        n0 = float(np.mean(sizes))
        means = np.array([np.mean(v) for v in by_subset.values()])
        ms_within, _ = pooled_within({str(k): v for k, v in by_subset.items()})
        estimates.append(((float(np.var(means, ddof=1)) * n0 - ms_within) / n0, len(by_subset)))
    if not estimates:
        return None
    return float(np.mean([e for e, _ in estimates])), int(sum(g for _, g in estimates))


def matches(cell: dict[str, Any], where: dict[str, Any]) -> bool:
    """Whether a condition matches a contrast side (split keys are ignored here)."""
    for key, value in where.items():
        if key == "split":
            continue
        have = cell.get(key)
        if key == "normalization" and have is None:
            have = "compute"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                if abs(float(have) - float(value)) > 1e-9:
                    return False
            except (TypeError, ValueError):
                return False
        elif str(have) != str(value):
            return False
    return True


def resolution(sd: float, n: int, paired: bool, power: float | None = None) -> float:
    """Half-width of the 95 % interval of a difference with n runs per side (or, with ``power``,
    the true difference resolved with that probability), for the per-run sd (paired: the sd of
    the paired differences)."""
    df = n - 1 if paired else 2 * n - 2
    se = sd / math.sqrt(n) if paired else sd * math.sqrt(2.0 / n)
    t = stats.t.ppf(0.975, df)
    if power is not None:
        t += stats.t.ppf(power, df)
    return float(t * se)


def _has(run: Run, name: str) -> bool:
    return "test" in run.scores.get(name, {})


def _split_key(where: dict[str, Any]) -> str:
    return "ood" if where.get("split") == "ood" else "test"


def contrast_row(
    runs: list[Run], spec: dict[str, Any], name: str, sd: float, seeds: list[int]
) -> dict[str, Any]:
    """Observed difference (Welch / paired t interval) and the design's resolution."""
    paired = bool(spec.get("paired"))
    a_where, b_where = spec.get("a", {}), spec.get("b", {})
    row: dict[str, Any] = {"contrast": spec.get("name", "a vs b"), "eval": name}
    if paired:
        sa, sb = _split_key(a_where), _split_key(b_where)
        sel = [
            r
            for r in runs
            if matches(r.cell, {**a_where, **b_where}) and {sa, sb} <= set(r.scores.get(name, {}))
        ]
        d = np.array([r.scores[name][sa] - r.scores[name][sb] for r in sel])
        if len(d) < 2:
            return {**row, "verdict": "no data"}
        res = stats.ttest_1samp(d, 0.0)
        sd_used, n, diff = float(d.std(ddof=1)), len(d), float(d.mean())
    else:
        a, b = (
            np.array([r.scores[name]["test"] for r in runs if _has(r, name) and matches(r.cell, w)])
            for w in (a_where, b_where)
        )
        if len(a) < 2 or len(b) < 2:
            return {**row, "verdict": "no data", "n": min(len(a), len(b))}
        res = stats.ttest_ind(a, b, equal_var=False)
        sd_used, n, diff = sd, min(len(a), len(b)), float(a.mean() - b.mean())
    ci = res.confidence_interval(0.95)
    counts = sorted({n, *seeds})
    row.update(
        diff=diff,
        ci=(float(ci.low), float(ci.high)),
        n=n,
        sd=sd_used,
        resolves={m: resolution(sd_used, m, paired) for m in counts},
        resolves80={m: resolution(sd_used, m, paired, 0.80) for m in counts},
    )
    return row


def analyse(
    study_dirs: list[Path], carves: int, seeds: list[int], lambdas: list[float] | None
) -> dict[str, Any]:
    """Evaluate every run and decompose the variance; returns a JSON-able summary."""
    from divssl.evaluate.linear import DEFAULT_WEIGHT_DECAYS
    from divssl.io import read_yaml

    runs = [r for d in study_dirs for r in load_runs(d)]
    if not runs:
        raise SystemExit(f"no completed runs under {[str(d) for d in study_dirs]}")
    grid = sorted(float(w) for w in (lambdas if lambdas is not None else DEFAULT_WEIGHT_DECAYS))
    for i, run in enumerate(runs):
        t0 = time.perf_counter()
        evaluate_run(run, carves, grid)
        print(
            f"[{i + 1}/{len(runs)}] {run.run_id} {cell_key(run.cell)} seed={run.seed}: "
            + ", ".join(f"{e} {100 * v['test']:.1f}" for e, v in run.scores.items())
            + f" ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    out: dict[str, Any] = {"study_dirs": [str(d) for d in study_dirs], "runs": len(runs)}
    if grid:
        # One weight decay for the whole study: the best mean validation top-1 over all runs and
        # carves (chosen on validation, never on test).
        mean_val = np.mean([r.val_acc.mean(0) for r in runs], axis=0)
        fixed = _choose(mean_val)
        for r in runs:
            for s in r.path_test:
                r.correct["sk_fixed"][s] = r.path_test[s][fixed]
                r.scores.setdefault("sk_fixed", {})[s] = float(r.path_test[s][fixed].mean())
        out.update(
            lambdas=grid, fixed_lambda=grid[fixed], mean_val_acc_per_lambda=mean_val.tolist()
        )
    cells: dict[str, list[Run]] = {}
    for r in runs:
        cells.setdefault(cell_key(r.cell), []).append(r)
    names = [e for e in EVALS if any("test" in r.scores.get(e, {}) for r in runs)]
    out.update(
        conditions={k: len(v) for k, v in cells.items()},
        n_test=int(len(runs[0].correct["knn20"]["test"])),
        per_run=[
            {
                "run": r.run_id,
                "cell": cell_key(r.cell),
                "seed": r.seed,
                "scores": r.scores,
                "carve_acc": r.carve_acc,
                **r.diag,
            }
            for r in runs
        ],
        decomposition={},
        contrasts=[],
    )
    for name in names:
        # Without varying subsets in a condition, conditions are (cell incl. subset.seed).
        values = {
            k: [r.scores[name]["test"] for r in v if "test" in r.scores.get(name, {})]
            for k, v in cells.items()
        }
        total, df = pooled_within(values)
        test_var = test_set_variance(cells, name)
        select = 0.0
        if name == "sk_selected" and carves > 1:
            select = float(np.mean([np.var(r.carve_acc, ddof=1) for r in runs]))
        data = data_variance(runs, name)
        known = select + (0.0 if math.isnan(test_var) else test_var)
        out["decomposition"][name] = {
            "within_var": total,
            "within_df": df,
            "test_set_var": test_var,
            "probe_selection_var": select,
            "ssl_seed_var": total - known,
            "data_var": None if data is None else data[0],
            "data_subsets": None if data is None else data[1],
        }
    spec = read_yaml(study_dirs[0] / "study.yaml")
    for name in names:
        sd = math.sqrt(max(out["decomposition"][name]["within_var"], 0.0))
        for c in (spec.get("report") or {}).get("contrasts") or []:
            out["contrasts"].append(contrast_row(runs, c, name, sd, seeds))
    return out


def print_report(out: dict[str, Any]) -> None:
    """The decomposition and the contrasts' resolution as plain-text tables (points)."""

    def sdp(v: float | None) -> str:
        if v is None or not np.isfinite(v):
            return "n/a"
        return f"{100 * math.copysign(math.sqrt(abs(v)), v):.2f}"

    print(f"\n{out['runs']} runs in {len(out['conditions'])} conditions; n_test = {out['n_test']}")
    for cell, n in out["conditions"].items():
        print(f"  {n} x {cell}")
    if "lambdas" in out:
        lam = ", ".join(
            f"{v:g}: {100 * a:.1f}"
            for v, a in zip(out["lambdas"], out["mean_val_acc_per_lambda"], strict=True)
        )
        print(f"sklearn mean validation top-1 per lambda ({lam}); one lambda = "
              f"{out['fixed_lambda']:g}")  # fmt: skip
    print("\nVariance of a run's ID top-1 by source, as standard deviations in points (a negative")
    print("value: that estimate fell below zero, i.e. the source is not distinguishable):")
    print(f"{'evaluation':32s} {'within':>7s} {'df':>3s} {'SSL seed':>8s} {'probe sel':>9s} "
          f"{'test set':>8s} {'data':>6s}")  # fmt: skip
    for name, d in out["decomposition"].items():
        print(
            f"{EVAL_NAMES[name]:32s} {sdp(d['within_var']):>7s} {d['within_df']:3d} "
            f"{sdp(d['ssl_seed_var']):>8s} {sdp(d['probe_selection_var']):>9s} "
            f"{sdp(d['test_set_var']):>8s} {sdp(d['data_var']):>6s}"
        )
    rec = [r for r in out["per_run"] if "divssl_chosen" in r]
    if rec:
        unconv = sum(len(r["divssl_unconverged"]) for r in rec)
        chosen = sorted({r["divssl_chosen"] for r in rec})
        print(f"\ndivssl probe (study records, {len(rec)} runs): chosen weight decays {chosen}; "
              f"{unconv} unconverged sweep solves")  # fmt: skip
        both = [r for r in rec if "sk_fixed" in r["scores"]]
        if both:
            gap = [r["scores"]["linear"]["test"] - r["scores"]["sk_fixed"]["test"] for r in both]
            print(f"divssl linear - sklearn one-lambda, mean {100 * np.mean(gap):+.2f} points, "
                  f"sd {100 * np.std(gap):.2f}")  # fmt: skip
    print("\nContrasts (ID top-1 unless paired over splits; points): a - b [95% t interval], runs")
    print("per side, per-run sd; then per seed count n the smallest observed difference the design")
    print("declares resolved (the interval half-width) / the true difference resolved with 80%")
    print("power:")
    for row in out["contrasts"]:
        label = f"  {row['contrast'][:58]:58s} {EVAL_NAMES[row['eval']]:32s}"
        if "diff" not in row:
            print(f"{label} no data")
            continue
        lo, hi = row["ci"]
        res = " ".join(
            f"n={m}: {100 * v:.1f}/{100 * row['resolves80'][m]:.1f}"
            for m, v in row["resolves"].items()
        )
        print(f"{label} {100 * row['diff']:+6.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] "
              f"n={row['n']} sd={100 * row['sd']:.1f} | {res}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dirs", type=Path, nargs="+", help="study folders (runs/, plan.json)")
    parser.add_argument("--carves", type=int, default=5, help="validation carves per run")
    parser.add_argument(
        "--lambdas", type=float, nargs="*", default=None,
        help="weight decays of the sklearn probes (default: divssl's 7; none: skip sklearn)",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="*", default=[3, 5, 8], help="seed counts")
    parser.add_argument("--json", type=Path, default=None, help="write the summary here")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    from divssl.threads import single_thread

    # Tiny problems (2,000 x 128 features): one BLAS/OpenMP thread (see divssl.threads).
    with threadpool_limits(1), single_thread("cpu"):
        out = analyse(args.study_dirs, args.carves, args.seeds, args.lambdas)
    print_report(out)
    if args.json is not None:
        from divssl.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
