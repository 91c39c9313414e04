"""The seven SSL losses against references written from the papers' pseudo-code, plus invariants.

References are deliberately naive (Python loops over anchors, pairs and samples, in float64) so
that they share no vectorised code with ``divssl.pretrain.losses``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from divssl.pretrain import losses

F64 = torch.float64


def _randn(*shape: int, seed: int = 0, requires_grad: bool = False) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=F64).requires_grad_(requires_grad)


def assert_matches(actual: torch.Tensor, expected: float | torch.Tensor) -> None:
    expected_t = torch.as_tensor(expected, dtype=F64)
    torch.testing.assert_close(actual.detach().to(F64), expected_t, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- references


def _ref_nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, tau: float) -> float:
    """SimCLR eq. (1): loop over the 2B anchors, negatives are all k != i."""
    z = [v / np.linalg.norm(v) for v in np.concatenate([z_a.numpy(), z_b.numpy()])]
    b = z_a.shape[0]
    total = 0.0
    for i in range(2 * b):
        pos = (i + b) % (2 * b)
        denom = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(2 * b) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[pos]) / tau) / denom)
    return total / (2 * b)


def _ref_mocov3(q: torch.Tensor, k: torch.Tensor, tau: float) -> float:
    """MoCo v3 Algorithm 1: CE of q_i against keys with k_i positive, times 2τ."""
    qn = [v / np.linalg.norm(v) for v in q.detach().numpy()]
    kn = [v / np.linalg.norm(v) for v in k.detach().numpy()]
    total = 0.0
    for i, qi in enumerate(qn):
        logits = [float(qi @ kj) / tau for kj in kn]
        total += -logits[i] + math.log(sum(math.exp(x) for x in logits))
    return 2 * tau * total / len(qn)


def _ref_byol(p: torch.Tensor, z: torch.Tensor) -> float:
    """BYOL eq. (2): ||p̄ - z̄||² = 2 - 2 cos(p, z), averaged over the batch."""
    values = []
    for pi, zi in zip(p.detach().numpy(), z.detach().numpy(), strict=True):
        pn, zn = pi / np.linalg.norm(pi), zi / np.linalg.norm(zi)
        values.append(float(np.sum((pn - zn) ** 2)))
    return float(np.mean(values))


def _ref_barlow(z_a: torch.Tensor, z_b: torch.Tensor, lambd: float) -> float:
    """Barlow Twins Algorithm 1 with BatchNorm1d-style normalisation (biased var, eps 1e-5)."""
    a, b = z_a.detach().numpy(), z_b.detach().numpy()
    n, d = a.shape
    a = (a - a.mean(0)) / np.sqrt(a.var(0) + 1e-5)
    b = (b - b.mean(0)) / np.sqrt(b.var(0) + 1e-5)
    total = 0.0
    for i in range(d):
        for j in range(d):
            c_ij = sum(a[s, i] * b[s, j] for s in range(n)) / n
            total += (1.0 - c_ij) ** 2 if i == j else lambd * c_ij**2
    return total


def _ref_vicreg(
    z_a: torch.Tensor, z_b: torch.Tensor, sim: float, std: float, cov: float, halve: bool = False
) -> float:
    """VICReg paper Eq. 6 / solo-learn ``vicreg_loss_func`` (``halve``: the authors'
    ``main_vicreg.py``, which divides each variance term by 2)."""
    a, b = z_a.detach().numpy(), z_b.detach().numpy()
    n, d = a.shape
    repr_loss = float(np.mean((a - b) ** 2))
    std_loss = 0.0
    cov_loss = 0.0
    for x in (a, b):
        x = x - x.mean(0)
        term = float(np.mean(np.maximum(0.0, 1.0 - np.sqrt(x.var(0, ddof=1) + 1e-4))))
        std_loss += term / 2 if halve else term
        for i in range(d):
            for j in range(d):
                if i != j:
                    cov_loss += (sum(x[s, i] * x[s, j] for s in range(n)) / (n - 1)) ** 2 / d
    return sim * repr_loss + std * std_loss + cov * cov_loss


def _ref_dino(s: torch.Tensor, t: torch.Tensor, c: torch.Tensor, tps: float, tpt: float) -> float:
    """DINO Algorithm 1's H(t, s), averaged over all (teacher crop, other student crop) pairs."""

    def softmax(v: np.ndarray) -> np.ndarray:
        e = np.exp(v - v.max())
        return e / e.sum()

    s_np, t_np, c_np = s.detach().numpy(), t.detach().numpy(), c.detach().numpy().reshape(-1)
    total, pairs = 0.0, 0
    for iq in range(t_np.shape[0]):
        for v in range(s_np.shape[0]):
            if v == iq:
                continue
            h = 0.0
            for bi in range(s_np.shape[1]):
                q = softmax((t_np[iq, bi] - c_np) / tpt)
                h += -float(np.sum(q * np.log(softmax(s_np[v, bi] / tps))))
            total += h / s_np.shape[1]
            pairs += 1
    return total / pairs


