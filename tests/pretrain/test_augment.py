"""Tests of batched view generation: shapes, ranges, determinism and per-op formulas.

Per-op numerics are checked against torchvision's single-image tensor kernels (one call per
sample with that sample's factor) and against formulas written out here.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from divssl.errors import ConfigError
from divssl.pretrain import augment as A

ALL_PRESETS = ["simclr", "byol", "dino", "swav", "supervised"]
EPS = 1e-5


def _images(batch: int = 6, height: int = 40, width: int = 36, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=g)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rand01(batch: int = 5, size: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=_gen(seed))


def _plain(size: int, **kwargs: float) -> A.ViewSpec:
    """A spec with every photometric op off unless switched on in kwargs."""
    base = {"jitter_p": 0.0, "gray_p": 0.0, "blur_p": 0.0, "solarize_p": 0.0, "flip_p": 0.0}
    base.update(kwargs)
    return A.ViewSpec(size, **base)


# ------------------------------------------------------------------------------ presets, shapes


@pytest.mark.parametrize("name", ALL_PRESETS)
@pytest.mark.parametrize("image_size", [32, 72])
def test_make_views_shapes_dtype_and_range(name: str, image_size: int) -> None:
    n_local = 3 if name in A.MULTI_CROP_PRESETS else 0
    preset = A.get_preset(name, image_size, n_local_crops=n_local)
    images = _images(height=image_size + 8, width=image_size + 3)
    views = A.make_views(images, preset, _gen())
    expected_local = max(8, round(image_size * 96 / 224))
    sizes = [image_size] * len(preset.global_views) + [expected_local] * n_local
    assert len(views) == preset.n_views == len(sizes)
    for view, size in zip(views, sizes, strict=True):
        assert view.shape == (6, 3, size, size)
        assert view.dtype == torch.float32
        pixels = A.denormalize(view)
        assert pixels.min() >= -EPS and pixels.max() <= 1 + EPS


def test_preset_view_counts() -> None:
    assert A.get_preset("simclr", 32).n_views == 2
    assert A.get_preset("byol", 32).n_views == 2
    assert A.get_preset("supervised", 32).n_views == 1
    dino = A.get_preset("dino", 224, n_local_crops=6)
    assert (len(dino.global_views), len(dino.local_views), dino.n_views) == (2, 6, 8)
    assert {v.size for v in dino.local_views} == {96}
    swav = A.get_preset("swav", 224, n_local_crops=4, local_size=64)
    assert [v.size for v in swav.views] == [224, 224, 64, 64, 64, 64]


def test_preset_settings_follow_papers() -> None:
    simclr = A.get_preset("simclr", 224)
    first, second = simclr.global_views
    assert first == second
    # SimCLR colour strength s = 1 (solo-learn symmetric.yaml: 0.8/0.8/0.8/0.2)
    assert (first.brightness, first.contrast, first.saturation, first.hue) == pytest.approx(
        (0.8, 0.8, 0.8, 0.2)
    )
    assert (first.jitter_p, first.gray_p, first.blur_p) == (0.8, 0.2, 0.5)

    byol = A.get_preset("byol", 224)
    one, two = byol.global_views
    assert (one.blur_p, two.blur_p, one.solarize_p, two.solarize_p) == (1.0, 0.1, 0.0, 0.2)
    for v in byol.global_views:
        assert (v.brightness, v.contrast, v.saturation, v.hue, v.jitter_p, v.gray_p) == (
            0.4,
            0.4,
            0.2,
            0.1,
            0.8,
            0.2,
        )

    dino = A.get_preset("dino", 224, n_local_crops=2)
    assert [v.scale for v in dino.global_views] == [(0.4, 1.0)] * 2
    assert [(v.blur_p, v.solarize_p) for v in dino.global_views] == [(1.0, 0.0), (0.1, 0.2)]
    assert all(v.scale == (0.05, 0.4) and v.blur_p == 0.5 for v in dino.local_views)
    # the DINO repo's global scale without multi-crop
    no_local = A.get_preset("dino", 224)
    assert [v.scale for v in no_local.global_views] == [(0.14, 1.0)] * 2

    vicreg = A.get_preset("vicreg", 224)  # solo-learn imagenet-100/vicreg.yaml
    assert [(v.scale, v.blur_p, v.solarize_p) for v in vicreg.views] == [((0.2, 1.0), 0.5, 0.1)] * 2
    assert [v.blur_p for v in A.get_preset("vicreg", 32).views] == [0.0, 0.0]  # cifar/vicreg.yaml

    swav = A.get_preset("swav", 224, n_local_crops=2)
    assert [v.scale for v in swav.views] == [(0.14, 1.0)] * 2 + [(0.05, 0.14)] * 2
    assert all(
        (v.brightness, v.contrast, v.saturation, v.hue) == pytest.approx((0.8, 0.8, 0.8, 0.2))
        for v in swav.views
    )

    (sup,) = A.get_preset("supervised", 224).views
    assert (sup.jitter_p, sup.gray_p, sup.blur_p, sup.solarize_p, sup.flip_p) == (0, 0, 0, 0, 0.5)


def test_blur_disabled_for_small_images_only_in_asymmetric_presets() -> None:
    # solo-learn's cifar asymmetric.yaml has gaussian_blur.prob 0.0; symmetric.yaml keeps 0.5
    for name in ALL_PRESETS:
        n_local = 2 if name in A.MULTI_CROP_PRESETS else 0
        small = A.get_preset(name, 64, n_local_crops=n_local)
        if name in A.ASYMMETRIC_PRESETS:
            assert all(v.blur_p == 0.0 for v in small.views)
        elif name != "supervised":
            assert all(v.blur_p == 0.5 for v in small.views)
    big = A.get_preset("dino", 96, n_local_crops=2)
    assert [v.blur_p for v in big.views] == [1.0, 0.1, 0.5, 0.5]


def test_get_preset_errors() -> None:
    with pytest.raises(ConfigError) as info:
        A.get_preset("mae", 32)
    assert info.value.field == "augment.preset"
    assert info.value.choices == sorted(A.PRESETS)
    with pytest.raises(ConfigError) as info:
        A.get_preset("simclr", 32, n_local_crops=2)
    assert info.value.field == "augment.n_local_crops"
    with pytest.raises(ConfigError):
        A.get_preset("dino", 32, n_local_crops=-1)
    with pytest.raises(ConfigError):
        A.get_preset("dino", 0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"scale": (0.5, 0.2)}, "augment.scale"),
        ({"ratio": (0.0, 1.0)}, "augment.ratio"),
        ({"flip_p": 1.5}, "augment.flip_p"),
        ({"hue": 0.6}, "augment.hue"),
        ({"brightness": -0.1}, "augment.brightness"),
        ({"blur_sigma": (0.0, 1.0)}, "augment.blur_sigma"),
        ({"solarize_threshold": 2.0}, "augment.solarize_threshold"),
    ],
)
def test_view_spec_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        A.ViewSpec(32, **kwargs)
    assert info.value.field == field


def test_make_views_rejects_bad_images() -> None:
    preset = A.get_preset("simclr", 16)
    with pytest.raises(ValueError, match="uint8"):
        A.make_views(torch.rand(2, 3, 16, 16), preset, _gen())
    with pytest.raises(ValueError, match="shape"):
        A.make_views(torch.zeros(2, 1, 16, 16, dtype=torch.uint8), preset, _gen())
    with pytest.raises(ValueError, match="non-empty"):
        A.make_views(torch.zeros(0, 3, 16, 16, dtype=torch.uint8), preset, _gen())


# ------------------------------------------------------------------------------ determinism


def test_same_seed_identical_different_seed_different() -> None:
    preset = A.get_preset("dino", 72, n_local_crops=2)  # > 64 px: blur is on
    images = _images(batch=4, height=76, width=76)
    a = A.make_views(images, preset, _gen(3))
    b = A.make_views(images, preset, _gen(3))
    c = A.make_views(images, preset, _gen(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(not torch.equal(x, z) for x, z in zip(a, c, strict=True))


def test_global_rng_is_not_used() -> None:
    preset = A.get_preset("byol", 32)
    images = _images()
    torch.manual_seed(0)
    a = A.make_views(images, preset, _gen(5))
    state = torch.get_rng_state()
    torch.manual_seed(123)
    b = A.make_views(images, preset, _gen(5))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    torch.manual_seed(0)
    A.make_views(images, preset, _gen(5))
    assert torch.equal(torch.get_rng_state(), state)  # global stream left untouched


def test_views_differ_across_samples_and_views() -> None:
    # the same image repeated must get different per-sample crops
    images = _images(batch=1).expand(8, -1, -1, -1).contiguous()
    v1, v2 = A.make_views(images, A.get_preset("simclr", 32), _gen())
    assert not torch.equal(v1[0], v1[1])
    assert not torch.equal(v1, v2)


def test_per_sample_probabilities() -> None:
    spec = A.ViewSpec(16, flip_p=0.5, jitter_p=0.8, gray_p=0.2, blur_p=0.1, solarize_p=0.3)
    p = A.sample_view_params(4000, 16, 16, spec, _gen())
    for mask, prob in [
        (p.flip, 0.5),
        (p.jitter, 0.8),
        (p.gray, 0.2),
        (p.blur, 0.1),
        (p.solarize, 0.3),
    ]:
        sd = math.sqrt(prob * (1 - prob) / 4000)
        assert abs(mask.float().mean().item() - prob) < 5 * sd
    assert torch.equal(p.jitter_order.sort(dim=1).values, torch.arange(4).expand(4000, 4))
    b, c, s, h = p.jitter_factors.unbind(dim=1)
    assert b.min() >= 0.6 and b.max() <= 1.4 and c.min() >= 0.6 and c.max() <= 1.4
    assert s.min() >= 0.8 and s.max() <= 1.2 and h.min() >= -0.1 and h.max() <= 0.1
    assert p.blur_sigma.min() >= 0.1 and p.blur_sigma.max() <= 2.0
    # every op is first in about a quarter of the samples
    counts = torch.bincount(p.jitter_order[:, 0], minlength=4).float() / 4000
    assert torch.all((counts - 0.25).abs() < 0.04)


# ------------------------------------------------------------------------------ geometry


def test_crop_boxes_in_bounds_and_in_ranges() -> None:
    height, width, scale, ratio = 50, 70, (0.08, 1.0), (3 / 4, 4 / 3)
    boxes = A.sample_crop_boxes(3000, height, width, scale, ratio, _gen())
    top, left, h, w = boxes.unbind(dim=1)
    assert boxes.dtype == torch.int64
    assert (top >= 0).all() and (left >= 0).all() and (h > 0).all() and (w > 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    # area and aspect ratio stay in range up to the rounding of w and h to whole pixels
    area = (h * w).double() / (height * width)
    lo_area = ((h - 0.5) * (w - 0.5)).double() / (height * width)
    hi_area = ((h + 0.5) * (w + 0.5)).double() / (height * width)
    assert (hi_area >= scale[0]).all() and (lo_area <= scale[1]).all()
    aspect_hi = (w + 0.5).double() / (h - 0.5)
    aspect_lo = (w - 0.5).double() / (h + 0.5)
    assert (aspect_hi >= ratio[0]).all() and (aspect_lo <= ratio[1]).all()
    assert area.min() < 0.15 and area.max() > 0.8  # the range is actually covered
    # offsets are spread over the free range
    assert top.float().std() > 1 and left.float().std() > 1


def test_crop_box_fallback_is_centre_crop() -> None:
    # scale 1 with ratio 1 cannot fit in a 40 x 60 image: torchvision's fallback keeps the full
    # height and a width clamped to the max ratio (40), centred.
    boxes = A.sample_crop_boxes(5, 40, 60, (1.0, 1.0), (1.0, 1.0), _gen())
    assert torch.equal(boxes, torch.tensor([[0, 10, 40, 40]] * 5))
    # a square image at scale 1, ratio 1 always finds the full image
    boxes = A.sample_crop_boxes(5, 30, 30, (1.0, 1.0), (1.0, 1.0), _gen())
    assert torch.equal(boxes, torch.tensor([[0, 0, 30, 30]] * 5))


def test_full_crop_is_identity_and_flip_matches_torch_flip() -> None:
    images = _images(height=24, width=24)
    source = images.float() / 255
    full = {"scale": (1.0, 1.0), "ratio": (1.0, 1.0)}
    (same,) = A.make_views(images, A.AugmentPreset([_plain(24, **full)]), _gen())
    (flipped,) = A.make_views(images, A.AugmentPreset([_plain(24, flip_p=1.0, **full)]), _gen())
    torch.testing.assert_close(A.denormalize(same), source, atol=1e-5, rtol=0)
    torch.testing.assert_close(flipped, torch.flip(same, dims=[-1]), atol=1e-6, rtol=0)


def test_resized_crop_matches_crop_then_resize() -> None:
    x = _rand01(batch=2, size=16)
    boxes = torch.tensor([[2, 4, 8, 8], [0, 0, 16, 8]])
    out = A.resized_crop(x, boxes, torch.tensor([False, True]), 8)
    torch.testing.assert_close(out[0], x[0, :, 2:10, 4:12], atol=1e-6, rtol=0)
    # a 16 x 8 box resized to 8 x 8: rows are averaged in pairs (bilinear at half-pixel centres)
    ref = 0.5 * (x[1, :, 0::2, 0:8] + x[1, :, 1::2, 0:8])
    torch.testing.assert_close(out[1], torch.flip(ref, dims=[-1]), atol=1e-6, rtol=0)


def test_constant_image_stays_constant_under_crop_flip_blur() -> None:
    colour = torch.tensor([200, 30, 90], dtype=torch.uint8)
    images = colour.view(1, 3, 1, 1).expand(4, 3, 50, 60).contiguous()
    spec = _plain(40, flip_p=0.5, blur_p=1.0, scale=(0.05, 1.0))
    (view,) = A.make_views(images, A.AugmentPreset([spec]), _gen())
    expected = (colour.float() / 255).view(1, 3, 1, 1).expand_as(view)
    torch.testing.assert_close(A.denormalize(view), expected, atol=EPS, rtol=0)


# ------------------------------------------------------------------------------ colour


def _per_sample_reference(x: torch.Tensor, factors: torch.Tensor, op) -> torch.Tensor:
    return torch.stack([op(x[i], float(factors[i])) for i in range(x.shape[0])])


def test_brightness_matches_formula_and_torchvision() -> None:
    x = _rand01()
    f = torch.tensor([0.0, 0.6, 1.0, 1.3, 1.4])
    out = A.adjust_brightness(x, f)
    torch.testing.assert_close(out, (x * f.view(-1, 1, 1, 1)).clamp(0, 1))
    torch.testing.assert_close(out, _per_sample_reference(x, f, TF.adjust_brightness))


def test_contrast_matches_formula_and_torchvision() -> None:
    x = _rand01()
    f = torch.tensor([0.0, 0.6, 1.0, 1.3, 1.4])
    out = A.adjust_contrast(x, f)
    luma = 0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    mean = luma.mean(dim=(1, 2)).view(-1, 1, 1, 1)
    fv = f.view(-1, 1, 1, 1)
    torch.testing.assert_close(out, (fv * x + (1 - fv) * mean).clamp(0, 1))
    torch.testing.assert_close(out, _per_sample_reference(x, f, TF.adjust_contrast))
    assert torch.equal(A.adjust_contrast(x, torch.ones(5)), x)  # f = 1 is exact


def test_saturation_matches_formula_and_torchvision() -> None:
    x = _rand01()
    f = torch.tensor([0.0, 0.6, 1.0, 1.3, 1.8])
    out = A.adjust_saturation(x, f)
    luma = (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    fv = f.view(-1, 1, 1, 1)
    torch.testing.assert_close(out, (fv * x + (1 - fv) * luma).clamp(0, 1))
    torch.testing.assert_close(out, _per_sample_reference(x, f, TF.adjust_saturation))
    assert torch.allclose(out[0], luma[0].expand(3, -1, -1))  # f = 0 is grayscale


def test_hue_matches_torchvision() -> None:
    x = _rand01(batch=7)
    x[:, :, 0, :] = x[:, :1, 0, :]  # a row of grays
    x[:, 1, 1, :] = x[:, 0, 1, :]  # ties between the largest channels
    x[:, 2, 2, :] = x[:, 1, 2, :]
    shift = torch.tensor([-0.5, -0.3, -0.1, 0.0, 0.05, 0.25, 0.5])
    out = A.adjust_hue(x, shift)
    ref = _per_sample_reference(x, shift, TF.adjust_hue)
    torch.testing.assert_close(out, ref, atol=1e-3, rtol=0)
    assert (out - ref).abs().max() < 1e-5
    torch.testing.assert_close(out[:, :, 0], x[:, :, 0])  # grays are unchanged


def test_hue_on_hand_computed_pixels() -> None:
    # pure red shifted by 1/3 turn is pure green, by -1/3 pure blue; HSV s and v are kept
    red = torch.tensor([0.8, 0.2, 0.2]).view(1, 3, 1, 1).expand(3, 3, 1, 1)
    out = A.adjust_hue(red, torch.tensor([1 / 3, -1 / 3, 0.5])).flatten(1)
    expected = torch.tensor([[0.2, 0.8, 0.2], [0.2, 0.2, 0.8], [0.2, 0.8, 0.8]])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_color_jitter_applies_ops_in_per_sample_order() -> None:
    x = _rand01(batch=4)
    factors = torch.tensor(
        [[1.3, 0.7, 1.2, 0.08], [0.6, 1.4, 0.8, -0.1], [1.1, 0.9, 0.5, 0.03], [0.7, 1.2, 1.1, 0.1]]
    )
    order = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]])
    apply = torch.tensor([True, True, True, False])
    out = A.color_jitter(x.clone(), apply, order, factors)
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for i in range(3):
        ref = x[i]
        for k in order[i].tolist():
            ref = ops[k](ref, float(factors[i, k]))
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)
    assert torch.equal(out[3], x[3])  # not applied: bitwise unchanged


def test_grayscale_equal_channels_and_luma() -> None:
    pixel = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1)
    luma = 0.2989 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6  # = 0.36298
    out = A.grayscale(pixel, torch.tensor([True]))
    torch.testing.assert_close(out.flatten(), torch.full((3,), luma))
    assert torch.equal(A.grayscale(pixel, torch.tensor([False])), pixel)
    images = _images(height=20, width=20)
    (view,) = A.make_views(images, A.AugmentPreset([_plain(16, gray_p=1.0)]), _gen())
    pixels = A.denormalize(view)
    torch.testing.assert_close(pixels[:, 0], pixels[:, 1], atol=1e-6, rtol=0)
    torch.testing.assert_close(pixels[:, 0], pixels[:, 2], atol=1e-6, rtol=0)


def test_solarize_formula() -> None:
    x = torch.tensor([0.0, 0.2, 0.49, 0.5, 0.51, 0.9, 1.0]).view(1, 1, 1, 7).expand(2, 3, 1, 7)
    out = A.solarize(x, torch.tensor([True, False]), 0.5)
    expected = torch.tensor([0.0, 0.2, 0.49, 0.5, 0.49, 0.1, 0.0])
    torch.testing.assert_close(out[0, 0, 0], expected)
    assert torch.equal(out[1], x[1])
    torch.testing.assert_close(out[:1], TF.solarize(x[:1], 0.5))


# ------------------------------------------------------------------------------ blur


def test_blur_kernel_size() -> None:
    assert A.blur_kernel_size(224) == 23  # SimCLR / BYOL: 23 x 23 at 224 px
    assert A.blur_kernel_size(96) == 9
    assert A.blur_kernel_size(32) == 3
    assert A.blur_kernel_size(1) == 1  # nothing to blur in a 1 px view
    assert all(A.blur_kernel_size(s) % 2 == 1 for s in range(1, 300))


def test_gaussian_kernel_matches_formula() -> None:
    sigma = torch.tensor([0.5, 1.7])
    kernel = A.gaussian_kernel1d(sigma, 5)
    t = torch.arange(-2.0, 3.0)
    ref = torch.exp(-(t**2) / (2 * sigma[:, None] ** 2))
    torch.testing.assert_close(kernel, ref / ref.sum(dim=1, keepdim=True))


def test_blur_matches_torchvision_per_sample() -> None:
    x = _rand01(batch=3, size=20)
    sigma = torch.tensor([0.3, 1.0, 2.0])
    out = A.gaussian_blur(x, sigma, 7)
    ref = torch.stack([TF.gaussian_blur(x[i], [7, 7], [float(sigma[i])]) for i in range(3)])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_blur_in_view_only_on_selected_samples() -> None:
    spec = _plain(32, blur_p=0.5, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    images = _images(batch=16, height=32, width=32)
    x = images.float() / 255
    params = A.sample_view_params(16, 32, 32, spec, _gen())
    out = A.apply_view(x, params, spec)
    assert 0 < params.blur.sum() < 16
    for i in range(16):
        if params.blur[i]:
            ref = TF.gaussian_blur(x[i], [3, 3], [float(params.blur_sigma[i])])
            torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)
        else:
            torch.testing.assert_close(out[i], x[i], atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------ normalisation
# (the evaluation transform lives in divssl.evaluate.features: tests/evaluate/
# test_eval_features_transform.py)


def test_normalize_round_trip() -> None:
    x = _rand01()
    torch.testing.assert_close(A.denormalize(A.normalize(x)), x)
    mean = torch.tensor(A.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(A.IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(A.normalize(x), (x - mean) / std)


def test_normalize_with_given_statistics_and_round_trip() -> None:
    x = _rand01()
    norm = A.Normalization((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    for c, (m, sd) in enumerate(zip(norm.mean, norm.std, strict=True)):
        torch.testing.assert_close(A.normalize(x, norm)[:, c], (x[:, c] - m) / sd)
    torch.testing.assert_close(A.denormalize(A.normalize(x, norm), norm), x)
    assert A.Normalization() == A.IMAGENET_NORM
    assert A.Normalization([0, 0, 0], [1, 1, 1]).mean == (0.0, 0.0, 0.0)  # lists from YAML


@pytest.mark.parametrize(
    ("mean", "std", "field"),
    [
        ((0.5, 0.5), (1.0, 1.0, 1.0), "augment.mean"),
        ((0.5, 0.5, float("nan")), (1.0, 1.0, 1.0), "augment.mean"),
        ((0.5, 0.5, 0.5), (1.0, 0.0, 1.0), "augment.std"),
        ((0.5, 0.5, 0.5), (1.0, -1.0, 1.0), "augment.std"),
        ((0.5, 0.5, 0.5), "abc", "augment.std"),
    ],
)
def test_normalization_rejects_bad_statistics(mean, std, field) -> None:
    with pytest.raises(ConfigError) as err:
        A.Normalization(mean, std)
    assert err.value.field == field


def test_views_are_normalised_with_the_presets_statistics() -> None:
    images = _images(batch=3, height=24, width=24)
    norm = A.Normalization((0.1, 0.2, 0.3), (0.5, 0.25, 2.0))
    plain = A.AugmentPreset([_plain(24)])
    (imagenet,) = A.make_views(images, plain, _gen(7))
    (given,) = A.make_views(images, dataclasses.replace(plain, norm=norm), _gen(7))
    # same draws, same pixels; only the normalisation differs
    torch.testing.assert_close(
        A.denormalize(given, norm), A.denormalize(imagenet), atol=1e-5, rtol=0
    )
    assert not torch.allclose(given, imagenet)
    preset = A.get_preset("simclr", 16, norm=norm)
    assert preset.norm == norm and A.get_preset("byol", 16, norm=norm).norm == norm
    assert A.get_preset("simclr", 16).norm == A.IMAGENET_NORM


def test_run_normalization_reads_the_config_and_defaults_to_imagenet() -> None:
    cfg = {"augment": {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}}
    assert A.run_normalization(cfg) == A.Normalization((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    assert A.run_normalization({}) == A.IMAGENET_NORM  # a run dir from before the keys
    assert A.run_normalization({"augment": {"preset": "simclr"}}) == A.IMAGENET_NORM


def test_view_spec_is_replaceable() -> None:
    spec = A.get_preset("byol", 32).global_views[1]
    assert dataclasses.replace(spec, solarize_p=0.0).solarize_p == 0.0


# ------------------------------------------------------------------------------ whole images


def _corner_hits(boxes: torch.Tensor, height: int, width: int) -> dict[str, int]:
    top, left, h, w = boxes.unbind(dim=1)
    at_top, at_left = top == 0, left == 0
    at_bottom, at_right = top + h == height, left + w == width
    return {
        "top-left": int((at_top & at_left).sum()),
        "top-right": int((at_top & at_right).sum()),
        "bottom-left": int((at_bottom & at_left).sum()),
        "bottom-right": int((at_bottom & at_right).sum()),
    }


def test_crops_reach_all_four_corners_of_a_non_square_image() -> None:
    # A wide and a tall image padded into one 100 x 100 batch: every box stays inside its own
    # image and boxes touch all four corners of each (a centre-cropped square store never sees
    # the 30 px at either end of the long side).
    n = 20000
    extents = torch.tensor([[40, 100], [100, 40]]).repeat(n // 2, 1)
    boxes = A.sample_crop_boxes(
        n, extents[:, 0], extents[:, 1], (0.08, 1.0), (3 / 4, 4 / 3), _gen()
    )
    top, left, h, w = boxes.unbind(dim=1)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= extents[:, 0]).all() and (left + w <= extents[:, 1]).all()
    for row, (height, width) in enumerate([(40, 100), (100, 40)]):
        hits = _corner_hits(boxes[row::2], height, width)
        assert min(hits.values()) > 0, hits
        along = (left if width > height else top)[row::2]
        assert int(along.min()) == 0


def _relative(boxes: torch.Tensor, height: int, width: int) -> dict[str, object]:
    """Area fraction and box centre relative to the image's own extent."""
    top, left, h, w = boxes.double().unbind(dim=1)
    return {
        "area fraction": (h * w / (height * width)).numpy(),
        "relative centre y": ((top + h / 2) / height).numpy(),
        "relative centre x": ((left + w / 2) / width).numpy(),
    }


