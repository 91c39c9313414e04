"""The training loop under torch.distributed (gloo on CPU, 2 processes as torchrun would)."""

import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from divssl.io import read_json


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, method: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from divssl import distributed as dist
    from divssl.pretrain.config import load_config
    from divssl.pretrain.loop import pretrain

    cfg = load_config(
        None,
        [
            "data.pool=world:classes=4:per_class=16:size=16:seed=0",
            f"method={method}",
            "budget.images=70",
            "batch_size=16",
            "tracking=none",
            "device=cpu",
            f"out={out}/run",
            "log_every=1",
            "checkpoint_every=100",
        ],
    )
    pretrain(cfg)
    dist.cleanup()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["simclr", "barlow_twins"])
def test_two_rank_run_is_exact_and_replicas_stay_equal(tmp_path, method):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), method), nprocs=2, join=True)
    summary = read_json(tmp_path / "run" / "summary.json")
    assert summary["world_size"] == 2
    assert summary["images_seen"] == summary["budget_images"] == 70
    assert summary["status"] == "completed"
    # Gradients were averaged across ranks: both replicas hold identical weights.
    assert summary["replica_max_abs_diff"] == 0.0
    assert (tmp_path / "run" / "backbone.pt").is_file()


def _refusing_worker(rank: int, world: int, port: int, out: str, errors: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from pathlib import Path

    from divssl import distributed as dist
    from divssl.errors import ConfigError
    from divssl.pretrain.config import load_config
    from divssl.pretrain.loop import pretrain

    cfg = load_config(
        None,
        [
            "data.pool=world:classes=4:per_class=16:size=16:seed=0",
            "budget.images=32",
            "batch_size=16",
            "tracking=none",
            "device=cpu",
            f"out={out}/run",
        ],
    )
    try:
        pretrain(cfg)
    except ConfigError as exc:
        Path(errors, f"rank{rank}.txt").write_text(str(exc))
    finally:
        dist.cleanup()


@pytest.mark.slow
def test_every_rank_refuses_a_run_dir_that_holds_a_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text('{"status": "completed"}')
    errors = tmp_path / "errors"
    errors.mkdir()
    # Before, only rank 0 raised and rank 1 waited in a collective until the gloo timeout; a
    # join timeout here turns such a hang into a failure.
    ctx = mp.spawn(
        _refusing_worker,
        args=(2, _free_port(), str(tmp_path), str(errors)),
        nprocs=2,
        join=False,
    )
    deadline = 240.0
    t0 = time.monotonic()
    while not ctx.join(timeout=5):
        if time.monotonic() - t0 > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("a rank hung instead of raising")
    for rank in (0, 1):
        text = (errors / f"rank{rank}.txt").read_text()
        assert text.startswith("out: ") and "already holds a run" in text
    assert sorted(p.name for p in run.iterdir()) == ["summary.json"]  # nothing written