def _ref_sinkhorn(scores: np.ndarray, eps: float, iters: int) -> np.ndarray:
    """SwAV paper's Sinkhorn-Knopp pseudo-code (appendix), with marginals r = 1/K, c = 1/B."""
    q = np.exp(scores / eps).T
    q = q / q.sum()
    k, b = q.shape
    r, c = np.ones(k) / k, np.ones(b) / b
    for _ in range(iters):
        q = q * (r / q.sum(1))[:, None]
        q = q * (c / q.sum(0))[None, :]
    return (q / q.sum(0, keepdims=True)).T


def _ref_swav(s_a: torch.Tensor, s_b: torch.Tensor, tau: float, eps: float, iters: int) -> float:
    """SwAV pseudo-code: -0.5 · mean(q_a log p_b + q_b log p_a) with p = softmax(scores / τ)."""
    a, b = s_a.detach().numpy(), s_b.detach().numpy()
    q_a, q_b = _ref_sinkhorn(a, eps, iters), _ref_sinkhorn(b, eps, iters)
    total = 0.0
    for i in range(a.shape[0]):
        log_p_a = a[i] / tau - math.log(np.exp(a[i] / tau).sum())
        log_p_b = b[i] / tau - math.log(np.exp(b[i] / tau).sum())
        total += float(np.sum(q_a[i] * log_p_b) + np.sum(q_b[i] * log_p_a))
    return -0.5 * total / a.shape[0]


def _swav_scores(n: int, k: int = 5, d: int = 7, seed: int = 0) -> torch.Tensor:
    feats = F.normalize(_randn(n, d, seed=seed), dim=1)
    prototypes = F.normalize(_randn(k, d, seed=seed + 100), dim=1)
    return (feats @ prototypes.T).detach()


# ----------------------------------------------------------------------------- references match


def test_nt_xent_matches_loop_reference() -> None:
    z_a, z_b = _randn(6, 4, seed=0), _randn(6, 4, seed=1)
    for tau in (0.1, 0.5, 1.0):
        assert_matches(losses.nt_xent(z_a, z_b, tau), _ref_nt_xent(z_a, z_b, tau))


def test_mocov3_matches_loop_reference() -> None:
    q, k = _randn(7, 5, seed=2), _randn(7, 5, seed=3)
    for tau in (0.2, 1.0):
        assert_matches(losses.mocov3(q, k, tau), _ref_mocov3(q, k, tau))


def test_byol_matches_reference() -> None:
    p, z = _randn(5, 8, seed=4), _randn(5, 8, seed=5)
    assert_matches(losses.byol(p, z), _ref_byol(p, z))


def test_barlow_twins_matches_algorithm_1() -> None:
    z_a, z_b = _randn(9, 4, seed=6), _randn(9, 4, seed=7)
    assert_matches(losses.barlow_twins(z_a, z_b, 0.005), _ref_barlow(z_a, z_b, 0.005))
    assert_matches(
        losses.barlow_twins(z_a, z_b, 0.1, scale_loss=0.3), 0.3 * _ref_barlow(z_a, z_b, 0.1)
    )


def test_barlow_twins_normalisation_is_batchnorm_without_affine() -> None:
    z_a, z_b = _randn(9, 4, seed=6), _randn(9, 4, seed=7)
    bn = torch.nn.BatchNorm1d(4, affine=False).double().train()
    c = bn(z_a).T @ bn(z_b) / 9
    expected = (torch.diagonal(c) - 1).pow(2).sum() + 0.02 * (
        c.pow(2).sum() - c.diag().pow(2).sum()
    )
    assert_matches(losses.barlow_twins(z_a, z_b, 0.02), expected)


