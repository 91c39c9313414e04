"""The training loop under torch.distributed (gloo on CPU, 2 processes as torchrun would)."""

import os
import socket

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
