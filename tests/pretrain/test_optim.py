"""LARS against a reference LARC written here from solo-learn's formula (solo/utils/lars.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from divssl.pretrain.build import build_optimizer, param_groups
from divssl.pretrain.config import load_config
from divssl.pretrain.optim import LARS


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5)
    )


def _loss(model: nn.Module, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 3, 6, 6, generator=g)
    y = torch.randint(0, 5, (6,), generator=g)
    return nn.functional.cross_entropy(model(x), y)


class ReferenceLARC:
    """solo-learn's LARS step, parameter by parameter (``exclude_bias_n_norm`` skips 1-D
    parameters from both decay and scaling; ``clip_lr`` divides the local LR by the global one
    and clips at 1), with SGD momentum (``buf = g`` first, then ``m buf + g``)."""

    def __init__(self, params, lr, wd, eta, clip, exclude, momentum=0.9, eps=1e-8):
        self.params = list(params)
        self.lr, self.wd, self.eta, self.clip = lr, wd, eta, clip
        self.exclude, self.momentum, self.eps = exclude, momentum, eps
        self.bufs: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            d_p = p.grad.clone()
            if p.ndim != 1 or not self.exclude:
                p_norm = float(torch.sqrt((p * p).sum()))
                g_norm = float(torch.sqrt((p.grad * p.grad).sum()))
                if p_norm != 0 and g_norm != 0:
                    lars_lr = self.eta * p_norm / (g_norm + p_norm * self.wd + self.eps)
                    if self.clip:
                        lars_lr = min(lars_lr / self.lr, 1.0)
                    d_p = (d_p + self.wd * p) * lars_lr
            if i in self.bufs:
                self.bufs[i] = self.momentum * self.bufs[i] + d_p
            else:
                self.bufs[i] = d_p
            p -= self.lr * self.bufs[i]


def _run_both(lr: float, wd: float, eta: float, clip: bool, exclude: bool, steps: int = 3):
    ours_model, ref_model = _model(), _model()
    groups = param_groups(ours_model, wd, exclude)
    ours = LARS(groups, lr=lr, momentum=0.9, eta=eta, clip=clip)
    ref = ReferenceLARC(ref_model.parameters(), lr, wd, eta, clip, exclude)
    for step in range(steps):
        for model, opt in ((ours_model, ours), (ref_model, ref)):
            model.zero_grad(set_to_none=True)
            _loss(model, step).backward()
            opt.step()
    return ours_model, ref_model


@pytest.mark.parametrize(
    ("clip", "exclude", "wd"),
    [(True, True, 1e-4), (True, True, 0.0), (False, True, 1e-6), (True, False, 1e-4)],
)
def test_lars_steps_match_reference_larc(clip: bool, exclude: bool, wd: float) -> None:
    ours, ref = _run_both(lr=0.4, wd=wd, eta=0.02, clip=clip, exclude=exclude)
    for (name, a), b in zip(ours.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=name)


def test_clipping_changes_the_step_when_trust_ratio_is_below_lr() -> None:
    # At init every layer's eta * ||p|| / ||g|| is far below lr = 0.4 for this model, so LARC's
    # min(ratio / lr, 1) gives a larger step than unclipped LARS: the bug of issue 10 item 1.
    clipped, _ = _run_both(lr=0.4, wd=1e-4, eta=0.02, clip=True, exclude=True, steps=1)
    plain, _ = _run_both(lr=0.4, wd=1e-4, eta=0.02, clip=False, exclude=True, steps=1)
    start = _model()
    w0 = start[0].weight
    moved_clipped = (clipped[0].weight - w0).norm()
    moved_plain = (plain[0].weight - w0).norm()
    assert moved_clipped > 2 * moved_plain


def test_zero_weight_decay_still_adapts() -> None:
    # wd = 0: weights are still scaled by the trust ratio (timm's Lars would fall back to SGD).
    model, sgd_model = _model(), _model()
    opt = LARS(param_groups(model, 0.0, True), lr=0.4, momentum=0.0, eta=0.02, clip=True)
    sgd = torch.optim.SGD(sgd_model.parameters(), lr=0.4)
    for m, o in ((model, opt), (sgd_model, sgd)):
        _loss(m, 0).backward()
        o.step()
    assert not torch.allclose(model[0].weight, sgd_model[0].weight)
    # excluded 1-D parameters (bias, BN) take the plain SGD step, without decay
    torch.testing.assert_close(model[1].weight, sgd_model[1].weight)
    torch.testing.assert_close(model[4].bias, sgd_model[4].bias)


def test_build_optimizer_uses_resolved_lars_settings() -> None:
    cfg = load_config(None, ["method=simclr", "recipe=cifar", "optim.weight_decay=0"])
    model = _model()
    opt = build_optimizer(
        model,
        cfg,
        {"name": "lars", "base_lr": cfg.optim.base_lr, "weight_decay": 0.0},
    )
    assert isinstance(opt, LARS)
    adapted, excluded = opt.param_groups
    assert adapted["lars_adapt"] and adapted["clip"] and adapted["eta"] == 0.02
    assert not excluded["lars_adapt"] and excluded["weight_decay"] == 0.0
    assert {id(p) for p in excluded["params"]} == {id(p) for p in model.parameters() if p.ndim == 1}
    assert adapted["lr"] == pytest.approx(0.4 * 256 / 256)
    copy.deepcopy(opt.state_dict())  # serialisable for checkpoints


def test_lars_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="eta"):
        LARS(_model().parameters(), lr=0.1, eta=0.0)
