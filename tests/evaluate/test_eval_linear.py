"""Linear probe: label fractions, validation carve, batched L-BFGS vs scikit-learn, SGD heads."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from scipy.optimize import approx_fprime
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression

from divssl.errors import ConfigError
from divssl.evaluate.linear import (
    DEFAULT_WEIGHT_DECAYS,
    NumpySoftmaxObjective,
    ProbeConfig,
    ProbeSetting,
    Standardizer,
    _SoftmaxObjective,
    fit_lbfgs,
    fit_sgd,
    label_fraction_indices,
    probe_features,
    stratified_split,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # The many tiny float64 ops of L-BFGS crawl when intra-op threads compete with other
    # processes (xdist workers) for the two cores; one thread keeps these tests fast.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def blobs(n: int, d: int, k: int, seed: int, spread: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 1.5
    y = np.repeat(np.arange(k), n // k)
    x = centers[y] + spread * rng.normal(size=(len(y), d)) + 3.0  # offset: standardisation matters
    return x.astype(np.float32), y


def test_label_fractions_nested_balanced_seeded() -> None:
    labels = np.repeat(np.arange(10), 200)
    subsets = label_fraction_indices(labels, [1, 5, 10, 50, 100], seed=3)
    sizes = {f: len(v) for f, v in subsets.items()}
    assert sizes == {1.0: 20, 5.0: 100, 10.0: 200, 50.0: 1000, 100.0: 2000}
    fr = sorted(subsets)
    for small, big in zip(fr, fr[1:], strict=False):
        assert set(subsets[small]) <= set(subsets[big])
    for f, idx in subsets.items():
        counts = np.bincount(labels[idx], minlength=10)
        assert np.all(counts == counts[0]), f
    again = label_fraction_indices(labels, [1, 5, 10, 50, 100], seed=3)
    assert all(np.array_equal(again[f], subsets[f]) for f in fr)
    other = label_fraction_indices(labels, [10], seed=4)
    assert not np.array_equal(other[10.0], subsets[10.0])
    np.testing.assert_array_equal(subsets[100.0], np.arange(2000))
    # Imbalanced classes: every class keeps its share, at least one image.
    imb = np.array([0] * 300 + [1] * 30 + [2] * 3)
    sub = label_fraction_indices(imb, [10], seed=0)[10.0]
    assert np.bincount(imb[sub]).tolist() == [30, 3, 1]
    with pytest.raises(ConfigError, match="fractions"):
        label_fraction_indices(labels, [0, 10])


def test_stratified_split() -> None:
    labels = np.array([0] * 50 + [1] * 20 + [2] * 2 + [3])
    fit, val = stratified_split(labels, 0.1, seed=0)
    assert np.intersect1d(fit, val).size == 0 and len(fit) + len(val) == len(labels)
    assert np.bincount(labels[val], minlength=4).tolist() == [5, 2, 1, 0]
    with pytest.raises(ConfigError):
        stratified_split(np.arange(5), 0.1)
    with pytest.raises(ConfigError):
        stratified_split(labels, 1.5)


def sklearn_probs(x: np.ndarray, y: np.ndarray, wd: float) -> LogisticRegression:
    # Our objective (1/n) sum CE + wd/2 |W|^2 equals sklearn's C sum CE + 1/2 |W|^2 over C n,
    # so the minimisers agree for C = 1 / (n wd).
    clf = LogisticRegression(C=1.0 / (len(y) * wd), tol=1e-10, max_iter=5000)
    return clf.fit(x.astype(np.float64), y)


def test_batched_lbfgs_matches_sklearn_for_every_weight_decay() -> None:
    x, y = blobs(240, 12, 4, seed=0)
    xs = Standardizer.fit(x)(x)
    wds = [1e-3, 1e-2, 1e-1]
    heads, info = fit_lbfgs(xs, y, 4, wds)
    assert info.converged
    probs = heads.predict_proba(xs)
    for i, wd in enumerate(wds):
        clf = sklearn_probs(xs, y, wd)
        np.testing.assert_allclose(probs[i], clf.predict_proba(xs), atol=2e-4)
        np.testing.assert_allclose(heads.weight[i].numpy(), clf.coef_.T, atol=2e-3)
        np.testing.assert_allclose(heads.bias[i].numpy(), clf.intercept_, atol=2e-3)


@pytest.mark.parametrize("wd", [1e-6, 1e-4, 1e-2])
def test_each_weight_decay_converges_to_sklearns_weights(wd: float) -> None:
    # Overlapping classes, so the optimum is finite but badly conditioned at small lambda.
    x, y = blobs(300, 8, 3, seed=4, spread=2.0)
    xs = Standardizer.fit(x)(x)
    wds = [1.0, 1e-2, wd] if wd < 1e-2 else [1.0, wd]
    heads, info = fit_lbfgs(xs, y, 3, wds)
    clf = LogisticRegression(C=1.0 / (len(y) * wd), tol=1e-12, max_iter=100_000)
    clf.fit(xs.astype(np.float64), y)
    i = wds.index(wd)
    np.testing.assert_allclose(heads.weight[i].numpy(), clf.coef_.T, atol=1e-3, rtol=0)
    np.testing.assert_allclose(heads.bias[i].numpy(), clf.intercept_, atol=1e-3, rtol=0)
    rec = info.per_setting[i]
    assert rec["weight_decay"] == wd and rec["converged"]
    assert rec["grad_max"] <= rec["tolerance"] == pytest.approx(max(1e-4 * wd, 1e-9))
    assert [r["weight_decay"] for r in info.per_setting] == wds  # records in the given order
    assert info.iterations == sum(r["iterations"] for r in info.per_setting)


def reference_objective(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray, wd: float
) -> float:
    # (1/n) sum_i [logsumexp(x_i W + b) - (x_i W + b)_{y_i}] + wd/2 ||W||^2 (the formula)
    logits = x.astype(np.float64) @ w + b
    ce = logsumexp(logits, axis=1) - logits[np.arange(len(y)), y]
    return float(ce.mean() + 0.5 * wd * np.sum(w * w))


def test_numpy_objective_is_the_formula_and_its_gradient() -> None:
    x, y = blobs(90, 5, 3, seed=7)
    xs = Standardizer.fit(x)(x).astype(np.float64)
    obj = NumpySoftmaxObjective(xs, y, 3)
    obj.chunk = 16  # several chunks and a ragged last one
    obj.weight_decay = 0.3
    theta = np.random.default_rng(0).normal(size=5 * 3 + 3)
    value, grad = obj(theta)
    w, b = theta[:15].reshape(5, 3), theta[15:]
    assert value == pytest.approx(reference_objective(xs, y, w, b, 0.3), rel=1e-12)

    def f(t: np.ndarray) -> float:
        return reference_objective(xs, y, t[:15].reshape(5, 3), t[15:], 0.3)

    np.testing.assert_allclose(grad, approx_fprime(theta, f, 1e-7), atol=1e-6)
    # The accelerator path (torch) computes the same value and gradient.
    tobj = _SoftmaxObjective(torch.from_numpy(xs), torch.from_numpy(y), 3, chunk_size=16)
    tobj.weight_decay = 0.3
    t_value, t_grad = tobj(theta)
    assert t_value == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(t_grad, grad, rtol=1e-10, atol=1e-14)


def test_sklearn_c_maps_to_weight_decay_as_one_over_n_lambda() -> None:
    # scikit-learn's lbfgs minimises mean CE + (1 / (C n)) / 2 ||W||^2: its tight solution at
    # C = 1 / (n wd) is a stationary point of our objective at wd, and not of a neighbouring wd.
    x, y = blobs(150, 6, 3, seed=8, spread=2.0)
    xs = Standardizer.fit(x)(x).astype(np.float64)
    wd = 1e-3
    clf = LogisticRegression(C=1.0 / (len(y) * wd), tol=1e-12, max_iter=100_000).fit(xs, y)
    theta = np.concatenate([clf.coef_.T.reshape(-1), clf.intercept_])
    obj = NumpySoftmaxObjective(xs, y, 3)
    obj.weight_decay = wd
    assert np.abs(obj(theta)[1]).max() < 1e-7  # scikit-learn stops on ftol near 1e-8
    obj.weight_decay = 2 * wd
    assert np.abs(obj(theta)[1]).max() > 1e-5
    # And our solution reaches scikit-learn's objective value (or lower).
    heads, _ = fit_lbfgs(xs, y, 3, [wd])
    ours = reference_objective(xs, y, heads.weight[0].numpy(), heads.bias[0].numpy(), wd)
    theirs = reference_objective(xs, y, clf.coef_.T, clf.intercept_, wd)
    assert ours <= theirs + 1e-12


def test_default_path_matches_sklearn_at_every_weight_decay() -> None:
    x, y = blobs(300, 8, 3, seed=4, spread=2.0)
    xs = Standardizer.fit(x)(x)
    heads, info = fit_lbfgs(xs, y, 3, DEFAULT_WEIGHT_DECAYS)
    assert info.converged and len(info.per_setting) == len(DEFAULT_WEIGHT_DECAYS)
    for i, wd in enumerate(DEFAULT_WEIGHT_DECAYS):
        clf = LogisticRegression(C=1.0 / (len(y) * wd), tol=1e-12, max_iter=100_000)
        clf.fit(xs.astype(np.float64), y)
        np.testing.assert_allclose(heads.weight[i].numpy(), clf.coef_.T, atol=1e-3, rtol=0)
        np.testing.assert_allclose(heads.bias[i].numpy(), clf.intercept_, atol=1e-3, rtol=0)
        rec = info.per_setting[i]
        assert rec["objective"] == pytest.approx(
            reference_objective(xs, y, heads.weight[i].numpy(), heads.bias[i].numpy(), wd),
            rel=1e-9,
        )
        assert rec["evaluations"] >= rec["iterations"] >= 1


def test_solves_run_down_the_regularisation_path_warm_started() -> None:
    x, y = blobs(240, 6, 3, seed=5, spread=2.0)
    xs = Standardizer.fit(x)(x)
    wds = [1e-4, 1.0, 1e-2]  # given out of order
    _, path = fit_lbfgs(xs, y, 3, wds)
    _, cold = fit_lbfgs(xs, y, 3, [1e-4])
    # The small-lambda solve starts at the 1e-2 optimum, so it needs fewer iterations than cold.
    assert path.per_setting[0]["iterations"] < cold.per_setting[0]["iterations"]
    with pytest.raises(ConfigError, match="weight_decays"):
        fit_lbfgs(xs, y, 3, [0.0])
    # Started at the optimum, a solve stops at once with the same weights.
    heads, _ = fit_lbfgs(xs, y, 3, [1e-2])
    again, info = fit_lbfgs(xs, y, 3, [1e-2], init=(heads.weight[0].numpy(), heads.bias[0].numpy()))
    assert info.iterations <= 2 and info.converged
    np.testing.assert_allclose(again.weight[0].numpy(), heads.weight[0].numpy(), atol=1e-6)


def test_probe_chooses_on_val_and_refit_matches_sklearn() -> None:
    x, y = blobs(400, 10, 4, seed=1, spread=2.5)
    cfg = ProbeConfig(weight_decays=(1e-4, 1e-2, 1.0), seed=0)
    res = probe_features(x, y, 4, cfg)
    assert res.n_fit + res.n_val == res.n_train == 400 and res.n_val == 40
    assert [s["weight_decay"] for s in res.sweep] == [1e-4, 1e-2, 1.0]
    # Independent selection: sklearn on the same carve picks the same setting.
    fit_idx, val_idx = stratified_split(y, 0.1, 0)
    sc = Standardizer.fit(x[fit_idx])
    val_acc = [
        np.mean(sklearn_probs(sc(x[fit_idx]), y[fit_idx], wd).predict(sc(x[val_idx])) == y[val_idx])
        for wd in (1e-4, 1e-2, 1.0)
    ]
    np.testing.assert_allclose([s["val_top1"] for s in res.sweep], val_acc)
    best = max(range(3), key=lambda i: (val_acc[i], (1e-4, 1e-2, 1.0)[i]))
    assert res.chosen.weight_decay == (1e-4, 1e-2, 1.0)[best]
    # The refit on all 400 images is sklearn's model at the chosen C on the same standardisation.
    x_test, _ = blobs(200, 10, 4, seed=1, spread=2.5)
    full = Standardizer.fit(x)
    clf = sklearn_probs(full(x), y, res.chosen.weight_decay)
    np.testing.assert_allclose(res.predict(x_test), clf.predict_proba(full(x_test)), atol=5e-4)


def test_explicit_val_split_and_single_setting() -> None:
    x, y = blobs(200, 6, 2, seed=2)
    xv, yv = blobs(60, 6, 2, seed=2)
    res = probe_features(x, y, 2, ProbeConfig(weight_decays=(1e-3, 1e-1)), val=(xv, yv))
    assert res.n_fit == 200 and res.n_val == 60
    sgd = probe_features(x, y, 2, ProbeConfig(solver="sgd", lrs=(1e-4, 1.0), epochs=3))
    assert [s["lr"] for s in sgd.sweep] == [1e-4, 1.0] and sgd.chosen.lr == 1.0
    assert (
        np.mean(sgd.predict(xv).argmax(1) == yv) >= np.mean(res.predict(xv).argmax(1) == yv) - 0.05
    )
    single = probe_features(x, y, 2, ProbeConfig(weight_decays=(1e-2,)))
    assert single.sweep == [] and single.n_val == 0 and single.chosen.weight_decay == 1e-2


def test_sgd_heads_learn_and_use_their_own_lr() -> None:
    x, y = blobs(300, 8, 3, seed=3)
    xs = torch.as_tensor(Standardizer.fit(x)(x))
    yt = torch.as_tensor(y)
    settings = [ProbeSetting(0.0, 0.5), ProbeSetting(0.0, 1e-6)]
    heads, info = fit_sgd(300, lambda i: (xs[i], yt[i]), 8, 3, settings, epochs=5, batch_size=64)
    acc = (heads.predict_proba(xs.numpy()).argmax(-1) == y).mean(1)
    assert acc[0] > 0.9 and acc[1] < acc[0]
    assert float(heads.weight[1].abs().max()) < 1e-4  # a tiny LR barely moves its head
    assert info.iterations == 5 * 5


def test_probe_config_validation() -> None:
    with pytest.raises(ConfigError, match="protocol"):
        ProbeConfig(protocol="adam")
    with pytest.raises(ConfigError, match="weight_decays"):
        ProbeConfig(weight_decays=(0.0, 1e-3))
    cfg = ProbeConfig(protocol="sgd")
    assert cfg.solver == "sgd" and cfg.settings() == [ProbeSetting(0.0, 0.1)]
    grid = ProbeConfig(solver="sgd", weight_decays=(0.0, 1e-4), lrs=(0.1, 1.0)).settings()
    assert len(grid) == 4


@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_objective_runs_on_the_given_blas_threads(
    threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from threadpoolctl import threadpool_info

    from divssl.evaluate import linear as linear_module

    seen: list[int] = []
    call = linear_module.NumpySoftmaxObjective.__call__

    def spy(self, theta):  # noqa: ANN001, ANN202
        seen.extend(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
        return call(self, theta)

    monkeypatch.setattr(linear_module.NumpySoftmaxObjective, "__call__", spy)
    x, y = blobs(60, 4, 2, seed=9)
    before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    fit_lbfgs(Standardizer.fit(x)(x), y, 2, [1e-2], threads=threads)
    assert seen and set(seen) == {threads}
    assert [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"] == before


def test_path_start_extrapolates_in_log_lambda_only_when_it_lowers_the_objective() -> None:
    from divssl.evaluate.linear import _path_start

    a, b = np.array([1.0, 0.0]), np.array([2.0, 1.0])

    def toward(target: np.ndarray):  # noqa: ANN202
        return lambda t: (float(np.sum((t - target) ** 2)), 2 * (t - target))

    # Fewer than two solved lambdas, or a lambda not below them: the previous optimum.
    start, used = _path_start(toward(b), b, [(1.0, b)], 0.1)
    assert not used and np.array_equal(start, b)
    start, used = _path_start(toward(b), b, [(1.0, a), (0.1, b)], 0.5)
    assert not used and np.array_equal(start, b)
    # Decade steps then a half-decade step: r = log(0.1 / 0.01) / log(1 / 0.1) = 1, then 0.5.
    expected = b + (b - a)
    start, used = _path_start(toward(expected), b, [(1.0, a), (0.1, b)], 0.01)
    assert used and np.allclose(start, expected)
    half = b + 0.5 * (b - a)
    start, used = _path_start(toward(half), b, [(1.0, a), (0.1, b)], 0.1 / np.sqrt(10))
    assert used and np.allclose(start, half)
    # An extrapolation that raises the objective is rejected.
    start, used = _path_start(toward(a), b, [(1.0, a), (0.1, b)], 0.01)
    assert not used and np.array_equal(start, b)
