"""On-disk cache of computed arrays (features, activations), keyed by content hashes.

The cache root is ``$DIVSSL_CACHE`` or ``~/.cache/divssl``. Entries are ``.npz`` files written
atomically, so two processes computing the same entry never corrupt it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from divssl.io import atomic_write


def cache_root() -> Path:
    """The cache folder (created on demand)."""
    root = Path(os.environ.get("DIVSSL_CACHE", Path.home() / ".cache" / "divssl"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_key(*parts: Any) -> str:
    """Stable hex key (24 chars) of JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def cached_arrays(
    namespace: str, key: str, compute: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Return the arrays stored under ``namespace/key``, computing and storing them if absent.

    Args:
        namespace: sub-folder (``"features"``, ``"activations"``).
        key: from :func:`cache_key`.
        compute: builds the arrays on a miss.
    """
    path = cache_root() / namespace / f"{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    arrays: dict[str, Any] = compute()
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, lambda fh: fh.write(buf.getvalue()), mode="wb")
    return arrays


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file (hex, 16 chars), e.g. a checkpoint's identity in cache keys."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]
