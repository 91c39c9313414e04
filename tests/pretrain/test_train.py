"""The budgeted training loop: exact C, summary fields, exact resume, NaN diagnosis, export."""

from pathlib import Path

import pytest
import torch

from divssl.errors import ConfigError, RunFailed
from divssl.io import read_json, read_yaml
from divssl.pretrain.backbones import load_backbone
from divssl.pretrain.config import load_config
from divssl.pretrain.loop import PretrainSession, pretrain

POOL = "world:classes=4:per_class=24:size=16:seed=0"


def _cfg(tmp_path: Path, *extra: str, name: str = "run"):
    return load_config(
        None,
        [
            f"data.pool={POOL}",
            "budget.images=150",
            "batch_size=32",
            "image_size=16",
            "log_every=1",
            "checkpoint_every=2",
            "deterministic=true",
            "tracking=none",
            f"out={tmp_path / name}",
            *extra,
        ],
    )


def test_run_processes_exactly_c_and_writes_summary(tmp_path):
    run = pretrain(_cfg(tmp_path, "subset.size=40"))
    s = read_json(run / "summary.json")
    assert s["status"] == "completed"
    assert s["images_seen"] == s["budget_images"] == 150
    assert s["unique_images"] == 40
    assert s["epochs"] == pytest.approx(150 / 40)
    assert s["diversity"] == pytest.approx(40 / 150)
    assert s["steps"] == 5  # 4 x 32 + a final step of 22
    assert s["views_per_image"] == 2
    assert s["flops_per_image"] > 0
    assert s["total_flops"] == pytest.approx(s["flops_per_image"] * 150)
    for key in ("method", "backbone", "global_batch", "wall_seconds", "images_per_second"):
        assert key in s
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 5
    assert read_yaml(run / "config.yaml")["subset"]["size"] == 40
    assert (run / "ordering.json").is_file()
    model, dim = load_backbone(run / "backbone.pt", "convnet_tiny", 16)
    assert dim == 128


def test_flops_counted_match_hand_count_for_linear_probe_free_model(tmp_path):
    # FLOPs per image scale with the number of views: two views cost twice one view.
    from divssl.pretrain.augment import get_preset
    from divssl.pretrain.backbones import build_backbone
    from divssl.pretrain.dry_run import count_flops_per_image
    from divssl.pretrain.methods import get_method

    cls = get_method("supervised")
    bb, dim = build_backbone("convnet_tiny", 16)
    m = cls(bb, dim, cls.Config(), num_classes=4)
    one = count_flops_per_image(m, get_preset("supervised", 16), 16, torch.device("cpu"))
    cls2 = get_method("simclr")
    bb2, _ = build_backbone("convnet_tiny", 16)
    m2 = cls2(bb2, dim, cls2.Config(), None)
    two = count_flops_per_image(m2, get_preset("simclr", 16), 16, torch.device("cpu"))
    assert two > 1.9 * one


