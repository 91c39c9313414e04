"""Exact budgets over streaming (WebDataset) pools.

A streaming pool has no random access, so its ordering is over shards:

* :func:`shard_ordering` is a seeded permutation of the shards; the subset of size N is the first
  N samples along it — whole shards, then a prefix (tar order) of the next one
  (:func:`stream_subset`). Subsets of growing N are nested, as with random-access orderings.
* The budgeted stream (:func:`stream_batches`) makes repeated passes over the subset. Pass ``e``
  visits the subset's shards in the order ``divssl.pretrain.budget.pass_permutation(n_shards,
  order_seed,
  e)``; within a shard, samples go through a shuffle buffer of ``pool.buffer`` samples seeded by
  ``(order_seed, e, shard)``. Batches are cut from this stream by ``batch_sizes``, so exactly
  ``sum(batch_sizes)`` images are consumed (C, with ``Budget.batch_sizes``).
* Corrupt samples are skipped: the next sample of the stream takes their place, every batch is
  full, and the loader counts them (``corrupt_count``, ``corrupt_keys``).
* Resuming at ``start_step`` skips ``sum(batch_sizes[:start_step])`` images. Shards whose samples
  are all known (decoded before, see :mod:`divssl.data.readers.wds`) are skipped by counting,
  without reading; the rest are re-read and their images decoded only to find the resume point.
  The batches after the resume point are identical to those of an uninterrupted stream.

Tar files are read in the calling process (cheap, sequential I/O); images are decoded in
``workers`` DataLoader worker processes, and the stream does not depend on ``workers``. For
pretraining (``store_size``) the images are whole, at storage resolution, padded per batch with
their extents; on a CUDA training device their JPEGs are decoded on the GPU in the calling
process, one batched ``decode_jpeg`` call per chunk (:mod:`divssl.data.gpu_decode`).

Memory is bounded whatever the pool size: ``pool.buffer`` encoded samples in the shuffle buffer,
at most ``4 x workers`` decoded chunks of 64 images in flight, and the batch being assembled.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from divssl.data.cache import pad_images
from divssl.data.pool import Pool
from divssl.data.readers.wds import DecodedChunk, RawChunk, RawItem, WdsPool, decode_chunks
from divssl.errors import ConfigError, RunFailed
from divssl.pretrain.budget import pass_permutation

T = TypeVar("T")
_CHUNK = 64  # samples decoded per worker task


def _check_streaming(pool: Pool) -> WdsPool:
    if not isinstance(pool, WdsPool):
        raise ConfigError(
            "data.pool", f"streaming budgets need a wds pool, got {type(pool).__name__}", ["wds"]
        )
    return pool


def shard_ordering(pool: Pool, seed: int) -> list[int]:
    """A seeded permutation of the pool's shard indices (the streaming analogue of an ordering)."""
    wds = _check_streaming(pool)
    return [int(i) for i in np.random.default_rng(seed).permutation(wds.num_shards)]


@dataclass(frozen=True)
class StreamSubset:
    """The first N samples along a shard ordering.

    Attributes:
        units: ``(shard index, samples taken from the shard's start)`` in ordering order; all
            shards are whole except possibly the last.
        seed: the shard-ordering seed.
    """

    units: tuple[tuple[int, int], ...]
    seed: int

    @property
    def size(self) -> int:
        """N, the number of samples in the subset."""
        return sum(m for _, m in self.units)


def stream_subset(pool: Pool, n_subset: int, seed: int = 0) -> StreamSubset:
    """The subset of size ``n_subset``: whole shards along ``shard_ordering(pool, seed)`` then a
    prefix of the next shard, by the index counts.

    Raises:
        ConfigError: ``n_subset`` outside 1..len(pool).
    """
    wds = _check_streaming(pool)
    if not 1 <= n_subset <= len(wds):
        raise ConfigError("subset.size", f"must be in 1..{len(wds)} (pool size), got {n_subset}")
    units: list[tuple[int, int]] = []
    remaining = int(n_subset)
    for shard in shard_ordering(wds, seed):
        take = min(int(wds.counts[shard]), remaining)
        if take > 0:
            units.append((shard, take))
            remaining -= take
        if remaining == 0:
            break
    return StreamSubset(tuple(units), seed)


def subset_keys(pool: Pool, subset: StreamSubset) -> list[str]:
    """Pool keys of the subset's samples (units in order, tar order within a unit)."""
    wds = _check_streaming(pool)
    return [
        wds.keys[int(wds.offsets[shard]) + pos]
        for shard, take in subset.units
        for pos in range(take)
    ]


