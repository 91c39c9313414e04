"""Label interventions: hierarchies and cuts, relabelling, semantics, image diversity; the shipped
ImageNet-1k hierarchy."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

from divssl.data.cli_prep import app
from divssl.data.hierarchy import Hierarchy, depth_counts, imagenet1k_hierarchy
from divssl.data.interventions import (
    descendants_of,
    diversity_subset,
    load_hierarchy,
    pool_superclasses,
    relabel,
    relabel_report,
    select_classes,
    subset_by_classes,
    superclasses_at_depth,
    superclasses_for_count,
)
from divssl.data.pool import ArrayPool, register_pool
from divssl.errors import ConfigError

# entity -> animal -> {dog: husky beagle poodle, cat: tabby, bird: finch robin}
#        -> object -> vehicle -> {car, truck}
CHAINS = {
    "husky": ["dog", "animal", "entity"],
    "beagle": ["dog", "animal", "entity"],
    "poodle": ["dog", "animal", "entity"],
    "tabby": ["cat", "animal", "entity"],
    "finch": ["bird", "animal", "entity"],
    "robin": ["bird", "animal", "entity"],
    "car": ["vehicle", "object", "entity"],
    "truck": ["vehicle", "object", "entity"],
}
CLASSES = list(CHAINS)
SIZES = [20, 20, 20, 20, 20, 20, 20, 20]


def toy_pool(sizes: list[int] = SIZES) -> ArrayPool:
    labels = np.repeat(np.arange(len(CLASSES)), sizes)
    images = np.zeros((len(labels), 2, 2, 3), dtype=np.uint8)
    images[..., 0] = labels[:, None, None]
    return ArrayPool(images, labels, list(CLASSES), spec="toy")


@register_pool("h6b_interventions_toy")
def _toy_reader() -> ArrayPool:
    return toy_pool([3, 4, 5, 6, 7, 8, 9, 10])


@pytest.fixture
def hierarchy(tmp_path) -> Hierarchy:
    path = tmp_path / "h.json"
    path.write_text(json.dumps(CHAINS))
    return load_hierarchy(path)


def test_json_and_csv_hierarchies_agree(tmp_path, hierarchy) -> None:
    rows = ["class,parent_chain"] + [f"{c},{'>'.join(chain)}" for c, chain in CHAINS.items()]
    path = tmp_path / "h.csv"
    path.write_text("\n".join(rows) + "\n")
    from_csv = load_hierarchy(path)
    assert from_csv.chains == hierarchy.chains
    assert hierarchy.path("husky") == ("entity", "animal", "dog", "husky")


def test_hierarchy_errors(tmp_path) -> None:
    two_parents = tmp_path / "bad.json"
    two_parents.write_text(json.dumps({"a": ["x", "root"], "b": ["x", "other", "root"]}))
    with pytest.raises(ConfigError, match="two parents"):
        load_hierarchy(two_parents)
    cyclic = tmp_path / "cyc.csv"
    cyclic.write_text("a,b>a>root\n")
    with pytest.raises(ConfigError, match="repeats"):
        load_hierarchy(cyclic)
    with pytest.raises(ConfigError) as err:
        load_hierarchy(tmp_path / "h.txt")
    assert err.value.field == "hierarchy"


def test_depth_cuts(hierarchy) -> None:
    assert depth_counts(hierarchy) == [1, 2, 4, 8]
    at1 = superclasses_at_depth(hierarchy, 1)
    assert at1 == {c: ("object" if c in ("car", "truck") else "animal") for c in CLASSES}
    assert superclasses_at_depth(hierarchy, 9) == {c: c for c in CLASSES}
    with pytest.raises(ConfigError) as err:
        superclasses_at_depth(hierarchy, -1)
    assert err.value.field == "granularity.depth"


def test_count_cuts_follow_the_documented_greedy_rule(hierarchy) -> None:
    # k=3: depth 1 gives {animal, object}; animal's split (+2) overshoots, object's (through the
    # single-child vehicle) adds 1.
    k3 = superclasses_for_count(hierarchy, 3)
    assert k3 == {**{c: "animal" for c in CLASSES[:6]}, "car": "car", "truck": "truck"}
    # k=5: depth 2 gives {dog, cat, bird, vehicle}; bird and vehicle tie on size: bird < vehicle.
    k5 = superclasses_for_count(hierarchy, 5)
    expected = {"husky": "dog", "beagle": "dog", "poodle": "dog", "tabby": "cat"}
    expected |= {"finch": "finch", "robin": "robin", "car": "vehicle", "truck": "vehicle"}
    assert k5 == expected
    with pytest.raises(ConfigError) as err:
        superclasses_for_count(hierarchy, 9)
    assert err.value.field == "granularity.count"


def all_cut_sizes(h: Hierarchy) -> set[int]:
    """Reference: sizes of every cut (antichain covering all classes), by brute force."""
    nodes = sorted(h.nodes())
    paths = [set(h.path(c)) for c in h.classes]
    sizes = set()
    for r in range(1, len(h.classes) + 1):
        for cut in itertools.combinations(nodes, r):
            if all(len(p & set(cut)) == 1 for p in paths):
                sizes.add(r)
    return sizes


def test_count_cuts_reach_every_reachable_count(hierarchy) -> None:
    for k in sorted(all_cut_sizes(hierarchy)):
        mapping = superclasses_for_count(hierarchy, k)
        assert len(set(mapping.values())) == k
        for cls, sup in mapping.items():  # a superclass is on the class's path
            assert sup in hierarchy.path(cls)


def test_relabel_and_report(hierarchy) -> None:
    pool = toy_pool([3, 4, 5, 6, 7, 8, 9, 10])
    mapping = superclasses_for_count(hierarchy, 2)
    view = relabel(pool, mapping)
    assert len(view) == len(pool) and view.class_names == ["animal", "object"]
    for i in range(len(pool)):
        assert view.class_names[view.labels[i]] == mapping[CLASSES[pool.labels[i]]]
        np.testing.assert_array_equal(view.read(i), pool.read(i))
    report = relabel_report(pool, mapping, hierarchy)
    assert report.count == 2
    assert report.sizes == {"animal": 3 + 4 + 5 + 6 + 7 + 8, "object": 9 + 10}
    assert report.members["object"] == ["car", "truck"]
    assert view.manifest_hash() != pool.manifest_hash()
    with pytest.raises(ConfigError) as err:
        relabel(pool, {"husky": "dog"})
    assert err.value.field == "granularity.mapping"


def test_semantics_selection_and_class_subset(hierarchy) -> None:
    animals = descendants_of(hierarchy, "animal")
    assert animals == sorted(CLASSES[:6])
    assert descendants_of(hierarchy, "dog") == ["beagle", "husky", "poodle"]
    assert select_classes(hierarchy, lambda cls, chain: "vehicle" in chain) == ["car", "truck"]
    pool = toy_pool([3, 4, 5, 6, 7, 8, 9, 10])
    view = subset_by_classes(pool, ["truck", "tabby"])
    assert view.class_names == ["tabby", "truck"]
    assert len(view) == 6 + 10
    assert Counter(view.labels.tolist()) == {0: 6, 1: 10}
    for i in range(len(view)):
        assert CLASSES[int(view.read(i)[0, 0, 0])] == view.class_names[view.labels[i]]
    with pytest.raises(ConfigError) as err:
        subset_by_classes(pool, ["unicorn"])
    assert err.value.field == "semantics.classes"
    with pytest.raises(ConfigError):
        descendants_of(hierarchy, "plant")


@pytest.mark.parametrize(
    ("fraction", "total", "classes", "per_class"),
    [(0.25, 40, 2, [20, 20]), (1.0, 40, 8, [5] * 8), (0.5, 41, 4, [10, 10, 10, 11])],
)
def test_diversity_subset_holds_the_total(fraction, total, classes, per_class) -> None:
    pool = toy_pool()
    view = diversity_subset(pool, fraction, total, seed=3)
    assert len(view) == total
    assert len(set(view.indices.tolist())) == total
    counts = Counter(view.labels.tolist())
    assert len(counts) == classes == len(view.class_names)
    assert sorted(counts.values()) == per_class
    for i in range(len(view)):  # labels still name the sample's true class
        assert CLASSES[int(view.read(i)[0, 0, 0])] == view.class_names[view.labels[i]]


def test_diversity_subset_seeds_and_errors() -> None:
    pool = toy_pool()
    a, b = diversity_subset(pool, 0.25, 40, 0), diversity_subset(pool, 0.25, 40, 0)
    np.testing.assert_array_equal(a.indices, b.indices)
    picks = {tuple(diversity_subset(pool, 0.25, 40, s).class_names) for s in range(6)}
    assert len(picks) > 1
    with pytest.raises(ConfigError, match="has 20 images but needs 30") as err:
        diversity_subset(pool, 0.25, 60, 0)
    assert err.value.field == "diversity.total"
    with pytest.raises(ConfigError) as err:
        diversity_subset(pool, 0.0, 10, 0)
    assert err.value.field == "diversity.class_fraction"


def test_diversity_subset_within_superclasses(hierarchy) -> None:
    mapping = superclasses_at_depth(hierarchy, 2)  # dog, cat, bird, vehicle
    view = diversity_subset(toy_pool(), 0.5, 50, seed=1, mapping=mapping)
    assert view.class_names == ["bird", "cat", "dog", "vehicle"]
    assert len(view) == 50
    kept = {CLASSES[int(view.read(i)[0, 0, 0])] for i in range(len(view))}
    # round(0.5 * 3) = 2 dogs, and at least one class of every other superclass
    assert Counter(mapping[c] for c in kept) == {"dog": 2, "cat": 1, "bird": 1, "vehicle": 1}


def test_cli_relabel(tmp_path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("".join(f"{c},{'>'.join(chain)}\n" for c, chain in CHAINS.items()))
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        app,
        ["relabel", "h6b_interventions_toy", "--hierarchy", str(path), "--count", "3",
         "--json", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "superclasses: 3" in result.output
    rows = [line.split("\t") for line in result.output.splitlines()[2:]]
    assert {r[0]: int(r[3]) for r in rows} == {"animal": 33, "truck": 10, "car": 9}
    doc = json.loads(out.read_text())
    assert doc["count"] == 3 and doc["mapping"]["husky"] == "animal"


# ------------------------------------------------------------------------- shipped ImageNet-1k

ENTITY, ANIMAL = "n00001740", "n00015388"
PAPER_COUNTS = (5, 17, 37, 85, 232)


@pytest.fixture(scope="module")
def imagenet() -> Hierarchy:
    return imagenet1k_hierarchy()


def test_shipped_hierarchy_has_1000_classes_rooted_at_entity(imagenet) -> None:
    assert len(imagenet.classes) == 1000
    assert all(chain[-1] == ENTITY for chain in imagenet.chains.values())
    assert imagenet.name(ENTITY) == "entity" and imagenet.synsets[ANIMAL] == "animal.n.01"
    assert imagenet.meta["labels"]["n01440764"].startswith("tench")
    assert imagenet.chains["n01440764"][0] == "n01439121"  # tench -> cyprinid (WordNet)


@pytest.mark.parametrize("k", PAPER_COUNTS)
def test_shipped_hierarchy_reaches_the_paper_counts(imagenet, k) -> None:
    mapping = superclasses_for_count(imagenet, k)
    assert len(mapping) == 1000
    assert len(set(mapping.values())) == k


def test_shipped_animal_classes(imagenet) -> None:
    animals = descendants_of(imagenet, ANIMAL)
    assert 300 <= len(animals) <= 500
    assert animals == descendants_of(imagenet, "animal") == descendants_of(imagenet, "animal.n.01")
    assert all(ANIMAL in imagenet.chains[c] for c in animals)
    assert "n01440764" in animals and "n02690373" not in animals  # tench yes, airliner no


def test_pool_classes_match_by_id_or_name(imagenet) -> None:
    pool = ArrayPool(
        np.zeros((4, 2, 2, 3), np.uint8),
        np.array([0, 1, 2, 2]),
        ["n01440764", "goldfinch", "airliner"],
    )
    mapping = pool_superclasses(pool, imagenet, depth=1)
    assert mapping == {"n01440764": "n00001930", "goldfinch": "n00001930", "airliner": "n00001930"}
    coarse = pool_superclasses(pool, imagenet, count=2)
    assert coarse["n01440764"] == coarse["goldfinch"] != coarse["airliner"]
