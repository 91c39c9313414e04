"""Pool readers: folder, CIFAR (python + binary), npz, csv/parquet, Hugging Face, WebDataset."""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from divssl.data.pool import CorruptImage, open_pool
from divssl.data.readers.cifar import safe_load_pickle
from divssl.errors import ConfigError


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIVSSL_CACHE", str(tmp_path / "cache"))


def rand_image(seed: int, h: int = 12, w: int = 10) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def encode(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def truncated_jpeg() -> bytes:
    data = encode(rand_image(99, 64, 64), "JPEG")
    return data[: len(data) // 2]


def make_folder(root: Path) -> dict[str, np.ndarray]:
    """cat/ and dog/ with PNGs (exact pixels), a JPEG and three corrupt files."""
    good = {
        "cat/a.png": rand_image(0),
        "cat/sub/b.png": rand_image(1, 7, 9),
        "dog/c.png": rand_image(2),
    }
    for rel, arr in good.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(encode(arr))
    (root / "dog/d.JPG").write_bytes(encode(rand_image(3), "JPEG"))
    (root / "dog/zero.jpg").write_bytes(b"")
    (root / "dog/trunc.jpg").write_bytes(truncated_jpeg())
    (root / "cat/text.jpg").write_text("this is a text file renamed .jpg")
    (root / "cat/notes.txt").write_text("ignored")
    (root / "cat/.hidden.png").write_bytes(encode(rand_image(4)))
    return good


CORRUPT = {"cat/text.jpg", "dog/trunc.jpg", "dog/zero.jpg"}


# ------------------------------------------------------------------------------------ folder


def test_folder_with_class_subfolders(tmp_path: Path) -> None:
    good = make_folder(tmp_path / "f")
    pool = open_pool(f"folder:root={tmp_path / 'f'}")
    keys = list(pool.keys)
    assert keys == sorted(keys) and len(pool) == 7
    assert set(keys) == set(good) | CORRUPT | {"dog/d.JPG"}
    assert pool.class_names == ["cat", "dog"]
    assert pool.labels.tolist() == [0 if k.startswith("cat/") else 1 for k in keys]
    assert pool.source == "source" and not pool.streaming
    for i, key in enumerate(keys):
        if key in CORRUPT:
            with pytest.raises(CorruptImage):
                pool.read(i)
        elif key in good:
            np.testing.assert_array_equal(pool.read(i), good[key])
        else:
            assert pool.read(i).shape == (12, 10, 3)
    yielded = [keys[i] for i, _ in pool.iter_samples()]
    assert set(yielded) == set(keys) - CORRUPT


def test_folder_flat_and_layout_errors(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    (flat / "x").mkdir(parents=True)
    (flat / "1.png").write_bytes(encode(rand_image(5)))
    (flat / "x" / "2.png").write_bytes(encode(rand_image(6)))
    pool = open_pool(f"folder:root={flat}")
    assert pool.labels is None and list(pool.keys) == ["1.png", "x/2.png"]
    with pytest.raises(ConfigError, match="labels"):
        open_pool(f"folder:root={flat}:labels=true")
    classes = tmp_path / "cls"
    make_folder(classes)
    assert open_pool(f"folder:root={classes}:labels=false").labels is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images"):
        open_pool(f"folder:root={tmp_path / 'empty'}")
    with pytest.raises(ConfigError, match="not a folder"):
        open_pool(f"folder:root={tmp_path / 'missing'}")
    with pytest.raises(ConfigError, match="unknown key"):
        open_pool(f"folder:root={flat}:colour=red")


def test_folder_manifest_hash_tracks_content_and_source_tags(tmp_path: Path) -> None:
    root = tmp_path / "f"
    make_folder(root)
    h0 = open_pool(f"folder:root={root}").manifest_hash()
    assert open_pool(f"folder:root={root}").manifest_hash() == h0
    target = root / "cat/a.png"
    target.write_bytes(encode(rand_image(42)))  # same size, new content and mtime
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    h1 = open_pool(f"folder:root={root}").manifest_hash()
    assert h1 != h0
    (root / "dog/new.png").write_bytes(encode(rand_image(7)))
    assert open_pool(f"folder:root={root}").manifest_hash() not in (h0, h1)
    assert open_pool(f"folder:root={root}:source=web").source == "web"
    (root / "pool.json").write_text(json.dumps({"source": "synthetic"}))
    assert open_pool(f"folder:root={root}").source == "synthetic"
    with pytest.raises(ConfigError, match="source"):
        open_pool(f"folder:root={root}:source=internet")


# ------------------------------------------------------------------------------------- CIFAR


def cifar_arrays(n: int, seed: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return data, rng.integers(0, classes, n)


def reference_hwc(row: np.ndarray) -> np.ndarray:
    """CIFAR layout from its documentation: 1024 R, then G, then B values, row-major 32x32."""
    out = np.zeros((32, 32, 3), np.uint8)
    for c in range(3):
        for y in range(32):
            out[y, :, c] = row[c * 1024 + y * 32 : c * 1024 + y * 32 + 32]
    return out


def write_cifar10(root: Path, protocol: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    py, binary = root / "cifar-10-batches-py", root / "cifar-10-batches-bin"
    py.mkdir(parents=True)
    binary.mkdir(parents=True)
    names = [f"class{i}" for i in range(10)]
    splits: dict[str, list] = {"train": [], "test": []}
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        data, labels = cifar_arrays(3, i, 10)
        batch = {"batch_label": name, "labels": labels.tolist(), "data": data}
        (py / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        recs = np.concatenate([labels[:, None].astype(np.uint8), data], axis=1)
        (binary / f"{name}.bin").write_bytes(recs.tobytes())
        splits["test" if name == "test_batch" else "train"].append((data, labels))
    meta = {"label_names": names, "num_vis": 3072}
    (py / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    (binary / "batches.meta.txt").write_text("\n".join(names) + "\n")
    return {
        k: (np.concatenate([d for d, _ in v]), np.concatenate([lab for _, lab in v]))
        for k, v in splits.items()
    }


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, 5])
def test_cifar10_python_and_binary_formats_agree(tmp_path: Path, protocol: int) -> None:
    expected = write_cifar10(tmp_path / "src", protocol)
    for split, n in (("train", 15), ("test", 3)):
        data, labels = expected[split]
        py = open_pool(f"cifar10:root={tmp_path / 'src' / 'cifar-10-batches-py'}:split={split}")
        assert len(py) == n and py.images.shape == (n, 32, 32, 3)
        assert py.labels.tolist() == labels.tolist()
        assert py.class_names == [f"class{i}" for i in range(10)]
        for i in (0, n - 1):
            np.testing.assert_array_equal(py.images[i], reference_hwc(data[i]))
        (tmp_path / "bin").mkdir(exist_ok=True)
        bin_root = tmp_path / "bin"
        if not (bin_root / "cifar-10-batches-bin").exists():
            (tmp_path / "src" / "cifar-10-batches-bin").rename(bin_root / "cifar-10-batches-bin")
        binary = open_pool(f"cifar10:root={bin_root}:split={split}")
        np.testing.assert_array_equal(binary.images, py.images)
        assert binary.manifest_hash() == py.manifest_hash()
        assert list(binary.keys)[:2] == [f"{split}/00000", f"{split}/00001"]
    # any single pixel change in any image changes the manifest hash
    path = bin_root / "cifar-10-batches-bin" / "data_batch_5.bin"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    before = open_pool(f"cifar10:root={bin_root}").manifest_hash()
    path.write_bytes(bytes(raw))
    assert open_pool(f"cifar10:root={bin_root}").manifest_hash() != before


def test_cifar100_fine_coarse_both_formats(tmp_path: Path) -> None:
    py, binary = tmp_path / "cifar-100-python", tmp_path / "cifar-100-binary"
    py.mkdir()
    binary.mkdir()
    fine_names = [f"f{i}" for i in range(100)]
    coarse_names = [f"c{i}" for i in range(20)]
    for seed, split in enumerate(("train", "test")):
        data, fine = cifar_arrays(4, seed + 10, 100)
        coarse = fine // 5
        obj = {"data": data, "fine_labels": fine.tolist(), "coarse_labels": coarse.tolist()}
        (py / split).write_bytes(pickle.dumps(obj))
        recs = np.concatenate([coarse[:, None], fine[:, None], data], axis=1).astype(np.uint8)
        (binary / f"{split}.bin").write_bytes(recs.tobytes())
    meta = {"fine_label_names": fine_names, "coarse_label_names": coarse_names}
    (py / "meta").write_bytes(pickle.dumps(meta))
    (binary / "fine_label_names.txt").write_text("\n".join(fine_names))
    (binary / "coarse_label_names.txt").write_text("\n".join(coarse_names))
    fine_pool = open_pool(f"cifar100:root={py}:split=test")
    coarse_pool = open_pool(f"cifar100:root={py}:split=test:labels=coarse")
    assert fine_pool.class_names == fine_names and coarse_pool.class_names == coarse_names
    np.testing.assert_array_equal(coarse_pool.labels, fine_pool.labels // 5)
    bin_fine = open_pool(f"cifar100:root={binary}:split=test")
    bin_coarse = open_pool(f"cifar100:root={binary}:split=test:labels=coarse")
    np.testing.assert_array_equal(bin_fine.images, fine_pool.images)
    np.testing.assert_array_equal(bin_fine.labels, fine_pool.labels)
    np.testing.assert_array_equal(bin_coarse.labels, coarse_pool.labels)
    with pytest.raises(ConfigError, match="labels"):
        open_pool(f"cifar100:root={py}:labels=medium")
    with pytest.raises(ConfigError, match="split"):
        open_pool(f"cifar100:root={py}:split=val")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_cifar_pickle_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"
    payload = {"data": np.zeros((1, 3072), np.uint8), "labels": [_Evil(marker)]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["batches.meta"]:
        (folder / name).write_bytes(pickle.dumps(payload))
    with pytest.raises(ConfigError, match="refusing to load global"):
        open_pool(f"cifar10:root={tmp_path}")
    assert not marker.exists()
    (tmp_path / "eval.pkl").write_bytes(b"cbuiltins\neval\n(V1+1\ntR.")
    with pytest.raises(ConfigError, match="builtins.eval"):
        safe_load_pickle(tmp_path / "eval.pkl")


# --------------------------------------------------------------------------------------- npz


def test_npz_memmap_compressed_grey_and_errors(tmp_path: Path) -> None:
    images = np.stack([rand_image(i, 6, 6) for i in range(5)])
    np.savez(tmp_path / "a.npz", images=images, labels=[0, 1, 1, 0, 2], class_names=["x", "y", "z"])
    pool = open_pool(f"npz:path={tmp_path / 'a.npz'}")
    assert isinstance(pool.images, np.memmap)
    np.testing.assert_array_equal(pool.images, images)
    assert pool.class_names == ["x", "y", "z"] and pool.labels.tolist() == [0, 1, 1, 0, 2]
    np.savez_compressed(tmp_path / "b.npz", images=images)
    comp = open_pool(f"npz:path={tmp_path / 'b.npz'}")
    assert not isinstance(comp.images, np.memmap) and comp.labels is None
    np.testing.assert_array_equal(comp.images, images)
    grey = images[..., 0]
    np.savez(tmp_path / "g.npz", images=grey)
    gpool = open_pool(f"npz:path={tmp_path / 'g.npz'}")
    assert gpool.images.shape == (5, 6, 6, 3)
    np.testing.assert_array_equal(gpool.read(2), np.repeat(grey[2][..., None], 3, axis=-1))
    h0 = pool.manifest_hash()
    changed = images.copy()
    changed[0, 0, 0, 0] ^= 1
    np.savez(
        tmp_path / "a.npz", images=changed, labels=[0, 1, 1, 0, 2], class_names=["x", "y", "z"]
    )
    assert open_pool(f"npz:path={tmp_path / 'a.npz'}").manifest_hash() != h0
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 4, 4, 4), np.uint8))
    with pytest.raises(ConfigError, match="images"):
        open_pool(f"npz:path={tmp_path / 'bad.npz'}")
    np.savez(tmp_path / "obj.npz", images=np.array([None, 1], dtype=object))
    with pytest.raises(ConfigError):
        open_pool(f"npz:path={tmp_path / 'obj.npz'}")


# --------------------------------------------------------------------------------- csv/parquet


def test_csv_and_parquet_tables(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    make_folder(root)
    rows = pd.DataFrame(
        {
            "path": ["cat/a.png", "dog/c.png", "dog/zero.jpg", str(root / "cat/sub/b.png")],
            "label": [3, 1, 1, 3],
            "class_name": ["cat", "dog", "dog", "cat"],
        }
    )
    rows.to_csv(root / "t.csv", index=False)
    pool = open_pool(f"csv:path={root / 't.csv'}")
    assert pool.labels.tolist() == [3, 1, 1, 3]
    assert pool.class_names == ["0", "dog", "2", "cat"]
    np.testing.assert_array_equal(pool.read(0), rand_image(0))
    np.testing.assert_array_equal(pool.read(3), rand_image(1, 7, 9))  # absolute path
    with pytest.raises(CorruptImage):
        pool.read(2)
    rows.drop(columns=["class_name"]).assign(label=["cat", "dog", None, "cat"]).to_parquet(
        tmp_path / "t.parquet"
    )
    pq = open_pool(f"parquet:path={tmp_path / 't.parquet'}:root={root}")
    assert pq.class_names == ["cat", "dog"] and pq.labels.tolist() == [0, 1, -1, 0]
    np.testing.assert_array_equal(pq.read(1), rand_image(2))
    h0 = pool.manifest_hash()
    rows.assign(label=[3, 1, 1, 1]).to_csv(root / "t.csv", index=False)
    with pytest.raises(ConfigError, match="two class names"):
        open_pool(f"csv:path={root / 't.csv'}")
    rows.drop(columns=["class_name"]).to_csv(root / "t.csv", index=False)
    assert open_pool(f"csv:path={root / 't.csv'}").manifest_hash() != h0
    pd.DataFrame({"file": ["a.png"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ConfigError, match="'path' column"):
        open_pool(f"csv:path={tmp_path / 'bad.csv'}")


# ---------------------------------------------------------------------------- hugging face


def test_hf_dataset_saved_to_disk(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets", reason="the hf reader needs `datasets`")
    images = [rand_image(i, 5, 7) for i in range(4)]
    blobs = [{"bytes": encode(a), "path": None} for a in images]
    blobs[2] = {"bytes": b"garbage", "path": None}
    features = datasets.Features(
        {"img": datasets.Image(), "y": datasets.ClassLabel(names=["ant", "bee"])}
    )
    ds = datasets.Dataset.from_dict({"img": blobs, "y": [1, 0, 1, 0]}, features=features)
    ds.save_to_disk(str(tmp_path / "ds"))
    pool = open_pool(f"hf:path={tmp_path / 'ds'}:image_column=img:label_column=y")
    assert len(pool) == 4 and pool.class_names == ["ant", "bee"]
    assert pool.labels.tolist() == [1, 0, 1, 0]
    np.testing.assert_array_equal(pool.read(3), images[3])
    with pytest.raises(CorruptImage):
        pool.read(2)
    with pytest.raises(ConfigError, match="split"):
        open_pool(f"hf:path={tmp_path / 'ds'}:image_column=img:split=test")
    with pytest.raises(ConfigError, match="image_column"):
        open_pool(f"hf:path={tmp_path / 'ds'}")
    dd = datasets.DatasetDict({"train": ds, "test": ds.select([0, 1])})
    dd.save_to_disk(str(tmp_path / "dd"))
    test = open_pool(f"hf:path={tmp_path / 'dd'}:split=test:image_column=img:label_column=y")
    assert len(test) == 2 and list(test.keys) == ["test/00000000", "test/00000001"]
    assert test.manifest_hash() != pool.manifest_hash()
    with pytest.raises(ConfigError, match="valid choices: test, train"):
        open_pool(f"hf:path={tmp_path / 'dd'}:split=val:image_column=img")


# --------------------------------------------------------------------------------- webdataset


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for ext, data in members.items():
                add_member(tar, f"{key}.{ext}", data)


def make_shards(root: Path) -> list[np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    arrays = [rand_image(i, 6, 6) for i in range(7)]
    write_shard(
        root / "000000.tar",
        [(f"k{i}", {"png": encode(arrays[i]), "cls": str(i % 2).encode()}) for i in range(3)],
    )
    write_shard(
        root / "000001.tar",
        [
            ("k3", {"jpg": encode(arrays[3], "JPEG"), "cls": b"beta"}),  # label by class name
            ("k4", {"png": encode(arrays[4])}),  # no label
            ("k5", {"png": b"", "cls": b"1"}),  # corrupt
            ("k6", {"webp": encode(arrays[6], "WEBP"), "cls": b"0"}),
        ],
    )
    (root / "classes.txt").write_text("alpha\nbeta\n")
    return arrays


def test_wds_pool_counts_labels_and_index(tmp_path: Path) -> None:
    arrays = make_shards(tmp_path / "sh")
    spec = f"wds:urls={tmp_path / 'sh'}/{{000000..000001}}.tar"
    pool = open_pool(spec)
    assert pool.streaming and len(pool) == 7 and pool.source == "source"
    assert list(pool.keys)[:4] == [
        "000000.tar/k0",
        "000000.tar/k1",
        "000000.tar/k2",
        "000001.tar/k3",
    ]
    assert pool.class_names == ["alpha", "beta"]
    assert pool.labels.tolist() == [0, 1, 0, 1, -1, 1, 0]
    samples = dict(pool.iter_samples())
    assert sorted(samples) == [0, 1, 2, 3, 4, 6]  # index 5 is corrupt
    np.testing.assert_array_equal(samples[4], arrays[4])
    assert list(dict(pool.iter_samples([6, 1]))) == [1, 6]
    # counted once by a streaming pass, stored in the divssl cache
    assert len(list((tmp_path / "cache" / "wds_index").glob("*.json"))) == 2
    from divssl.data.readers.wds import index_shards

    path = index_shards(spec.split("=", 1)[1], verify=True)
    index = json.loads(path.read_text())
    assert path == (tmp_path / "sh" / "index.json").resolve()
    assert {k: v["count"] for k, v in index["shards"].items()} == {"000000.tar": 3, "000001.tar": 4}
    assert index["shards"]["000001.tar"]["corrupt"] == [2]
    assert open_pool(spec).manifest_hash() == pool.manifest_hash()
    for form in (f"{tmp_path / 'sh'}/*.tar", str(tmp_path / "sh")):
        assert len(open_pool(f"wds:urls={form}")) == 7
    (tmp_path / "list.txt").write_text("sh/000001.tar\n")
    assert len(open_pool(f"wds:urls={tmp_path / 'list.txt'}")) == 4
    write_shard(tmp_path / "sh" / "000001.tar", [("z", {"png": encode(arrays[0])})])
    changed = open_pool(spec)  # stale index entry (size/mtime) is recounted
    assert len(changed) == 4 and changed.manifest_hash() != pool.manifest_hash()
    with pytest.raises(ConfigError, match="missing shard"):
        open_pool(f"wds:urls={tmp_path / 'sh'}/{{000000..000002}}.tar")


@pytest.mark.parametrize("name", ["../evil.png", "/etc/evil.png", "a/../../evil.png"])
def test_wds_rejects_members_escaping_their_folder(tmp_path: Path, name: str) -> None:
    with tarfile.open(tmp_path / "bad.tar", "w") as tar:
        add_member(tar, "ok.png", encode(rand_image(0)))
        add_member(tar, name, encode(rand_image(1)))
    with pytest.raises(ConfigError, match="escapes its folder"):
        open_pool(f"wds:urls={tmp_path / 'bad.tar'}")


def test_wds_rejects_escaping_links(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "link.tar", "w") as tar:
        add_member(tar, "ok.png", encode(rand_image(0)))
        info = tarfile.TarInfo("inner.png")
        info.type = tarfile.SYMTYPE
        info.linkname = "../../outside.png"
        tar.addfile(info)
    with pytest.raises(ConfigError, match="escapes its folder"):
        open_pool(f"wds:urls={tmp_path / 'link.tar'}")