def test_square_and_non_square_sources_get_torchvision_crops_of_their_own_extent() -> None:
    import torchvision.transforms as T
    from scipy.stats import ks_2samp

    n, scale, ratio = 6000, (0.08, 1.0), (3 / 4, 4 / 3)
    shapes = [(64, 64), (48, 85)]
    extents = torch.tensor(shapes).repeat(n, 1)
    boxes = A.sample_crop_boxes(2 * n, extents[:, 0], extents[:, 1], scale, ratio, _gen(1))
    torch.manual_seed(0)
    for row, (height, width) in enumerate(shapes):
        ours = boxes[row::2].double()
        ref = torch.tensor(
            [
                T.RandomResizedCrop.get_params(torch.empty(3, height, width), scale, ratio)
                for _ in range(n)
            ],
            dtype=torch.float64,
        )
        stats_ours, stats_ref = _relative(ours, height, width), _relative(ref, height, width)
        for name in stats_ours:
            result = ks_2samp(stats_ours[name], stats_ref[name])
            assert result.pvalue > 1e-3, (height, width, name, result)
        # Crops are centred on the image on average, whatever its shape.
        assert abs(stats_ours["relative centre x"].mean() - 0.5) < 0.01
        assert abs(stats_ours["relative centre y"].mean() - 0.5) < 0.01


