"""Tests of the FractalDB generator (Kataoka et al., ACCV 2020) and its pool reader."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from divssl.data import fractaldb as fdb
from divssl.data.pool import ArrayPool, open_pool
from divssl.errors import ConfigError

SMALL = {"size": 32, "points": 20_000, "threshold": 0.2, "seed": 0}


def _occupied(images: np.ndarray) -> np.ndarray:
    """Boolean (B, H, W): pixels any channel of which is non-zero."""
    return np.count_nonzero(images, axis=-1) > 0


def _fill(image: np.ndarray) -> float:
    return np.count_nonzero(image.max(axis=-1)) / (image.shape[0] * image.shape[1])


@pytest.fixture(scope="module")
def small_db():
    return fdb.generate_fractaldb(categories=4, instances=6, **SMALL)


@pytest.fixture(scope="module")
def kept():
    return fdb.search_categories(6, **SMALL)


def test_shapes_labels_and_names(small_db):
    images, labels, names = small_db
    assert images.shape == (24, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.repeat(np.arange(4), 6))
    assert labels.dtype == np.int64
    assert names == ["fractal_0000", "fractal_0001", "fractal_0002", "fractal_0003"]
    assert all(_fill(img) > 0 for img in images)


def test_deterministic_and_seeded(small_db):
    again = fdb.generate_fractaldb(categories=4, instances=6, **SMALL)
    assert again[0].tobytes() == small_db[0].tobytes()
    other = fdb.generate_fractaldb(categories=4, instances=6, **{**SMALL, "seed": 1})
    assert not np.array_equal(other[0], small_db[0])


def test_smaller_database_is_a_prefix(small_db):
    images, _, _ = fdb.generate_fractaldb(categories=2, instances=3, **SMALL)
    big = small_db[0].reshape(4, 6, 32, 32, 3)
    np.testing.assert_array_equal(images.reshape(2, 3, 32, 32, 3), big[:2, :3])


def test_every_kept_category_fills_the_threshold(kept):
    assert len(kept) == 6
    for cat in kept:
        assert _fill(cat.prototype) >= SMALL["threshold"]
    # the prototypes are the renderings of the kept systems
    images, finite = fdb.render_systems(
        [c.system for c in kept], [(0, c.candidate) for c in kept], 0, 32, 20_000
    )
    assert finite.all()
    np.testing.assert_array_equal(images, np.stack([c.prototype for c in kept]))


def test_rejected_candidates_fail_the_threshold(kept):
    ids = [c.candidate for c in kept]
    rejected = sorted(set(range(ids[-1])) - set(ids))
    assert rejected, "expected the search to reject some candidates"
    systems = [fdb.sample_ifs(fdb._rng(0, 0, j)) for j in rejected]
    images, finite = fdb.render_systems(systems, [(0, j) for j in rejected], 0, 32, 20_000)
    fills = np.array([_fill(img) for img in images])
    assert np.all(~finite | (fills < SMALL["threshold"]))


def test_category_parameters_follow_the_paper():
    systems = [fdb.sample_ifs(np.random.default_rng(i)) for i in range(600)]
    sizes = np.array([len(s.params) for s in systems])
    assert sizes.min() == 2 and sizes.max() == 7
    np.testing.assert_array_equal(np.unique(sizes), np.arange(2, 8))
    params = np.concatenate([s.params for s in systems])
    assert params.shape[1] == 6 and np.all(np.abs(params) < 1.0)
    # uniform in (-1, 1): Kolmogorov-Smirnov against U(-1, 1)
    assert stats.kstest(params.ravel(), stats.uniform(loc=-1, scale=2).cdf).pvalue > 1e-3
    for s in systems[:20]:
        a, b, c, d = s.params[:, :4].T
        np.testing.assert_allclose(s.probs, np.abs(a * d - b * c) / np.abs(a * d - b * c).sum())


def test_map_choice_is_proportional_to_abs_det():
    params = np.array(
        [
            [0.5, 0.1, -0.2, 0.6, 0.1, 0.0],
            [0.2, 0.0, 0.0, 0.2, -0.3, 0.2],
            [-0.9, 0.3, 0.4, 0.8, 0, 0],
        ]
    )
    det = np.abs(params[:, 0] * params[:, 3] - params[:, 1] * params[:, 2])
    expected = det / det.sum()
    system = fdb.IFS(params, fdb.map_probabilities(params))
    choices = fdb.choose_maps(system.probs, (200_000,), np.random.default_rng(1))
    counts = np.bincount(choices, minlength=3)
    assert stats.chisquare(counts, expected * counts.sum()).pvalue > 1e-3
    # same draws through numpy's inverse CDF (searchsorted on the cumulative probabilities)
    u = np.random.default_rng(1).random((200_000,), dtype=np.float32)
    ref = np.searchsorted(np.cumsum(expected)[:-1].astype(np.float32), u, side="right")
    assert np.mean(ref != choices) < 1e-4
    # the chaos game itself: one inspectable chain; each point is f_m(previous point)
    xy, maps = fdb.chaos_game([system], 8_000, [np.random.default_rng(2)], burn_in=0, chains=1)
    counts = np.bincount(maps[0], minlength=3)
    assert stats.chisquare(counts, expected * counts.sum()).pvalue > 1e-3
    prev, cur, m = xy[0, :-1].astype(np.float64), xy[0, 1:], maps[0, 1:]
    p = params[m]
    pred = np.stack(
        [p[:, 0] * prev[:, 0] + p[:, 1] * prev[:, 1] + p[:, 4],
         p[:, 2] * prev[:, 0] + p[:, 3] * prev[:, 1] + p[:, 5]],
        axis=1,
    )  # fmt: skip
    np.testing.assert_allclose(cur, pred, rtol=1e-4, atol=1e-5)
    # first point: a map applied to the origin
    np.testing.assert_allclose(xy[0, 0], params[maps[0, 0], 4:], atol=1e-6)


def test_burn_in_drops_the_first_points():
    params = np.array([[0.5, 0, 0, 0.5, 0, 0], [0.5, 0, 0, 0.5, 0.5, 0], [0.5, 0, 0, 0.5, 0, 0.5]])
    system = fdb.IFS(params, fdb.map_probabilities(params))
    full, _ = fdb.chaos_game([system], 150, [np.random.default_rng(3)], burn_in=0, chains=1)
    late, _ = fdb.chaos_game([system], 50, [np.random.default_rng(3)], burn_in=100, chains=1)
    np.testing.assert_array_equal(late[0], full[0, 100:])


def test_instances_perturb_one_parameter(kept):
    cat = kept[0]
    for i in range(20):
        inst = fdb.draw_instance(0, cat.candidate, cat.system, i, seed=0)
        assert 0.8 <= inst.weight <= 1.2
        changed = np.flatnonzero(~np.isclose(inst.system.params, cat.system.params).all(axis=0))
        assert set(changed) <= {inst.param_index}
        np.testing.assert_allclose(
            inst.system.params[:, inst.param_index],
            cat.system.params[:, inst.param_index] * inst.weight,
        )
        np.testing.assert_array_equal(inst.system.probs, cat.system.probs)


def test_flip_produces_the_mirror_image(kept):
    inst = fdb.draw_instance(0, kept[1].candidate, kept[1].system, 0, seed=0)
    plain, _ = fdb.render_instances([fdb.with_flip(inst, False)], 0, 32, 20_000)
    mirrored, _ = fdb.render_instances([fdb.with_flip(inst, True)], 0, 32, 20_000)
    np.testing.assert_array_equal(mirrored[0], plain[0][:, ::-1])
    assert not np.array_equal(mirrored[0], plain[0])


def test_instances_resemble_their_category(small_db):
    images, labels, _ = small_db
    occ = _occupied(images).reshape(len(images), -1)
    inter = occ.astype(np.int64) @ occ.T.astype(np.int64)
    union = occ.sum(1)[:, None] + occ.sum(1)[None] - inter
    # flips are an intra-category nuisance: compare each pair at its best mirror alignment
    occ_m = _occupied(images[:, :, ::-1]).reshape(len(images), -1)
    inter_m = occ.astype(np.int64) @ occ_m.T.astype(np.int64)
    iou = np.maximum(inter, inter_m) / union
    same = labels[:, None] == labels[None]
    off_diag = ~np.eye(len(images), dtype=bool)
    assert iou[same & off_diag].mean() > iou[~same].mean() + 0.15


def test_render_points_matches_lockstep_renderer(kept):
    systems = [c.system for c in kept[:3]]
    rngs = [fdb._rng(0, 2, 0, c.candidate) for c in kept[:3]]
    xy, maps = fdb.chaos_game(systems, 20_000, rngs)
    images, finite = fdb.render_points(xy, maps, 32)
    assert finite.all()
    np.testing.assert_array_equal(images, np.stack([c.prototype for c in kept[:3]]))


def test_rendering_colours_and_bounding_box():
    # four points at the corners of a square: each lands in a corner pixel inside the pad
    xy = np.array([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    maps = np.array([[0, 1, 2, 3]])
    gray, _ = fdb.render_points(xy, maps, 64, color="gray")
    pad = round(6 / 512 * 64)
    lo, hi = pad, 64 - pad - 1
    occupied = {tuple(p) for p in np.argwhere(_occupied(gray)[0])}
    assert occupied == {(hi, lo), (hi, hi), (lo, lo), (lo, hi)}  # (row, col), y up
    assert set(np.unique(gray)) == {0, fdb.GRAY_LEVEL}
    colour, _ = fdb.render_points(xy, maps, 64, color="map")
    np.testing.assert_array_equal(colour[0, hi, lo], np.rint(fdb.MAP_PALETTE[0] * 255))
    np.testing.assert_array_equal(colour[0, lo, hi], np.rint(fdb.MAP_PALETTE[3] * 255))
    bad = np.array([[[0.0, 0.0], [np.inf, 1.0]]])
    blank, finite = fdb.render_points(bad, np.zeros((1, 2), int), 16)
    assert not finite[0] and not blank.any()


def test_unreachable_threshold_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        fdb.search_categories(2, size=16, points=2_000, threshold=0.95, max_candidates=64)
    assert info.value.field == "fractaldb.threshold"
    with pytest.raises(ConfigError) as info:
        fdb.generate_fractaldb(categories=1, instances=1, size=32, points=100, threshold=0.2)
    assert info.value.field == "fractaldb.points"
    with pytest.raises(ConfigError) as info:
        fdb.generate_fractaldb(categories=1, color="rainbow")
    assert info.value.choices == ["gray", "map"]


# --------------------------------------------------------------------------- reader


def test_fractaldb_pool_reader_and_cache(tmp_path, monkeypatch, small_db):
    monkeypatch.setenv("DIVSSL_CACHE", str(tmp_path))
    spec = "fractaldb:categories=4:instances=6:size=32:points=20000:threshold=0.2:seed=0"
    pool = open_pool(spec)
    assert isinstance(pool, ArrayPool) and pool.source == "synthetic"
    assert len(pool) == 24 and len(set(pool.keys)) == 24 and pool.keys[7] == "fractal_0001_000001"
    assert pool.class_names == small_db[2]
    np.testing.assert_array_equal(pool.images, small_db[0])
    np.testing.assert_array_equal(pool.labels, small_db[1])
    assert len(list((tmp_path / "pools").glob("*.npz"))) == 1
    cached = open_pool(spec)
    np.testing.assert_array_equal(cached.images, pool.images)
    assert cached.manifest_hash() == pool.manifest_hash()
    uncached = open_pool(spec + ":cache=false")
    np.testing.assert_array_equal(uncached.images, pool.images)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("fractaldb:categories=two", "fractaldb.categories"),
        ("fractaldb:color=rainbow", "fractaldb.color"),
        ("fractaldb:threshold=high", "fractaldb.threshold"),
        ("fractaldb:cache=1", "fractaldb.cache"),
        ("fractaldb:categories=0:cache=false", "fractaldb.categories"),
    ],
)
def test_fractaldb_pool_reader_errors(spec, field):
    with pytest.raises(ConfigError) as info:
        open_pool(spec)
    assert info.value.field == field
