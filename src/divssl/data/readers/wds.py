"""``wds:urls=/data/shards/{000000..000099}.tar`` — WebDataset tar shards, streamed.

Web-crawled shards (img2dataset) are tagged with ``:source=web``; the default tag is ``source``.

``urls`` is a brace pattern, a glob, a folder of ``*.tar``, a single shard, or a list file (one
path per line, relative to the list file's folder). Shards are local files (a spec cannot hold a
``pipe:`` or ``http://`` URL). A sample is a run of consecutive tar members sharing a key (the
WebDataset convention, grouped with ``webdataset.tariterators.group_by_keys``): the image is the
``jpg|jpeg|png|webp`` member, the label the optional ``cls`` member (an integer, or a name listed
in ``classes.txt`` beside the shards, whose lines also give the class names). A sample without an
image member is corrupt.

The pool is never held in memory (``streaming = True``). Exact budgets need per-shard sample
counts, read from ``index.json`` beside the shards (written by ``divssl data index-shards``), or,
for shards missing from it or changed since (size/mtime), counted by one streaming pass whose
result is stored in the divssl cache. ``len()`` is the total; keys are ``"<shard>/<key>"``.

Pretraining streams whole images: each sample is decoded at storage resolution (shorter side
``data.store_size``, aspect kept, never upsampled; :meth:`WdsPool.iter_stored`,
``decode_chunks(..., store_size=...)``), as random-access pools are stored, so that crops are
sampled over each image's true extent; on CUDA the JPEGs of each chunk are decoded in one batched
``decode_jpeg`` call (:func:`divssl.data.gpu_decode.decode_store_blobs`). The square
``iter_resized`` path (shorter side, centre crop) serves evaluation's fixed-size arrays.

Corrupt samples are recorded per shard as ``checked`` (a prefix of the shard, in tar order, whose
samples have all been decoded once) and ``corrupt`` (positions in that prefix that failed), from
``index-shards --verify`` or learned while streaming (stored in the divssl cache). A resumed stream
uses them to skip whole shards by counting instead of decoding.

Tar members are read with :mod:`tarfile` in streaming mode rather than through
``webdataset.tariterators.tar_file_iterator`` because every member, links included (which that
iterator drops before any hook sees them), must be checked: a name that is absolute or contains
``..`` is rejected with a :class:`~divssl.errors.ConfigError`.
"""

from __future__ import annotations

import glob
import hashlib
import json
import multiprocessing
import os
import re
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from divssl.cache import cache_key, cache_root
from divssl.data.cache import (
    current_max_pixels,
    decode_image,
    open_rgb,
    resize_center_crop,
    resize_shorter,
)
from divssl.data.pool import CorruptImage, Pool, register_pool
from divssl.errors import ConfigError
from divssl.io import atomic_write_json, atomic_write_text, read_json

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
_META = re.compile(r"__[^/]*__($|/)")  # WebDataset's metadata members (skip_meta), not samples
INDEX_NAME = "index.json"
INDEX_VERSION = 1


# ------------------------------------------------------------------------------------ shards


def expand_urls(urls: str) -> list[Path]:
    """Expand a shard pattern into an ordered list of existing local tar files.

    Raises:
        ConfigError: a remote URL, no shards, a missing shard or a repeated shard.
    """
    text = str(urls).strip()
    if "://" in text or text.startswith("pipe:"):
        raise ConfigError("data.pool.urls", f"only local shard files are supported, got {text!r}")
    path = Path(text).expanduser()
    if "{" in text:
        import braceexpand

        paths = [Path(p).expanduser() for p in braceexpand.braceexpand(text)]
    elif any(c in text for c in "*?["):
        paths = [Path(p) for p in sorted(glob.glob(str(path)))]
    elif path.is_dir():
        paths = sorted(path.glob("*.tar"))
    elif path.is_file() and path.suffix != ".tar":
        lines = [ln.strip() for ln in path.read_text().splitlines()]
        paths = [path.parent / ln for ln in lines if ln and not ln.startswith("#")]
    else:
        paths = [path]
    if not paths:
        raise ConfigError("data.pool.urls", f"no shards match {text!r}")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise ConfigError("data.pool.urls", f"missing shard {missing[0]} ({len(missing)} missing)")
    if len({p.resolve() for p in paths}) != len(paths):
        raise ConfigError("data.pool.urls", f"{text!r} names a shard twice")
    return paths


