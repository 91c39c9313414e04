"""Synchronised BatchNorm under gloo: 2 ranks x B/2 rows give the statistics of 1 rank x B."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from divssl.pretrain.syncbn import GlobalBatchNorm, convert_sync_batchnorm

B = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
    head = nn.Sequential(nn.Linear(4 * 4 * 4, 6), nn.BatchNorm1d(6, affine=False))
    return nn.Sequential(model, head)


def _batch() -> torch.Tensor:
    return torch.randn(B, 3, 6, 6, generator=torch.Generator().manual_seed(1)) * 2 + 0.5


def _step(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward + backward of a loss that is a sum over rows (so rank losses add up)."""
    x = x.clone().requires_grad_(True)
    out = model(x)
    (out.pow(3).sum() * 0.01).backward()
    return out.detach(), x.grad.detach()


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    import torch.distributed as tdist

    tdist.init_process_group("gloo", rank=rank, world_size=world)
    model = convert_sync_batchnorm(_model(), torch.device("cpu"))
    model.train()
    rows = slice(rank * B // world, (rank + 1) * B // world)
    y, gx = _step(model, _batch()[rows])
    grads = {n: p.grad for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    torch.save({"y": y, "gx": gx, "grads": grads, "buffers": buffers}, f"{out}/rank{rank}.pt")
    tdist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_of_half_batch_equal_one_rank_of_full_batch(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    single = _model()
    single.train()
    y, gx = _step(single, _batch())
    torch.testing.assert_close(torch.cat([r["y"] for r in ranks]), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([r["gx"] for r in ranks]), gx, rtol=1e-4, atol=1e-6)
    for name, buf in single.named_buffers():  # running mean / var / count of the global batch
        for r in ranks:
            torch.testing.assert_close(r["buffers"][name].to(buf.dtype), buf, msg=name)
    for name, p in single.named_parameters():  # rank gradients add up to the full-batch one
        total = ranks[0]["grads"][name] + ranks[1]["grads"][name]
        torch.testing.assert_close(total, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_single_process_and_eval_are_plain_batchnorm() -> None:
    bn = nn.BatchNorm1d(5)
    conv = convert_sync_batchnorm(nn.Sequential(bn), torch.device("cpu"))
    glob = conv[0]
    assert isinstance(glob, GlobalBatchNorm) and glob.running_mean is bn.running_mean
    x = torch.randn(7, 5)
    ref = nn.BatchNorm1d(5)
    torch.testing.assert_close(glob(x), ref(x))
    torch.testing.assert_close(glob.running_var, ref.running_var)
    glob.eval()
    ref.eval()
    torch.testing.assert_close(glob(x), ref(x))
    with pytest.raises(ValueError, match="2-D"):
        glob(torch.randn(5))
