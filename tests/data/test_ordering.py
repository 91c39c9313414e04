"""Orderings: nested prefixes, seeding, class balance, hashing, save/load and the subset CLI."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

from divssl.data.cli_prep import app
from divssl.data.ordering import (
    balanced_permutation,
    check_ordering,
    class_counts,
    load_ordering,
    make_ordering,
    save_ordering,
    subset_positions,
)
from divssl.data.pool import ArrayPool, register_pool
from divssl.errors import ConfigError


def toy_pool(class_sizes: list[int], seed: int = 0) -> ArrayPool:
    """A labelled pool whose class c has class_sizes[c] images (4x4, content from the seed)."""
    labels = np.repeat(np.arange(len(class_sizes)), class_sizes)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(len(labels), 4, 4, 3), dtype=np.uint8)
    names = [f"c{i:03d}" for i in range(len(class_sizes))]
    return ArrayPool(images, labels, names, spec=f"toy:{class_sizes}")


@register_pool("h6b_ordering_toy")
def _toy_reader(classes: int = 3, per_class: int = 5) -> ArrayPool:
    return toy_pool([per_class] * classes)


def reference_hash(keys: list[str], seed: int, balanced: bool, manifest: str) -> str:
    """The contract: sha256 over keys order + seed + balanced + manifest, hex[:16]."""
    text = "\n".join(keys) + f"\nseed={seed}\nbalanced={balanced}\nmanifest={manifest}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_ordering_is_a_permutation_with_nested_prefixes() -> None:
    pool = toy_pool([7, 9, 4])
    ordering = make_ordering(pool, seed=3)
    assert sorted(ordering.positions.tolist()) == list(range(len(pool)))
    assert ordering.keys == [pool.keys[i] for i in ordering.positions]
    previous: set[int] = set()
    for n in (1, 5, 11, 20):
        current = set(subset_positions(ordering, size=n).tolist())
        assert len(current) == n
        assert previous <= current
        previous = current


def test_same_seed_same_order_and_different_seed_different() -> None:
    pool = toy_pool([10, 10, 10])
    a, b, c = make_ordering(pool, 1), make_ordering(pool, 1), make_ordering(pool, 2)
    assert a.keys == b.keys and a.hash == b.hash
    assert a.keys != c.keys and a.hash != c.hash
    assert make_ordering(pool, 1).positions.tolist() != list(range(30))


def test_hash_follows_the_contract_and_changes_with_seed_and_balance() -> None:
    pool = toy_pool([6, 6])
    o = make_ordering(pool, seed=4, balanced=True)
    assert o.hash == reference_hash(o.keys, 4, True, pool.manifest_hash())
    assert o.pool_manifest == pool.manifest_hash()
    hashes = {make_ordering(pool, s, b).hash for s in (0, 1) for b in (False, True)}
    assert len(hashes) == 4


def assert_prefix_balanced(labels: np.ndarray, sizes: list[int], order: np.ndarray) -> None:
    counts = np.zeros(len(sizes), dtype=int)
    for pos in order:
        counts[labels[pos]] += 1
        left = counts < np.asarray(sizes)  # classes that still have images
        # as balanced as possible: no class with images left lags the leader by more than one
        assert np.all(counts[left] >= counts.max() - 1), counts
        if left.any():
            assert counts[left].max() - counts[left].min() <= 1


def test_balanced_prefixes_are_as_balanced_as_possible() -> None:
    sizes = [3, 11, 6, 1, 8]
    pool = toy_pool(sizes)
    ordering = make_ordering(pool, seed=5, balanced=True)
    assert sorted(ordering.positions.tolist()) == list(range(len(pool)))
    assert_prefix_balanced(np.asarray(pool.labels), sizes, ordering.positions)
    # first round visits every class once, in a seeded class order
    first = [int(pool.labels[p]) for p in ordering.positions[: len(sizes)]]
    assert sorted(first) == list(range(len(sizes)))
    orders = {
        tuple(int(pool.labels[p]) for p in make_ordering(pool, s, True).positions[:5])
        for s in range(6)
    }
    assert len(orders) > 1


def test_balanced_permutation_puts_unlabelled_last() -> None:
    labels = np.array([0, -1, 1, 0, -1, 1, 1])
    order = balanced_permutation(labels, seed=0)
    assert sorted(order.tolist()) == list(range(7))
    assert set(order[-2:].tolist()) == {1, 4}


def test_balanced_needs_labels() -> None:
    images = np.zeros((4, 2, 2, 3), dtype=np.uint8)
    with pytest.raises(ConfigError) as err:
        make_ordering(ArrayPool(images), balanced=True)
    assert err.value.field == "subset.balanced"


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_save_load_round_trip_and_tamper_detection(tmp_path, suffix) -> None:
    pool = toy_pool([4, 5])
    ordering = make_ordering(pool, seed=9, balanced=True)
    path = tmp_path / f"order{suffix}"
    save_ordering(ordering, path)
    back = load_ordering(path)
    assert back.keys == ordering.keys
    np.testing.assert_array_equal(back.positions, ordering.positions)
    assert (back.seed, back.balanced, back.hash) == (9, True, ordering.hash)
    assert back.pool_manifest == pool.manifest_hash()
    check_ordering(back, pool)

    if suffix == ".json":
        doc = json.loads(path.read_text())
        doc["keys"][0], doc["keys"][1] = doc["keys"][1], doc["keys"][0]
        path.write_text(json.dumps(doc))
    else:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        arrays["keys"] = arrays["keys"][::-1]
        np.savez(path, **arrays)
    with pytest.raises(ConfigError, match="hash"):
        load_ordering(path)


def test_check_ordering_rejects_another_pool() -> None:
    pool = toy_pool([4, 4], seed=0)
    ordering = make_ordering(pool)
    changed = toy_pool([4, 4], seed=1)  # same keys and labels, other pixels
    with pytest.raises(ConfigError, match="manifest"):
        check_ordering(ordering, changed)


def test_subset_positions_sizes_fractions_and_errors() -> None:
    ordering = make_ordering(toy_pool([5, 5]), seed=0)
    np.testing.assert_array_equal(subset_positions(ordering, size=4), ordering.positions[:4])
    assert len(subset_positions(ordering, fraction=0.3)) == 3
    assert len(subset_positions(ordering, fraction=1.0)) == 10
    cases = [
        ({"size": 0}, "subset.size"),
        ({"size": 11}, "subset.size"),
        ({"fraction": 0.01}, "subset.fraction"),
        ({"fraction": 1.5}, "subset.fraction"),
        ({"size": 2, "fraction": 0.5}, "subset"),
        ({}, "subset"),
    ]
    for kwargs, field in cases:
        with pytest.raises(ConfigError) as err:
            subset_positions(ordering, **kwargs)
        assert err.value.field == field, kwargs


def test_class_counts_of_a_balanced_subset() -> None:
    pool = toy_pool([5, 5, 5])
    positions = subset_positions(make_ordering(pool, 0, balanced=True), size=7)
    counts = class_counts(pool, positions)
    assert sum(counts.values()) == 7
    assert sorted(counts.values()) == [2, 2, 3]


def test_cli_subset_writes_ordering_and_prints_counts(tmp_path) -> None:
    out = tmp_path / "ord.json"
    spec = "h6b_ordering_toy:classes=3:per_class=4"
    runner = CliRunner()
    result = runner.invoke(
        app, ["subset", spec, "--seed", "2", "--balanced", "--out", str(out), "--size", "6"]
    )
    assert result.exit_code == 0, result.output
    ordering = load_ordering(out)
    assert ordering.hash in result.output
    assert ordering.balanced and ordering.seed == 2 and ordering.pool_spec == spec
    lines = dict(line.split("\t") for line in result.output.splitlines() if "\t" in line)
    assert lines == {"c000": "2", "c001": "2", "c002": "2"}

    bad = runner.invoke(app, ["subset", spec, "--out", str(tmp_path / "x.json"), "--size", "99"])
    assert isinstance(bad.exception, ConfigError) and bad.exception.field == "subset.size"
    assert not (tmp_path / "x.json").exists()
    assert Counter(ordering.keys) == Counter(_toy_reader(3, 4).keys)
