"""Atomic file writes: results are never left half-written."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml


def atomic_write(path: str | Path, write: Any, mode: str = "w") -> None:
    """Write via a temporary file in the same folder, fsync, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; use the usual file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes to ``path`` atomically."""
    atomic_write(path, lambda fh: fh.write(data), mode="wb")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text to ``path`` via a temporary file and ``os.replace``."""
    atomic_write(path, lambda fh: fh.write(text))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write JSON (indented, sorted keys) atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_yaml(path: str | Path, obj: Any) -> None:
    """Write YAML atomically."""
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False))


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` atomically (loaders use ``weights_only=True``)."""
    import torch  # kept local: `divssl data ...` commands should not pay torch's import time

    atomic_write(path, lambda fh: torch.save(obj, fh), mode="wb")


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file with ``yaml.safe_load``."""
    return yaml.safe_load(Path(path).read_text())