def test_a_box_depends_only_on_its_own_image_extent() -> None:
    mixed = torch.tensor([[64, 64], [48, 85], [64, 64], [20, 30]])
    alike = torch.tensor([[64, 64]] * 4)
    a = A.sample_crop_boxes(4, mixed[:, 0], mixed[:, 1], (0.08, 1.0), (3 / 4, 4 / 3), _gen(2))
    b = A.sample_crop_boxes(4, alike[:, 0], alike[:, 1], (0.08, 1.0), (3 / 4, 4 / 3), _gen(2))
    assert torch.equal(a[[0, 2]], b[[0, 2]])
    # and a full-size extent is the plain integer path, box for box
    c = A.sample_crop_boxes(4, 64, 64, (0.08, 1.0), (3 / 4, 4 / 3), _gen(2))
    assert torch.equal(b, c)


def test_fallback_per_sample_matches_the_scalar_rule() -> None:
    heights = torch.tensor([40, 60, 30, 7, 100])
    widths = torch.tensor([60, 40, 30, 50, 3])
    boxes = A.sample_crop_boxes(5, heights, widths, (1.0, 1.0), (1.0, 1.0), _gen())
    for row, (height, width) in enumerate(zip(heights.tolist(), widths.tolist(), strict=True)):
        alone = A.sample_crop_boxes(1, height, width, (1.0, 1.0), (1.0, 1.0), _gen())
        assert torch.equal(boxes[row], alone[0])


