"""``folder:root=DIR`` — an image folder, with class subfolders or flat.

Layouts:

* class subfolders (``root/<class>/**/<image>``): labels are positions in the sorted folder names
  (torchvision's ``ImageFolder`` rule);
* flat (``root/**/<image>`` with images directly in ``root``, or ``labels=false``): no labels.

``labels=auto`` (the default) picks the flat layout when ``root`` itself holds images and the class
layout otherwise. Keys are the sorted relative paths (``"cat/0001.jpg"``); hidden files and folders
are ignored. Symbolic links that resolve outside ``root`` (files or folders) are refused unless
``follow_symlinks=true``: such a file is counted as corrupt, never opened, and such a folder is not
entered. Files that are not regular files (devices, FIFOs, sockets) are never opened either;
they count as corrupt. The content fingerprint is the (size, mtime_ns) of every file, so the
manifest hash changes when any file is replaced, touched, added or removed. A ``pool.json`` in
``root`` (written by ``divssl data world/fractaldb/synthesize``) may set the default source tag.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from divssl.data.cache import decode_image, open_rgb
from divssl.data.pool import SOURCES, CorruptImage, Pool, register_pool
from divssl.errors import ConfigError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif")


def is_image_file(name: str) -> bool:
    """True for file names with an image extension (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


class FileListPool(Pool):
    """A random-access pool of image files named by paths relative to a root folder.

    Args:
        root: folder that relative paths are resolved against.
        paths: file paths (relative to ``root`` or absolute); also the sample keys.
        labels: int array of shape (N,), ``-1`` unknown, or ``None``.
        class_names: label names or ``None``.
        source: source tag.
        extra_fingerprint: bytes mixed into the content fingerprint (e.g. a table file digest).
        confine: refuse (as corrupt) files whose real path lies outside ``root``.
    """

    def __init__(
        self,
        root: Path,
        paths: Sequence[str],
        labels: np.ndarray | None = None,
        class_names: list[str] | None = None,
        source: str = "source",
        extra_fingerprint: bytes = b"",
        confine: bool = False,
    ) -> None:
        self.root = Path(root)
        self.confine = confine
        self._keys = list(paths)
        if len(set(self._keys)) != len(self._keys):
            raise ConfigError("data.pool", f"duplicate image paths in pool under {root}")
        self._labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.class_names = class_names
        self.source = source
        self._extra = extra_fingerprint
        self._fingerprint: bytes | None = None

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def keys(self) -> Sequence[str]:
        return self._keys

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    def path(self, index: int) -> Path:
        """Absolute path of sample ``index``."""
        return self.root / self._keys[index]

    def _checked_path(self, index: int) -> Path:
        """The path of sample ``index`` once it is known safe to open.

        Raises:
            CorruptImage: a link out of ``root`` (when confined) or not a regular file.
        """
        path = self.path(index)
        key = self._keys[index]
        if self.confine:
            real = Path(os.path.realpath(path))
            if not real.is_relative_to(os.path.realpath(self.root)):
                raise CorruptImage(
                    f"{key}: symlink resolves outside the pool root to {real} "
                    "(folder:...:follow_symlinks=true allows it)"
                )
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise CorruptImage(f"{key}: {exc}") from exc
        if not stat.S_ISREG(mode):
            raise CorruptImage(f"{key}: not a regular file (device, FIFO or socket); not opened")
        return path

    def read(self, index: int) -> np.ndarray:
        """Decode sample ``index`` to (H, W, 3) uint8 (raises ``CorruptImage``)."""
        return decode_image(self._checked_path(index), self._keys[index])

    def read_bytes(self, index: int) -> bytes:
        """The encoded file of sample ``index``, after the same safety checks as :meth:`read`.

        Raises:
            CorruptImage: refused (see ``_checked_path``) or unreadable.
        """
        path = self._checked_path(index)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise CorruptImage(f"{self._keys[index]}: {exc}") from exc

    def read_for_size(self, index: int, size: int) -> np.ndarray:
        """Like :meth:`read`, for a caller that resizes to ``size`` (large JPEGs decode reduced)."""
        path = self._checked_path(index)
        return np.asarray(open_rgb(path, self._keys[index], target=size))

    def content_fingerprint(self) -> bytes:
        """SHA-256 of every file's (size, mtime_ns) in key order; computed once per pool object."""
        if self._fingerprint is None:
            stats = np.empty((len(self._keys), 2), dtype=np.int64)
            for i in range(len(self._keys)):
                try:
                    st = os.stat(self.path(i))
                    stats[i] = (st.st_size, st.st_mtime_ns)
                except OSError:
                    stats[i] = (-1, -1)
            self._fingerprint = hashlib.sha256(self._extra + stats.tobytes()).digest()
        return self._fingerprint


def _inside(path: str, real_root: str) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(real_root)


def _walk_images(top: Path, rel_to: Path, follow_symlinks: bool = True) -> list[str]:
    """Relative posix paths of all image files below ``top`` (hidden entries skipped).

    Without ``follow_symlinks``, linked folders that resolve outside ``top`` are not entered.
    """
    found: list[str] = []
    seen: set[str] = set()
    real_root = os.path.realpath(top)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop: do not descend twice into the same folder
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [
            d
            for d in dirnames
            if not d.startswith(".")
            and (follow_symlinks or _inside(os.path.join(dirpath, d), real_root))
        ]
        base = Path(dirpath).relative_to(rel_to)
        for name in filenames:
            if is_image_file(name):
                found.append((base / name).as_posix())
    return sorted(found)


def pool_json_source(root: Path) -> str | None:
    """The ``source`` recorded in ``root/pool.json`` (by the generators), if any."""
    meta = root / "pool.json"
    if not meta.is_file():
        return None
    try:
        source = json.loads(meta.read_text()).get("source")
    except (json.JSONDecodeError, AttributeError):
        return None
    return source if source in SOURCES else None


def _resolve_layout(root: Path, labels: bool | str) -> bool:
    """Whether to use class subfolders."""
    if labels not in (True, False, "auto"):
        raise ConfigError("data.pool.labels", f"got {labels!r}", ["auto", "false", "true"])
    top_images = any(e.is_file() and is_image_file(e.name) for e in os.scandir(root))
    if labels == "auto":
        return not top_images
    if labels and top_images:
        raise ConfigError(
            "data.pool.labels", f"{root} holds images outside class subfolders; use labels=false"
        )
    return bool(labels)


@register_pool("folder")
def folder(
    root: str, labels: bool | str = "auto", follow_symlinks: bool | str = False
) -> FileListPool:
    """Open an image folder (``folder:root=DIR[:labels=auto|true|false][:follow_symlinks=true]``).

    Raises:
        ConfigError: missing folder, no images, or a layout that contradicts ``labels``.
    """
    top = Path(str(root)).expanduser()
    if not top.is_dir():
        raise ConfigError("data.pool.root", f"not a folder: {top}")
    if follow_symlinks not in (True, False):
        raise ConfigError(
            "data.pool.follow_symlinks", f"got {follow_symlinks!r}", ["false", "true"]
        )
    with_classes = _resolve_layout(top, labels)
    paths = _walk_images(top, top, follow_symlinks=bool(follow_symlinks))
    confine = not follow_symlinks
    # following links can change which samples decode: a distinct manifest (caches, orderings)
    extra = b"" if confine else b"follow_symlinks=true"
    if not paths:
        raise ConfigError(
            "data.pool.root", f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {top}"
        )
    source = pool_json_source(top) or "source"
    if not with_classes:
        return FileListPool(top, paths, source=source, extra_fingerprint=extra, confine=confine)
    class_of = [p.split("/", 1)[0] for p in paths]
    class_names = sorted(set(class_of))
    index = {name: i for i, name in enumerate(class_names)}
    label_array = np.fromiter((index[c] for c in class_of), dtype=np.int64, count=len(paths))
    return FileListPool(
        top, paths, label_array, class_names, source, extra_fingerprint=extra, confine=confine
    )
