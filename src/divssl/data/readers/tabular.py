"""``csv:path=FILE`` and ``parquet:path=FILE`` — a table of image paths with optional labels.

Columns: ``path`` (relative to the table's folder, or to ``root=DIR`` when given, or absolute),
optional ``label`` (integer ids, or class-name strings) and optional ``class_name``. Class names
come from ``class_name`` when given with integer labels (one name per id), else from the sorted
distinct label strings, else they are the ids as text. Missing labels become ``-1``. Keys are the
``path`` values in table order; the fingerprint covers the table file's bytes and every image's
(size, mtime_ns).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from divssl.cache import file_sha256
from divssl.data.pool import register_pool
from divssl.data.readers.folder import FileListPool
from divssl.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd


def _int_labels(column: pd.Series) -> np.ndarray | None:
    """The column as int64 with ``-1`` for missing values, or ``None`` if it is not integral."""
    import pandas as pd

    numeric = pd.to_numeric(column, errors="coerce")
    present = column.notna() & (column.astype(str).str.strip() != "")
    if numeric[present].isna().any():
        return None
    values = numeric.fillna(-1).to_numpy(dtype=np.float64)
    if not np.all(values == np.round(values)):
        return None
    return values.astype(np.int64)


def _names_from_strings(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    text = column.where(column.notna(), "").astype(str).str.strip()
    names = sorted(set(text) - {""})
    index = {name: i for i, name in enumerate(names)}
    return np.array([index.get(t, -1) for t in text], dtype=np.int64), names


def _names_for_ids(ids: np.ndarray, names_col: pd.Series | None, file: Path) -> list[str]:
    count = int(ids.max(initial=-1)) + 1
    names = [str(i) for i in range(count)]
    if names_col is None:
        return names
    seen: dict[int, str] = {}
    for label, name in zip(ids, names_col.astype(str), strict=True):
        if label < 0:
            continue
        if seen.setdefault(int(label), name) != name:
            raise ConfigError(
                "data.pool", f"{file}: label {label} has two class names {seen[label]!r}, {name!r}"
            )
    for label, name in seen.items():
        names[label] = name
    return names


def _labels(table: pd.DataFrame, file: Path) -> tuple[np.ndarray | None, list[str] | None]:
    names_col = table["class_name"] if "class_name" in table.columns else None
    if "label" not in table.columns:
        return (None, None) if names_col is None else _names_from_strings(names_col)
    ids = _int_labels(table["label"])
    if ids is None:
        return _names_from_strings(table["label"])
    if ids.min(initial=0) < -1:
        raise ConfigError("data.pool", f"{file}: negative label ids other than -1")
    return ids, _names_for_ids(ids, names_col, file)


def _table_pool(table: pd.DataFrame, file: Path, root: str | None) -> FileListPool:
    if "path" not in table.columns:
        raise ConfigError("data.pool.path", f"{file}: no 'path' column (has {list(table.columns)})")
    if table["path"].isna().any():
        raise ConfigError("data.pool.path", f"{file}: empty values in the 'path' column")
    base = Path(str(root)).expanduser() if root is not None else file.parent
    if not base.is_dir():
        raise ConfigError("data.pool.root", f"not a folder: {base}")
    labels, names = _labels(table, file)
    paths = [str(p) for p in table["path"]]
    return FileListPool(base, paths, labels, names, extra_fingerprint=file_sha256(file).encode())


def _check_file(path: str) -> Path:
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise ConfigError("data.pool.path", f"no such file: {file}")
    return file


@register_pool("csv")
def csv(path: str, root: str | None = None) -> FileListPool:
    """Open a CSV table of image paths (``csv:path=FILE[:root=DIR]``)."""
    import pandas as pd  # imported here: every open_pool loads all readers

    file = _check_file(path)
    try:
        table = pd.read_csv(file, dtype={"path": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError("data.pool.path", f"{file}: not a readable CSV ({exc})") from exc
    return _table_pool(table, file, root)


@register_pool("parquet")
def parquet(path: str, root: str | None = None) -> FileListPool:
    """Open a Parquet table of image paths (``parquet:path=FILE[:root=DIR]``)."""
    import pandas as pd

    file = _check_file(path)
    try:
        table = pd.read_parquet(file)
    except (OSError, ValueError) as exc:
        raise ConfigError("data.pool.path", f"{file}: not a readable Parquet file ({exc})") from exc
    return _table_pool(table, file, root)
