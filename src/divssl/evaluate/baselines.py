"""Reference baselines that give probe scores a meaning: raw pixels and a random-init encoder.

A pretrained encoder "learns" only if its probe beats what needs no pretraining at all:

* ``pixels_knn``: the same weighted kNN (:func:`~divssl.evaluate.knn.knn_scores`, cosine
  similarity, vote weights ``exp(s / T)``) on raw pixel vectors;
* ``pixels_logreg``: the same linear probe (:func:`~divssl.evaluate.linear.probe_features`:
  standardised features, L-BFGS multinomial logistic regression, weight decay chosen on a
  validation carve) on raw pixel vectors;
* ``random_init``: the study's backbone with random weights, probed exactly like the runs
  (:func:`~divssl.evaluate.knn.run_knn` / :func:`~divssl.evaluate.linear.run_linear` with
  ``init="random"``).

Raw pixels are the images the encoder sees — decoded, resized and centre-cropped to its
``image_size`` by the probes' own geometry (:func:`~divssl.evaluate.features.eval_pixels` of the
runs' recipe scale, the transform of :func:`~divssl.evaluate.features.eval_transform`) — before
the run's mean/std normalisation, as values in [0, 1], flattened to (N, 3 S^2). Every baseline
uses the task, label fractions, k, temperature, probe settings, bootstrap and seeds of the
study's evaluation it stands beside.

:func:`compute_study_baselines` evaluates them for every kNN / linear evaluation of a study whose
spec asks for them (``report.baselines: true``) and writes ``STUDY_DIR/baselines.json``
atomically; the report shows them as reference rows (Table 1 section) and lines (Figure 4).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from divssl.errors import ConfigError
from divssl.progress import Activity

if TYPE_CHECKING:  # the study layer reads this module's results; no run-time import back
    from divssl.study.jobs import PlanDoc

BASELINES: tuple[str, ...] = ("pixels_knn", "pixels_logreg", "random_init")
BASELINES_FILE = "baselines.json"


def pixel_features(
    images: np.ndarray, image_size: int, batch_size: int = 4096, recipe: str | None = None
) -> np.ndarray:
    """Raw pixel vectors at the encoder's input size, in the probes' geometry.

    Args:
        images: (N, H, W, 3) uint8 images (may be memory-mapped).
        image_size: S, the side the encoder sees.
        batch_size: images per resize batch.
        recipe: the runs' recipe (its scale's geometry,
            :func:`~divssl.evaluate.features.eval_geometry`); ``None``: picked from S.

    Returns:
        (N, 3 * S * S) float32 pixel values in [0, 1]
        (:func:`~divssl.evaluate.features.eval_pixels`: no normalisation).
    """
    from divssl.evaluate.features import eval_geometry, eval_pixels

    geometry = eval_geometry(image_size, recipe)
    out = np.empty((len(images), 3 * image_size * image_size), dtype=np.float32)
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
        x = eval_pixels(chunk.permute(0, 3, 1, 2), geometry)
        out[start : start + len(chunk)] = x.flatten(1).numpy()
    return out


def task_pixels(
    task_spec: str,
    image_size: int,
    decode_cache: str = "memory",
    workers: int = 0,
    recipe: str | None = None,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """Pixel features and task-aligned labels of every split a task declares.

    Splits are decoded and transformed as the probes of runs of ``recipe`` decode and transform
    them (``None``: the recipe ``auto`` picks from S).

    Returns:
        ``{split: ((N, 3 S^2) features, (N,) labels)}`` for train/val/test/ood, and K.
    """
    from divssl.evaluate.features import load_split_images
    from divssl.evaluate.tasks import open_task

    task = open_task(task_spec)
    out = {}
    for split in ("train", "val", "test", "ood"):
        if task.has(split):
            images, labels, _ = load_split_images(
                task, split, image_size, decode_cache, workers, recipe
            )
            out[split] = (pixel_features(images, image_size, recipe=recipe), labels)
    return out, task.num_classes


def pixel_knn(
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    *,
    ks: Sequence[int],
    temperature: float,
    fractions: Sequence[float],
    eval_seed: int = 0,
    n_boot: int = 1000,
    level: float = 0.95,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Weighted kNN on pixel vectors, entries shaped like :func:`run_knn`'s ``results``.

    Args:
        splits: from :func:`task_pixels`.
        num_classes: K.
        ks: neighbour counts.
        temperature: vote temperature T.
        fractions: label percentages of the train split (nested, stratified, seeded).
        eval_seed: seed of the label-fraction subsets and bootstraps.
        n_boot: bootstrap resamples.
        level: interval coverage.
        device: compute device of the similarity blocks.

    Returns:
        One dict per (fraction, k): ``fraction``, ``k``, and per evaluated split its
        :func:`~divssl.evaluate.stats.metric_report`.
    """
    from divssl.evaluate.knn import knn_scores
    from divssl.evaluate.linear import check_fractions, label_fraction_indices
    from divssl.evaluate.stats import metric_report

    x_train, y_train = splits["train"]
    subsets = label_fraction_indices(y_train, check_fractions(fractions), eval_seed)
    results = []
    for f, idx in subsets.items():
        for k in sorted(set(ks)):
            entry: dict[str, Any] = {"fraction": f, "k": k, "k_used": min(k, len(idx))}
            for split in ("test", "ood"):
                if split in splits:
                    x, y = splits[split]
                    scores = knn_scores(
                        x_train[idx], y_train[idx], x, num_classes, k, temperature, device=device
                    )
                    entry[split] = metric_report(y, scores, num_classes, n_boot, eval_seed, level)
            results.append(entry)
    return results


