"""Tests of the procedural world generator and its pool reader."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import linalg, ndimage

from divssl.data.pool import ArrayPool, open_pool
from divssl.data.world import (
    MAX_CLASSES,
    PATTERNS,
    SHAPES,
    _bilinear_matrix,
    domain,
    generate_world,
    world_class,
    world_classes,
)
from divssl.errors import ConfigError


def _hashes(images: np.ndarray) -> set[str]:
    return {hashlib.sha256(img.tobytes()).hexdigest() for img in images}


# --------------------------------------------------------------------------- reference features


def _hog(images: np.ndarray, cell: int = 4, bins: int = 9) -> np.ndarray:
    """Dalal-Triggs style features: unsigned gradient orientation histograms per cell.

    Central differences per channel; each pixel votes with the channel of largest gradient
    magnitude; one histogram per ``cell`` x ``cell`` block; L2-normalised per image.
    """
    x = images.astype(np.float64) / 255.0
    gx = np.zeros_like(x)
    gy = np.zeros_like(x)
    gx[:, :, 1:-1] = x[:, :, 2:] - x[:, :, :-2]
    gy[:, 1:-1] = x[:, 2:] - x[:, :-2]
    mag = np.hypot(gx, gy)
    best = mag.argmax(-1)[..., None]
    mag = np.take_along_axis(mag, best, -1)[..., 0]
    ang = np.arctan2(np.take_along_axis(gy, best, -1), np.take_along_axis(gx, best, -1))[..., 0]
    b = np.minimum((np.mod(ang, np.pi) / np.pi * bins).astype(int), bins - 1)
    n, h, w = mag.shape
    votes = np.zeros((n, h, w, bins))
    np.put_along_axis(votes, b[..., None], mag[..., None], -1)
    feats = votes.reshape(n, h // cell, cell, w // cell, cell, bins).sum((2, 4)).reshape(n, -1)
    return feats / (np.linalg.norm(feats, axis=1, keepdims=True) + 1e-12)


def _nearest_class_mean(ftr, ytr, fte, yte) -> float:
    means = np.stack([ftr[ytr == k].mean(0) for k in np.unique(ytr)])
    dist = ((fte[:, None] - means[None]) ** 2).sum(-1)
    return float((dist.argmin(1) == yte).mean())


def _one_nn(ftr, ytr, fte, yte) -> float:
    dist = (fte**2).sum(1)[:, None] - 2 * fte @ ftr.T + (ftr**2).sum(1)[None]
    return float((ytr[dist.argmin(1)] == yte).mean())


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to feature rows (Dowson & Landau)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def _colour_stats(images: np.ndarray) -> np.ndarray:
    """Per image: channel means, channel stds and mean gradient magnitude (7 features)."""
    x = images.astype(np.float64) / 255.0
    grad = np.abs(np.diff(x, axis=1)).mean((1, 2, 3)) + np.abs(np.diff(x, axis=2)).mean((1, 2, 3))
    return np.concatenate([x.mean((1, 2)), x.std((1, 2)), grad[:, None]], axis=1)


# --------------------------------------------------------------------------- generator


def test_shapes_dtype_labels_and_names():
    images, labels, names = generate_world(classes=4, per_class=7, size=16, seed=3)
    assert images.shape == (28, 16, 16, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(labels), [7, 7, 7, 7])
    assert names == ["c000", "c001", "c002", "c003"]
    images32, _, _ = generate_world(classes=2, per_class=3, size=32)
    assert images32.shape == (6, 32, 32, 3)


def test_deterministic_byte_identical():
    a = generate_world(classes=3, per_class=5, seed=7, shift=0.3, split="ood", class_offset=4)
    b = generate_world(classes=3, per_class=5, seed=7, shift=0.3, split="ood", class_offset=4)
    assert a[0].tobytes() == b[0].tobytes()
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
    other_seed = generate_world(classes=3, per_class=5, seed=8, shift=0.3, split="ood")
    assert not np.array_equal(a[0], other_seed[0])


def test_splits_draw_disjoint_streams():
    train, _, _ = generate_world(classes=5, per_class=40, split="train")
    test, _, _ = generate_world(classes=5, per_class=40, split="test")
    ood, _, _ = generate_world(classes=5, per_class=40, split="ood")
    assert len(_hashes(train)) == len(train)
    assert not _hashes(train) & _hashes(test)
    assert not _hashes(train) & _hashes(ood) and not _hashes(test) & _hashes(ood)


def test_ood_split_renders_at_shift_plus_ood_shift():
    # the ood split renders at shift + ood_shift: with ood_shift=0 it is an unshifted third stream
    base, _, _ = generate_world(classes=2, per_class=20, split="ood", ood_shift=0.0)
    shifted, _, _ = generate_world(classes=2, per_class=20, split="ood", ood_shift=0.5)
    same_domain, _, _ = generate_world(classes=2, per_class=20, split="ood", shift=0.5, ood_shift=0)
    np.testing.assert_array_equal(shifted, same_domain)
    assert np.abs(shifted.astype(int) - base).mean() > 5


def test_class_offset_gives_other_classes():
    a_img, a_lab, a_names = generate_world(classes=4, per_class=10, class_offset=0)
    b_img, b_lab, b_names = generate_world(classes=4, per_class=10, class_offset=10)
    assert b_names == ["c010", "c011", "c012", "c013"] and not set(a_names) & set(b_names)
    np.testing.assert_array_equal(a_lab, b_lab)  # labels restart at 0 in each pool
    assert not _hashes(a_img) & _hashes(b_img)
    defs_a = {(c.shape, c.pattern) for c in world_classes(4, 0, 0)}
    defs_b = {(c.shape, c.pattern) for c in world_classes(4, 0, 10)}
    assert not defs_a & defs_b


def test_a_class_does_not_depend_on_its_neighbours():
    wide, labels, names = generate_world(classes=5, per_class=6, class_offset=10)
    alone, _, alone_names = generate_world(classes=1, per_class=6, class_offset=12)
    assert alone_names == ["c012"]
    np.testing.assert_array_equal(wide[labels == names.index("c012")], alone)


def test_class_enumeration_covers_every_combination_once():
    defs = [world_class(g, seed=0) for g in range(MAX_CLASSES)]
    assert len({(c.shape, c.pattern, c.palette) for c in defs}) == MAX_CLASSES
    first = defs[:10]
    assert len({c.shape for c in first}) == len(SHAPES)
    assert len({c.pattern for c in first}) == len(PATTERNS)
    assert [c.shape for c in world_classes(10, seed=1)] != [c.shape for c in first]
    with pytest.raises(ConfigError, match="class_offset"):
        world_classes(5, 0, MAX_CLASSES - 2)


def test_domain_parameters_are_monotone_in_shift():
    d0, d1, d2 = domain(0.0), domain(0.5), domain(1.0)
    assert d0.blur == 0 and d0.hue_rotation == 0
    assert d0.contrast > d1.contrast > d2.contrast
    assert d0.clutter < d1.clutter < d2.clutter and d0.noise < d1.noise < d2.noise


def test_shift_moves_the_domain_monotonically():
    kw = {"classes": 10, "per_class": 40, "size": 16, "split": "test"}
    at = {s: generate_world(shift=s, **kw)[0] for s in (0.0, 0.5, 1.0)}
    labels = generate_world(**kw)[1]

    def class_means(images):
        x = images.astype(np.float64)
        return np.stack([x[labels == k].mean(0) for k in range(10)])

    # (1) mean absolute pixel distance of class-mean images to the base domain
    mad = [np.abs(class_means(at[s]) - class_means(at[0.0])).mean() for s in (0.0, 0.5, 1.0)]
    assert mad[0] == 0 and mad[0] < mad[1] < mad[2]
    # (2) Fréchet distance of colour statistics, against the train/test sampling noise at s = 0
    other_draw = generate_world(shift=0.0, **{**kw, "split": "train"})[0]
    feats = {s: _colour_stats(img) for s, img in at.items()}
    noise_floor = _frechet(feats[0.0], _colour_stats(other_draw))
    fd = [_frechet(feats[0.0], feats[s]) for s in (0.5, 1.0)]
    assert noise_floor < fd[0] < fd[1]
    assert fd[0] > 3 * noise_floor


def test_learnable_from_edges_but_not_from_raw_pixels():
    train, ytr, _ = generate_world(classes=10, per_class=50, size=16, split="train")
    test, yte, _ = generate_world(classes=10, per_class=30, size=16, split="test")
    ncm_hog = _nearest_class_mean(_hog(train), ytr, _hog(test), yte)
    raw = lambda a: a.reshape(len(a), -1).astype(np.float64) / 255.0  # noqa: E731
    nn_raw = _one_nn(raw(train), ytr, raw(test), yte)
    # measured: HOG nearest-class-mean ~0.9, raw-pixel 1-NN ~0.45 (chance 0.1)
    assert ncm_hog >= 0.7
    assert nn_raw <= ncm_hog - 0.2


def test_bilinear_upsampling_matches_scipy_zoom():
    x = np.random.default_rng(0).standard_normal((3, 4, 4, 2))
    for size in (8, 16, 12):
        up = _bilinear_matrix(4, size)
        ours = (up @ x.transpose(0, 3, 1, 2) @ up.T).transpose(0, 2, 3, 1)
        ref = ndimage.zoom(x, (1, size / 4, size / 4, 1), order=1, grid_mode=True, mode="nearest")
        np.testing.assert_allclose(ours, ref, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"classes": 0}, "world.classes"),
        ({"per_class": 0}, "world.per_class"),
        ({"size": 4}, "world.size"),
        ({"seed": -1}, "world.seed"),
        ({"split": "val"}, "world.split"),
        ({"shift": -0.1}, "world.shift"),
        ({"ood_shift": -1.0}, "world.ood_shift"),
        ({"class_offset": MAX_CLASSES}, "world.class_offset"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as info:
        generate_world(**{"classes": 2, "per_class": 2, **kwargs})
    assert info.value.field == field


def test_bad_split_lists_the_choices():
    with pytest.raises(ConfigError) as info:
        generate_world(classes=2, per_class=2, split="validation")
    assert info.value.choices == ["ood", "test", "train"]


# --------------------------------------------------------------------------- reader


def test_world_pool_reader():
    pool = open_pool("world:classes=3:per_class=4:size=16:split=test:shift=0.5:class_offset=2")
    assert isinstance(pool, ArrayPool) and len(pool) == 12
    assert pool.source == "source"
    assert pool.class_names == ["c002", "c003", "c004"]
    np.testing.assert_array_equal(pool.labels, np.repeat([0, 1, 2], 4))
    assert len(set(pool.keys)) == 12 and pool.keys[0] == "c002_000000"
    images, _, _ = generate_world(3, 4, 16, 0, "test", 0.5, 0.5, 2)
    np.testing.assert_array_equal(pool.read(5), images[5])
    same = open_pool("world:classes=3:per_class=4:size=16:split=test:shift=0.5:class_offset=2")
    assert same.manifest_hash() == pool.manifest_hash()
    assert open_pool("world:classes=3:per_class=4").manifest_hash() != pool.manifest_hash()


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("world:classes=2.5", "world.classes"),
        ("world:classes=2:per_class=2:shift=abc", "world.shift"),
        ("world:classes=2:per_class=2:split=dev", "world.split"),
        ("world:colour=1", "data.pool.colour"),
    ],
)
def test_world_pool_reader_errors(spec, field):
    with pytest.raises(ConfigError) as info:
        open_pool(spec)
    assert info.value.field == field