def test_views_of_a_padded_image_equal_views_of_the_image_alone() -> None:
    import numpy as np

    from divssl.data.cache import StoredPool

    rng = np.random.default_rng(0)
    shapes = [(30, 50), (60, 40)]
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]
    pool = StoredPool(
        np.concatenate([im.reshape(-1) for im in images]),
        np.array([0, images[0].size]),
        np.array(shapes),
    )
    padded, extents = pool.gather(np.array([0, 1]))
    assert padded.shape == (2, 60, 50, 3) and extents.tolist() == [list(s) for s in shapes]
    preset = A.get_preset("simclr", 24)
    small = A.AugmentPreset([_plain(24, scale=(0.01, 0.05))])  # upsampled crops touch edges
    for row, image in enumerate(images):
        one = torch.from_numpy(padded[row : row + 1]).permute(0, 3, 1, 2).contiguous()
        ext = torch.from_numpy(extents[row : row + 1])
        alone = torch.from_numpy(image[None]).permute(0, 3, 1, 2).contiguous()
        for p in (preset, small):
            for seed in range(20):
                got = A.make_views(one, p, _gen(seed), extents=ext)
                want = A.make_views(alone, p, _gen(seed))
                for g, w in zip(got, want, strict=True):
                    torch.testing.assert_close(g, w, atol=1e-4, rtol=0)