def test_vicreg_matches_paper_and_authors_code() -> None:
    z_a, z_b = _randn(8, 5, seed=8) * 0.7, _randn(8, 5, seed=9) * 1.3
    assert_matches(losses.vicreg(z_a, z_b, 25.0, 25.0, 1.0), _ref_vicreg(z_a, z_b, 25.0, 25.0, 1.0))
    halved = losses.vicreg(z_a, z_b, 25.0, 25.0, 1.0, variance_halved=True)
    assert_matches(halved, _ref_vicreg(z_a, z_b, 25.0, 25.0, 1.0, halve=True))
    # the variance term is active here (std < 1 in some dimension), so halving changes the loss
    assert abs(float(halved) - float(losses.vicreg(z_a, z_b, 25.0, 25.0, 1.0))) > 1e-3
    assert_matches(losses.vicreg(z_a, z_b, 1.0, 0.0, 0.0), F.mse_loss(z_a, z_b))


@pytest.mark.parametrize(("n_s", "n_t"), [(2, 2), (4, 2), (3, 1)])
def test_dino_matches_algorithm_1(n_s: int, n_t: int) -> None:
    s = _randn(n_s, 5, 6, seed=10)
    t = s[:n_t].detach() * 0.5 + _randn(n_t, 5, 6, seed=11) * 0.1
    center = _randn(6, seed=12) * 0.1
    assert_matches(losses.dino(s, t, center, 0.1, 0.04), _ref_dino(s, t, center, 0.1, 0.04))
    assert_matches(
        losses.dino(s, t, center.reshape(1, 6), 0.1, 0.04), _ref_dino(s, t, center, 0.1, 0.04)
    )


def test_dino_two_crops_is_algorithm_1_symmetric_form() -> None:
    s, t, c = _randn(2, 4, 3, seed=13), _randn(2, 4, 3, seed=14), _randn(3, seed=15)

    def h(t_crop: torch.Tensor, s_crop: torch.Tensor) -> torch.Tensor:
        q = F.softmax((t_crop - c) / 0.04, dim=1)
        return -(q * F.log_softmax(s_crop / 0.1, dim=1)).sum(dim=1).mean()

    assert_matches(losses.dino(s, t, c, 0.1, 0.04), h(t[0], s[1]) / 2 + h(t[1], s[0]) / 2)


def test_dino_center_update_matches_official_formula() -> None:
    t, c = _randn(2, 5, 6, seed=16), _randn(1, 6, seed=17)
    expected = c * 0.9 + t.reshape(10, 6).mean(0, keepdim=True) * 0.1
    new = losses.dino_center_update(c, t, 0.9)
    assert new.shape == c.shape
    assert_matches(new, expected)


def test_sinkhorn_matches_paper_pseudo_code() -> None:
    scores = _swav_scores(10)
    for iters in (1, 3, 7):
        codes = losses.sinkhorn(scores, 0.05, iters)
        assert_matches(codes, torch.from_numpy(_ref_sinkhorn(scores.numpy(), 0.05, iters)))


def test_swav_matches_paper_pseudo_code() -> None:
    s_a, s_b = _swav_scores(8, seed=18), _swav_scores(8, seed=19)
    assert_matches(losses.swav(s_a, s_b), _ref_swav(s_a, s_b, 0.1, 0.05, 3))
    assert_matches(losses.swav(s_a, s_b, 0.2, 0.1, 5), _ref_swav(s_a, s_b, 0.2, 0.1, 5))


def test_swav_queue_rows_join_sinkhorn_and_first_rows_are_kept() -> None:
    s_a, s_b = _swav_scores(6, seed=20), _swav_scores(6, seed=21)
    q_a, q_b = _swav_scores(10, seed=22), _swav_scores(10, seed=23)
    codes_a = _ref_sinkhorn(torch.cat([s_a, q_a]).numpy(), 0.05, 3)[:6]
    codes_b = _ref_sinkhorn(torch.cat([s_b, q_b]).numpy(), 0.05, 3)[:6]
    log_p_a = F.log_softmax(s_a / 0.1, dim=1)
    log_p_b = F.log_softmax(s_b / 0.1, dim=1)
    expected = (
        -0.5
        * (
            (torch.from_numpy(codes_a) * log_p_b).sum(1)
            + (torch.from_numpy(codes_b) * log_p_a).sum(1)
        ).mean()
    )
    got = losses.swav(s_a, s_b, queue_a=q_a, queue_b=q_b)
    assert_matches(got, expected)
    assert not torch.isclose(got, losses.swav(s_a, s_b))


# ----------------------------------------------------------------------------- invariants


