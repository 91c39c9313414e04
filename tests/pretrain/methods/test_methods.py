"""The SSL methods and the supervised baseline, built on ``convnet_tiny`` with 16 px views.

Each test drives a method through the training loop's hook order
(``training_step`` -> ``backward`` -> ``on_before_optimizer_step`` -> ``optimizer.step`` ->
``on_after_optimizer_step``) with plain SGD, and checks its wiring against references written
here from the papers' pseudo-code (the losses themselves are tested in ``tests/test_losses.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from divssl.errors import ConfigError
from divssl.pretrain import losses
from divssl.pretrain.backbones import build_backbone
from divssl.pretrain.methods import Method, StepOutput, get_method, method_names

B = 8
NUM_CLASSES = 5
ALL = ["simclr", "mocov3", "byol", "dino", "swav", "vicreg", "barlow_twins", "supervised"]
PRESETS = ("simclr", "byol", "dino", "swav", "vicreg", "supervised")
# small heads keep the tests fast; defaults are checked separately
SMALL: dict[str, dict[str, object]] = {
    "simclr": {"proj_hidden_dim": 32, "proj_output_dim": 16},
    "mocov3": {"proj_hidden_dim": 32, "proj_output_dim": 16, "pred_hidden_dim": 32},
    "byol": {"proj_hidden_dim": 32, "proj_output_dim": 16, "pred_hidden_dim": 32},
    "dino": {
        "proj_hidden_dim": 32,
        "proj_output_dim": 16,
        "num_prototypes": 64,
        "warmup_teacher_temp_epochs": 50,  # 5% of the default 1000 epochs
    },
    "swav": {"proj_hidden_dim": 32, "proj_output_dim": 16, "num_prototypes": 20, "queue_size": 0},
    "vicreg": {"proj_hidden_dim": 32, "proj_output_dim": 24},
    "barlow_twins": {"proj_hidden_dim": 32, "proj_output_dim": 24},
    "supervised": {},
}


def build(name: str, **args: object) -> Method:
    torch.manual_seed(0)
    backbone, dim = build_backbone("convnet_tiny")
    cls = get_method(name)
    return cls(backbone, dim, cls.Config(**{**SMALL[name], **args}), num_classes=NUM_CLASSES)


def make_views(n_global: int, n_local: int = 0, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(B, 3, 16, 16, generator=g) for _ in range(n_global)]
    return views + [torch.randn(B, 3, 8, 8, generator=g) for _ in range(n_local)]


def make_labels(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, NUM_CLASSES, (B,), generator=torch.Generator().manual_seed(seed))


def n_views(name: str) -> int:
    return 1 if name == "supervised" else 2


def sgd(method: Method) -> torch.optim.Optimizer:
    return torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)


def loop_step(
    method: Method, opt: torch.optim.Optimizer, views: list[torch.Tensor], step: int, total: int
) -> StepOutput:
    """One step in the training loop's hook order."""
    out = method.training_step(views, make_labels(step), step, total)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    method.on_before_optimizer_step(step, total)
    opt.step()
    method.on_after_optimizer_step(step, total)
    return out


def cosine_momentum(step: int, total: int, base: float) -> float:
    """BYOL's tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2 with K = total steps."""
    return 1.0 - (1.0 - base) * (math.cos(math.pi * step / total) + 1.0) / 2.0


# ------------------------------------------------------------------------------- registry/config


def test_all_methods_registered() -> None:
    assert sorted(ALL) == method_names()


@pytest.mark.parametrize("name", ALL)
def test_config_defaults_preset_and_optim(name: str) -> None:
    cls = get_method(name)
    assert cls.name == name
    assert all(not f.is_required() for f in cls.Config.model_fields.values())
    cls.Config()  # every field has a default
    assert cls.augment_preset in PRESETS
    assert cls.n_global_views == n_views(name)
    with pytest.raises(ValidationError):
        cls.Config(not_a_key=1)


def test_presets_and_labels_per_method() -> None:
    expected = {
        "simclr": "simclr",
        "mocov3": "byol",
        "byol": "byol",
        "barlow_twins": "byol",
        "vicreg": "vicreg",
        "dino": "dino",
        "swav": "swav",
        "supervised": "supervised",
    }
    assert {n: get_method(n).augment_preset for n in ALL} == expected
    assert [n for n in ALL if get_method(n).needs_labels] == ["supervised"]


