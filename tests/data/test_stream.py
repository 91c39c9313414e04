"""Budgeted streaming over WebDataset shards: exact budgets, order, resume, corrupt samples."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from divssl.data.pool import open_pool
from divssl.data.stream import shard_ordering, stream_batches, stream_subset, subset_keys
from divssl.errors import ConfigError, RunFailed
from divssl.pretrain.budget import Budget

COUNTS = [7, 5, 9, 6, 8]  # samples per shard: 35 in all
SIZE = 8


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIVSSL_CACHE", str(tmp_path / "cache"))


def _png(shard: int, pos: int) -> bytes:
    """An 8x8 image that encodes (shard, pos) in its G and B channels."""
    arr = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    arr[..., 0] = 100
    arr[..., 1] = shard
    arr[..., 2] = pos
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(root: Path, counts: list[int], corrupt: dict[tuple[int, int], str]) -> str:
    """Shards ``root/shard-{i}.tar``; ``corrupt[(shard, pos)]`` is ``empty``, ``junk`` or
    ``missing`` (no image member). Labels are ``(shard + pos) % 3``."""
    root.mkdir(parents=True, exist_ok=True)
    for s, n in enumerate(counts):
        with tarfile.open(root / f"shard-{s}.tar", "w") as tar:
            for p in range(n):
                key = f"s{s}_{p:04d}"
                kind = corrupt.get((s, p))
                if kind != "missing":
                    data = {"empty": b"", "junk": b"not an image"}.get(kind or "", _png(s, p))
                    _add(tar, f"{key}.png", data)
                _add(tar, f"{key}.cls", str((s + p) % 3).encode())
    (root / "classes.txt").write_text("a\nb\nc\n")
    return f"wds:urls={root}/shard-{{0..{len(counts) - 1}}}.tar:buffer=3"


def ref_buffer_shuffle(seq: list[int], buffer: int, rng: np.random.Generator) -> list[int]:
    """Shuffle buffer from its description: when full, a random slot is emitted and refilled."""
    buf: list[int] = []
    out: list[int] = []
    for x in seq:
        if len(buf) < buffer:
            buf.append(x)
        else:
            j = int(rng.integers(buffer))
            out.append(buf[j])
            buf[j] = x
    out.extend(buf[int(j)] for j in rng.permutation(len(buf)))
    return out


def ref_stream(
    counts: list[int],
    n: int,
    subset_seed: int,
    order_seed: int,
    total: int,
    bad: set[tuple[int, int]],
    buffer: int = 3,
) -> tuple[list[tuple[int, int]], int]:
    """The expected (shard, pos) sequence of ``total`` valid images, and the number of distinct
    corrupt samples met (each counted once, however many passes meet it)."""
    units = []
    left = n
    for shard in np.random.default_rng(subset_seed).permutation(len(counts)):
        take = min(counts[shard], left)
        units.append((int(shard), take))
        left -= take
        if left == 0:
            break
    out: list[tuple[int, int]] = []
    corrupt: set[tuple[int, int]] = set()
    e = 0
    while True:
        for u in np.random.default_rng([order_seed, e]).permutation(len(units)):
            shard, take = units[u]
            rng = np.random.default_rng([order_seed, e, shard])
            for pos in ref_buffer_shuffle(list(range(take)), buffer, rng):
                if (shard, pos) in bad:
                    corrupt.add((shard, pos))
                    continue
                out.append((shard, pos))
                if len(out) == total:
                    return out, len(corrupt)
        e += 1


def ids(images) -> list[tuple[int, int]]:
    """(shard, pos) decoded from each image of a (b, 3, H, W) batch."""
    return [(int(img[1, 0, 0]), int(img[2, 0, 0])) for img in images]


def run_stream(pool, n, budget, order_seed=1, start=0, workers=0, subset_seed=0):
    loader = stream_batches(
        pool, n, budget.batch_sizes, order_seed, start, SIZE, workers, subset_seed=subset_seed
    )
    batches = [(ids(x), y.tolist(), tuple(x.shape), x.dtype) for x, y in loader]
    return batches, loader


def test_shard_ordering_and_nested_subsets(tmp_path: Path) -> None:
    pool = open_pool(write_shards(tmp_path / "s", COUNTS, {}))
    order = shard_ordering(pool, 5)
    assert sorted(order) == list(range(len(COUNTS)))
    assert order == shard_ordering(pool, 5)
    assert order == np.random.default_rng(5).permutation(len(COUNTS)).tolist()
    sub = stream_subset(pool, 10, seed=5)
    # whole shards along the ordering, then a prefix of the next one
    expected, left = [], 10
    for shard in order:
        take = min(COUNTS[shard], left)
        expected.append((shard, take))
        left -= take
        if not left:
            break
    assert sub.units == tuple(expected) and sub.size == 10
    small, big = subset_keys(pool, stream_subset(pool, 6, 5)), subset_keys(pool, sub)
    assert big[:6] == small  # nested
    with pytest.raises(ConfigError, match="subset.size"):
        stream_subset(pool, 36)
    with pytest.raises(ConfigError, match="subset.size"):
        stream_subset(pool, 0)


def test_exact_budget_and_order_match_reference(tmp_path: Path) -> None:
    pool = open_pool(write_shards(tmp_path / "s", COUNTS, {}))
    n = 20
    budget = Budget(images=71, unique_images=n, global_batch=8)  # 3.55 passes, remainder 7
    batches, loader = run_stream(pool, n, budget, order_seed=3, subset_seed=2)
    assert [len(b[0]) for b in batches] == budget.batch_sizes
    assert sum(len(b[0]) for b in batches) == 71 == loader.images_yielded
    assert all(b[2][1:] == (3, SIZE, SIZE) and str(b[3]) == "torch.uint8" for b in batches)
    got = [i for b in batches for i in b[0]]
    want, corrupt = ref_stream(COUNTS, n, 2, 3, 71, set())
    assert got == want and corrupt == 0 and loader.corrupt_count == 0
    # each full pass visits every subset sample exactly once
    subset = set(want[:n])
    assert len(subset) == n and set(want[n : 2 * n]) == subset
    labels = [lab for b in batches for lab in b[1]]
    assert labels == [(s + p) % 3 for s, p in got]
    again, _ = run_stream(pool, n, budget, order_seed=3, subset_seed=2)
    assert again == batches
    other, _ = run_stream(pool, n, budget, order_seed=4, subset_seed=2)
    assert [b[0] for b in other] != [b[0] for b in batches]


def _count_reads(pool) -> list[int]:
    reads: list[int] = []
    original = pool.iter_shard

    def counting(shard: int, limit: int | None = None):
        reads.append(shard)
        return original(shard, limit)

    pool.iter_shard = counting
    return reads


def test_resume_reproduces_batches_and_skips_known_shards(tmp_path: Path) -> None:
    spec = write_shards(tmp_path / "s", COUNTS, {})
    budget = Budget(images=90, unique_images=35, global_batch=8)
    # resume before any shard is known (first use): shards are re-read to find the resume point
    fresh = open_pool(spec)
    fresh_reads = _count_reads(fresh)
    resumed, _ = run_stream(fresh, 35, budget, start=9)
    full, _ = run_stream(open_pool(spec), 35, budget)  # records every shard as checked
    assert resumed == full[9:]
    # now every shard is known: 72 images = passes 0 and 1 (70) are skipped by counting
    known = open_pool(spec)
    reads = _count_reads(known)
    late, _ = run_stream(known, 35, budget, start=9)
    assert late == full[9:]
    units = stream_subset(known, 35).units
    first_of_pass_2 = units[int(np.random.default_rng([1, 2]).permutation(len(units))[0])][0]
    assert reads[0] == first_of_pass_2
    assert len(reads) < len(fresh_reads) and fresh_reads[: len(COUNTS)] != reads[: len(COUNTS)]


def test_corrupt_samples_replaced_and_counted(tmp_path: Path) -> None:
    bad = {(0, 1): "empty", (2, 4): "junk", (3, 0): "missing", (4, 7): "junk"}
    spec = write_shards(tmp_path / "s", COUNTS, bad)
    budget = Budget(images=75, unique_images=35, global_batch=10)
    batches, loader = run_stream(open_pool(spec), 35, budget, order_seed=7)
    assert [len(b[0]) for b in batches] == budget.batch_sizes  # every batch full
    got = [i for b in batches for i in b[0]]
    want, corrupt = ref_stream(COUNTS, 35, 0, 7, 75, set(bad))
    assert got == want
    assert loader.corrupt_count == corrupt > 0
    assert set(loader.corrupt_keys) <= {f"shard-{s}.tar/s{s}_{p:04d}" for s, p in bad}
    for start in (3, 6):  # known-corrupt shards: resume by counting gives the same batches
        resumed, _ = run_stream(open_pool(spec), 35, budget, order_seed=7, start=start)
        assert resumed == batches[start:]


def test_resume_with_unknown_corrupt_samples(tmp_path: Path) -> None:
    bad = {(1, 2): "junk", (2, 0): "empty"}
    spec = write_shards(tmp_path / "s", COUNTS, bad)
    budget = Budget(images=60, unique_images=30, global_batch=7)
    resumed, _ = run_stream(open_pool(spec), 30, budget, start=4)  # nothing known yet
    full, _ = run_stream(open_pool(spec), 30, budget)
    assert resumed == full[4:]


def test_workers_do_not_change_the_stream(tmp_path: Path) -> None:
    spec = write_shards(tmp_path / "s", COUNTS, {(1, 1): "junk"})
    budget = Budget(images=40, unique_images=35, global_batch=9)
    serial, _ = run_stream(open_pool(spec), 35, budget)
    parallel, loader = run_stream(open_pool(spec), 35, budget, workers=2)
    assert parallel == serial
    assert loader.images_yielded == 40


def test_all_corrupt_subset_fails(tmp_path: Path) -> None:
    bad = {(0, p): "junk" for p in range(3)} | {(1, p): "junk" for p in range(5)}
    spec = write_shards(tmp_path / "s", [3, 5], bad)
    pool = open_pool(spec)
    with pytest.raises(RunFailed, match="corrupt"):
        list(stream_batches(pool, 8, [4, 4], order_seed=0, size=SIZE))
    with pytest.raises(RunFailed, match="corrupt"):  # now known from the cache: fails up front
        list(stream_batches(open_pool(spec), 8, [4, 4], order_seed=0, size=SIZE))


def test_stream_argument_errors(tmp_path: Path) -> None:
    pool = open_pool(write_shards(tmp_path / "s", [3, 4], {}))
    with pytest.raises(ConfigError, match="start_step"):
        stream_batches(pool, 5, [2, 2], 0, start_step=3, size=SIZE)
    with pytest.raises(ConfigError, match="batch_size"):
        stream_batches(pool, 5, [2, 0], 0, size=SIZE)
    arr = open_pool("npz:path=" + str(_npz(tmp_path)))
    with pytest.raises(ConfigError, match="wds"):
        stream_batches(arr, 2, [2], 0, size=SIZE)
    assert list(stream_batches(pool, 5, [2, 2], 0, start_step=2, size=SIZE)) == []


def _npz(tmp_path: Path) -> Path:
    path = tmp_path / "x.npz"
    np.savez(path, images=np.zeros((3, 4, 4, 3), np.uint8))
    return path
