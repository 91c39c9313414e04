"""Pixel and random-init baselines: features, kNN and logistic regression against references."""

from __future__ import annotations

import numpy as np
import pytest

from divssl.evaluate.baselines import pixel_features, pixel_knn, pixel_logreg


def _blobs(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 6, 6, 3) uint8 images whose mean brightness pattern depends on the class."""
    rng = np.random.default_rng(seed)
    protos = rng.integers(0, 256, (3, 6, 6, 3))
    labels = np.repeat(np.arange(3), n_per_class)
    noise = rng.normal(0, 40, (len(labels), 6, 6, 3))
    return np.clip(protos[labels] + noise, 0, 255).astype(np.uint8), labels


def test_pixel_features_are_raw_pixels_at_the_input_size():
    images, _ = _blobs(4, 0)
    feats = pixel_features(images, 6)  # no resize: x / 255 in (C, H, W) order
    expected = images.transpose(0, 3, 1, 2).reshape(len(images), -1) / 255.0
    np.testing.assert_allclose(feats, expected, atol=1e-6)
    small = pixel_features(images, 3)
    assert small.shape == (len(images), 27) and small.min() >= 0 and small.max() <= 1
    # an antialiased 2x down-sampling of a constant image stays that constant
    flat = np.full((1, 6, 6, 3), 128, np.uint8)
    np.testing.assert_allclose(pixel_features(flat, 3), 128 / 255, atol=1e-5)


def _reference_knn(xtr, ytr, xte, k, t, num_classes):
    """Weighted kNN from its definition: cosine similarity, top k, votes exp(s / T)."""
    a = xtr / np.linalg.norm(xtr, axis=1, keepdims=True)
    b = xte / np.linalg.norm(xte, axis=1, keepdims=True)
    sims = b @ a.T
    out = np.zeros((len(xte), num_classes))
    for i, row in enumerate(sims):
        top = np.argsort(-row)[:k]
        for j in top:
            out[i, ytr[j]] += np.exp(row[j] / t)
    return out.argmax(1)


def test_pixel_knn_matches_a_reference_vote():
    x_tr, y_tr = _blobs(20, 1)
    x_te, y_te = _blobs(10, 2)
    splits = {
        "train": (pixel_features(x_tr, 6), y_tr),
        "test": (pixel_features(x_te, 6), y_te),
    }
    (entry,) = pixel_knn(splits, 3, ks=[5], temperature=0.1, fractions=[100], n_boot=50)
    pred = _reference_knn(*splits["train"], splits["test"][0], 5, 0.1, 3)
    assert entry["k"] == 5 and entry["fraction"] == 100
    assert entry["test"]["top1"]["value"] == pytest.approx(np.mean(pred == y_te))
    assert "ood" not in entry


def test_pixel_logreg_matches_sklearn_at_a_fixed_weight_decay():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x_tr, y_tr = _blobs(30, 3)
    x_te, y_te = _blobs(20, 4)
    ftr, fte = pixel_features(x_tr, 6), pixel_features(x_te, 6)
    splits = {"train": (ftr, y_tr), "test": (fte, y_te), "ood": (fte[::-1], y_te[::-1])}
    lam = 1e-2
    (entry,) = pixel_logreg(splits, 3, fractions=[100], weight_decays=[lam], n_boot=50)
    assert entry["chosen"]["weight_decay"] == lam and entry["n_train"] == len(y_tr)
    # L(W) = mean CE + lam/2 ||W||^2  <=>  sklearn's C = 1 / (n lam) on standardised features
    scaler = StandardScaler().fit(ftr)
    ref = LogisticRegression(C=1.0 / (len(y_tr) * lam), max_iter=5000).fit(
        scaler.transform(ftr), y_tr
    )
    ref_acc = float(np.mean(ref.predict(scaler.transform(fte)) == y_te))
    assert entry["test"]["top1"]["value"] == pytest.approx(ref_acc, abs=0.02)
    assert entry["ood"]["top1"]["value"] == pytest.approx(entry["test"]["top1"]["value"])


@pytest.mark.slow
def test_compute_study_baselines_writes_rows_for_each_evaluation(tmp_path, capsys):
    import json

    from tests.study.conftest import plan_doc, pretrain_job

    from divssl.evaluate.baselines import compute_study_baselines
    from divssl.study.jobs import PlannedEvaluation
    from divssl.study.spec import KnnEval, LinearEval

    task = "world:classes=3:per_class=12:size=8:seed=0"
    evals = [
        PlannedEvaluation.of(ev, task)  # the plan's form of an evaluation (divssl.study.jobs)
        for ev in (KnnEval(task="w", k=[5], n_boot=20), LinearEval(task="w", fractions=[50, 100],
                   weight_decays=[1e-3, 1e-1], max_iter=50, n_boot=20))
    ]  # fmt: skip
    config = {"backbone": "convnet_tiny", "image_size": 8, "cifar_stem": False}
    job = pretrain_job("r0", evals, config=config)
    plan = plan_doc([job], study_dir=str(tmp_path))
    (tmp_path / "plan.json").write_text(json.dumps(plan.model_dump(mode="json")))
    rows = compute_study_baselines(tmp_path)
    assert json.loads((tmp_path / "baselines.json").read_text()) == rows
    top1 = [r for r in rows if r["metric"] == "top1"]
    kinds = {(r["baseline"], r["eval"], r["label_fraction"]) for r in top1}
    assert kinds == {
        ("pixels_knn", "knn", 100.0), ("random_init", "knn", 100.0),
        ("pixels_logreg", "linear", 50.0), ("pixels_logreg", "linear", 100.0),
        ("random_init", "linear", 50.0), ("random_init", "linear", 100.0),
    }  # fmt: skip
    for r in top1:
        assert 0.0 <= r["value"] <= 1.0 and r["ci_low"] <= r["value"] <= r["ci_high"]
        assert r["split"] in ("id", "ood") and r["image_size"] == 8
    # the world task has an ood split: every baseline reports it as well
    assert {r["split"] for r in top1} == {"id", "ood"}
    assert (tmp_path / "baselines" / "random_init").is_dir()
    # each baseline says when it starts and ends (a log without a terminal gets plain lines)
    err = capsys.readouterr().err
    for name in ("pixels_knn", "pixels_logreg", "random_init convnet_tiny"):
        assert f"baseline {name} beside" in err
    assert err.count(": started") >= 4 and err.count(": done in") >= 4