def shard_base(paths: Sequence[Path]) -> Path:
    """The folder holding ``index.json`` and ``classes.txt``: the shards' common parent."""
    return Path(os.path.commonpath([str(p.resolve().parent) for p in paths]))


def _check_member(shard: Path, info: tarfile.TarInfo) -> None:
    for name in (info.name, info.linkname if (info.issym() or info.islnk()) else ""):
        if not name:
            continue
        pure = PurePosixPath(name)
        if pure.is_absolute() or ".." in pure.parts or name.startswith("\\"):
            raise ConfigError(
                "data.pool.urls", f"{shard}: tar member {name!r} escapes its folder; rejected"
            )


def _iter_members(shard: Path) -> Iterator[dict[str, Any]]:
    """Yield ``{"fname", "data", "__url__"}`` for each regular member, checking every name."""
    try:
        with open(shard, "rb") as fh, tarfile.open(fileobj=fh, mode="r|*") as tar:
            for info in tar:
                _check_member(shard, info)
                name = info.name
                if not info.isreg() or _META.match(name):
                    continue
                member = tar.extractfile(info)
                data = member.read() if member is not None else b""
                yield {"fname": name, "data": data, "__url__": str(shard)}
                # streaming: do not keep every TarInfo in memory (a private list of TarFile)
                tar.members = []  # type: ignore[attr-defined]
    except tarfile.TarError as exc:
        raise ConfigError("data.pool.urls", f"{shard}: not a readable tar file ({exc})") from exc


@dataclass
class RawSample:
    """One sample as stored: ``pos`` is its position in the shard (tar order)."""

    pos: int
    key: str
    image: bytes | None
    cls: bytes | None


def iter_shard(shard: Path, limit: int | None = None) -> Iterator[RawSample]:
    """Yield the first ``limit`` samples of a shard (all when ``None``) in tar order.

    Raises:
        ConfigError: unreadable tar, a member escaping its folder, or a duplicate key.
    """
    from webdataset.tariterators import group_by_keys

    if limit is not None and limit <= 0:
        return
    for pos, sample in enumerate(group_by_keys(_iter_members(shard))):
        image = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
        yield RawSample(pos, str(sample["__key__"]), image, sample.get("cls"))
        if limit is not None and pos + 1 >= limit:
            return


def parse_cls(data: bytes | None, class_index: dict[str, int]) -> int:
    """A ``cls`` member as a label: an integer, or a class name from ``classes.txt``; else -1."""
    if data is None:
        return -1
    text = data.decode("utf-8", errors="replace").strip()
    try:
        return int(text)
    except ValueError:
        return class_index.get(text, -1)


# ------------------------------------------------------------------------------------- index


@dataclass
class ShardEntry:
    """Index entry of one shard.

    Attributes:
        name: path relative to the shard base folder.
        size: file size in bytes; mtime_ns: modification time (both detect a changed shard).
        count: number of samples.
        keys: sample keys in tar order.
        labels: label per sample (``-1`` unknown) or ``None`` when no sample has a ``cls``.
        checked: samples ``0 .. checked-1`` have all been decoded once.
        corrupt: positions (< checked) that failed to decode.
    """

    name: str
    size: int
    mtime_ns: int
    count: int
    keys: list[str]
    labels: list[int] | None
    checked: int = 0
    corrupt: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ShardEntry:
        return cls(**{k: obj[k] for k in cls.__dataclass_fields__ if k in obj})