def test_bad_values_rejected() -> None:
    with pytest.raises(ValidationError):
        get_method("simclr").Config(temperature=0.0)
    with pytest.raises(ValidationError):
        get_method("byol").Config(base_tau=1.5)
    with pytest.raises(ConfigError, match="data.pool"):
        cls = get_method("supervised")
        cls(*build_backbone("convnet_tiny"), cls.Config(), num_classes=None)


# ------------------------------------------------------------------------------ training steps


@pytest.mark.parametrize("name", ALL)
def test_two_steps_finite_and_backbone_learns(name: str) -> None:
    method = build(name)
    opt = sgd(method)
    start = [p.detach().clone() for p in method.backbone.parameters()]
    for step in range(2):
        out = loop_step(method, opt, make_views(n_views(name), seed=step), step, 2)
        assert torch.isfinite(out.loss) and out.loss.ndim == 0
        grads = [p.grad for p in method.backbone.parameters()]
        assert all(g is not None for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
        assert all(isinstance(v, float) for v in out.logs.values())
    moved = [
        not torch.equal(a, b) for a, b in zip(start, method.backbone.parameters(), strict=True)
    ]
    assert all(moved)


def _online(method: nn.Module, views: list[torch.Tensor], *mods: str) -> list[torch.Tensor]:
    """Each view separately through the named modules in order."""
    outs = []
    for v in views:
        x = v
        for m in mods:
            x = getattr(method, m)(x)
        outs.append(x)
    return outs


def _ref_simclr(m: Method, views: list[torch.Tensor], step: int, total: int) -> torch.Tensor:
    z = m.projector(m.backbone(torch.cat(views)))  # both views in one batch, as SimCLR
    return losses.nt_xent(z[:B], z[B:], m.cfg.temperature)


def _ref_mocov3(m: Method, views: list[torch.Tensor], step: int, total: int) -> torch.Tensor:
    q = _online(m, views, "backbone", "projector", "predictor")
    k = _online(m, views, "momentum_backbone", "momentum_projector")
    t = m.cfg.temperature
    return losses.mocov3(q[0], k[1], t) + losses.mocov3(q[1], k[0], t)


def _ref_byol(m: Method, views: list[torch.Tensor], step: int, total: int) -> torch.Tensor:
    p = _online(m, views, "backbone", "projector", "predictor")
    z = _online(m, views, "momentum_backbone", "momentum_projector")
    return losses.byol(p[0], z[1]) + losses.byol(p[1], z[0])


def _ref_vicreg(m: Method, views: list[torch.Tensor], step: int, total: int) -> torch.Tensor:
    z = _online(m, views, "backbone", "projector")
    return losses.vicreg(z[0], z[1], 25.0, 25.0, 1.0)


def _ref_barlow(m: Method, views: list[torch.Tensor], step: int, total: int) -> torch.Tensor:
    z = _online(m, views, "backbone", "projector")
    return losses.barlow_twins(z[0], z[1], 0.0051, scale_loss=0.1)


def _ref_supervised(m: Method, views: list[torch.Tensor], step: int, total: int) -> torch.Tensor:
    return F.cross_entropy(m.classifier(m.backbone(views[0])), make_labels(step))


def _dino_teacher(m: Method, views: list[torch.Tensor]) -> torch.Tensor:
    """Teacher logits of the 2 global crops (one batch, as DINO's MultiCropWrapper): (2, B, K)."""
    return m.teacher_head(m.teacher_backbone(torch.cat(views[:2]))).reshape(2, B, -1)


def _ref_dino(m: Method, views: list[torch.Tensor], step: int, total: int) -> torch.Tensor:
    feats = torch.cat([m.backbone(torch.cat(views[:2])), m.backbone(torch.cat(views[2:]))])
    student = m.head(feats).reshape(len(views), B, -1)
    warm = round(0.05 * total)  # teacher temperature 0.04 -> 0.07, linear over 5% of the steps
    t_temp = 0.07 if step >= warm else 0.04 + 0.03 * step / warm
    return losses.dino(student, _dino_teacher(m, views), m.center, 0.1, t_temp)


def _swav_scores(m: Method, views: list[torch.Tensor]) -> torch.Tensor:
    """(n, B, K) scores: backbone per resolution, projector on all crops, unit prototypes."""
    groups = [torch.cat(views[:2])] + ([torch.cat(views[2:])] if len(views) > 2 else [])
    z = F.normalize(m.projector(torch.cat([m.backbone(g) for g in groups])), dim=1)
    w = F.normalize(m.prototypes.weight, dim=1)
    return (z @ w.T).reshape(len(views), B, -1)


def _ref_swav(m: Method, views: list[torch.Tensor], step: int, total: int) -> torch.Tensor:
    """SwAV main_swav.py loop: codes of crops 0 and 1, predicted by every other crop."""
    scores = _swav_scores(m, views)
    n, temp = len(views), m.cfg.temperature
    loss = torch.zeros(())
    for a in range(2):
        q = losses.sinkhorn(scores[a], 0.05, 3)
        sub = torch.zeros(())
        for v in range(n):
            if v != a:
                sub = sub - torch.mean(torch.sum(q * F.log_softmax(scores[v] / temp, dim=1), dim=1))
        loss = loss + sub / (n - 1)
    return loss / 2


REFERENCES: dict[str, tuple[Callable[..., torch.Tensor], int, int]] = {
    # name: (reference, global crops, local crops)
    "simclr": (_ref_simclr, 2, 0),
    "mocov3": (_ref_mocov3, 2, 0),
    "byol": (_ref_byol, 2, 0),
    "vicreg": (_ref_vicreg, 2, 0),
    "barlow_twins": (_ref_barlow, 2, 0),
    "supervised": (_ref_supervised, 1, 0),
    "dino": (_ref_dino, 2, 2),
    "swav": (_ref_swav, 2, 3),
}


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("step", [0, 2])
def test_loss_matches_reference(name: str, step: int) -> None:
    ref_fn, n_global, n_local = REFERENCES[name]
    method = build(name)
    with torch.no_grad():  # move the momentum networks away from their online copies
        for p in method.parameters():
            if not p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    views = make_views(n_global, n_local, seed=3)
    out = method.training_step(views, make_labels(step), step, 20)
    with torch.no_grad():
        ref = ref_fn(method, views, step, 20)
    torch.testing.assert_close(out.loss.detach(), ref, rtol=1e-5, atol=1e-5)


def test_swav_two_crop_multicrop_formula_equals_public_loss() -> None:
    method = build("swav")
    scores = _swav_scores(method, make_views(2)).detach()
    composed = method.multicrop_loss(scores, [None, None])
    public = losses.swav(scores[0], scores[1], 0.1, 0.05, 3)
    torch.testing.assert_close(composed, public)


# ------------------------------------------------------------------------------ momentum nets

PAIRS = {
    "byol": [("momentum_backbone", "backbone"), ("momentum_projector", "projector")],
    "mocov3": [("momentum_backbone", "backbone"), ("momentum_projector", "projector")],
    "dino": [("teacher_backbone", "backbone"), ("teacher_head", "head")],
}


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_momentum_network_moves_only_by_ema(name: str) -> None:
    total = 4
    method = build(name, base_tau=0.9)
    opt = sgd(method)
    in_opt = {id(p) for group in opt.param_groups for p in group["params"]}
    for target_name, _ in PAIRS[name]:
        target = getattr(method, target_name)
        assert all(not p.requires_grad and id(p) not in in_opt for p in target.parameters())
    for step in range(2):
        out = method.training_step(make_views(2, seed=step), None, step, total)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        method.on_before_optimizer_step(step, total)
        before = {t: [p.clone() for p in getattr(method, t).parameters()] for t, _ in PAIRS[name]}
        opt.step()
        for t, _ in PAIRS[name]:  # the optimizer leaves the momentum network alone
            params = getattr(method, t).parameters()
            assert all(torch.equal(a, b) for a, b in zip(before[t], params, strict=True))
        method.on_after_optimizer_step(step, total)
        m = cosine_momentum(step, total, 0.9)
        for t, o in PAIRS[name]:
            target, online = getattr(method, t), getattr(method, o)
            pairs = zip(before[t], target.parameters(), online.parameters(), strict=True)
            moved = False
            for old, new, online in pairs:
                torch.testing.assert_close(new, m * old + (1 - m) * online)
                moved |= not torch.equal(old, new)
            assert moved


def test_momentum_schedule_ends() -> None:
    byol = build("byol")
    assert byol.momentum(0, 100) == pytest.approx(0.99)
    assert byol.momentum(99, 100) == pytest.approx(1.0, abs=1e-5)  # 1 after the last step
    assert byol.momentum(33, 100) == pytest.approx(cosine_momentum(33, 100, 0.99))
    assert build("dino").momentum(0, 100) == pytest.approx(0.9995)


# ------------------------------------------------------------------------------------- DINO


def test_dino_center_update() -> None:
    method = build("dino")
    opt = sgd(method)
    assert torch.equal(method.center, torch.zeros(64))
    for step in range(2):
        views = make_views(2, 2, seed=step)
        out = method.training_step(views, None, step, 10)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        method.on_before_optimizer_step(step, 10)
        opt.step()
        with torch.no_grad():  # the teacher is unchanged until on_after_optimizer_step
            batch_mean = _dino_teacher(method, views).reshape(-1, 64).mean(dim=0)
        old = method.center.clone()
        method.on_after_optimizer_step(step, 10)
        torch.testing.assert_close(method.center, 0.9 * old + 0.1 * batch_mean)
    assert "center" in method.state_dict()


def test_dino_teacher_temperature_warmup() -> None:
    method = build("dino", warmup_teacher_temp_epochs=50)  # 50 of the default 1000 epochs
    assert method.schedule_epochs == 1000.0
    assert method.teacher_temp(0, 100) == pytest.approx(0.04)
    assert method.teacher_temp(2, 100) == pytest.approx(0.04 + 0.03 * 2 / 5)
    assert method.teacher_temp(5, 100) == pytest.approx(0.07)
    assert method.teacher_temp(99, 100) == pytest.approx(0.07)
    out = method.training_step(make_views(2), None, 0, 100)
    assert out.logs["teacher_temp"] == pytest.approx(0.04)


def test_dino_last_layer_frozen_then_trained() -> None:
    total = 4  # freeze 0.5 of the steps: steps 0 and 1
    method = build("dino", freeze_last_layer_epochs=2)
    method.schedule_epochs = 4.0  # the run's 4 steps stand for 4 epochs
    opt = sgd(method)
    last = method.head.last_layer.parametrizations.weight.original1
    for step in range(3):
        out = method.training_step(make_views(2, seed=step), None, step, total)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        assert last.grad is not None and last.grad.abs().sum() > 0
        method.on_before_optimizer_step(step, total)
        before = last.detach().clone()
        opt.step()
        method.on_after_optimizer_step(step, total)
        if step < 2:
            assert last.grad is None and torch.equal(before, last)
        else:
            assert last.grad is not None and last.grad.abs().sum() > 0
            assert not torch.equal(before, last)


def test_dino_multicrop_shapes() -> None:
    method = build("dino")
    views = make_views(2, 4)
    assert method.student_forward(views).shape == (6, B, 64)
    assert method.teacher_forward(views).shape == (2, B, 64)
    out = loop_step(method, sgd(method), views, 0, 5)
    assert torch.isfinite(out.loss)
    with pytest.raises(ValueError):
        method.training_step(views[:1], None, 0, 5)


# ------------------------------------------------------------------------------------- SwAV


def test_swav_prototypes_normalised_before_forward() -> None:
    method = build("swav")
    with torch.no_grad():
        method.prototypes.weight.mul_(3.0)
    method.training_step(make_views(2), None, 0, 10)
    torch.testing.assert_close(method.prototypes.weight.norm(dim=1), torch.ones(20))


def test_swav_prototypes_frozen_then_trained() -> None:
    total = 4  # freeze 0.5 of the steps: steps 0 and 1
    method = build("swav", freeze_prototypes_epochs=500)  # of the default 1000 epochs
    opt = sgd(method)
    w = method.prototypes.weight
    for step in range(3):
        out = method.training_step(make_views(2, seed=step), None, step, total)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        method.on_before_optimizer_step(step, total)
        before = w.detach().clone()
        opt.step()
        if step < 2:
            assert w.grad is None and torch.equal(before, w)
        else:
            assert w.grad is not None and w.grad.abs().sum() > 0
            assert not torch.equal(before, w)


def test_swav_queue_fills_and_is_used_after_start() -> None:
    total = 6  # queue starts at step round(0.5 * 6) = 3
    method = build("swav", queue_size=16, queue_start_epochs=500)
    opt = sgd(method)
    assert method.queue.shape == (2, 16, 16) and int(method.queue_filled) == 0
    previous_z = None
    for step in range(4):
        views = make_views(2, seed=step)
        queue_before = method.queue.clone()
        out = method.training_step(views, None, step, total)
        assert out.logs["queue_used"] == float(step >= 3)
        with torch.no_grad():
            z = F.normalize(method.projector(method.backbone(torch.cat(views))), dim=1)
            z = z.reshape(2, B, -1)
            torch.testing.assert_close(method.queue[:, :B], z)  # newest first
            if previous_z is not None:
                torch.testing.assert_close(method.queue[:, B:], previous_z)
            else:
                assert torch.equal(method.queue[:, B:], torch.zeros(2, 8, 16))
            if step == 3:
                scores = _swav_scores(method, views)
                w = method.prototypes.weight
                with_queue = losses.swav(
                    scores[0],
                    scores[1],
                    queue_a=queue_before[0] @ w.T,
                    queue_b=queue_before[1] @ w.T,
                )
                torch.testing.assert_close(out.loss.detach(), with_queue)
                assert not torch.allclose(with_queue, losses.swav(scores[0], scores[1]))
        assert int(method.queue_filled) == min(16, B * (step + 1))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        method.on_before_optimizer_step(step, total)
        opt.step()
        method.on_after_optimizer_step(step, total)
        previous_z = z
    state = method.state_dict()
    fresh = build("swav", queue_size=16, queue_start_epochs=500)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.queue, method.queue) and int(fresh.queue_filled) == 16


