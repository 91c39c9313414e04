"""Compositions: class priors, exclusivity within a pool, source tags, sizes, save/load."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from divssl.data.composition import (
    ComposedPool,
    ResolvedComposition,
    compose,
    parse_composition,
    resolve_composition,
)
from divssl.data.pool import ArrayPool, open_pool, register_pool
from divssl.errors import ConfigError


@register_pool("h6b_comp_toy")
def _toy(classes: int = 6, per_class: int = 10, offset: int = 0, seed: int = 0) -> ArrayPool:
    """Classes c<offset>..; every image is filled with a value unique to (pool seed, index)."""
    n = classes * per_class
    labels = np.repeat(np.arange(classes), per_class)
    images = np.zeros((n, 2, 2, 3), dtype=np.uint8)
    images[..., 0] = (np.arange(n) % 256)[:, None, None]
    images[..., 1] = seed
    images[..., 2] = offset
    names = [f"c{offset + i:03d}" for i in range(classes)]
    return ArrayPool(images, labels, names, keys=[f"img{i:04d}" for i in range(n)])


SOURCE = "h6b_comp_toy:classes=6:per_class=10"
WEB = "h6b_comp_toy:classes=5:per_class=8:offset=2:seed=1:source=web"
SYNTH = "h6b_comp_toy:classes=4:per_class=6:offset=0:seed=2:source=synthetic"
TASK = ["c000", "c001", "c002"]


def part_class_names(pool_spec: str, indices: np.ndarray) -> set[str]:
    pool = open_pool(pool_spec)
    assert pool.class_names is not None and pool.labels is not None
    return {pool.class_names[int(pool.labels[i])] for i in indices}


def paper_composition() -> dict:
    """B plus A_in from the same pool, A_out from the web, A_in from a synthetic pool."""
    return {
        "task_classes": TASK,
        "parts": [
            {"name": "B", "pool": SOURCE, "size": 15, "prior": "all", "seed": 0},
            {"name": "A_in", "pool": SOURCE, "size": 12, "prior": "in", "exclude": "B"},
            {"name": "A_web_out", "pool": WEB, "size": 9, "prior": "out", "seed": 3},
            {"name": "A_syn_in", "pool": SYNTH, "size": 7, "prior": "in"},
        ],
    }


def test_priors_sizes_and_exclusivity() -> None:
    resolved = resolve_composition(parse_composition(paper_composition()))
    b, a_in, web_out, syn_in = resolved.parts
    assert [len(p.indices) for p in resolved.parts] == [15, 12, 9, 7]
    assert not set(b.indices.tolist()) & set(a_in.indices.tolist())
    assert part_class_names(SOURCE, a_in.indices) <= set(TASK)
    assert not part_class_names(WEB, web_out.indices) & set(TASK)
    assert part_class_names(WEB, web_out.indices) == {"c003", "c004", "c005", "c006"}
    assert part_class_names(SYNTH, syn_in.indices) <= set(TASK)
    assert len(part_class_names(SOURCE, b.indices)) == 6
    assert [p.source for p in resolved.parts] == ["source", "source", "web", "synthetic"]
    for p in resolved.parts:  # no duplicates inside a part
        assert len(set(p.indices.tolist())) == len(p.indices)


def test_sampling_is_class_balanced_and_seeded() -> None:
    comp = parse_composition([{"name": "B", "pool": SOURCE, "size": 15, "seed": 4}])
    b = resolve_composition(comp).parts[0]
    pool = open_pool(SOURCE)
    counts = Counter(int(pool.labels[i]) for i in b.indices)
    assert sorted(counts.values()) == [2, 2, 2, 3, 3, 3]
    again = resolve_composition(comp).parts[0]
    np.testing.assert_array_equal(again.indices, b.indices)
    other = parse_composition([{"name": "B", "pool": SOURCE, "size": 15, "seed": 5}])
    assert resolve_composition(other).parts[0].indices.tolist() != b.indices.tolist()


def test_b_union_a_in_source_is_the_whole_in_distribution_pool() -> None:
    pool_spec = "h6b_comp_toy:classes=3:per_class=10"
    comp = parse_composition(
        {
            "task_classes": TASK,
            "parts": [
                {"name": "B", "pool": pool_spec, "size": 15},
                {"name": "A", "pool": pool_spec, "prior": "in", "exclude": ["B"]},
            ],
        }
    )
    b, a = resolve_composition(comp).parts
    assert len(a.indices) == 15
    assert sorted(b.indices.tolist() + a.indices.tolist()) == list(range(30))


def test_exclusion_resolves_excluded_part_first() -> None:
    comp = parse_composition(
        [
            {"name": "A", "pool": SOURCE, "size": 50, "exclude": "B"},
            {"name": "B", "pool": SOURCE, "size": 10, "seed": 1},
        ]
    )
    a, b = resolve_composition(comp).parts
    assert not set(a.indices.tolist()) & set(b.indices.tolist())
    alone = resolve_composition(
        parse_composition([{"name": "B", "pool": SOURCE, "size": 10, "seed": 1}])
    ).parts[0]
    np.testing.assert_array_equal(b.indices, alone.indices)


def test_explicit_class_list_and_num_classes() -> None:
    comp = parse_composition(
        [
            {"name": "L", "pool": SOURCE, "prior": ["c001", "c004"], "size": 20},
            {"name": "K", "pool": WEB, "num_classes": 2, "size": 16, "seed": 7},
        ]
    )
    listed, chosen = resolve_composition(comp).parts
    assert part_class_names(SOURCE, listed.indices) == {"c001", "c004"}
    assert listed.classes == ["c001", "c004"]
    assert len(part_class_names(WEB, chosen.indices)) == 2
    assert chosen.classes is not None and len(chosen.classes) == 2


def test_composed_pool_keys_labels_sources_and_reads() -> None:
    composed = compose(paper_composition())
    assert len(composed) == 15 + 12 + 9 + 7
    assert composed.source == "mixed"
    assert composed.source_counts() == {"source": 27, "web": 9, "synthetic": 7}
    assert composed.keys[0].startswith("B/") and composed.keys[-1].startswith("A_syn_in/")
    assert len(set(composed.keys)) == len(composed)
    pools = {p.pool: open_pool(p.pool) for p in composed.resolved.parts}
    for i in range(len(composed)):
        part = composed.resolved.parts[int(composed.part_ids[i])]
        pool = pools[part.pool]
        local = int(composed.local_indices[i])
        np.testing.assert_array_equal(composed.read(i), pool.read(local))
        assert composed.keys[i] == f"{part.name}/{pool.keys[local]}"
        assert composed.sources[i] == part.source
        name = pool.class_names[int(pool.labels[local])]
        assert composed.class_names[int(composed.labels[i])] == name
    assert len(composed.class_names) == len(set(composed.class_names))


def test_resolved_index_list_saved_and_loaded(tmp_path) -> None:
    resolved = resolve_composition(parse_composition(paper_composition()))
    path = tmp_path / "composition.json"
    resolved.save(path)
    back = ResolvedComposition.load(path)
    assert back.hash == resolved.hash
    for x, y in zip(back.parts, resolved.parts, strict=True):
        np.testing.assert_array_equal(x.indices, y.indices)
        assert (x.pool, x.manifest, x.source, x.classes) == (
            y.pool,
            y.manifest,
            y.source,
            y.classes,
        )
    assert back.open().keys == ComposedPool(resolved).keys

    doc = json.loads(path.read_text())
    doc["parts"][0]["indices"][0] = doc["parts"][1]["indices"][0]
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="hash"):
        ResolvedComposition.load(path)


def test_changed_pool_is_refused() -> None:
    resolved = resolve_composition(parse_composition([{"pool": SOURCE, "size": 5}]))
    changed = _toy()
    changed.images[0, 0, 0, 0] ^= 1
    with pytest.raises(ConfigError, match="changed"):
        ComposedPool(resolved, {SOURCE: changed})


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ([{"pool": SOURCE}, {"pool": SOURCE, "prior": "near"}], "composition.parts[1].prior"),
        ([{"pool": SOURCE, "sizes": 3}], "composition.parts[0].sizes"),
        ([{"pool": SOURCE, "size": 0}], "composition.parts[0].size"),
        ([{"size": 3}], "composition.parts[0].pool"),
        ([{"pool": SOURCE, "exclude": "Z"}], "composition.parts[0].exclude"),
        (
            [{"name": "a", "pool": SOURCE}, {"name": "a", "pool": SOURCE}],
            "composition.parts[1].name",
        ),
        ({"parts": []}, "composition.parts"),
        ({"parts": [{"pool": SOURCE}], "extra": 1}, "composition.extra"),
        (
            [
                {"name": "a", "pool": SOURCE, "exclude": "b"},
                {"name": "b", "pool": SOURCE, "exclude": "a"},
            ],
            "composition.parts[0].exclude",
        ),
    ],
)
def test_parse_errors_name_the_field(obj, field) -> None:
    with pytest.raises(ConfigError) as err:
        parse_composition(obj)
    assert err.value.field == field


@pytest.mark.parametrize(
    ("parts", "task", "field"),
    [
        ([{"pool": SOURCE, "prior": "in"}], None, "composition.task_classes"),
        ([{"pool": SOURCE, "size": 61}], None, "composition.parts[0].size"),
        ([{"pool": SOURCE, "prior": "in", "size": 31}], TASK, "composition.parts[0].size"),
        ([{"pool": SOURCE, "prior": ["c999"]}], None, "composition.parts[0].prior"),
        (
            [{"pool": SOURCE, "prior": "out", "num_classes": 4}],
            TASK,
            "composition.parts[0].num_classes",
        ),
        (
            [{"name": "B", "pool": SOURCE}, {"name": "A", "pool": WEB, "exclude": "B"}],
            None,
            "composition.parts[1].exclude",
        ),
        ([{"pool": "no_such_reader:x=1"}], None, "composition.parts[0].pool"),
    ],
)
def test_resolve_errors_name_the_field(parts, task, field) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_composition(parse_composition(parts), task)
    assert err.value.field == field


def test_unlabelled_pool_only_takes_prior_all() -> None:
    unlabelled = ArrayPool(np.zeros((6, 2, 2, 3), dtype=np.uint8), spec="u")
    comp = parse_composition([{"pool": "u", "size": 4, "seed": 1}])
    resolved = resolve_composition(comp, pools={"u": unlabelled})
    assert len(resolved.parts[0].indices) == 4 and resolved.parts[0].classes is None
    assert ComposedPool(resolved, {"u": unlabelled}).labels is None
    with pytest.raises(ConfigError) as err:
        resolve_composition(
            parse_composition([{"pool": "u", "prior": "in"}]), TASK, {"u": unlabelled}
        )
    assert err.value.field == "composition.parts[0].prior"
