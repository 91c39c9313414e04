"""Pools: indexed image collections named by a ``name:key=value:...`` spec.

A pool has stable sample keys, optional integer labels (``-1`` = unknown), optional class names,
a source tag (``source``, ``web`` or ``synthetic``) and a manifest hash that changes whenever its
content changes. Random-access pools implement :meth:`Pool.read`; streaming pools (WebDataset)
set ``streaming = True`` and are consumed in order.

Readers register themselves with :func:`register_pool`; :func:`open_pool` turns a spec string into
a pool and reports unknown names or keys as a :class:`~divssl.errors.ConfigError`.
"""

from __future__ import annotations

import abc
import hashlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from divssl.errors import ConfigError, unknown_choice

SOURCES = ("source", "web", "synthetic")


class CorruptImage(Exception):
    """A sample that cannot be decoded into an RGB image (skipped and counted by loaders)."""


class Pool(abc.ABC):
    """An indexed collection of images with optional labels and a source tag.

    Attributes:
        spec: the spec string the pool was opened from.
        source: ``"source"``, ``"web"`` or ``"synthetic"``.
        class_names: names of the label ids, or ``None`` for unlabelled pools.
        streaming: ``True`` when the pool has no random access (``read`` is unavailable).
    """

    spec: str = ""
    source: str = "source"
    class_names: list[str] | None = None
    streaming: bool = False

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of samples (including ones that later turn out corrupt)."""

    @property
    @abc.abstractmethod
    def keys(self) -> Sequence[str]:
        """Stable, unique sample keys (relative paths, ``"000123"``, ...)."""

    @property
    def labels(self) -> np.ndarray | None:
        """Integer labels of shape (len,), ``-1`` where unknown; ``None`` for unlabelled pools."""
        return None

    def read(self, index: int) -> np.ndarray:
        """Decode one sample.

        Args:
            index: position in ``keys``.

        Returns:
            Image array of shape (H, W, 3), dtype uint8, RGB.

        Raises:
            CorruptImage: the sample is not a decodable image.
        """
        raise NotImplementedError(f"{type(self).__name__} is streaming; use iter_samples()")

    def iter_samples(
        self, indices: Sequence[int] | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, image)`` in the given order, skipping corrupt samples.

        Streaming pools override this; the default reads one sample at a time.
        """
        for i in range(len(self)) if indices is None else indices:
            try:
                yield int(i), self.read(int(i))
            except CorruptImage:
                continue

    def manifest_hash(self) -> str:
        """SHA-256 over keys, labels, class names and content fingerprint (hex, 16 chars)."""
        h = hashlib.sha256()
        h.update(type(self).__name__.encode())
        h.update("\n".join(self.keys).encode())
        if self.labels is not None:
            h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        if self.class_names is not None:
            h.update("\n".join(self.class_names).encode())
        h.update(self.content_fingerprint())
        return h.hexdigest()[:16]

    def content_fingerprint(self) -> bytes:
        """Bytes that change when sample content changes (file sizes/mtimes, array digest)."""
        return b""


class ArrayPool(Pool):
    """A pool held as one uint8 array (in memory or memory-mapped).

    Args:
        images: array of shape (N, H, W, 3), dtype uint8.
        labels: int array of shape (N,) or ``None``.
        class_names: label names or ``None``.
        keys: sample keys; defaults to zero-padded positions.
        source: source tag.
        spec: spec string for provenance.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        class_names: list[str] | None = None,
        keys: Sequence[str] | None = None,
        source: str = "source",
        spec: str = "",
    ) -> None:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"images must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}"
            )
        self.images = images
        self._labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        if self._labels is not None and len(self._labels) != len(images):
            raise ValueError("labels and images differ in length")
        self.class_names = class_names
        self._keys = list(keys) if keys is not None else [f"{i:08d}" for i in range(len(images))]
        self.source = source
        self.spec = spec

    def __len__(self) -> int:
        return len(self.images)

    @property
    def keys(self) -> Sequence[str]:
        return self._keys

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    def read(self, index: int) -> np.ndarray:
        return np.asarray(self.images[index])

    def content_fingerprint(self) -> bytes:
        # Hash a strided sample of pixels: cheap for 10^6 images, still changes with content.
        flat = self.images.reshape(len(self.images), -1)
        step = max(1, len(flat) // 4096)
        return hashlib.sha256(np.ascontiguousarray(flat[::step]).tobytes()).digest()


# --------------------------------------------------------------------------- spec and registry

PoolFactory = Callable[..., Pool]
_REGISTRY: dict[str, PoolFactory] = {}


def register_pool(name: str) -> Callable[[PoolFactory], PoolFactory]:
    """Register a pool factory under ``name``; its keyword arguments are the spec's keys."""

    def deco(fn: PoolFactory) -> PoolFactory:
        _REGISTRY[name] = fn
        return fn

    return deco


def _coerce(value: str) -> Any:
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def parse_spec(spec: str, field: str = "data.pool") -> tuple[str, dict[str, Any]]:
    """Split ``"name:key=value:key=value"`` into the name and typed keyword arguments.

    Values become int, float or bool where they parse as such, else stay strings.

    Raises:
        ConfigError: a part without ``=`` or an empty name.
    """
    name, *parts = spec.split(":")
    if not name:
        raise ConfigError(field, f"empty pool name in spec {spec!r}")
    kwargs: dict[str, Any] = {}
    for part in parts:
        if "=" not in part:
            raise ConfigError(field, f"expected key=value, got {part!r} in spec {spec!r}")
        key, value = part.split("=", 1)
        kwargs[key.strip()] = _coerce(value.strip())
    return name, kwargs


def pool_names() -> list[str]:
    """Names of all registered pool readers."""
    _load_builtin_readers()
    return sorted(_REGISTRY)


def _load_builtin_readers() -> None:
    # Import for the registration side effect; kept lazy so `import divssl` stays light.
    import divssl.data.readers  # noqa: F401


def open_pool(spec: str, field: str = "data.pool") -> Pool:
    """Open the pool named by ``spec``.

    Every pool accepts ``source=source|web|synthetic`` to override its default source tag.

    Raises:
        ConfigError: unknown reader, unknown key, bad source tag or a reader's own error.
    """
    _load_builtin_readers()
    name, kwargs = parse_spec(spec, field)
    if name not in _REGISTRY:
        raise unknown_choice(field, name, _REGISTRY)
    factory = _REGISTRY[name]
    source = kwargs.pop("source", None)
    if source is not None and source not in SOURCES:
        raise unknown_choice(f"{field}.source", str(source), SOURCES)
    params = inspect.signature(factory).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in kwargs if k not in params]
    if unknown and not accepts_any:
        raise ConfigError(f"{field}.{unknown[0]}", f"unknown key for pool {name!r}", params)
    try:
        pool = factory(**kwargs)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise ConfigError(field, f"{name}: {exc}") from exc
    except TypeError as exc:
        raise ConfigError(field, f"{name}: {exc}") from exc
    pool.spec = spec
    if source is not None:
        pool.source = str(source)
    return pool