def test_symmetric_losses() -> None:
    a, b = _randn(6, 4, seed=24), _randn(6, 4, seed=25)
    assert_matches(losses.nt_xent(a, b, 0.3), losses.nt_xent(b, a, 0.3))
    assert_matches(losses.barlow_twins(a, b, 0.01), losses.barlow_twins(b, a, 0.01))
    assert_matches(losses.vicreg(a, b, 25.0, 25.0, 1.0), losses.vicreg(b, a, 25.0, 25.0, 1.0))
    s_a, s_b = _swav_scores(6, seed=26), _swav_scores(6, seed=27)
    assert_matches(losses.swav(s_a, s_b), losses.swav(s_b, s_a))


def test_batch_permutation_invariance() -> None:
    a, b = _randn(7, 4, seed=28), _randn(7, 4, seed=29)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(perm, torch.arange(7))
    pairs = {
        "nt_xent": lambda x, y: losses.nt_xent(x, y, 0.2),
        "mocov3": lambda x, y: losses.mocov3(x, y, 0.2),
        "byol": losses.byol,
        "barlow": lambda x, y: losses.barlow_twins(x, y, 0.01),
        "vicreg": lambda x, y: losses.vicreg(x, y, 25.0, 25.0, 1.0),
    }
    for fn in pairs.values():
        assert_matches(fn(a[perm], b[perm]), fn(a, b))
    s_a, s_b = _swav_scores(7, seed=30), _swav_scores(7, seed=31)
    assert_matches(losses.swav(s_a[perm], s_b[perm]), losses.swav(s_a, s_b))
    s, t, c = _randn(3, 7, 5, seed=32), _randn(2, 7, 5, seed=33), _randn(5, seed=34)
    assert_matches(
        losses.dino(s[:, perm], t[:, perm], c, 0.1, 0.04), losses.dino(s, t, c, 0.1, 0.04)
    )


def test_mocov3_aligned_well_separated_is_near_zero() -> None:
    q = torch.eye(6, dtype=F64) * 3.0
    assert losses.mocov3(q, q.clone(), 0.02).item() < 1e-6
    assert losses.mocov3(q, q.roll(1, dims=0), 0.02).item() > 1.0


def test_byol_of_identical_inputs_is_zero_and_bounded() -> None:
    x = _randn(5, 4, seed=35)
    assert_matches(losses.byol(x, x), 0.0)
    assert_matches(losses.byol(x, 2.5 * x), 0.0)
    assert_matches(losses.byol(x, -x), 4.0)


def test_barlow_twins_zero_when_correlation_is_identity() -> None:
    # Columns with zero mean, unit biased variance and orthogonal to each other: c = I.
    z = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=F64)  # (4, 3)
    torch.testing.assert_close(z.T @ z / 4, torch.eye(3, dtype=F64))
    assert losses.barlow_twins(z, z, 0.005).item() < 1e-9
    assert losses.barlow_twins(z, -z, 0.005).item() > 11.9  # c = -I: Σ (1 - (-1))² = 12


def test_nt_xent_perfect_alignment_beats_random() -> None:
    z = torch.eye(4, dtype=F64)
    aligned = losses.nt_xent(z, z.clone(), 0.05).item()
    assert aligned < 1e-6
    assert losses.nt_xent(_randn(4, 4, seed=36), _randn(4, 4, seed=37), 0.05).item() > 1.0


def test_sinkhorn_has_uniform_marginals() -> None:
    scores = _swav_scores(12, k=4)
    codes = losses.sinkhorn(scores, 0.05, 200)
    assert codes.shape == (12, 4) and (codes >= 0).all()
    torch.testing.assert_close(codes.sum(1), torch.ones(12, dtype=F64))
    torch.testing.assert_close(codes.sum(0), torch.full((4,), 12 / 4, dtype=F64))
    short = losses.sinkhorn(scores, 0.05, 3)
    torch.testing.assert_close(short.sum(1), torch.ones(12, dtype=F64))  # exact after any iters


def test_sinkhorn_large_scores_do_not_overflow_and_half_runs_in_float32() -> None:
    scores = _swav_scores(6) * 100.0  # exp(100 / 0.05) overflows without the max shift
    codes = losses.sinkhorn(scores, 0.05, 3)
    assert torch.isfinite(codes).all()
    torch.testing.assert_close(codes.sum(1), torch.ones(6, dtype=F64))
    half = losses.sinkhorn(_swav_scores(6).half(), 0.05, 3)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    torch.testing.assert_close(
        half, losses.sinkhorn(_swav_scores(6), 0.05, 3).float(), atol=2e-2, rtol=0
    )