def buffer_shuffle(samples: Iterable[T], buffer: int, rng: np.random.Generator) -> Iterator[T]:
    """Shuffle a stream through a buffer of ``buffer`` samples (WebDataset's ``shuffle`` stage).

    Written here rather than taken from ``webdataset.filters.shuffle`` because the order must be
    a function of the given generator alone, so that it is reproduced exactly on resume.
    Once the buffer is full, each new sample replaces a uniformly chosen buffered one, which is
    emitted; the remaining buffer is emitted in a random order at the end.
    """
    buf: list[T] = []
    for sample in samples:
        if len(buf) < buffer:
            buf.append(sample)
            continue
        j = int(rng.integers(buffer))
        yield buf[j]
        buf[j] = sample
    for j in rng.permutation(len(buf)):
        yield buf[int(j)]


class StreamLoader:
    """Iterable of ``(images uint8 (b, 3, size, size), labels int64 (b,))``, one per step; with
    a ``store_size``, of ``(images uint8 (b, 3, H, W), labels int64 (b,), extents int64 (b, 2))``:
    whole images at storage resolution padded to the batch's largest extent
    (:func:`divssl.data.cache.pad_images`), for crops over each image's true extent.

    Built by :func:`stream_batches`. After (or during) iteration, ``corrupt_count`` and
    ``corrupt_keys`` give the corrupt samples met after the resume point, and ``images_yielded``
    the images delivered. Iterating again restarts at ``start_step``.
    """

    def __init__(
        self,
        pool: WdsPool,
        subset: StreamSubset,
        batch_sizes: Sequence[int],
        order_seed: int,
        start_step: int,
        size: int,
        workers: int,
        chunk: int = _CHUNK,
        max_pixels: int | None = None,
        store_size: int | None = None,
        device: str | None = None,
    ) -> None:
        self.pool = pool
        self.subset = subset
        self.batch_sizes = batch_sizes  # Budget.batch_sizes is lazy: O(1) memory, never listed
        self.order_seed = int(order_seed)
        self.start_step = int(start_step)
        self.size = int(size)
        self.workers = int(workers)
        self.chunk = int(chunk)
        self.max_pixels = max_pixels  # per-image decode limit (None: the process default)
        self.store_size = store_size  # whole images at this shorter side (None: size x size)
        self.device = device  # batched device JPEG decoding (store_size only; None: PIL)
        self.corrupt_keys: list[str] = []  # distinct corrupt samples met, in order of meeting
        self._met: set[str] = set()
        self.images_yielded = 0
        self._known_state: dict[int, tuple[int, set[int]]] | None = None
        self._learner: _CheckedLearner | None = None

    @property
    def corrupt_count(self) -> int:
        """Distinct corrupt samples of the subset, each counted once however often it is met:
        those met while iterating plus those the shard check cache already knew."""
        if self._learner is None:
            return len(self.corrupt_keys)
        return len(self._learner.corrupt_in_subset)

    @property
    def subset_checked(self) -> bool:
        """Whether every sample of the subset has been decoded once (here or in an earlier run),
        so that :attr:`corrupt_count` and :attr:`decodable_count` are exact."""
        known = self._learner.known if self._learner is not None else self._known_state
        if known is None:
            return False
        return all(known[s][0] >= m for s, m in self.subset.units)

    @property
    def decodable_count(self) -> int:
        """N corrected for corrupt samples: the subset's decodable samples (exact once
        :attr:`subset_checked`, else an upper bound)."""
        return self.subset.size - self.corrupt_count

    def __len__(self) -> int:
        return len(self.batch_sizes) - self.start_step

    # ---------------------------------------------------------------- producer (this process)

    def _known(self) -> dict[int, tuple[int, set[int]]]:
        known = {shard: self.pool.checked_state(shard) for shard, _ in self.subset.units}
        all_known = all(known[s][0] >= m for s, m in self.subset.units)
        if all_known and all(sum(p < m for p in known[s][1]) == m for s, m in self.subset.units):
            raise RunFailed("every sample of the streaming subset is corrupt")
        return known

    def _plan(self, skip: int, known: dict[int, tuple[int, set[int]]]) -> Iterator[RawChunk]:
        """Raw chunks of the stream from the resume point; ``meta['pending_skip']`` is the
        number of decoded valid images still to discard before the first batch."""
        units = self.subset.units
        skipping = skip > 0
        items: list[RawItem] = []
        pass_index = 0
        while True:
            for u in pass_permutation(len(units), self.order_seed, pass_index):
                shard, take = units[int(u)]
                checked, bad = known[shard]
                if skipping and checked >= take:
                    valid = take - sum(p < take for p in bad)
                    if valid <= skip:  # skip the whole shard by counting, without reading it
                        skip -= valid
                        skipping = skip > 0
                        continue
                labels = self.pool.shard_labels(shard)
                name = self.pool.entries[shard].name
                rng = np.random.default_rng([self.order_seed, pass_index, shard])
                raw = self.pool.iter_shard(shard, take)
                for s in buffer_shuffle(raw, self.pool.buffer, rng):
                    image = s.image
                    if s.pos < checked:
                        if skipping:  # known valid: counted; known corrupt: dropped
                            if s.pos not in bad:
                                skip -= 1
                            skipping = skip > 0
                            continue
                        if s.pos in bad:
                            image = None  # known corrupt: sent without bytes, not decoded
                    else:
                        skipping = False  # unknown: the consumer decodes and discards
                    items.append(
                        RawItem(shard, s.pos, f"{name}/{s.key}", image, int(labels[s.pos]))
                    )
                    if len(items) == self.chunk:
                        yield RawChunk(items, {"pending_skip": skip})
                        items = []
            pass_index += 1

    # --------------------------------------------------------------------------------- consumer

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        self.corrupt_keys = []
        self._met = set()
        self.images_yielded = 0
        total = len(self.batch_sizes)
        if self.start_step >= total:
            return
        known = self._known()
        self._known_state = known
        skip = self._images_before(self.start_step)
        learner = _CheckedLearner(self.pool, self.subset, known)
        self._learner = learner
        discard: int | None = None
        step = 0
        parts: list[torch.Tensor | list[np.ndarray]] = []
        part_labels: list[np.ndarray] = []
        filled = 0
        chunks = decode_chunks(
            self._plan(skip, known),
            self.size,
            self.workers,
            self.max_pixels,
            store_size=self.store_size,
            device=self.device,
        )
        for out in chunks:
            learner.update(out)
            if discard is None:
                discard = int(out.meta["pending_skip"])
            rows = np.cumsum(out.valid) - 1  # row of each valid item in out.images
            take: list[int] = []
            for j in range(len(out.valid)):
                if not out.valid[j]:
                    if discard == 0 and out.keys[j] not in self._met:
                        self._met.add(out.keys[j])  # each bad sample is counted once
                        self.corrupt_keys.append(out.keys[j])
                    continue
                if discard > 0:
                    discard -= 1
                    continue
                take.append(j)
                if filled + len(take) == int(self.batch_sizes[self.start_step + step]):
                    parts.append(_rows(out, rows[take]))
                    part_labels.append(out.labels[take])
                    yield self._batch(parts, part_labels)
                    parts, part_labels, take, filled = [], [], [], 0
                    step += 1
                    if self.start_step + step == total:
                        return
            if take:
                parts.append(_rows(out, rows[take]))
                part_labels.append(out.labels[take])
                filled += len(take)

    def _images_before(self, step: int) -> int:
        """Images of steps ``0 .. step-1`` (the budget's rule when it has one; else summed)."""
        budget = getattr(self.batch_sizes, "budget", None)
        if budget is not None:
            return int(budget.images_before(step))
        return sum(int(self.batch_sizes[i]) for i in range(step))

    def _batch(
        self, parts: list[torch.Tensor | list[np.ndarray]], labels: list[np.ndarray]
    ) -> tuple[torch.Tensor, ...]:
        label_t = torch.from_numpy(np.concatenate(labels))
        if self.store_size is None:
            images = torch.cat([p for p in parts if isinstance(p, torch.Tensor)])
            images = images.permute(0, 3, 1, 2).contiguous()
            self.images_yielded += len(images)
            return images, label_t
        padded, extents = pad_images([img for p in parts for img in p])
        self.images_yielded += len(padded)
        images = torch.from_numpy(padded).permute(0, 3, 1, 2).contiguous()
        return images, label_t, torch.from_numpy(extents)


