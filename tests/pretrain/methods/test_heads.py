"""Heads, EMA helpers and the multi-crop forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from divssl.pretrain.methods.ema import ema_update, make_momentum_copy
from divssl.pretrain.methods.heads import (
    DINOHead,
    Prototypes,
    check_two_views,
    forward_multicrop,
    mlp,
)


def _layer_types(module: nn.Sequential) -> list[type[nn.Module]]:
    return [type(m) for m in module]


def test_mlp_structure_and_shapes() -> None:
    net = mlp(12, 32, 8, 3)
    assert _layer_types(net) == [
        nn.Linear,
        nn.BatchNorm1d,
        nn.ReLU,
        nn.Linear,
        nn.BatchNorm1d,
        nn.ReLU,
        nn.Linear,
    ]
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12, 32), (32, 32), (32, 8)]
    assert net(torch.randn(5, 12)).shape == (5, 8)


def test_mlp_last_bn_without_affine_and_no_bias() -> None:
    net = mlp(6, 16, 4, 2, bn_last=True, bn_last_affine=False, bias=False)
    last = net[-1]
    assert isinstance(last, nn.BatchNorm1d) and not last.affine
    assert all(m.bias is None for m in net if isinstance(m, nn.Linear))
    out = net(torch.randn(10, 6))
    # affine-free BN in train mode: every output column has zero mean over the batch
    torch.testing.assert_close(out.mean(0), torch.zeros(4), atol=1e-5, rtol=0)


def test_mlp_options() -> None:
    single = mlp(6, 16, 4, 1)
    assert _layer_types(single) == [nn.Linear]
    gelu = mlp(6, 16, 4, 2, use_bn=False, activation=nn.GELU)
    assert _layer_types(gelu) == [nn.Linear, nn.GELU, nn.Linear]
    with pytest.raises(ValueError, match="num_layers"):
        mlp(6, 16, 4, 0)


def test_dino_head_matches_reference_and_norm_last_layer() -> None:
    torch.manual_seed(0)
    head = DINOHead(10, 50, hidden_dim=24, bottleneck_dim=8, num_layers=3)
    g = head.last_layer.parametrizations.weight.original0
    v = head.last_layer.parametrizations.weight.original1
    assert not g.requires_grad and torch.all(g == 1)
    assert v.requires_grad
    x = torch.randn(4, 10)
    out = head(x)
    assert out.shape == (4, 50)
    # reference: normalise the bottleneck, multiply by unit-norm prototypes v / ||v||
    ref = F.normalize(head.mlp(x), dim=-1) @ F.normalize(v, dim=1).T
    torch.testing.assert_close(out, ref)
    assert all(isinstance(m, nn.GELU) for m in head.mlp if not isinstance(m, nn.Linear))
    trainable = DINOHead(10, 50, hidden_dim=24, bottleneck_dim=8, norm_last_layer=False)
    assert trainable.last_layer.parametrizations.weight.original0.requires_grad


def test_prototypes_normalised_and_linear() -> None:
    torch.manual_seed(0)
    protos = Prototypes(8, 30)
    torch.testing.assert_close(protos.weight.norm(dim=1), torch.ones(30))
    with torch.no_grad():
        protos.weight.mul_(3.0)
    protos.normalize_()
    torch.testing.assert_close(protos.weight.norm(dim=1), torch.ones(30))
    z = F.normalize(torch.randn(4, 8), dim=1)
    torch.testing.assert_close(protos(z), z @ protos.weight.T)
    assert protos(z).abs().max() <= 1.0 + 1e-6  # cosine similarities
    assert protos.layer.bias is None


class _Recorder(nn.Module):
    """Spatial mean of each image; records the batch size of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return x.mean(dim=(2, 3))


def test_forward_multicrop_groups_by_resolution_and_keeps_order() -> None:
    views = [torch.randn(3, 3, 16, 16) for _ in range(2)]
    views += [torch.randn(3, 3, 8, 8) for _ in range(3)]
    rec = _Recorder()
    out = forward_multicrop(rec, views)
    assert rec.calls == [6, 9]  # both global crops together, then all local crops
    assert out.shape == (5, 3, 3)
    for i, v in enumerate(views):
        torch.testing.assert_close(out[i], v.mean(dim=(2, 3)))
    with pytest.raises(ValueError):
        forward_multicrop(rec, [])


def test_check_two_views() -> None:
    check_two_views([torch.zeros(1)] * 2, "simclr")
    with pytest.raises(ValueError, match="n_local_crops"):
        check_two_views([torch.zeros(1)] * 3, "simclr")


def test_make_momentum_copy_is_frozen_and_independent() -> None:
    online = mlp(4, 8, 2, 2)
    target = make_momentum_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    assert all(p.requires_grad for p in online.parameters())
    for p_t, p_o in zip(target.parameters(), online.parameters(), strict=True):
        assert torch.equal(p_t, p_o) and p_t.data_ptr() != p_o.data_ptr()


def test_ema_update_formula_and_ends() -> None:
    torch.manual_seed(0)
    online = mlp(4, 8, 2, 2)
    target = make_momentum_copy(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in target.parameters()]
    m = 0.7
    ema_update(target, online, m)
    for p_t, old, p_o in zip(target.parameters(), before, online.parameters(), strict=True):
        torch.testing.assert_close(p_t, m * old + (1 - m) * p_o)
    frozen_copy = [p.clone() for p in target.parameters()]
    ema_update(target, online, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), frozen_copy, strict=True))
    ema_update(target, online, 0.0)
    assert all(
        torch.equal(a, b) for a, b in zip(target.parameters(), online.parameters(), strict=True)
    )


def test_ema_update_errors() -> None:
    with pytest.raises(ValueError, match="momentum"):
        ema_update(mlp(4, 8, 2, 2), mlp(4, 8, 2, 2), 1.5)
    with pytest.raises(ValueError, match="different parameters"):
        ema_update(mlp(4, 8, 2, 2), mlp(4, 8, 2, 3), 0.5)
    with pytest.raises(ValueError, match="shape mismatch"):
        ema_update(mlp(4, 8, 2, 2), mlp(4, 8, 3, 2), 0.5)
