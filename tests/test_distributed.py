"""DDP equivalence of the losses and the collectives, with 2 gloo processes on CPU.

One module-scoped fixture spawns two processes once. Each holds its rows of a fixed float64
batch, pushes them through small shared linear layers (same init), computes every loss, runs
backward and averages the parameter gradients over ranks as DDP does (all-reduce / world). The
parent checks that the mean of the per-rank losses and the averaged gradients equal one process
on the whole batch, for equal (4 + 4) and unequal (3 + 5) per-rank batches.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from divssl import distributed as ddp
from divssl.errors import ConfigError
from divssl.pretrain import losses

WORLD = 2
BATCH = 8
D_IN, D_OUT, N_PROTOTYPES, N_VIEWS, QUEUE = 5, 6, 4, 4, 6
SPLITS = {"equal": (4, 4), "unequal": (3, 5)}
QUEUE_SPLITS = {"equal": (3, 3), "unequal": (2, 4)}
CASES = ("nt_xent", "mocov3", "byol", "barlow_twins", "vicreg", "dino", "swav", "swav_queue")


# ----------------------------------------------------------------------------- shared cases


class _Nets(nn.Module):
    """Student projection, teacher projection and SwAV prototypes, seeded identically."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.student = nn.Linear(D_IN, D_OUT).double()
        self.teacher = nn.Linear(D_IN, D_OUT).double()
        self.prototypes = nn.Parameter(torch.randn(N_PROTOTYPES, D_OUT, generator=gen).double())
        with torch.no_grad():
            for p in (*self.student.parameters(), *self.teacher.parameters()):
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Views (N_VIEWS, BATCH, D_IN), a queue of features (QUEUE, 2, D_OUT) and a DINO centre."""
    gen = torch.Generator().manual_seed(0)
    views = torch.randn(N_VIEWS, BATCH, D_IN, generator=gen, dtype=torch.float64)
    queue = torch.randn(QUEUE, 2, D_OUT, generator=gen, dtype=torch.float64)
    center = torch.randn(D_OUT, generator=gen, dtype=torch.float64) * 0.1
    return views, queue, center


def _swav_scores(nets: _Nets, feats: torch.Tensor) -> torch.Tensor:
    return F.normalize(feats, dim=-1) @ F.normalize(nets.prototypes, dim=1).T


def _case_loss(
    name: str, nets: _Nets, rows: slice, queue_rows: slice
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The loss of one case on the given rows; also returns an extra tensor to compare."""
    views, queue, center = _data()
    x = views[:, rows]
    f, g = nets.student, nets.teacher
    if name == "nt_xent":
        return losses.nt_xent(f(x[0]), f(x[1]), 0.5), None
    if name == "mocov3":
        q1, q2, k1, k2 = f(x[0]), f(x[1]), g(x[0]), g(x[1])
        return losses.mocov3(q1, k2, 0.2) + losses.mocov3(q2, k1, 0.2), None
    if name == "byol":
        return losses.byol(f(x[0]), g(x[1])) + losses.byol(f(x[1]), g(x[0])), None
    if name == "barlow_twins":
        return losses.barlow_twins(f(x[0]), f(x[1]), 0.05, scale_loss=0.5), None
    if name == "vicreg":
        return losses.vicreg(f(x[0]), f(x[1]), 25.0, 25.0, 1.0), None
    if name == "dino":
        teacher_out = g(x[:2])
        new_center = losses.dino_center_update(center, teacher_out, 0.9)
        return losses.dino(f(x), teacher_out, center, 0.1, 0.04), new_center
    scores = _swav_scores(nets, f(x[:2]))  # (2, b, K)
    if name == "swav":
        return losses.swav(scores[0], scores[1], 0.1, 0.05, 3), None
    queue_scores = _swav_scores(nets, queue[queue_rows]).detach()  # (q, 2, K)
    loss = losses.swav(
        scores[0], scores[1], 0.1, 0.05, 3, queue_a=queue_scores[:, 0], queue_b=queue_scores[:, 1]
    )
    return loss, None


def _run_case(name: str, rows: slice, queue_rows: slice) -> dict[str, object]:
    """Forward + backward of one case; gradients averaged over ranks when distributed."""
    nets = _Nets()
    loss, extra = _case_loss(name, nets, rows, queue_rows)
    loss.backward()
    grads = []
    for p in nets.parameters():
        g = torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
        if ddp.is_dist():
            dist.all_reduce(g)
            g /= ddp.world_size()
        grads.append(g)
    teacher_grads = [p.grad is not None for p in nets.teacher.parameters()]
    return {"loss": loss.detach(), "grads": grads, "extra": extra, "teacher_grad": teacher_grads}


