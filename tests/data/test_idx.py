"""The ``idx`` pool reader on IDX files written here (raw and gzip), its errors and its CLI."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from divssl.data.pool import open_pool
from divssl.data.readers.idx import KNOWN_CLASS_NAMES, OOD_SHIFT, read_idx
from divssl.errors import ConfigError
from divssl.evaluate.tasks import open_task


def _idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding from the format's definition: 0, 0, type 0x08, ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _write(path: Path, payload: bytes, gz: bool) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def _dataset(root: Path, gz: bool, n_train: int = 12, n_test: int = 6) -> dict[str, np.ndarray]:
    """An MNIST-style folder of train / t10k image and label files with known content."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 5, 4), dtype=np.uint8)
        labels = (np.arange(n) % 3).astype(np.uint8)
        _write(root / f"{prefix}-images-idx3-ubyte", _idx_bytes(images), gz)
        _write(root / f"{prefix}-labels-idx1-ubyte", _idx_bytes(labels), gz)
        out[prefix], out[f"{prefix}_labels"] = images, labels
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_reads_splits_raw_and_gzip(tmp_path, gz):
    data = _dataset(tmp_path / "d", gz)
    for split, prefix in (("train", "train"), ("t10k", "t10k"), ("test", "t10k")):
        pool = open_pool(f"idx:root={tmp_path / 'd'}:split={split}")
        assert len(pool) == len(data[prefix])
        assert pool.images.shape == (*data[prefix].shape, 3)
        for c in range(3):  # grey expanded to three equal channels
            np.testing.assert_array_equal(pool.images[..., c], data[prefix])
        np.testing.assert_array_equal(pool.labels, data[f"{prefix}_labels"])
        assert pool.keys[0] == f"{prefix}/00000" and len(set(pool.keys)) == len(pool)
        assert pool.class_names == ["0", "1", "2"]  # folder name is no known dataset
        np.testing.assert_array_equal(pool.read(1), np.repeat(data[prefix][1][..., None], 3, -1))


def test_gzip_and_raw_give_the_same_pool(tmp_path):
    _dataset(tmp_path / "raw", gz=False)
    _dataset(tmp_path / "gz", gz=True)
    raw, gz = open_pool(f"idx:root={tmp_path / 'raw'}"), open_pool(f"idx:root={tmp_path / 'gz'}")
    np.testing.assert_array_equal(raw.images, gz.images)
    assert raw.manifest_hash() == gz.manifest_hash()


def test_ood_split_is_the_test_set_under_the_documented_shift(tmp_path):
    data = _dataset(tmp_path / "d", gz=True)
    pool = open_pool(f"idx:root={tmp_path / 'd'}:split=ood")
    # x' = round(77 + 0.6 x), written out from the docstring's definition
    expected = np.clip(np.rint(77.0 + 0.6 * data["t10k"].astype(np.float64)), 0, 255)
    np.testing.assert_array_equal(pool.images[..., 0], expected.astype(np.uint8))
    assert OOD_SHIFT == {"contrast": 0.6, "offset": 77.0}
    np.testing.assert_array_equal(pool.labels, data["t10k_labels"])
    assert pool.images.min() >= 77 and pool.images.max() <= 230
    assert pool.keys[0] == "ood/00000"


def test_explicit_paths_and_mirror_spelling(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 3, 3), dtype=np.uint8)
    img = _write(tmp_path / "x-images.idx3-ubyte", _idx_bytes(images), gz=False)
    lab = _write(tmp_path / "x-labels.idx1-ubyte", _idx_bytes(np.array([0, 1, 1, 0])), gz=True)
    pool = open_pool(f"idx:images={img}:labels={lab}")
    np.testing.assert_array_equal(pool.images[..., 2], images)
    assert list(pool.labels) == [0, 1, 1, 0] and pool.keys[3] == "file/00003"
    unlabelled = open_pool(f"idx:images={img}")
    assert unlabelled.labels is None and unlabelled.class_names is None
    # root/split also finds the "<prefix>-images.idx3-ubyte" spelling of some mirrors
    (tmp_path / "m").mkdir()
    _write(tmp_path / "m" / "train-images.idx3-ubyte", _idx_bytes(images), gz=False)
    _write(tmp_path / "m" / "train-labels.idx1-ubyte", _idx_bytes(np.array([0, 1, 1, 0])), True)
    assert len(open_pool(f"idx:root={tmp_path / 'm'}")) == 4


def test_class_names_from_table_folder_and_file(tmp_path):
    _dataset(tmp_path / "Fashion_MNIST", gz=True)
    auto = open_pool(f"idx:root={tmp_path / 'Fashion_MNIST'}")
    assert auto.class_names == KNOWN_CLASS_NAMES["fashion-mnist"]
    kmnist = open_pool(f"idx:root={tmp_path / 'Fashion_MNIST'}:dataset=kmnist")
    assert kmnist.class_names[:3] == ["o", "ki", "su"]
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nbird\n")
    custom = open_pool(f"idx:root={tmp_path / 'Fashion_MNIST'}:names={names}")
    assert custom.class_names == ["cat", "dog", "bird"]