def pixel_logreg(
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    *,
    fractions: Sequence[float],
    weight_decays: Sequence[float] | None = None,
    val_fraction: float = 0.1,
    max_iter: int = 300,
    eval_seed: int = 0,
    n_boot: int = 1000,
    level: float = 0.95,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Logistic regression on pixel vectors with the study's linear-probe solver and sweep.

    ``device`` is where the probe is fitted (the features stay NumPy arrays). On the CPU its
    objective runs on one BLAS thread, like the runs' probes: on 60k x 2352 Fashion-MNIST pixels
    two threads were no faster (about 800 s either way, quiet 2-core VM; the chunked objective is
    bound by memory traffic, not FLOPs), and one thread cannot stall beside a busy neighbour.

    Returns:
        One dict per fraction: ``fraction``, ``chosen`` setting, ``n_train``, and per evaluated
        split its :func:`~divssl.evaluate.stats.metric_report`.
    """
    from dataclasses import asdict

    from divssl.evaluate.linear import (
        ProbeConfig,
        check_fractions,
        label_fraction_indices,
        probe_features,
    )
    from divssl.evaluate.stats import metric_report

    cfg = ProbeConfig(
        weight_decays=tuple(weight_decays) if weight_decays else None,
        val_fraction=val_fraction,
        seed=eval_seed,
        max_iter=max_iter,
    )
    x_train, y_train = splits["train"]
    val = splits.get("val")
    subsets = label_fraction_indices(y_train, check_fractions(fractions), eval_seed)
    results = []
    for f, idx in subsets.items():
        probe = probe_features(x_train[idx], y_train[idx], num_classes, cfg, device, val)
        entry: dict[str, Any] = {
            "fraction": f,
            "n_train": probe.n_train,
            "chosen": asdict(probe.chosen),
        }
        for split in ("test", "ood"):
            if split in splits:
                x, y = splits[split]
                entry[split] = metric_report(
                    y, probe.predict(x), num_classes, n_boot, eval_seed, level
                )
        results.append(entry)
    return results


def _rows(
    baseline: str, ev: dict[str, Any], results: list[dict[str, Any]], setup: dict[str, Any]
) -> list[dict[str, Any]]:
    """Flatten result entries into report rows (one per split and metric)."""
    rows = []
    for entry in results:
        for split, name in (("test", "id"), ("ood", "ood")):
            report = entry.get(split)
            if not isinstance(report, dict):
                continue
            for metric in ("top1", "top5", "macro_f1"):
                cell = report.get(metric)
                if not isinstance(cell, dict):
                    continue
                rows.append(
                    {
                        "baseline": baseline,
                        "eval": ev["kind"],
                        "eval_id": ev["id"],
                        "task": ev["task"],
                        "label_fraction": float(entry["fraction"]),
                        "k": entry.get("k"),
                        "split": name,
                        "metric": metric,
                        "value": float(cell["value"]),
                        "ci_low": cell["ci_low"],
                        "ci_high": cell["ci_high"],
                        "n": cell.get("n"),
                        **setup,
                    }
                )
    return rows


def _encoders(plan_doc: PlanDoc) -> list[dict[str, Any]]:
    """Distinct (backbone, image_size, cifar_stem, recipe) of the study's pretraining runs.

    The recipe sets the evaluation geometry the pixel baselines share with the runs' probes.
    """
    from divssl.pretrain.recipes import pick_recipe

    seen: dict[tuple, dict[str, Any]] = {}
    for job in plan_doc.runs:
        cfg = job.config
        size = int(cfg["image_size"])
        recipe = pick_recipe(str(cfg.get("recipe") or "auto"), size)
        key = (cfg.get("backbone"), size, bool(cfg.get("cifar_stem", False)), recipe)
        seen.setdefault(
            key,
            {"backbone": key[0], "image_size": size, "cifar_stem": key[2], "recipe": recipe},
        )
    return list(seen.values())


def _evaluations(plan_doc: PlanDoc) -> list[dict[str, Any]]:
    """The distinct kNN / cached-linear evaluations of the study's pretraining runs (in the
    plan's flat form: settings plus ``id`` and ``task_spec``)."""
    seen: dict[str, dict[str, Any]] = {}
    for job in plan_doc.runs:
        for ev in job.evaluations:
            st = ev.settings
            if st.kind == "knn" or (st.kind == "linear" and st.protocol == "cached"):
                seen.setdefault(ev.id, ev.model_dump(mode="json"))
    return list(seen.values())


def compute_study_baselines(study_dir: str | Path, seed: int = 0) -> list[dict[str, Any]]:
    """Evaluate every baseline beside every kNN / cached linear evaluation of a study.

    For each evaluation and each distinct encoder input (backbone, image size, stem) of the
    study's runs: pixel kNN or pixel logistic regression (matching the evaluation's kind) and the
    random-init backbone (initialisation seed ``seed``) probed with the evaluation's settings.
    Results of the random-init probes go to ``STUDY_DIR/baselines/random_init/``; the rows go to
    ``STUDY_DIR/baselines.json`` (written atomically).

    Returns:
        Rows ``{baseline, eval, eval_id, task, label_fraction, k, split, metric, value, ci_low,
        ci_high, n, backbone, image_size, cifar_stem, seconds}`` (values as fractions, like the
        study's results).
    """
    from divssl.evaluate.features import resolve_device
    from divssl.evaluate.knn import run_knn
    from divssl.evaluate.linear import run_linear
    from divssl.io import atomic_write_json
    from divssl.study.jobs import read_plan

    root = Path(study_dir)
    plan_doc = read_plan(root)
    device = str(resolve_device("auto"))  # where the study's own probes run
    rows: list[dict[str, Any]] = []
    pixels: dict[tuple[str, int, str], tuple[dict, int]] = {}
    for enc in _encoders(plan_doc):
        for ev in _evaluations(plan_doc):
            key = (ev["task_spec"], enc["image_size"], enc["recipe"])
            if key not in pixels:
                pixels[key] = task_pixels(ev["task_spec"], enc["image_size"], recipe=enc["recipe"])
            splits, k_classes = pixels[key]
            stats = {"eval_seed": ev["eval_seed"], "n_boot": ev["n_boot"], "level": ev["level"]}
            pix = {**stats, "device": device}
            t0 = time.perf_counter()
            name = "pixels_knn" if ev["kind"] == "knn" else "pixels_logreg"
            with Activity(f"baseline {name} beside {ev['id']} ({enc['image_size']} px)"):
                if ev["kind"] == "knn":
                    results = pixel_knn(
                        splits, k_classes, ks=ev["k"], temperature=ev["temperature"],
                        fractions=ev["fractions"], **pix,
                    )  # fmt: skip
                else:
                    results = pixel_logreg(
                        splits, k_classes, fractions=ev["fractions"],
                        weight_decays=ev["weight_decays"], val_fraction=ev["val_fraction"],
                        max_iter=ev["max_iter"], **pix,
                    )  # fmt: skip
            setup = {**enc, "seconds": round(time.perf_counter() - t0, 3)}
            rows += _rows(name, ev, results, {**setup, "backbone": "pixels"})
            t0 = time.perf_counter()
            common = {
                **stats,
                "init": "random",
                "seed": seed,
                "out_dir": root / "baselines" / "random_init" / ev["id"],
                "feature_batch_size": ev["feature_batch_size"],
                **{k: enc[k] for k in ("backbone", "image_size", "cifar_stem")},
            }
            label = f"baseline random_init {enc['backbone']} beside {ev['id']}"
            with Activity(f"{label} ({enc['image_size']} px)"):
                if ev["kind"] == "knn":
                    out = run_knn(
                        None, ev["task_spec"], ks=ev["k"], temperature=ev["temperature"],
                        fractions=ev["fractions"], **common,
                    )  # fmt: skip
                else:
                    out = run_linear(
                        None, ev["task_spec"], fractions=ev["fractions"],
                        weight_decays=ev["weight_decays"], val_fraction=ev["val_fraction"],
                        max_iter=ev["max_iter"], **common,
                    )  # fmt: skip
            setup = {**enc, "seconds": round(time.perf_counter() - t0, 3)}
            rows += _rows("random_init", ev, out["results"], setup)
    if not rows:
        raise ConfigError("baselines", "the study has no kNN or cached linear evaluation")
    atomic_write_json(root / BASELINES_FILE, rows)
    return rows