def _rows(out: DecodedChunk, rows: np.ndarray) -> torch.Tensor | list[np.ndarray]:
    """The decoded images at ``rows`` (positions among the chunk's valid items)."""
    if isinstance(out.images, list):
        return [out.images[int(r)] for r in rows]
    return out.images[torch.as_tensor(rows)]


class _CheckedLearner:
    """Collects decode outcomes of not-yet-known samples and records a shard once its whole
    subset prefix has been decoded, so later resumes can skip it by counting."""

    def __init__(
        self, pool: WdsPool, subset: StreamSubset, known: dict[int, tuple[int, set[int]]]
    ) -> None:
        self.pool = pool
        self.take = dict(subset.units)
        self.known = known
        self.seen: dict[int, dict[int, bool]] = {}
        self.corrupt_in_subset: set[tuple[int, int]] = {
            (s, p) for s, (_, bad) in known.items() for p in bad if p < self.take[s]
        }
        self.size = subset.size

    def update(self, out: DecodedChunk) -> None:
        triples = zip(out.shards.tolist(), out.positions.tolist(), out.valid.tolist(), strict=True)
        for shard, pos, ok in triples:
            if not ok:
                self.corrupt_in_subset.add((shard, pos))
            checked, bad = self.known[shard]
            if pos < checked or self.take[shard] <= checked:
                continue
            seen = self.seen.setdefault(shard, {})
            seen[pos] = ok
            if len(seen) == self.take[shard] - checked:
                new_bad = bad | {p for p, good in seen.items() if not good}
                self.pool.record_checked(shard, self.take[shard], new_bad)
                self.known[shard] = (self.take[shard], new_bad)
                del self.seen[shard]  # only shards being read are tracked: memory stays bounded
        if len(self.corrupt_in_subset) >= self.size:
            raise RunFailed("every sample of the streaming subset is corrupt")