def _all_seven(a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    s_a, s_b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    return {
        "nt_xent": losses.nt_xent(a, b, 0.2),
        "mocov3": losses.mocov3(a, b, 0.2),
        "byol": losses.byol(a, b),
        "barlow_twins": losses.barlow_twins(a, b, 0.005),
        "vicreg": losses.vicreg(a, b, 25.0, 25.0, 1.0),
        "dino": losses.dino(torch.stack([a, b, a]), torch.stack([b, a]), a[0] * 0, 0.1, 0.04),
        "swav": losses.swav(s_a, s_b),
    }


def test_losses_run_in_float32_under_autocast_and_for_16_bit_inputs() -> None:
    a, b = _randn(16, 8, seed=60).float(), _randn(16, 8, seed=61).float()
    plain = _all_seven(a, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = _all_seven(a, b)
    from_bf16 = _all_seven(a.bfloat16(), b.bfloat16())
    for name, value in plain.items():
        assert autocast[name].dtype == torch.float32, name
        torch.testing.assert_close(autocast[name], value, rtol=1e-6, atol=1e-6)
        assert from_bf16[name].dtype == torch.float32, name
        torch.testing.assert_close(from_bf16[name], value, rtol=0.05, atol=0.05)
    center = torch.zeros(8, dtype=torch.bfloat16)
    assert losses.dino_center_update(center, a.reshape(2, 8, 8), 0.9).dtype == torch.bfloat16


# ----------------------------------------------------------------------------- gradients


def test_gradients_match_finite_differences() -> None:
    a, b = _randn(4, 3, seed=38, requires_grad=True), _randn(4, 3, seed=39, requires_grad=True)
    checks = [
        lambda x, y: losses.nt_xent(x, y, 0.5),
        lambda x, y: losses.barlow_twins(x, y, 0.1),
        lambda x, y: losses.vicreg(x, y, 25.0, 25.0, 1.0),
    ]
    for fn in checks:
        assert torch.autograd.gradcheck(fn, (a, b))
    s = _randn(3, 4, 5, seed=40, requires_grad=True)
    t, c = _randn(2, 4, 5, seed=41), _randn(5, seed=42)
    assert torch.autograd.gradcheck(lambda x: losses.dino(x, t, c, 0.1, 0.04), (s,))


def test_targets_receive_no_gradient() -> None:
    q, k = _randn(5, 4, seed=43, requires_grad=True), _randn(5, 4, seed=44, requires_grad=True)
    losses.mocov3(q, k, 0.2).backward()
    assert k.grad is None and q.grad is not None and q.grad.abs().sum() > 0
    p, z = _randn(5, 4, seed=45, requires_grad=True), _randn(5, 4, seed=46, requires_grad=True)
    losses.byol(p, z).backward()
    assert z.grad is None and p.grad.abs().sum() > 0
    s = _randn(3, 4, 5, seed=47, requires_grad=True)
    t = _randn(2, 4, 5, seed=48, requires_grad=True)
    c = _randn(5, seed=49, requires_grad=True)
    losses.dino(s, t, c, 0.1, 0.04).backward()
    assert t.grad is None and c.grad is None and s.grad.abs().sum() > 0


def test_swav_gradient_treats_codes_as_constants() -> None:
    s_a = _swav_scores(6, seed=50).requires_grad_(True)
    s_b = _swav_scores(6, seed=51).requires_grad_(True)
    queue = _swav_scores(4, seed=52).requires_grad_(True)
    losses.swav(s_a, s_b, queue_a=queue, queue_b=queue).backward()
    assert queue.grad is None
    ref_a, ref_b = (
        s_a.detach().clone().requires_grad_(True),
        s_b.detach().clone().requires_grad_(True),
    )
    codes_a = torch.from_numpy(_ref_sinkhorn(torch.cat([s_a, queue]).detach().numpy(), 0.05, 3)[:6])
    codes_b = torch.from_numpy(_ref_sinkhorn(torch.cat([s_b, queue]).detach().numpy(), 0.05, 3)[:6])
    expected = (
        -0.5
        * (
            (codes_a * F.log_softmax(ref_b / 0.1, 1)).sum(1)
            + (codes_b * F.log_softmax(ref_a / 0.1, 1)).sum(1)
        ).mean()
    )
    expected.backward()
    torch.testing.assert_close(s_a.grad, ref_a.grad)
    torch.testing.assert_close(s_b.grad, ref_b.grad)


def test_nt_xent_gradient_reaches_both_views() -> None:
    a, b = _randn(4, 3, seed=53, requires_grad=True), _randn(4, 3, seed=54, requires_grad=True)
    losses.nt_xent(a, b, 0.5).backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- error paths


def _pair_losses() -> dict[str, object]:
    return {
        "nt_xent": lambda x, y: losses.nt_xent(x, y, 0.1),
        "mocov3": lambda x, y: losses.mocov3(x, y, 0.1),
        "byol": losses.byol,
        "barlow_twins": lambda x, y: losses.barlow_twins(x, y, 0.01),
        "vicreg": lambda x, y: losses.vicreg(x, y, 25.0, 25.0, 1.0),
        "swav": losses.swav,
    }


@pytest.mark.parametrize("name", sorted(_pair_losses()))
def test_bad_shapes_raise(name: str) -> None:
    fn = _pair_losses()[name]
    with pytest.raises(ValueError, match="same shape"):
        fn(_randn(4, 3), _randn(4, 5))
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        fn(_randn(4), _randn(4))
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        fn(_randn(2, 4, 3), _randn(2, 4, 3))
    with pytest.raises(ValueError, match="floating"):
        fn(torch.ones(4, 3, dtype=torch.long), torch.ones(4, 3, dtype=torch.long))


@pytest.mark.parametrize("name", ["nt_xent", "mocov3", "barlow_twins", "vicreg"])
def test_batch_of_one_raises_where_undefined(name: str) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        _pair_losses()[name](_randn(1, 3), _randn(1, 3))


def test_batch_of_one_is_defined_for_byol_dino_swav() -> None:
    assert torch.isfinite(losses.byol(_randn(1, 3), _randn(1, 3, seed=1)))
    assert torch.isfinite(
        losses.dino(_randn(2, 1, 4), _randn(2, 1, 4, seed=1), _randn(4), 0.1, 0.04)
    )
    assert torch.isfinite(losses.swav(_swav_scores(1), _swav_scores(1, seed=1)))


@pytest.mark.parametrize("tau", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_temperatures_raise(tau: float) -> None:
    a, b = _randn(4, 3), _randn(4, 3, seed=1)
    with pytest.raises(ValueError, match="temperature"):
        losses.nt_xent(a, b, tau)
    with pytest.raises(ValueError, match="temperature"):
        losses.mocov3(a, b, tau)
    with pytest.raises(ValueError, match="temperature"):
        losses.swav(a, b, temperature=tau)
    with pytest.raises(ValueError, match="student_temp"):
        losses.dino(_randn(2, 4, 3), _randn(2, 4, 3), _randn(3), tau, 0.04)
    with pytest.raises(ValueError, match="teacher_temp"):
        losses.dino(_randn(2, 4, 3), _randn(2, 4, 3), _randn(3), 0.1, tau)


@pytest.mark.parametrize(
    ("student", "teacher", "center", "match"),
    [
        ((4, 3), (2, 4, 3), (3,), "student_out"),
        ((2, 4, 3), (2, 5, 3), (3,), "teacher_out"),
        ((2, 4, 3), (3, 4, 3), (3,), "teacher crops"),
        ((1, 4, 3), (1, 4, 3), (3,), "at least 2 student crops"),
        ((2, 4, 3), (2, 4, 3), (4,), "center"),
    ],
)
def test_dino_bad_shapes_raise(
    student: tuple[int, ...], teacher: tuple[int, ...], center: tuple[int, ...], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        losses.dino(_randn(*student), _randn(*teacher), _randn(*center), 0.1, 0.04)


def test_dino_center_update_errors() -> None:
    with pytest.raises(ValueError, match="momentum"):
        losses.dino_center_update(_randn(3), _randn(2, 4, 3), 1.5)
    with pytest.raises(ValueError, match="K entries"):
        losses.dino_center_update(_randn(4), _randn(2, 4, 3), 0.9)


def test_swav_and_sinkhorn_errors() -> None:
    s = _swav_scores(4)
    with pytest.raises(ValueError, match="together"):
        losses.swav(s, s, queue_a=s)
    with pytest.raises(ValueError, match=r"queue_a must have shape \(Q, 5\)"):
        losses.swav(s, s, queue_a=_randn(3, 4), queue_b=_randn(3, 4))
    with pytest.raises(ValueError, match="iters"):
        losses.sinkhorn(s, 0.05, 0)
    with pytest.raises(ValueError, match="epsilon"):
        losses.sinkhorn(s, 0.0, 3)
    with pytest.raises(ValueError, match="epsilon"):
        losses.swav(s, s, epsilon=-1.0)