def test_interrupted_run_resumes_bitwise(tmp_path):
    full = pretrain(_cfg(tmp_path, name="full"))
    cfg = _cfg(tmp_path, name="cut")
    session = PretrainSession(cfg)  # killed after step 3: the last checkpoint is step 2's
    assert not session.run(until=3)
    session.finish()
    assert read_json(tmp_path / "cut" / "summary.json")["status"] == "interrupted"
    resumed = pretrain(cfg, resume=True)
    a = torch.load(full / "backbone.pt", weights_only=True)
    b = torch.load(resumed / "backbone.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ca = torch.load(full / "checkpoints" / "last.pt", weights_only=True)["model"]
    cb = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)["model"]
    for k in ca:
        assert torch.equal(ca[k], cb[k]), k
    assert read_json(resumed / "summary.json")["images_seen"] == 150
    steps = [
        read_json_line(x)["step"] for x in (resumed / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2, 3, 4, 5]


def read_json_line(line):
    import json

    return json.loads(line)


def test_nan_loss_stops_with_diagnosis(tmp_path):
    cfg = _cfg(tmp_path, "optim.base_lr=1e30", "optim.warmup_epochs=0", "optim.name=sgd")
    with pytest.raises(RunFailed, match="non-finite"):
        pretrain(cfg)
    s = read_json(tmp_path / "run" / "summary.json")
    assert s["status"] == "failed" and "non-finite" in s["error"]


def test_subset_larger_than_pool_is_config_error_and_writes_nothing(tmp_path):
    with pytest.raises(ConfigError, match="subset.size"):
        pretrain(_cfg(tmp_path, "subset.size=1000"))
    assert not (tmp_path / "run").exists()


def test_epoch_normalized_mode(tmp_path):
    run = pretrain(_cfg(tmp_path, "subset.size=32", "budget.images=null", "budget.epochs=2"))
    s = read_json(run / "summary.json")
    assert s["budget_images"] == 64 and s["images_seen"] == 64
    assert s["normalization"] == "epoch"


def _png_bytes(rng, size=20):
    import io

    from PIL import Image

    arr = rng.integers(0, 256, (size, size, 3), dtype="uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_folder_pool_with_corrupt_files_keeps_exact_budget(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "pool" / cls).mkdir(parents=True)
        for i in range(10):
            (tmp_path / "pool" / cls / f"{i}.png").write_bytes(_png_bytes(rng))
    (tmp_path / "pool" / "a" / "broken.png").write_bytes(b"not an image")
    (tmp_path / "pool" / "b" / "empty.png").write_bytes(b"")
    cfg = _cfg(
        tmp_path,
        f"data.pool=folder:root={tmp_path / 'pool'}",
        "subset.size=15",
        "budget.images=50",
        "batch_size=16",
    )
    s = read_json(pretrain(cfg) / "summary.json")
    assert s["corrupt_images"] == 2
    assert s["unique_images"] == 15 and s["images_seen"] == 50


def test_webdataset_pool_streams_exact_budget(tmp_path):
    import io
    import tarfile

    import numpy as np

    rng = np.random.default_rng(1)
    (tmp_path / "shards").mkdir()
    for shard in range(3):
        with tarfile.open(tmp_path / "shards" / f"{shard:06d}.tar", "w") as tar:
            for i in range(8):
                for ext, data in (("png", _png_bytes(rng)), ("cls", str(i % 2).encode())):
                    info = tarfile.TarInfo(f"s{shard}_{i:03d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    urls = str(tmp_path / "shards" / "{000000..000002}.tar")
    cfg = _cfg(
        tmp_path,
        f"data.pool=wds:urls={urls}",
        "subset.size=12",
        "budget.images=40",
        "batch_size=16",
    )
    run = pretrain(cfg)
    s = read_json(run / "summary.json")
    assert s["images_seen"] == 40 and s["unique_images"] == 12
    assert read_json(run / "ordering.json")["kind"] == "wds-shards"


def test_composition_run_saves_resolved_parts(tmp_path):
    import yaml as _yaml

    parts = [
        {"name": "B", "pool": "world:classes=4:per_class=20:size=16:seed=0", "size": 30, "seed": 0},
        {
            "name": "A_out",
            "pool": "world:classes=4:per_class=20:size=16:seed=0:class_offset=4",
            "size": 30,
            "prior": "out",
            "seed": 1,
        },
    ]
    f = tmp_path / "exp.yaml"
    f.write_text(
        _yaml.safe_dump(
            {"data": {"composition": parts, "task": "world:classes=4:per_class=10:size=16:seed=0"}}
        )
    )
    cfg = load_config(
        f, ["budget.images=64", "batch_size=32", "tracking=none", f"out={tmp_path / 'run'}"]
    )
    run = pretrain(cfg)
    s = read_json(run / "summary.json")
    assert s["unique_images"] == 60 and s["images_seen"] == 64
    assert s["pool"] == "composition"
    comp = read_json(run / "composition.json")
    assert [len(p["indices"]) for p in comp["parts"]] == [30, 30]


def test_views_come_from_whole_non_square_images(tmp_path, monkeypatch):
    import io

    import numpy as np
    from PIL import Image

    import divssl.pretrain.loop as train_module

    rng = np.random.default_rng(1)
    shapes = {"a": (20, 40), "b": (36, 24)}  # stored at shorter side 16: (16, 32) and (24, 16)
    for cls, (h, w) in shapes.items():
        (tmp_path / "pool" / cls).mkdir(parents=True)
        for i in range(6):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype="uint8")).save(buf, "PNG")
            (tmp_path / "pool" / cls / f"{i}.png").write_bytes(buf.getvalue())
    seen = []
    real = train_module.make_views

    def spy(images, preset, generator, extents=None):
        seen.append((tuple(images.shape), None if extents is None else extents.tolist()))
        return real(images, preset, generator, extents=extents)

    monkeypatch.setattr(train_module, "make_views", spy)
    cfg = _cfg(tmp_path, f"data.pool=folder:root={tmp_path / 'pool'}", "budget.images=24")
    run = pretrain(cfg)
    assert read_yaml(run / "config.yaml")["data"]["store_size"] == 16  # effective, not null
    assert read_json(run / "summary.json")["store_size"] == 16
    steps = [(shape, ext) for shape, ext in seen if ext is not None]
    assert steps, "training batches carried no extents"
    for shape, ext in steps:
        assert shape[2:] == (24, 32)  # padded to the largest stored extent
        assert {tuple(e) for e in ext} <= {(16, 32), (24, 16)}
    # an explicit store size is kept (and 40 px images are stored at 20 x 40, not cropped)
    run2 = pretrain(
        _cfg(
            tmp_path,
            f"data.pool=folder:root={tmp_path / 'pool'}",
            "budget.images=24",
            "data.store_size=20",
            name="run2",
        )
    )
    assert read_yaml(run2 / "config.yaml")["data"]["store_size"] == 20
    with pytest.raises(ConfigError, match="data.store_size"):
        _cfg(tmp_path, "data.store_size=0")


def test_step_limit_stops_with_a_checkpoint_and_resume_finishes_bitwise(tmp_path):
    full = pretrain(_cfg(tmp_path, "checkpoint_every=100", name="full"))
    cfg = _cfg(tmp_path, "checkpoint_every=100", name="sliced")
    pretrain(cfg, step_limit=3)
    s = read_json(tmp_path / "sliced" / "summary.json")
    assert s["status"] == "interrupted" and s["images_seen"] == 96  # 3 steps of 32
    ckpt = torch.load(tmp_path / "sliced" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["step"] == 3  # a checkpoint at the limit, though checkpoint_every is 100
    assert not (tmp_path / "sliced" / "backbone.pt").exists()
    done = pretrain(cfg, resume=True, step_limit=100)  # a limit past the end: the whole run
    assert read_json(done / "summary.json")["status"] == "completed"
    a = torch.load(full / "backbone.pt", weights_only=True)
    b = torch.load(done / "backbone.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="step-limit"):
        pretrain(_cfg(tmp_path, name="zero"), step_limit=0)
    assert not (tmp_path / "zero").exists()


def test_a_run_without_a_terminal_prints_progress_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DIVSSL_PROGRESS_SECONDS", "0")  # a line at every read of the loss
    pretrain(_cfg(tmp_path))  # pytest captures stderr: not a terminal
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("pretrain:")]
    assert len(lines) == 5  # log_every=1: one line per step, none repeated at the end
    first, last = lines[0], lines[-1]
    assert "step 1/5" in first and "images 32/150" in first
    assert "step 5/5 (100%)" in last and "images 150/150" in last
    for line in lines:
        assert " img/s" in line and "loss " in line and "ETA " in line
    assert "ETA 0m 00s" in last