def test_known_class_name_table_matches_its_sources():
    # zalandoresearch/fashion-mnist README "Labels"; yann.lecun.com/exdb/mnist digits;
    # torchvision.datasets.KMNIST.classes
    assert KNOWN_CLASS_NAMES == {
        "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                          "Shirt", "Sneaker", "Bag", "Ankle boot"],
        "mnist": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
        "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
    }  # fmt: skip


def test_is_a_task_spec_with_train_test_and_ood(tmp_path):
    data = _dataset(tmp_path / "d", gz=True)
    task = open_task(f"idx:root={tmp_path / 'd'}")
    assert set(task.specs) == {"train", "test", "ood"}
    assert len(task.pool("train")) == len(data["train"])
    assert len(task.pool("test")) == len(task.pool("ood")) == len(data["t10k"])
    assert task.num_classes == 3


def _corrupt_cases(root: Path) -> dict[str, tuple[str, str]]:
    """Spec -> (needle in the message, file the message must name)."""
    good = np.zeros((3, 2, 2), dtype=np.uint8)
    cases = {}
    # bad magic (first two bytes must be zero)
    p = _write(root / "magic-images-idx3-ubyte", b"\x01\x00" + _idx_bytes(good)[2:], gz=False)
    cases[f"idx:images={p}"] = ("bad magic", str(p))
    # another element type (0x0D = float)
    p = _write(root / "float-images-idx3-ubyte", b"\x00\x00\x0d" + _idx_bytes(good)[3:], gz=False)
    cases[f"idx:images={p}"] = ("0x0d", str(p))
    # labels (1 dim) given as images (3 dims)
    p = _write(root / "dims-images-idx3-ubyte", _idx_bytes(np.zeros(3, np.uint8)), gz=False)
    cases[f"idx:images={p}"] = ("dimensions", str(p))
    # truncated data and trailing bytes
    p = _write(root / "trunc-images-idx3-ubyte", _idx_bytes(good)[:-3], gz=True)
    cases[f"idx:images={p}"] = ("truncated", str(p))
    p = _write(root / "long-images-idx3-ubyte", _idx_bytes(good) + b"\x00", gz=False)
    cases[f"idx:images={p}"] = ("trailing", str(p))
    # a truncated gzip stream
    p = root / "cut-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(_idx_bytes(good))[:-8])
    cases[f"idx:images={p}"] = ("gzip", str(p))
    # labels and images disagree in count
    img = _write(root / "n3-images-idx3-ubyte", _idx_bytes(good), gz=False)
    lab = _write(root / "n4-labels-idx1-ubyte", _idx_bytes(np.zeros(4, np.uint8)), gz=False)
    cases[f"idx:images={img}:labels={lab}"] = ("4 labels", str(img))
    return cases


def test_malformed_files_raise_config_errors_naming_the_file(tmp_path):
    for spec, (needle, name) in _corrupt_cases(tmp_path).items():
        with pytest.raises(ConfigError) as err:
            open_pool(spec)
        assert needle in str(err.value) and name in str(err.value), (spec, str(err.value))


def test_bad_keys_raise_config_errors(tmp_path):
    _dataset(tmp_path / "d", gz=False)
    root = tmp_path / "d"
    cases = {
        f"idx:root={root}:split=val": "data.pool.split",
        f"idx:root={root}:dataset=cifar": "data.pool.dataset",
        f"idx:root={tmp_path / 'none'}": "no such folder",
        f"idx:root={tmp_path}": "train-images-idx3-ubyte",
        f"idx:images={root / 'train-images-idx3-ubyte'}:split=train": "data.pool.split",
        f"idx:root={root}:names={tmp_path / 'missing.txt'}": "data.pool.names",
        "idx:split=train": "either root",
    }
    for spec, needle in cases.items():
        with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
            open_pool(spec)
    short = tmp_path / "two.txt"
    short.write_text("a\nb\n")  # labels go up to 2: three names needed
    with pytest.raises(ConfigError, match="2 classes"):
        open_pool(f"idx:root={root}:names={short}")


def test_read_idx_round_trip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = _write(tmp_path / "a-images-idx3-ubyte", _idx_bytes(arr), gz=True)
    np.testing.assert_array_equal(read_idx(path, 3), arr)


def test_cli_exits_2_naming_the_file_and_writes_nothing(tmp_path):
    bad = _write(tmp_path / "bad-images-idx3-ubyte", _idx_bytes(np.zeros((3, 2, 2)))[:-1], False)
    out_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "divssl.cli", "pretrain", f"data.pool=idx:images={bad}",
         f"out={out_dir}", "budget.images=64"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    flat = "".join(proc.stderr.split())  # the console wraps long lines
    assert str(bad) in flat and "truncated" in flat
    assert not out_dir.exists()