def _stat(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def scan_shard(
    shard: Path, name: str, class_index: dict[str, int], verify: bool = False
) -> tuple[ShardEntry, list[tuple[int, int]]]:
    """Count (and with ``verify`` decode) every sample of a shard.

    Returns:
        The shard's entry and, when verifying, the (H, W) of each sample ((-1, -1) if corrupt).
    """
    size, mtime = _stat(shard)
    keys: list[str] = []
    labels: list[int] = []
    corrupt: list[int] = []
    sizes: list[tuple[int, int]] = []
    has_cls = False
    for sample in iter_shard(shard):
        keys.append(sample.key)
        labels.append(parse_cls(sample.cls, class_index))
        has_cls = has_cls or sample.cls is not None
        if verify:
            hw = _probe(sample.image, f"{name}/{sample.key}")
            sizes.append(hw)
            if hw[0] < 0:
                corrupt.append(sample.pos)
    if len(set(keys)) != len(keys):
        raise ConfigError("data.pool.urls", f"{shard}: duplicate sample keys")
    entry = ShardEntry(
        name=name,
        size=size,
        mtime_ns=mtime,
        count=len(keys),
        keys=keys,
        labels=labels if has_cls else None,
        checked=len(keys) if verify else 0,
        corrupt=corrupt,
    )
    return entry, sizes


def _probe(image: bytes | None, key: str) -> tuple[int, int]:
    if image is None:
        return (-1, -1)
    try:
        img = open_rgb(image, key)
    except CorruptImage:
        return (-1, -1)
    return (img.height, img.width)


def _scan_task(args: tuple[Path, str, dict[str, int], bool]) -> tuple[ShardEntry, list]:
    return scan_shard(*args)


def _read_index(base: Path) -> dict[str, dict[str, Any]]:
    path = base / INDEX_NAME
    if not path.is_file():
        return {}
    try:
        obj = read_json(path)
    except (json.JSONDecodeError, OSError):
        return {}
    if not isinstance(obj, dict) or obj.get("version") != INDEX_VERSION:
        return {}
    shards = obj.get("shards", {})
    return shards if isinstance(shards, dict) else {}


def _cache_file(namespace: str, shard: Path, size: int, mtime: int) -> Path:
    return cache_root() / namespace / f"{cache_key(str(shard.resolve()), size, mtime)}.json"


def _checked_state(shard: Path, entry: ShardEntry) -> tuple[int, list[int]]:
    """Merge the entry's checked prefix with what earlier streams learned (divssl cache)."""
    path = _cache_file("wds_checked", shard, entry.size, entry.mtime_ns)
    if path.is_file():
        try:
            obj = read_json(path)
            if int(obj["checked"]) > entry.checked:
                return int(obj["checked"]), [int(p) for p in obj["corrupt"]]
        except (json.JSONDecodeError, KeyError, OSError, TypeError, ValueError):
            pass
    return entry.checked, list(entry.corrupt)


def record_checked(
    shard: Path, size: int, mtime: int, checked: int, corrupt: Iterable[int]
) -> None:
    """Store that samples ``0 .. checked-1`` of a shard were decoded and which failed."""
    path = _cache_file("wds_checked", shard, size, mtime)
    atomic_write_json(path, {"checked": int(checked), "corrupt": sorted(int(p) for p in corrupt)})


def _write_compact_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, separators=(",", ":"), sort_keys=True) + "\n")


def load_classes(path: Path | None) -> list[str] | None:
    """Class names from a ``classes.txt`` (one per line), or ``None`` when absent."""
    if path is None or not path.is_file():
        return None
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def _entries(shards: Sequence[Path], base: Path, class_index: dict[str, int]) -> list[ShardEntry]:
    """Index entries for ``shards``: from ``index.json``, else the cache, else a counting pass."""
    index = _read_index(base)
    out: list[ShardEntry] = []
    for shard in shards:
        name = shard.resolve().relative_to(base).as_posix()
        size, mtime = _stat(shard)
        obj = index.get(name)
        if obj is not None and (obj.get("size"), obj.get("mtime_ns")) == (size, mtime):
            out.append(ShardEntry.from_json({**obj, "name": name}))
            continue
        cached = _cache_file("wds_index", shard, size, mtime)
        if cached.is_file():
            out.append(ShardEntry.from_json({**read_json(cached), "name": name}))
            continue
        entry, _ = scan_shard(shard, name, class_index)
        _write_compact_json(cached, entry.to_json())
        out.append(entry)
    return out