def _rows(sizes: tuple[int, ...], r: int) -> slice:
    start = sum(sizes[:r])
    return slice(start, start + sizes[r])


# ----------------------------------------------------------------------------- worker


def _collective_checks(r: int, out: dict[str, object]) -> None:
    """gather_with_grad / gather_no_grad / all_reduce_sum with unequal per-rank sizes."""
    sizes = SPLITS["unequal"]
    full = torch.arange(BATCH * 2, dtype=torch.float64).reshape(BATCH, 2)
    x = full[_rows(sizes, r)].clone().requires_grad_(True)
    gathered = ddp.gather_with_grad(x)
    weight = torch.linspace(-1.0, 1.0, BATCH * 2, dtype=torch.float64).reshape(BATCH, 2)
    ((r + 1) * weight * gathered).sum().backward()
    out["gathered"] = gathered.detach()
    out["gather_grad"] = x.grad.clone()
    no_grad = ddp.gather_no_grad(x)
    out["no_grad"] = no_grad
    out["no_grad_requires_grad"] = no_grad.requires_grad
    out["global_batch"] = ddp.global_batch_size(x.shape[0])
    out["gather_sizes"] = ddp.gather_sizes(x.shape[0])
    v = torch.full((3,), float(r + 1), dtype=torch.float64, requires_grad=True)
    summed = ddp.all_reduce_sum(v * (r + 2))
    (summed * (r + 1)).sum().backward()
    out["reduced"] = summed.detach()
    out["reduce_grad"] = v.grad.clone()
    out["mean"] = ddp.all_reduce_mean(torch.tensor([float(r)], dtype=torch.float64))
    out["max"] = ddp.all_reduce_max(torch.tensor([float(r), -float(r)]))


def _env_init_checks(r: int, port: int, out: dict[str, object]) -> None:
    """Re-initialise through ``init_from_env`` as torchrun would, then tear down."""
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(r),
            "LOCAL_RANK": str(r),
            "WORLD_SIZE": str(WORLD),
        }
    )
    info = ddp.init_from_env("gloo", timeout_s=60)
    out["env_info"] = (info.rank, info.local_rank, info.world_size, info.backend, info.is_main)
    out["env_is_dist"] = ddp.is_dist()
    out["env_rank"] = (ddp.rank(), ddp.world_size(), ddp.local_rank())
    out["env_again"] = ddp.init_from_env("gloo").world_size
    ddp.barrier()
    ddp.cleanup()
    out["after_cleanup"] = (ddp.is_dist(), ddp.rank(), ddp.world_size())


