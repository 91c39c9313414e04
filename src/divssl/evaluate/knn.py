"""Weighted k-nearest-neighbour classification on cached features.

The protocol of Wu et al. (2018, instance discrimination) as used by DINO's ``eval_knn.py``:
features are L2-normalised, the k train features most cosine-similar to a test feature vote for
their class with weight ``exp(sim / T)`` (T = 0.07), and the class with the largest summed weight
wins. k defaults to 20 and 200 and is clipped to the train set size; test features are processed
in batches so the (batch, N_train) similarity matrix stays bounded.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from divssl.errors import ConfigError
from divssl.evaluate.settings import KnnSettings, RunOptions, split_settings
from divssl.threads import single_thread

DEFAULT_TEMPERATURE = KnnSettings.model_fields["temperature"].default  # T of Wu et al. (2018)


@torch.no_grad()
def knn_scores(
    train_features: np.ndarray | torch.Tensor,
    train_labels: np.ndarray | torch.Tensor,
    test_features: np.ndarray | torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = DEFAULT_TEMPERATURE,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Temperature-weighted kNN class scores.

    For each test feature q and its k most similar train features x_j (cosine similarity
    s_j = q.x_j / (|q| |x_j|)), the score of class c is ``sum_j [y_j = c] exp(s_j / T)``.

    Args:
        train_features: (N, D) memory bank.
        train_labels: (N,) int labels in [0, K).
        test_features: (M, D) queries.
        num_classes: K.
        k: neighbours (clipped to N).
        temperature: T of the vote weights.
        batch_size: queries per similarity block.
        device: compute device.

    Returns:
        (M, K) float32 class scores; the prediction is their arg-max.
    """
    if k < 1:
        raise ConfigError("k", f"must be >= 1, got {k}")
    if temperature <= 0:
        raise ConfigError("temperature", f"must be > 0, got {temperature}")
    dev = torch.device(device)
    # One intra-op thread on the CPU: many small top-k/scatter kernels per batch, which a thread
    # pool only slows down when another process holds a core (see divssl.threads).
    with single_thread(dev):
        return _knn_scores(
            train_features, train_labels, test_features, num_classes, k, temperature,
            batch_size, dev,
        )  # fmt: skip


def _knn_scores(
    train_features: np.ndarray | torch.Tensor,
    train_labels: np.ndarray | torch.Tensor,
    test_features: np.ndarray | torch.Tensor,
    num_classes: int,
    k: int,
    temperature: float,
    batch_size: int,
    dev: torch.device,
) -> np.ndarray:
    bank = F.normalize(torch.as_tensor(train_features, dtype=torch.float32, device=dev), dim=1)
    labels = torch.as_tensor(train_labels, dtype=torch.long, device=dev)
    queries = torch.as_tensor(test_features, dtype=torch.float32, device=dev)
    k = min(k, len(bank))
    out = []
    for start in range(0, len(queries), batch_size):
        q = F.normalize(queries[start : start + batch_size], dim=1)
        sims, idx = (q @ bank.T).topk(k, dim=1)
        weights = (sims / temperature).exp()
        scores = torch.zeros(len(q), num_classes, device=dev)
        scores.scatter_add_(1, labels[idx], weights)
        out.append(scores.cpu().numpy())
    if not out:
        return np.zeros((0, num_classes), dtype=np.float32)
    return np.concatenate(out)


def run_knn(
    run_dir: str | Path | None,
    task_spec: str,
    settings: KnnSettings | None = None,
    options: RunOptions | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """kNN evaluation of a run (or a random-init backbone) on a task.

    Args:
        run_dir: the pretraining run (``None`` only with ``init="random"`` and ``out_dir``).
        task_spec: task YAML path or pool spec with splits.
        settings: what is measured (:class:`~divssl.evaluate.settings.KnnSettings`: neighbour
            counts ``k`` (each clipped to the memory-bank size), temperature, label fractions of
            the bank, ...; its defaults when ``None``).
        options: where it runs (:class:`~divssl.evaluate.settings.RunOptions`; the results go
            to ``<out_dir>/knn_<task>.json``, default ``RUN_DIR/eval``).
        **kwargs: fields of either model, as a convenience that builds (or updates) them:
            ``run_knn(run, task, k=[20], device="cpu")`` (``ks=`` is accepted for ``k``).

    Returns:
        The results dict.

    Raises:
        ConfigError: a keyword no model declares or a value out of range, before any compute.
    """
    from divssl.evaluate.features import (
        load_encoder,
        resolve_device,
        results_header,
        results_path,
        task_features,
    )
    from divssl.evaluate.linear import check_fractions, label_fraction_indices
    from divssl.evaluate.stats import metric_report
    from divssl.evaluate.tasks import open_task
    from divssl.io import atomic_write_json

    settings, options = split_settings(KnnSettings, settings, options, kwargs)
    start = time.perf_counter()
    ks, temperature, fractions = settings.k, settings.temperature, settings.fractions
    eval_seed, n_boot, level = settings.eval_seed, settings.n_boot, settings.level
    pct = check_fractions(fractions)
    dev = resolve_device(options.device)
    task = open_task(task_spec)
    encoder = load_encoder(run_dir, **options.encoder_args())
    path = results_path("knn", task, encoder, options.out_dir) if options.write else None
    feats = task_features(
        encoder, task, dev, settings.feature_batch_size, options.decode_cache, options.workers
    )
    train, k_classes = feats["train"], task.num_classes
    subsets = label_fraction_indices(train.labels, pct, eval_seed)
    results = []
    for f in pct:
        idx = subsets[f]
        for k in sorted(set(ks)):
            entry: dict[str, Any] = {"fraction": f, "k": k, "k_used": min(k, len(idx))}
            for split in ("test", "ood"):
                if split not in feats:
                    continue
                scores = knn_scores(
                    train.features[idx], train.labels[idx], feats[split].features, k_classes, k,
                    temperature, device=dev,
                )  # fmt: skip
                entry[split] = metric_report(
                    feats[split].labels, scores, k_classes, n_boot, eval_seed, level
                )
            results.append(entry)
    out = results_header("knn", task, encoder, dev)
    out.update(
        {
            "config": {"ks": sorted(set(ks)), "temperature": temperature, "eval_seed": eval_seed},
            "fractions": pct,
            "feature_cache": {split: sf.record() for split, sf in feats.items()},
            "stats": {"n_boot": n_boot, "level": level, "seed": eval_seed},
            "results": results,
            "wall_seconds": round(time.perf_counter() - start, 3),
        }
    )
    if path is not None:
        out["path"] = str(path)
        atomic_write_json(path, out)
    return out