def test_bad_extents_are_rejected() -> None:
    images = _images(batch=2, height=10, width=12)
    preset = A.AugmentPreset([_plain(8)])
    with pytest.raises(ValueError, match="shape"):
        A.make_views(images, preset, _gen(), extents=torch.tensor([[10, 12]]))
    with pytest.raises(ValueError, match="extents must lie"):
        A.make_views(images, preset, _gen(), extents=torch.tensor([[10, 12], [11, 12]]))


def test_upsampled_corner_crops_read_no_padding_beyond_the_border() -> None:
    import numpy as np

    from divssl.data.cache import StoredPool

    rng = np.random.default_rng(3)
    shapes = [(9, 14), (20, 6)]
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]
    pool = StoredPool(
        np.concatenate([im.reshape(-1) for im in images]),
        np.array([0, images[0].size]),
        np.array(shapes),
    )
    padded, _ = pool.gather(np.array([0, 1]))
    for row, (h, w) in enumerate(shapes):
        one = torch.from_numpy(padded[row : row + 1]).permute(0, 3, 1, 2).float()
        alone = torch.from_numpy(images[row][None]).permute(0, 3, 1, 2).float()
        # 3 x 3 boxes in all four corners, upsampled to 24 px, with and without flips
        for top, left in ((0, 0), (0, w - 3), (h - 3, 0), (h - 3, w - 3)):
            boxes = torch.tensor([[top, left, 3, 3]])
            for flip in (False, True):
                f = torch.tensor([flip])
                torch.testing.assert_close(
                    A.resized_crop(one, boxes, f, 24),
                    A.resized_crop(alone, boxes, f, 24),
                    atol=1e-3,
                    rtol=0,
                )