def _worker(r: int, tcp_port: int, env_port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{tcp_port}", rank=r, world_size=WORLD
    )
    out: dict[str, object] = {}
    for split, sizes in SPLITS.items():
        for name in CASES:
            rows, queue_rows = _rows(sizes, r), _rows(QUEUE_SPLITS[split], r)
            out[f"{split}/{name}"] = _run_case(name, rows, queue_rows)
    _collective_checks(r, out)
    ddp.cleanup()
    _env_init_checks(r, env_port, out)
    torch.save(out, Path(out_dir) / f"rank{r}.pt")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, object]]:
    """Spawn the two workers once; return what each rank saved."""
    out_dir = tmp_path_factory.mktemp("ddp")
    tcp_port, env_port = _free_ports(2)
    ctx = mp.start_processes(
        _worker,
        args=(tcp_port, env_port, str(out_dir)),
        nprocs=WORLD,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + 180.0
    try:
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                raise TimeoutError("distributed workers did not finish within 180 s")
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.kill()
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("split", sorted(SPLITS))
@pytest.mark.parametrize("name", CASES)
def test_ddp_matches_single_process(ranks: list[dict[str, object]], split: str, name: str) -> None:
    single = _run_case(name, slice(None), slice(None))
    per_rank = [rank_out[f"{split}/{name}"] for rank_out in ranks]
    mean_loss = torch.stack([out["loss"] for out in per_rank]).mean()
    torch.testing.assert_close(mean_loss, single["loss"], rtol=1e-7, atol=1e-7)
    assert single["loss"].abs() > 1e-3  # a non-trivial loss is compared
    for out in per_rank:
        assert len(out["grads"]) == len(single["grads"])
        for got, want in zip(out["grads"], single["grads"], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-7)
        assert out["teacher_grad"] == [False, False]  # targets stay detached under DDP
    assert any(g.abs().sum() > 0 for g in single["grads"])
    if name == "dino":
        for out in per_rank:
            torch.testing.assert_close(out["extra"], single["extra"], rtol=1e-7, atol=1e-7)


def test_unequal_sizes_per_rank_losses_differ(ranks: list[dict[str, object]]) -> None:
    # With 3 + 5 rows the ranks' shares differ, yet their mean is the global loss (above).
    a, b = (out["unequal/nt_xent"]["loss"] for out in ranks)
    assert not torch.isclose(a, b)


def test_gather_with_grad_unequal_sizes(ranks: list[dict[str, object]]) -> None:
    full = torch.arange(BATCH * 2, dtype=torch.float64).reshape(BATCH, 2)
    weight = torch.linspace(-1.0, 1.0, BATCH * 2, dtype=torch.float64).reshape(BATCH, 2)
    summed_weight = sum(r + 1 for r in range(WORLD)) * weight  # Σ_r (r+1) w: all ranks' losses
    for r, out in enumerate(ranks):
        torch.testing.assert_close(out["gathered"], full)
        torch.testing.assert_close(out["no_grad"], full)
        assert out["no_grad_requires_grad"] is False
        torch.testing.assert_close(out["gather_grad"], summed_weight[_rows(SPLITS["unequal"], r)])
        assert out["global_batch"] == BATCH
        assert out["gather_sizes"] == list(SPLITS["unequal"])


def test_all_reduce_sum_forward_and_adjoint(ranks: list[dict[str, object]]) -> None:
    # rank r contributes (r+1)(r+2); its loss is (r+1)·Σ; d(Σ_r' loss_r')/dv_r = (r+2)·Σ_r'(r'+1).
    total = sum((r + 1) * (r + 2) for r in range(WORLD))
    coeff_sum = sum(r + 1 for r in range(WORLD))
    for r, out in enumerate(ranks):
        torch.testing.assert_close(
            out["reduced"], torch.full((3,), float(total), dtype=torch.float64)
        )
        torch.testing.assert_close(
            out["reduce_grad"], torch.full((3,), float((r + 2) * coeff_sum), dtype=torch.float64)
        )
        torch.testing.assert_close(out["mean"], torch.tensor([0.5], dtype=torch.float64))
        torch.testing.assert_close(out["max"], torch.tensor([1.0, 0.0]))


def test_init_from_env_under_two_processes(ranks: list[dict[str, object]]) -> None:
    for r, out in enumerate(ranks):
        assert out["env_info"] == (r, r, WORLD, "gloo", r == 0)
        assert out["env_is_dist"] is True
        assert out["env_rank"] == (r, WORLD, r)
        assert out["env_again"] == WORLD
        assert out["after_cleanup"] == (False, 0, 1)


# ----------------------------------------------------------------------------- single process


def test_helpers_are_identity_without_process_group() -> None:
    assert not ddp.is_dist()
    assert (ddp.rank(), ddp.world_size()) == (0, 1)
    x = torch.randn(3, 2, requires_grad=True)
    assert ddp.gather_with_grad(x) is x
    assert ddp.all_reduce_sum(x) is x
    assert ddp.all_reduce_mean(x) is x
    gathered, sizes = ddp.gather_with_sizes(x, grad=False)
    assert sizes == [3] and not gathered.requires_grad
    torch.testing.assert_close(ddp.gather_no_grad(x), x.detach())
    assert ddp.global_batch_size(7) == 7
    ddp.barrier()
    ddp.cleanup()
    assert not ddp.is_dist()


_ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in _ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_init_from_env_single_process(clean_env: pytest.MonkeyPatch) -> None:
    assert ddp.local_rank() == 0
    info = ddp.init_from_env()
    assert (info.rank, info.local_rank, info.world_size, info.backend) == (0, 0, 1, None)
    assert info.is_main and not ddp.is_dist()
    clean_env.setenv("WORLD_SIZE", "1")
    clean_env.setenv("LOCAL_RANK", "3")
    assert ddp.local_rank() == 3
    assert ddp.init_from_env("gloo").local_rank == 3
    assert not ddp.is_dist()


@pytest.mark.parametrize(
    ("env", "backend", "field"),
    [
        ({}, "tcp", "backend"),
        ({"WORLD_SIZE": "two"}, None, "WORLD_SIZE"),
        ({"WORLD_SIZE": "0"}, None, "WORLD_SIZE"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, None, "RANK"),
        ({"WORLD_SIZE": "2", "RANK": "-1"}, None, "RANK"),
        ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_PORT": "1234"}, "gloo", "MASTER_ADDR"),
        ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "127.0.0.1"}, "gloo", "MASTER_PORT"),
        (
            {"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "x"},
            "gloo",
            "MASTER_PORT",
        ),
    ],
)
def test_init_from_env_rejects_bad_environment(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], backend: str | None, field: str
) -> None:
    for key, value in env.items():
        clean_env.setenv(key, value)
    with pytest.raises(ConfigError) as err:
        ddp.init_from_env(backend)
    assert err.value.field == field
    assert not ddp.is_dist()
    if field == "backend":
        assert err.value.choices == ["gloo", "mpi", "nccl"]