def test_swav_multicrop_shapes() -> None:
    method = build("swav")
    views = make_views(2, 4)
    assert method.embed(views).shape == (6, B, 16)
    out = loop_step(method, sgd(method), views, 0, 5)
    assert torch.isfinite(out.loss)


# ------------------------------------------------------------------------------------ heads


def _linear_shapes(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("name", ["barlow_twins", "vicreg"])
def test_projector_shapes_as_configured(name: str) -> None:
    method = build(name, proj_hidden_dim=48, proj_output_dim=24, proj_layers=3)
    assert _linear_shapes(method.projector) == [(128, 48), (48, 48), (48, 24)]
    assert method.projector(method.backbone(make_views(1)[0])).shape == (B, 24)
    defaults = get_method(name).Config()
    assert (defaults.proj_hidden_dim, defaults.proj_output_dim, defaults.proj_layers) == (
        2048,
        2048,
        3,
    )


def test_mocov3_heads() -> None:
    # ResNet setup (moco/builder.py MoCo_ResNet, solo-learn resnet branch): 2-layer projector
    # ending in a BN without affine, predictor without a last BN.
    method = build("mocov3")
    assert _linear_shapes(method.projector) == [(128, 32), (32, 16)]
    assert _linear_shapes(method.predictor) == [(16, 32), (32, 16)]
    last = list(method.projector)[-1]
    assert isinstance(last, nn.BatchNorm1d) and not last.affine
    assert not isinstance(list(method.predictor)[-1], nn.BatchNorm1d)
    assert all(m.bias is None for m in method.projector if isinstance(m, nn.Linear))
    # ViT setup: 3 projector layers, predictor ends in a BN without affine
    vit = build("mocov3", proj_layers=3, pred_last_bn=True)
    assert _linear_shapes(vit.projector) == [(128, 32), (32, 32), (32, 16)]
    pred_last = list(vit.predictor)[-1]
    assert isinstance(pred_last, nn.BatchNorm1d) and not pred_last.affine


def test_mocov3_vit_patch_embedding_frozen() -> None:
    import timm

    from divssl.pretrain.methods.mocov3 import freeze_patch_embedding

    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0)
    assert freeze_patch_embedding(vit) == 2
    assert not any(p.requires_grad for p in vit.patch_embed.proj.parameters())
    assert all(p.requires_grad for p in vit.blocks.parameters())
    assert freeze_patch_embedding(build_backbone("convnet_tiny")[0]) == 0


def test_simclr_projector_without_bn() -> None:
    # solo-learn's SimCLR projector: Linear-ReLU-Linear, no BatchNorm
    method = build("simclr")
    assert not any(isinstance(m, nn.BatchNorm1d) for m in method.projector.modules())
    assert [type(m).__name__ for m in method.projector] == ["Linear", "ReLU", "Linear"]
    with_bn = build("simclr", proj_use_bn=True, proj_last_bn=True)
    kinds = [type(m).__name__ for m in with_bn.projector]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]


def test_two_view_methods_reject_local_crops() -> None:
    with pytest.raises(ValueError, match="2 views"):
        build("simclr").training_step(make_views(2, 1), None, 0, 5)
    with pytest.raises(ValueError, match="1 view"):
        build("supervised").training_step(make_views(2), make_labels(), 0, 5)
