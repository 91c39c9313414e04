"""BYOL and the LARC path, step for step against solo-learn (vturrisi/solo-learn@9187ea3).

The reference here is written from solo-learn's code, independently of divssl:

* ``solo/methods/byol.py``: projector and predictor ``Linear-BN1d-ReLU-Linear``; the loss
  ``sum_{v1 in large crops} sum_{v2 != v1} byol_loss_func(P[v2], Z_momentum[v1])``;
* ``solo/losses/byol.py``: ``2 - 2 * cosine_similarity(p, z.detach()).mean()``;
* ``solo/methods/base.py`` ``BaseMomentumMethod``: the momentum backbone and projector run in
  train mode on every large crop, separately per crop; ``on_train_batch_end`` updates them after
  the optimizer step with ``cur_tau``, then sets ``cur_tau`` for the next step from
  ``update_tau(global_step, estimated_stepping_batches)``;
* ``solo/utils/momentum.py``: ``mp = tau * mp + (1 - tau) * op`` over parameters;
  ``tau = final - (final - base) * (cos(pi * k / K) + 1) / 2``;
* ``solo/utils/misc.py`` ``remove_bias_and_norm_from_weight_decay`` (params with ``ndim <= 1``
  get ``weight_decay = 0``) and ``solo/utils/lars.py`` (``exclude_bias_n_norm`` skips
  ``ndim == 1`` from decay and scaling; ``clip_lr``: ``lars_lr = min(lars_lr / lr, 1)``).

solo-learn also trains an online linear classifier on detached features; it cannot change the
backbone's gradients, so it is left out of the reference.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from divssl.pretrain.backbones import build_backbone
from divssl.pretrain.build import build_optimizer, optim_settings
from divssl.pretrain.config import load_config, resolve_config
from divssl.pretrain.methods import Method, get_method
from divssl.pretrain.optim import LARS

B = 16
HIDDEN, OUT, PRED = 64, 32, 48


def _views(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, 3, 16, 16, generator=g, dtype=torch.float64) for _ in range(2)]


def _byol_and_optimizer(recipe: str, lr_base: float | None = None) -> tuple[Method, LARS]:
    """divssl's BYOL and the optimizer the training loop builds for it (resolved recipe)."""
    overrides = [
        "method=byol",
        f"recipe={recipe}",
        "backbone=convnet_tiny",
        "image_size=16",
        f"batch_size={B}",
        f"method_args.proj_hidden_dim={HIDDEN}",
        f"method_args.proj_output_dim={OUT}",
        f"method_args.pred_hidden_dim={PRED}",
    ]
    if lr_base is not None:
        overrides.append(f"optim.base_lr={lr_base}")
    cfg = resolve_config(load_config(None, overrides))
    torch.manual_seed(0)
    backbone, dim = build_backbone("convnet_tiny", 16)
    cls = get_method("byol")
    # float64, so that the comparisons below see the algorithms, not summation order
    method = cls(backbone, dim, cls.Config(**cfg.method_args)).double()
    opt = build_optimizer(method, cfg, optim_settings(cfg, method))
    assert isinstance(opt, LARS)
    return method, opt


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    # solo/methods/byol.py projector / predictor
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, d_out)
    )