def index_shards(urls: str, verify: bool = False, workers: int = 0) -> Path:
    """Count the samples of every shard (and with ``verify`` decode them) into ``index.json``.

    Entries for other shards already in the index are kept. Returns the index path.
    """
    shards = expand_urls(urls)
    base = shard_base(shards)
    classes = load_classes(base / "classes.txt") or []
    class_index = {n: i for i, n in enumerate(classes)}
    tasks = [(s, s.resolve().relative_to(base).as_posix(), class_index, verify) for s in shards]
    if workers > 0:
        with multiprocessing.get_context().Pool(workers) as procs:
            results = procs.map(_scan_task, tasks, chunksize=1)
    else:
        results = [_scan_task(t) for t in tasks]
    merged = _read_index(base)
    for entry, _ in results:
        merged[entry.name] = entry.to_json()
    path = base / INDEX_NAME
    _write_compact_json(path, {"version": INDEX_VERSION, "shards": merged})
    return path


# -------------------------------------------------------------------------------------- pool


class WdsPool(Pool):
    """A streaming pool over WebDataset shards (see the module docstring).

    Args:
        shards: shard files in pool order.
        buffer: within-shard shuffle buffer (samples) used by the budgeted stream.
        classes: path of a ``classes.txt``; defaults to the one beside the shards.
    """

    streaming = True

    def __init__(self, shards: Sequence[Path], buffer: int = 1000, classes: Path | None = None):
        if buffer < 1:
            raise ConfigError("data.pool.buffer", f"must be >= 1, got {buffer}")
        self.shards = [Path(s) for s in shards]
        self.base = shard_base(self.shards)
        self.buffer = int(buffer)
        class_file = classes if classes is not None else self.base / "classes.txt"
        self.class_names = load_classes(class_file)
        self._class_index = {n: i for i, n in enumerate(self.class_names or [])}
        self.entries = _entries(self.shards, self.base, self._class_index)
        self.counts = np.array([e.count for e in self.entries], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self._keys: list[str] | None = None
        has_labels = any(e.labels is not None for e in self.entries)
        self._labels: np.ndarray | None = None
        if has_labels:
            self._labels = np.concatenate(
                [
                    np.asarray(e.labels if e.labels is not None else [-1] * e.count, np.int64)
                    for e in self.entries
                ]
            )
            if self.class_names is None:
                self.class_names = [str(i) for i in range(int(self._labels.max(initial=-1)) + 1)]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    @property
    def keys(self) -> Sequence[str]:
        if self._keys is None:
            self._keys = [f"{e.name}/{k}" for e in self.entries for k in e.keys]
        return self._keys

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    def shard_labels(self, shard: int) -> np.ndarray:
        """Labels of one shard's samples, shape (count,), ``-1`` where unknown."""
        start, stop = self.offsets[shard], self.offsets[shard + 1]
        if self._labels is None:
            return np.full(stop - start, -1, dtype=np.int64)
        return self._labels[start:stop]

    def content_fingerprint(self) -> bytes:
        h = hashlib.sha256(f"buffer={self.buffer};".encode())
        for e in self.entries:
            h.update(f"{e.name}:{e.size}:{e.mtime_ns};".encode())
        return h.digest()

    def iter_shard(self, shard: int, limit: int | None = None) -> Iterator[RawSample]:
        """Raw samples of shard ``shard`` (index into ``shards``) in tar order."""
        return iter_shard(self.shards[shard], limit)

    def checked_state(self, shard: int) -> tuple[int, set[int]]:
        """``(checked, corrupt positions)`` known for a shard."""
        checked, corrupt = _checked_state(self.shards[shard], self.entries[shard])
        return checked, set(corrupt)

    def record_checked(self, shard: int, checked: int, corrupt: Iterable[int]) -> None:
        """Remember that the first ``checked`` samples of ``shard`` were decoded."""
        e = self.entries[shard]
        record_checked(self.shards[shard], e.size, e.mtime_ns, checked, corrupt)

    def iter_samples(
        self, indices: Sequence[int] | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Decode samples at their stored size, in pool order (``indices`` selects, not orders).

        Yields:
            ``(index, image (H, W, 3) uint8)``, skipping corrupt samples.
        """
        wanted = None if indices is None else {int(i) for i in indices}
        for shard, entry in enumerate(self.entries):
            start = int(self.offsets[shard])
            if wanted is not None and not any(start <= i < start + entry.count for i in wanted):
                continue
            for sample in self.iter_shard(shard):
                index = start + sample.pos
                if (wanted is not None and index not in wanted) or sample.image is None:
                    continue
                try:
                    yield index, decode_image(sample.image, f"{entry.name}/{sample.key}")
                except CorruptImage:
                    continue

    def raw_chunks(self, chunk: int = 64) -> Iterator[RawChunk]:
        """All samples in pool order as :class:`RawChunk` for :func:`decode_chunks`."""
        items: list[RawItem] = []
        for shard, entry in enumerate(self.entries):
            labels = self.shard_labels(shard)
            for s in self.iter_shard(shard):
                key = f"{entry.name}/{s.key}"
                items.append(RawItem(shard, s.pos, key, s.image, int(labels[s.pos])))
                if len(items) == chunk:
                    yield RawChunk(items)
                    items = []
        if items:
            yield RawChunk(items)

    def iter_resized(self, size: int, workers: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """Decode every sample resized/centre-cropped to ``size`` (in worker processes).

        Yields:
            ``(index, image (size, size, 3) uint8)`` in pool order, skipping corrupt samples.
        """
        for out in decode_chunks(self.raw_chunks(), size, workers):
            rows = iter(out.images)
            for shard, pos, ok in zip(out.shards, out.positions, out.valid, strict=True):
                if ok:
                    yield int(self.offsets[shard] + pos), np.asarray(next(rows))

    def iter_stored(
        self, store_size: int, workers: int = 0, device: str | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Decode every sample at storage resolution: shorter side ``store_size``, aspect kept,
        never upsampled (the whole image, as :func:`divssl.data.cache.load_stored_pool` stores
        random-access pools).

        Args:
            store_size: shorter side of the stored images.
            workers: decoding processes (CPU decoding).
            device: ``cuda``/``cuda:N`` decodes JPEGs in batches on that GPU (in this process);
                ``None`` decodes with PIL.

        Yields:
            ``(index, image (h, w, 3) uint8)`` in pool order, skipping corrupt samples.
        """
        chunks = decode_chunks(
            self.raw_chunks(), None, workers, store_size=store_size, device=device
        )
        for out in chunks:
            rows = iter(out.images)
            for shard, pos, ok in zip(out.shards, out.positions, out.valid, strict=True):
                if ok:
                    yield int(self.offsets[shard] + pos), next(rows)

    def probe(self, workers: int = 0) -> tuple[np.ndarray, list[int]]:
        """Decode every sample once: (H, W) per sample ((-1, -1) when corrupt) and the corrupt
        indices; the result is remembered per shard for later streams."""
        sizes = np.full((len(self), 2), -1, dtype=np.int64)
        corrupt: dict[int, list[int]] = {i: [] for i in range(self.num_shards)}
        for out in decode_chunks(self.raw_chunks(), 0, workers):
            for shard, pos, ok, hw in zip(
                out.shards, out.positions, out.valid, out.sizes, strict=True
            ):
                sizes[self.offsets[shard] + pos] = hw
                if not ok:
                    corrupt[int(shard)].append(int(pos))
        for shard, bad in corrupt.items():
            self.record_checked(shard, int(self.counts[shard]), bad)
        flat = [int(self.offsets[s] + p) for s, bad in corrupt.items() for p in bad]
        return sizes, sorted(flat)


@register_pool("wds")
def wds(urls: str, buffer: int = 1000, classes: str | None = None) -> WdsPool:
    """Open WebDataset shards (``wds:urls=PATTERN[:buffer=1000][:classes=FILE]``)."""
    class_file = Path(str(classes)).expanduser() if classes is not None else None
    if class_file is not None and not class_file.is_file():
        raise ConfigError("data.pool.classes", f"no such file: {class_file}")
    return WdsPool(expand_urls(str(urls)), int(buffer), class_file)


# -------------------------------------------------------------- decoding in worker processes


@dataclass
class RawItem:
    """A sample sent for decoding. ``image=None`` marks it corrupt without decoding."""

    shard: int
    pos: int
    key: str
    image: bytes | None
    label: int


@dataclass
class RawChunk:
    """Samples decoded together by one worker; ``meta`` travels back unchanged."""

    items: list[RawItem]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class DecodedChunk:
    """A decoded :class:`RawChunk`.

    Attributes:
        shards, positions, labels: int64 arrays of shape (n,), one per item.
        keys: item keys.
        valid: bool (n,), ``False`` for corrupt items.
        sizes: int64 (n, 2), (H, W) of each image as decoded (at storage resolution with a
            ``store_size``), (-1, -1) when corrupt.
        images: with a ``store_size``, a list of the valid items' (h, w, 3) arrays at storage
            resolution (whole images, aspect kept); else for a resize size S > 0, a uint8 tensor
            (valid.sum(), S, S, 3) of the valid items in order; for size ``None``, a list of
            (H, W, 3) arrays; for size 0, empty.
        meta: the chunk's ``meta``.
    """

    shards: np.ndarray
    positions: np.ndarray
    labels: np.ndarray
    keys: list[str]
    valid: np.ndarray
    sizes: np.ndarray
    images: Any
    meta: dict[str, Any]


def _decoded(chunk: RawChunk, valid: np.ndarray, sizes: np.ndarray, images: Any) -> DecodedChunk:
    """A raw chunk's bookkeeping (shard, position, label, key per item) with its decoded images."""
    return DecodedChunk(
        shards=np.array([i.shard for i in chunk.items], dtype=np.int64),
        positions=np.array([i.pos for i in chunk.items], dtype=np.int64),
        labels=np.array([i.label for i in chunk.items], dtype=np.int64),
        keys=[i.key for i in chunk.items],
        valid=valid,
        sizes=sizes,
        images=images,
        meta=chunk.meta,
    )


class _DecodeChunks:
    """Map-style "dataset" whose index is a whole :class:`RawChunk` (DataLoader fetches it in a
    worker via ``__getitems__``)."""

    def __init__(
        self,
        size: int | None,
        max_pixels: int | None = None,
        store_size: int | None = None,
        device: str | None = None,
    ) -> None:
        self.size = size
        # sent to the worker processes with this object
        self.max_pixels = current_max_pixels() if max_pixels is None else max_pixels
        self.store_size = store_size
        self.device = device

    def __getitem__(self, chunk: RawChunk) -> DecodedChunk:
        return self.__getitems__(chunk)

    def _stored(self, chunk: RawChunk) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Valid mask, sizes and the valid images at storage resolution (whole images)."""
        assert self.store_size is not None
        n = len(chunk.items)
        valid = np.zeros(n, dtype=bool)
        sizes = np.full((n, 2), -1, dtype=np.int64)
        stored: list[np.ndarray | None]
        if self.device is not None:  # one batched nvJPEG call per chunk (CPU fallback inside)
            from divssl.data.gpu_decode import decode_store_blobs

            stored = decode_store_blobs(
                [i.image for i in chunk.items],
                [i.key for i in chunk.items],
                self.store_size,
                self.device,
                self.max_pixels,
            )
        else:
            stored = []
            for item in chunk.items:
                if item.image is None:  # no image member, or known corrupt: not decoded
                    stored.append(None)
                    continue
                try:
                    img = open_rgb(item.image, item.key, self.max_pixels, target=self.store_size)
                except CorruptImage:
                    stored.append(None)
                    continue
                stored.append(resize_shorter(img, self.store_size))
        rows = []
        for j, image in enumerate(stored):
            if image is not None:
                valid[j] = True
                sizes[j] = image.shape[:2]
                rows.append(image)
        return valid, sizes, rows

    def __getitems__(self, chunk: RawChunk) -> DecodedChunk:
        import torch

        n = len(chunk.items)
        if self.store_size is not None:
            return _decoded(chunk, *self._stored(chunk))
        valid = np.zeros(n, dtype=bool)
        sizes = np.full((n, 2), -1, dtype=np.int64)
        rows: list[np.ndarray] = []
        for j, item in enumerate(chunk.items):
            if item.image is None:
                continue
            try:
                img = open_rgb(
                    item.image, item.key, max_pixels=self.max_pixels, target=self.size or None
                )
            except CorruptImage:
                continue
            valid[j] = True
            sizes[j] = (img.height, img.width)
            if self.size is None:
                rows.append(np.asarray(img))
            elif self.size > 0:
                rows.append(resize_center_crop(img, self.size))
        images: Any = rows
        if self.size is not None and self.size > 0:
            shape = (len(rows), self.size, self.size, 3)
            images = (
                torch.from_numpy(np.stack(rows)) if rows else torch.empty(shape, dtype=torch.uint8)
            )
        return _decoded(chunk, valid, sizes, images)


def _first(batch: Any) -> DecodedChunk:
    return batch


class _ChunkSource:
    def __init__(self, chunks: Iterable[RawChunk]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[RawChunk]:
        return iter(self.chunks)


def decode_chunks(
    chunks: Iterable[RawChunk],
    size: int | None,
    workers: int = 0,
    max_pixels: int | None = None,
    store_size: int | None = None,
    device: str | None = None,
) -> Iterator[DecodedChunk]:
    """Decode raw chunks in DataLoader worker processes, preserving their order.

    The chunks are produced (tar files read) in this process; only decoding runs in the
    ``workers`` processes, so the output order never depends on the number of workers.

    Args:
        chunks: raw chunks in stream order.
        size: resize to (size, size) when > 0; 0 only probes sizes; ``None`` keeps stored sizes
            (ignored with a ``store_size``).
        workers: DataLoader worker processes; 0 decodes in this process.
        max_pixels: per-image pixel limit (default: this process's, ``data.max_pixels``); larger
            images count as corrupt.
        store_size: decode whole images at storage resolution (shorter side ``store_size``,
            aspect kept, never upsampled) instead of resizing to a square.
        device: with a ``store_size``, decode JPEGs on this device in one batched
            ``decode_jpeg`` call per chunk (:func:`divssl.data.gpu_decode.decode_store_blobs`);
            a CUDA context cannot be shared with forked workers, so device decoding runs in this
            process and ``workers`` is ignored. ``None``: PIL in the workers.
    """
    from torch.utils.data import DataLoader

    if device is not None:
        workers = 0
    loader: DataLoader[DecodedChunk] = DataLoader(
        _DecodeChunks(size, max_pixels, store_size, device),  # type: ignore[arg-type]
        batch_sampler=_ChunkSource(chunks),  # type: ignore[arg-type]
        num_workers=workers,
        collate_fn=_first,
        prefetch_factor=4 if workers > 0 else None,
    )
    yield from loader