def stream_batches(
    pool: Pool,
    n_subset: int,
    batch_sizes: Sequence[int],
    order_seed: int,
    start_step: int = 0,
    size: int = 32,
    workers: int = 0,
    subset_seed: int = 0,
    max_pixels: int | None = None,
    store_size: int | None = None,
    device: str | torch.device | None = None,
) -> StreamLoader:
    """The budgeted image stream of a WebDataset pool.

    Args:
        pool: a ``wds`` pool.
        n_subset: N, samples in the subset (first N along ``shard_ordering(pool, subset_seed)``).
        batch_sizes: images per step (``Budget.batch_sizes``); their sum is C.
        order_seed: seed of the pass order (shard permutation and within-shard shuffle).
        start_step: first step to produce (resume); earlier steps' images are skipped.
        size: side of the output images (shorter side resized, centre crop) when no
            ``store_size`` is given.
        workers: decoding worker processes (0: decode in this process).
        subset_seed: seed of the shard ordering that defines the subset.
        max_pixels: per-image pixel limit (``data.max_pixels``); larger images count as corrupt.
        store_size: yield whole images instead (shorter side ``store_size``, aspect kept, never
            upsampled) with their extents, as random-access pools are stored for pretraining.
        device: the training device; on CUDA (with a ``store_size``) JPEGs are decoded there in
            one batched ``decode_jpeg`` call per chunk of samples; elsewhere PIL in ``workers``.

    Returns:
        A :class:`StreamLoader` yielding ``(images uint8 (b, 3, size, size), labels int64 (b,))``
        for steps ``start_step ..`` (labels ``-1`` where unknown); with a ``store_size``,
        ``(images uint8 (b, 3, H, W), labels, extents int64 (b, 2))``.

    Memory stays bounded whatever the pool size: the shuffle buffer holds ``pool.buffer`` encoded
    samples, the decoder at most ``4 x workers`` chunks of 64 images at storage resolution
    (prefetch), and one batch is assembled at a time.

    Raises:
        ConfigError: not a wds pool, bad N, batch sizes, step, size or worker count.
    """
    wds = _check_streaming(pool)
    subset = stream_subset(wds, n_subset, subset_seed)
    # a Budget's lazy sizes are >= 1 by construction; other sequences are checked item by item
    if not len(batch_sizes) or (
        not hasattr(batch_sizes, "budget") and any(int(b) < 1 for b in batch_sizes)
    ):
        raise ConfigError("batch_size", f"batch sizes must be >= 1, got {list(batch_sizes)[:8]}")
    if not 0 <= start_step <= len(batch_sizes):
        raise ConfigError("start_step", f"must be in 0..{len(batch_sizes)}, got {start_step}")
    if size < 1:
        raise ConfigError("image_size", f"must be >= 1, got {size}")
    if store_size is not None and store_size < 1:
        raise ConfigError("data.store_size", f"must be >= 1, got {store_size}")
    dev = torch.device(device) if device is not None else None
    decode_device = str(dev) if dev is not None and dev.type == "cuda" else None
    if workers < 0:
        raise ConfigError("data.workers", f"must be >= 0, got {workers}")
    return StreamLoader(
        wds,
        subset,
        batch_sizes,
        order_seed,
        start_step,
        size,
        workers,
        max_pixels=max_pixels,
        store_size=store_size,
        device=decode_device if store_size is not None else None,
    )
