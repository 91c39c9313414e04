"""``hf:path=DIR:split=train:image_column=image:label_column=label`` — a Hugging Face dataset.

The folder is what ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` wrote; it is opened
with ``datasets.load_from_disk`` (memory-mapped Arrow, nothing downloaded). A ``DatasetDict``
needs ``split`` (default ``train`` when it has one); a single ``Dataset`` is one split (its own
name, else ``train``) and other split names are refused. The image column is read undecoded
(``Image(decode=False)``) and decoded by divssl, so a corrupt image is skipped and counted
instead of failing the whole run. Class names come from the label column's ``ClassLabel``
feature (else the ids as text, or the sorted distinct strings of a string column). Without
``label_column`` a column named ``label`` is used when present. The fingerprint covers the
Arrow files' (size, mtime_ns).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from divssl.data.cache import decode_image
from divssl.data.pool import CorruptImage, Pool, register_pool
from divssl.errors import ConfigError


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "data.pool", "the hf reader needs the 'datasets' package: pip install datasets"
        ) from exc
    return datasets


def _label_array(ds: Any, column: str) -> tuple[np.ndarray, list[str]]:
    datasets = _datasets()
    feature = ds.features[column]
    values = list(ds[column])
    if isinstance(feature, datasets.ClassLabel):
        ids = np.array([-1 if v is None else int(v) for v in values], dtype=np.int64)
        return ids, list(feature.names)
    if all(v is None or isinstance(v, (int, np.integer)) for v in values):
        ids = np.array([-1 if v is None else int(v) for v in values], dtype=np.int64)
        return ids, [str(i) for i in range(int(ids.max(initial=-1)) + 1)]
    text = ["" if v is None else str(v) for v in values]
    names = sorted(set(text) - {""})
    index = {n: i for i, n in enumerate(names)}
    return np.array([index.get(t, -1) for t in text], dtype=np.int64), names


class HFPool(Pool):
    """A random-access pool over a Hugging Face ``Dataset`` saved on disk.

    Args:
        dataset: the ``datasets.Dataset``.
        image_column: column with images (``Image`` feature, bytes or file paths).
        label_column: label column or ``None``.
        key_prefix: prefix of the keys (the split name for a ``DatasetDict``).
    """

    def __init__(
        self, dataset: Any, image_column: str, label_column: str | None, key_prefix: str = ""
    ) -> None:
        datasets = _datasets()
        feature = dataset.features[image_column]
        if isinstance(feature, datasets.Image):
            dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
        self._images = dataset.select_columns([image_column])
        self._column = image_column
        self._keys = [f"{key_prefix}{i:08d}" for i in range(len(dataset))]
        self._labels: np.ndarray | None = None
        if label_column is not None:
            self._labels, self.class_names = _label_array(dataset, label_column)
        self._files = [Path(f["filename"]) for f in dataset.cache_files]
        self._fallback_fingerprint = str(getattr(dataset, "_fingerprint", ""))

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def keys(self) -> Sequence[str]:
        return self._keys

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    def read(self, index: int) -> np.ndarray:
        """Decode row ``index`` to (H, W, 3) uint8 (raises ``CorruptImage``)."""
        value = self._images[int(index)][self._column]
        key = self._keys[index]
        if isinstance(value, dict):
            if value.get("bytes") is not None:
                return decode_image(value["bytes"], key)
            if value.get("path"):
                return decode_image(value["path"], key)
            raise CorruptImage(f"{key}: image has neither bytes nor path")
        if isinstance(value, (bytes, bytearray)):
            return decode_image(bytes(value), key)
        if isinstance(value, str):
            return decode_image(value, key)
        if value is None:
            raise CorruptImage(f"{key}: missing image")
        return np.asarray(value.convert("RGB"))  # an already decoded PIL image

    def content_fingerprint(self) -> bytes:
        h = hashlib.sha256()
        for path in self._files:
            st = os.stat(path)
            h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns};".encode())
        if not self._files:
            h.update(self._fallback_fingerprint.encode())
        return h.digest()


@register_pool("hf")
def hf(
    path: str,
    split: str | None = None,
    image_column: str = "image",
    label_column: str | None = None,
) -> HFPool:
    """Open a dataset written by ``save_to_disk``.

    Raises:
        ConfigError: missing folder, missing/unknown split, unknown columns.
    """
    datasets = _datasets()
    folder = Path(str(path)).expanduser()
    if not folder.is_dir():
        raise ConfigError("data.pool.path", f"not a folder: {folder}")
    try:
        loaded = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError("data.pool.path", f"{folder}: not a saved dataset ({exc})") from exc
    prefix = ""
    if isinstance(loaded, datasets.DatasetDict):
        splits = sorted(loaded.keys())
        if split is None and "train" in loaded:
            split = "train"
        if split is None or str(split) not in loaded:
            raise ConfigError("data.pool.split", f"got {split!r} for a DatasetDict", splits)
        loaded, prefix = loaded[str(split)], f"{split}/"
    else:
        # A single saved Dataset is one split (its own name, else "train"): asking for another
        # split (an evaluation substituting split=test) must fail rather than reuse it.
        own = str(loaded.split) if loaded.split is not None else "train"
        if split is not None and str(split) != own:
            raise ConfigError("data.pool.split", f"{folder} holds only split {own!r}", [own])
    columns = list(loaded.column_names)
    if image_column not in columns:
        raise ConfigError("data.pool.image_column", f"unknown column {image_column!r}", columns)
    if label_column is not None and label_column not in columns:
        raise ConfigError("data.pool.label_column", f"unknown column {label_column!r}", columns)
    if label_column is None and "label" in columns:
        label_column = "label"
    return HFPool(loaded, image_column, label_column, prefix)