class SoloBYOL(nn.Module):
    """solo-learn's BYOL, holding copies of divssl's initial weights."""

    def __init__(self, ours: Method) -> None:
        super().__init__()
        self.backbone = copy.deepcopy(ours.backbone)
        feat = ours.feat_dim
        self.projector = _mlp(feat, HIDDEN, OUT).double()
        self.predictor = _mlp(OUT, PRED, OUT).double()
        self.projector.load_state_dict(ours.projector.state_dict())
        self.predictor.load_state_dict(ours.predictor.state_dict())
        self.momentum_backbone = copy.deepcopy(ours.backbone)
        self.momentum_projector = _mlp(feat, HIDDEN, OUT).double()
        # initialize_momentum_params: copy the online parameters, freeze them
        for online, target in (
            (self.backbone, self.momentum_backbone),
            (self.projector, self.momentum_projector),
        ):
            for po, pm in zip(online.parameters(), target.parameters(), strict=True):
                pm.data.copy_(po.data)
                pm.requires_grad = False

    def loss(self, views: list[torch.Tensor]) -> torch.Tensor:
        p = [self.predictor(self.projector(self.backbone(x))) for x in views]
        with torch.no_grad():
            z_m = [self.momentum_projector(self.momentum_backbone(x)) for x in views]
        total = torch.zeros((), dtype=torch.float64)
        for v1 in range(2):
            for v2 in [v for v in range(2) if v != v1]:
                total = total + 2 - 2 * F.cosine_similarity(p[v2], z_m[v1].detach(), dim=-1).mean()
        return total

    def groups(self, wd: float) -> list[dict]:
        """learnable_params (backbone, projector, predictor), then
        remove_bias_and_norm_from_weight_decay."""
        out = []
        for module in (self.backbone, self.projector, self.predictor):
            params = list(module.parameters())
            out.append({"params": [p for p in params if p.ndim > 1], "weight_decay": wd})
            out.append({"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0})
        return out

    @torch.no_grad()
    def momentum_update(self, tau: float) -> None:
        for online, target in (
            (self.backbone, self.momentum_backbone),
            (self.projector, self.momentum_projector),
        ):
            for op, mp in zip(online.parameters(), target.parameters(), strict=True):
                mp.data = tau * mp.data + (1 - tau) * op.data


class SoloLARS:
    """solo/utils/lars.py step with ``exclude_bias_n_norm=True``; records each parameter's
    ``lars_lr`` (after clipping) so tests can look at the trust ratios."""

    def __init__(self, groups: list[dict], lr: float, eta: float, clip: bool, momentum: float):
        self.groups, self.lr, self.eta, self.clip, self.momentum = groups, lr, eta, clip, momentum
        self.bufs: dict[int, torch.Tensor] = {}
        self.lars_lr: dict[int, float] = {}
        self.raw_ratio: dict[int, float] = {}

    @torch.no_grad()
    def step(self) -> None:
        for group in self.groups:
            wd = group["weight_decay"]
            for p in group["params"]:
                d_p = p.grad
                p_norm, g_norm = float(torch.norm(p)), float(torch.norm(p.grad))
                if p.ndim != 1 and p_norm != 0 and g_norm != 0:
                    lars_lr = self.eta * p_norm / (g_norm + p_norm * wd + 1e-8)
                    self.raw_ratio[id(p)] = lars_lr
                    if self.clip:
                        lars_lr = min(lars_lr / self.lr, 1)
                    self.lars_lr[id(p)] = lars_lr
                    d_p = d_p.add(p, alpha=wd) * lars_lr
                if id(p) in self.bufs:
                    self.bufs[id(p)].mul_(self.momentum).add_(d_p)
                else:
                    self.bufs[id(p)] = d_p.clone()
                p.add_(self.bufs[id(p)], alpha=-self.lr)


def solo_tau(step: int, total: int, base: float, final: float) -> float:
    """solo/utils/momentum.py MomentumUpdater: the tau used after optimizer step ``step``
    (0-based) is ``update_tau(cur_step=step, max_steps=total)`` (base_tau at step 0)."""
    return final - (final - base) * (math.cos(math.pi * step / total) + 1) / 2


def _online(method: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [
        (n, p)
        for n, p in method.named_parameters()
        if n.split(".")[0] in ("backbone", "projector", "predictor")
    ]


def _targets(method: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [
        (n, p)
        for n, p in method.named_parameters()
        if n.split(".")[0] in ("momentum_backbone", "momentum_projector")
    ]


@pytest.mark.parametrize("recipe", ["cifar", "small"])
def test_byol_steps_equal_solo_learn(recipe: str) -> None:
    # Same weights, same views: loss, every gradient, the LARS(C) step and the EMA update agree
    # with solo-learn's for 4 steps (the LR fixed at the peak, as after warm-up).
    total = 10
    ours, opt = _byol_and_optimizer(recipe)
    ref = SoloBYOL(ours)
    group = opt.param_groups[0]
    lr, eta, clip = group["lr"], group["eta"], group["clip"]
    wd = group["weight_decay"]
    assert (eta, clip, wd) == (0.02, recipe == "cifar", 1e-5)  # byol.yaml; small: no LARC clip
    assert lr == pytest.approx(1.0 * B / 256)
    ref_opt = SoloLARS(ref.groups(wd), lr, eta, clip, momentum=0.9)
    ours.train()
    ref.train()
    base_tau = ours.cfg.base_tau
    for step in range(4):
        views = _views(step)
        out = ours.training_step(views, None, step, total)
        ref_loss = ref.loss(views)
        torch.testing.assert_close(out.loss, ref_loss, rtol=1e-10, atol=1e-12)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        ref.zero_grad(set_to_none=True)
        ref_loss.backward()
        ref_params = dict(_online(ref))
        for name, p in _online(ours):
            torch.testing.assert_close(p.grad, ref_params[name].grad, rtol=1e-9, atol=1e-13)
        ours.on_before_optimizer_step(step, total)
        opt.step()
        ref_opt.step()
        for name, p in _online(ours):
            torch.testing.assert_close(p, ref_params[name], rtol=1e-9, atol=1e-12, msg=name)
        ours.on_after_optimizer_step(step, total)
        tau = solo_tau(step, total, base_tau, 1.0)
        assert ours.momentum(step, total) == pytest.approx(tau, abs=1e-12)
        ref.momentum_update(tau)
        ref_targets = dict(_targets(ref))
        for name, p in _targets(ours):
            torch.testing.assert_close(p, ref_targets[name], rtol=1e-9, atol=1e-12, msg=name)
    # the momentum network moved, and only by the EMA (it is frozen and not in the optimizer)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(not p.requires_grad and id(p) not in in_opt for _, p in _targets(ours))
    assert not torch.equal(ours.momentum_backbone.features[0].weight, _byol_init_conv())


def _byol_init_conv() -> torch.Tensor:
    torch.manual_seed(0)
    backbone, _ = build_backbone("convnet_tiny", 16)
    return backbone.features[0].weight.detach().double()


def test_byol_optimizer_sees_exactly_solo_learns_parameters() -> None:
    # Online backbone + projector + predictor; decayed & adapted = ndim > 1; the rest neither.
    ours, opt = _byol_and_optimizer("cifar")
    adapted, excluded = opt.param_groups
    online = dict(_online(ours))
    names = {id(p): n for n, p in ours.named_parameters()}
    assert {names[id(p)] for p in adapted["params"]} == {n for n, p in online.items() if p.ndim > 1}
    assert {names[id(p)] for p in excluded["params"]} == {
        n for n, p in online.items() if p.ndim <= 1
    }
    assert adapted["lars_adapt"] and adapted["weight_decay"] == 1e-5
    assert not excluded["lars_adapt"] and excluded["weight_decay"] == 0.0
    assert any(n.startswith("predictor.") for n in online)


def _simclr_and_optimizer() -> tuple[Method, LARS]:
    cfg = resolve_config(
        load_config(
            None,
            [
                "method=simclr",
                "recipe=cifar",
                "backbone=convnet_tiny",
                "image_size=16",
                "batch_size=256",
            ],
        )
    )
    torch.manual_seed(0)
    backbone, dim = build_backbone("convnet_tiny", 16)
    cls = get_method("simclr")
    method = cls(backbone, dim, cls.Config(**cfg.method_args)).double()
    opt = build_optimizer(method, cfg, optim_settings(cfg, method))
    assert isinstance(opt, LARS)
    return method, opt


def test_simclr_larc_first_step_equals_solo_learn() -> None:
    # The real SimCLR cifar recipe (heads 2048 -> 256, LARS eta 0.02, clip_lr, wd 1e-4, peak LR
    # 0.4 at batch 256) on the real model: per-parameter trust ratios, clipping and exclusions.
    ours, opt = _simclr_and_optimizer()
    ref = copy.deepcopy(ours)
    group = opt.param_groups[0]
    lr, wd = group["lr"], group["weight_decay"]
    assert (lr, wd, group["eta"], group["clip"]) == (pytest.approx(0.4), 1e-4, 0.02, True)
    ref_groups = [
        {"params": [p for p in ref.parameters() if p.ndim > 1], "weight_decay": wd},
        {"params": [p for p in ref.parameters() if p.ndim <= 1], "weight_decay": 0.0},
    ]
    ref_opt = SoloLARS(ref_groups, lr, 0.02, True, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    views = [torch.rand(64, 3, 16, 16, generator=g, dtype=torch.float64) for _ in range(2)]
    for model in (ours, ref):
        model.train()
        model.zero_grad(set_to_none=True)
        model.training_step(views, None, 0, 100).loss.backward()
    before = {n: p.detach().clone() for n, p in ours.named_parameters()}
    opt.step()
    ref_opt.step()
    ref_params = dict(ref.named_parameters())
    below_lr: dict[str, bool] = {}
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p, ref_params[name], rtol=1e-10, atol=1e-13, msg=name)
        r = ref_params[name]
        if r.ndim <= 1:  # excluded: plain SGD step, no decay
            torch.testing.assert_close(before[name] - p, lr * r.grad, rtol=1e-8, atol=1e-13)
            assert id(r) not in ref_opt.lars_lr
            continue
        # adapted: step = lr * min(eta ||p|| / (||g|| + wd ||p||) / lr, 1) * (g + wd p)
        raw = ref_opt.raw_ratio[id(r)]
        scale = min(raw / lr, 1.0)
        expected = lr * scale * (r.grad + wd * before[name])
        torch.testing.assert_close(before[name] - p, expected, rtol=1e-8, atol=1e-13, msg=name)
        below_lr[name] = raw < lr
    # Measured at this initialisation (float64): trust ratio / lr = 0.17-0.29 for the four conv
    # layers and 0.56 for the projector's output layer (LARC: step = ratio (g + wd p), 1 / lr =
    # 2.5x the unclipped LARS step), 4.3 for the projector's hidden layer (clipped: plain SGD).
    # Both branches of min(ratio / lr, 1) are exercised.
    assert all(v for n, v in below_lr.items() if n.startswith("backbone."))
    assert below_lr["projector.2.weight"] and not below_lr["projector.0.weight"]
    # excluded = every bias and every normalisation parameter, nothing else (the SimCLR cifar
    # projector is Linear-ReLU-Linear; the backbone's BN layers are the norms)
    norms = {
        f"{mn}.{pn}"
        for mn, m in ours.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for pn, _ in m.named_parameters(recurse=False)
    }
    biases = {n for n, _ in ours.named_parameters() if n.endswith(".bias")}
    names = {id(p): n for n, p in ours.named_parameters()}
    assert {names[id(p)] for p in opt.param_groups[1]["params"]} == norms | biases
    assert not opt.param_groups[1]["lars_adapt"] and opt.param_groups[1]["weight_decay"] == 0.0
