"""``--resume`` treats the run dir's config.yaml as the contract and cleans killed writes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from divssl import cli
from divssl.errors import ConfigError
from divssl.io import read_json
from divssl.pretrain.config import config_to_dict, load_config
from divssl.pretrain.loop import (
    RESUME_FREE_KEYS,
    PretrainSession,
    clean_stale_tmp,
    pretrain,
    resume_differences,
)

POOL = "world:classes=4:per_class=24:size=16:seed=0"


def _args(run: Path, *extra: str) -> list[str]:
    return [
        f"data.pool={POOL}",
        "budget.images=150",
        "batch_size=32",
        "image_size=16",
        "log_every=1",
        "checkpoint_every=2",
        "deterministic=true",
        "tracking=none",
        f"out={run}",
        *extra,
    ]


def _kill_after(cfg, steps: int) -> None:
    """A run stopped after ``steps`` steps as if killed: no checkpoint beyond the periodic ones
    (the summary says ``interrupted``)."""
    session = PretrainSession(cfg)
    session.run(until=steps)
    session.finish()


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory) -> Path:
    """A run killed after 3 of its 5 steps (checkpoint at step 2)."""
    run = tmp_path_factory.mktemp("resume") / "run"
    _kill_after(load_config(None, _args(run)), 3)
    assert read_json(run / "summary.json")["status"] == "interrupted"
    return run


@pytest.mark.parametrize(
    ("change", "keys"),
    [
        (["budget.images=300"], ["budget.images"]),
        (["method=byol"], ["method"]),
        (["optim.base_lr=0.1", "seed=3"], ["optim.base_lr", "seed"]),
        (["method_args.temperature=0.5"], ["method_args.temperature"]),
    ],
)
def test_resume_with_changed_config_exits_2_and_writes_nothing(
    killed_run, monkeypatch, capsys, change, keys
):
    before = _snapshot(killed_run)
    monkeypatch.setattr(sys, "argv", ["divssl", "pretrain", "--resume", *_args(killed_run)])
    monkeypatch.setattr(sys, "argv", [*sys.argv, *change])
    with pytest.raises(SystemExit) as info:
        cli.main()
    err = " ".join(capsys.readouterr().err.split())
    assert info.value.code == 2, err
    assert "--resume:" in err
    for key in keys:
        assert f"{key}:" in err
    assert _snapshot(killed_run) == before  # config.yaml, checkpoints, metrics untouched


def test_free_keys_may_change_and_stale_tmp_files_are_cleaned(tmp_path):
    run = tmp_path / "run"
    _kill_after(load_config(None, _args(run)), 3)
    stale = [run / "checkpoints" / ".last.pt.abc123.tmp", run / ".summary.json.x1.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 1000)
    done = pretrain(load_config(None, _args(run, "log_every=2", "checkpoint_every=3")), resume=True)
    s = read_json(done / "summary.json")
    assert s["status"] == "completed" and s["images_seen"] == 150
    assert not any(p.exists() for p in stale)
    assert not list(run.rglob("*.tmp"))


def test_resume_differences_reference():
    saved = config_to_dict(load_config(None, ["budget.images=100"]))
    given = config_to_dict(
        load_config(None, ["budget.images=200", "log_every=5", "device=cpu", "tracking=none"])
    )
    assert resume_differences(saved, given) == ["budget.images"]
    assert resume_differences(saved, saved) == []
    extra = {**given, "new_key": 1}
    assert "new_key" in resume_differences(saved, extra)  # present on one side only
    assert {"log_every", "tracking", "checkpoint_every", "device", "threads", "compile"} <= set(
        RESUME_FREE_KEYS
    )


def test_clean_stale_tmp_removes_only_tmp_files(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    keep = [tmp_path / "checkpoints" / "last.pt", tmp_path / "config.yaml"]
    drop = [tmp_path / "checkpoints" / ".last.pt.q.tmp", tmp_path / ".config.yaml.z.tmp"]
    for p in keep + drop:
        p.write_text("x")
    removed = clean_stale_tmp(tmp_path)
    assert sorted(removed) == sorted(drop)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in drop)


def test_resume_check_refuses_before_any_compute(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("method: byol\n")
    import divssl.pretrain.build as build

    def boom(*args, **kwargs):
        raise AssertionError("a backbone was built")

    monkeypatch.setattr(build, "build_backbone", boom)
    with pytest.raises(ConfigError) as info:
        pretrain(load_config(None, _args(run)), resume=True)
    assert info.value.field == "--resume" and "method" in str(info.value)
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]
