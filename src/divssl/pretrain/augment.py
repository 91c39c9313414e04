"""Batched view generation on the training device, with per-method presets.

A *view* is one augmented crop of a source image. ``make_views`` turns a uint8 batch
``(B, 3, H, W)`` into a list of float32 views, global crops first, normalised with the preset's
:class:`Normalization` (the run's ``augment.mean`` / ``augment.std``; ImageNet statistics unless a
recipe or the user says otherwise). Each view follows a :class:`ViewSpec`, applied in the order
of the papers' pipelines: random resized crop -> horizontal flip -> colour jitter (p) -> grayscale
(p) -> Gaussian blur (p) -> solarization (p) -> normalise.

Why this is hand-written rather than ``torchvision.transforms.v2``: v2 transforms applied to a
batch tensor draw *one* parameter set for the whole batch (every image gets the same crop, the same
jitter factors), and they draw from the global RNG. SSL needs independent parameters per sample,
and the study needs them drawn from an explicit ``torch.Generator`` so that the augmentation seed
is separate from the order and initialisation seeds and a resumed run replays the exact views. So
every random parameter here is drawn per sample from the caller's generator, and every op is
batched over samples (no Python loop over the batch), on whatever device the images live on. The
per-op formulas follow torchvision's tensor kernels (tests compare against them).

Presets (``get_preset``) follow the papers: SimCLR (symmetric, colour strength s = 1), BYOL
(asymmetric blur / solarization; also the recipe of MoCo v3 and Barlow Twins), VICReg, DINO and
SwAV multi-crop, and a supervised crop + flip. Known difference to torchvision: the resize inside
the random resized crop is bilinear ``grid_sample`` without antialiasing.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from divssl.errors import ConfigError, unknown_choice

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# ITU-R 601-2 luma weights, as in torchvision's rgb_to_grayscale.
LUMA_WEIGHTS: tuple[float, float, float] = (0.2989, 0.587, 0.114)

# solo-learn's CIFAR *asymmetric* preset switches Gaussian blur off (gaussian_blur.prob: 0.0 in
# scripts/pretrain/cifar/augmentations/asymmetric.yaml); its symmetric preset keeps p = 0.5.
# ``get_preset`` applies this to the asymmetric presets (byol, dino) only.
BLUR_MAX_DISABLED_SIZE = 64
ASYMMETRIC_PRESETS = ("byol", "dino")

_CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 boxes before the centre crop

# Columns of the per-sample uniform draws in ``sample_view_params`` (after the crop draws).
_U_FLIP, _U_JITTER, _U_GRAY, _U_BLUR, _U_SIGMA, _U_SOLARIZE = range(6)
_U_ORDER = slice(6, 10)  # argsort of 4 uniforms: a random order of the 4 jitter ops
_U_FACTORS = slice(10, 14)  # brightness, contrast, saturation, hue
_N_VIEW_DRAWS = 14


@dataclass(frozen=True)
class Normalization:
    """Per-channel input normalisation ``(x - mean) / std`` of [0, 1] intensities.

    Attributes:
        mean: (R, G, B) means.
        std: (R, G, B) standard deviations, each > 0.

    Raises:
        ConfigError: not three finite values, or a non-positive std (named ``augment.mean`` /
            ``augment.std``, the config keys they come from).
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        for name, values in (("mean", self.mean), ("std", self.std)):
            ok = isinstance(values, (tuple, list)) and len(values) == 3
            if not ok or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in values
            ):
                raise ConfigError(f"augment.{name}", f"must be 3 finite numbers, got {values!r}")
            object.__setattr__(self, name, tuple(float(v) for v in values))
        if min(self.std) <= 0:
            raise ConfigError("augment.std", f"every std must be > 0, got {self.std!r}")

    def tensors(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and std as (1, 3, 1, 1) tensors of ``x``'s dtype and device."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return mean, std


# The statistics every run used before issue 10, and that runs whose config.yaml has no
# augment.mean / augment.std still use: timm's IMAGENET_DEFAULT_MEAN / _STD.
IMAGENET_NORM = Normalization()


@dataclass(frozen=True)
class ViewSpec:
    """How to make one view.

    Attributes:
        size: output side length in pixels (views are square).
        scale: range of the crop area as a fraction of the source image area.
        ratio: range of the crop aspect ratio (width / height), sampled log-uniformly.
        flip_p: probability of a horizontal flip.
        jitter_p: probability of applying colour jitter.
        brightness: brightness factor drawn from U[max(0, 1 - b), 1 + b].
        contrast: contrast factor drawn from U[max(0, 1 - c), 1 + c].
        saturation: saturation factor drawn from U[max(0, 1 - s), 1 + s].
        hue: hue shift drawn from U[-h, h], in turns (at most 0.5).
        gray_p: probability of converting to grayscale (3 equal channels).
        blur_p: probability of a Gaussian blur.
        blur_sigma: range of the blur standard deviation, in output pixels.
        solarize_p: probability of solarization.
        solarize_threshold: pixels >= threshold (in [0, 1] units) become 1 - pixel.
    """

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    gray_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 1:
            raise ConfigError("augment.size", f"must be a positive integer, got {self.size!r}")
        lo, hi = self.scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigError("augment.scale", f"need 0 < min <= max <= 1, got {self.scale}")
        lo, hi = self.ratio
        if not 0.0 < lo <= hi:
            raise ConfigError("augment.ratio", f"need 0 < min <= max, got {self.ratio}")
        for name in ("flip_p", "jitter_p", "gray_p", "blur_p", "solarize_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"augment.{name}", f"a probability in [0, 1], got {value}")
        for name in ("brightness", "contrast", "saturation"):
            value = getattr(self, name)
            if value < 0.0:
                raise ConfigError(f"augment.{name}", f"must be >= 0, got {value}")
        if not 0.0 <= self.hue <= 0.5:
            raise ConfigError("augment.hue", f"must be in [0, 0.5], got {self.hue}")
        lo, hi = self.blur_sigma
        if not 0.0 < lo <= hi:
            raise ConfigError("augment.blur_sigma", f"need 0 < min <= max, got {self.blur_sigma}")
        if not 0.0 <= self.solarize_threshold <= 1.0:
            raise ConfigError(
                "augment.solarize_threshold", f"must be in [0, 1], got {self.solarize_threshold}"
            )


@dataclass
class AugmentPreset:
    """The views one method makes of each source image.

    Attributes:
        global_views: full-resolution views (the two "global crops" of DINO / SwAV).
        local_views: small multi-crop views; empty for two-view methods.
        norm: the normalisation of every view (the run's ``augment.mean`` / ``augment.std``).
    """

    global_views: list[ViewSpec]
    local_views: list[ViewSpec] = field(default_factory=list)
    norm: Normalization = IMAGENET_NORM

    @property
    def n_views(self) -> int:
        """Number of views per source image (global + local)."""
        return len(self.global_views) + len(self.local_views)

    @property
    def views(self) -> list[ViewSpec]:
        """All view specs, global first (the order of ``make_views``' output)."""
        return [*self.global_views, *self.local_views]


@dataclass
class ViewParams:
    """Per-sample random parameters of one view (all tensors on the images' device).

    Attributes:
        boxes: (B, 4) int64 crop boxes ``(top, left, height, width)`` in source pixels.
        flip: (B,) bool horizontal flips.
        jitter: (B,) bool, whether colour jitter is applied.
        jitter_order: (B, 4) int64, a permutation of 0..3 per sample (0 brightness, 1 contrast,
            2 saturation, 3 hue), the order the jitter ops are applied in.
        jitter_factors: (B, 4) float32 brightness, contrast, saturation factors and hue shift.
        gray: (B,) bool grayscale conversions.
        blur: (B,) bool Gaussian blurs.
        blur_sigma: (B,) float32 blur standard deviations (output pixels).
        solarize: (B,) bool solarizations.
    """

    boxes: Tensor
    flip: Tensor
    jitter: Tensor
    jitter_order: Tensor
    jitter_factors: Tensor
    gray: Tensor
    blur: Tensor
    blur_sigma: Tensor
    solarize: Tensor


# --------------------------------------------------------------------------------------------
# Geometry: random resized crop and flip as one affine grid per sample
# --------------------------------------------------------------------------------------------


def sample_crop_boxes(
    batch: int,
    height: int | Tensor,
    width: int | Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> Tensor:
    """Draw random-resized-crop boxes like torchvision, vectorised over samples and attempts.

    Per sample, 10 candidate boxes are drawn (area fraction ~ U[scale], log aspect ratio ~
    U[log ratio]); the first that fits inside the image is kept, with a uniform integer offset.
    Samples where none fits get torchvision's fallback: the largest centred box whose aspect
    ratio is clamped into ``ratio``. Every quantity is relative to each sample's own extent, so
    images of different shapes in one batch (whole images stored with their aspect ratio,
    padded to the batch's largest extent) get torchvision's distribution over their true area.

    Args:
        batch: number of samples B.
        height: source image height H, an int or a (B,) int64 tensor of per-sample heights.
        width: source image width W, an int or a (B,) int64 tensor of per-sample widths.
        scale: (min, max) area fraction.
        ratio: (min, max) aspect ratio width / height.
        generator: source of all randomness; its device is the output device.

    Returns:
        (B, 4) int64 boxes ``(top, left, h, w)`` with ``0 <= top``, ``top + h <= H``,
        ``0 <= left``, ``left + w <= W`` (per-sample H, W).
    """
    device = generator.device
    u = torch.rand(batch, 2 * _CROP_ATTEMPTS + 2, generator=generator, device=device)
    u_area, u_ratio = u[:, :_CROP_ATTEMPTS], u[:, _CROP_ATTEMPTS : 2 * _CROP_ATTEMPTS]
    u_top, u_left = u[:, 2 * _CROP_ATTEMPTS], u[:, 2 * _CROP_ATTEMPTS + 1]

    height_max: int | Tensor
    width_max: int | Tensor
    fb_h: int | Tensor
    fb_w: int | Tensor
    if isinstance(height, Tensor) or isinstance(width, Tensor):
        heights = torch.as_tensor(height, dtype=torch.int64, device=device).expand(batch)
        widths = torch.as_tensor(width, dtype=torch.int64, device=device).expand(batch)
        area: float | Tensor = (heights * widths).to(torch.float32)[:, None]
        fb_h, fb_w = _fallback_crop_sizes(heights, widths, ratio)
        height_max, width_max = heights, widths
    else:
        area = float(height * width)
        fb_h, fb_w = _fallback_crop_size(height, width, ratio)
        height_max, width_max = height, width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    target_area = area * (scale[0] + (scale[1] - scale[0]) * u_area)  # (B, 10)
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u_ratio)  # (B, 10)
    w = torch.round(torch.sqrt(target_area * aspect)).long()
    h = torch.round(torch.sqrt(target_area / aspect)).long()
    if isinstance(height_max, Tensor) and isinstance(width_max, Tensor):
        valid = (w > 0) & (w <= width_max[:, None]) & (h > 0) & (h <= height_max[:, None])
    else:
        valid = (w > 0) & (w <= width_max) & (h > 0) & (h <= height_max)
    first = valid.int().argmax(dim=1, keepdim=True)  # index of the first valid attempt
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)

    found = valid.any(dim=1)
    h = torch.where(found, h, fb_h if isinstance(fb_h, Tensor) else torch.full_like(h, fb_h))
    w = torch.where(found, w, fb_w if isinstance(fb_w, Tensor) else torch.full_like(w, fb_w))
    top = torch.minimum(
        torch.floor(u_top * (height_max - h + 1)).long(), torch.as_tensor(height_max - h)
    )
    left = torch.minimum(
        torch.floor(u_left * (width_max - w + 1)).long(), torch.as_tensor(width_max - w)
    )
    top = torch.where(found, top, (height_max - h) // 2)
    left = torch.where(found, left, (width_max - w) // 2)
    return torch.stack([top, left, h, w], dim=1)


def _fallback_crop_size(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's centre-crop fallback: the whole image, aspect ratio clamped into ``ratio``."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        h, w = height, width
    return h, w


def _fallback_crop_sizes(
    heights: Tensor, widths: Tensor, ratio: tuple[float, float]
) -> tuple[Tensor, Tensor]:
    """:func:`_fallback_crop_size` per sample: (B,) int64 heights, widths -> (B,) h, w.

    Computed in float64 with round-half-to-even, as Python's ``round`` in the scalar version.
    """
    hf, wf = heights.double(), widths.double()
    in_ratio = wf / hf
    lo, hi = min(ratio), max(ratio)
    tall, wide = in_ratio < lo, in_ratio > hi
    h = torch.where(tall, torch.round(wf / lo).long(), heights)
    w = torch.where(wide, torch.round(hf * hi).long(), widths)
    return h, w


def resized_crop(x: Tensor, boxes: Tensor, flip: Tensor, size: int) -> Tensor:
    """Crop each sample to its box, resize to ``size`` and optionally flip, in one resampling.

    The box is mapped to an affine sampling grid (the flip negates its x scale) and the image is
    resampled with bilinear ``grid_sample`` (``align_corners=False``, border padding), so the box
    edges land exactly on the output edges.

    Args:
        x: (B, C, H, W) float images.
        boxes: (B, 4) int64 ``(top, left, h, w)`` in source pixels.
        flip: (B,) bool horizontal flips.
        size: output side length s.

    Returns:
        (B, C, s, s) float views.
    """
    batch, channels, height, width = x.shape
    top, left, h, w = boxes.to(x.dtype).unbind(dim=1)
    scale_x = torch.where(flip, -w / width, w / width)
    scale_y = h / height
    centre_x = (2.0 * left + w) / width - 1.0
    centre_y = (2.0 * top + h) / height - 1.0
    zeros = torch.zeros_like(scale_y)
    theta = torch.stack(
        [
            torch.stack([scale_x, zeros, centre_x], dim=1),
            torch.stack([zeros, scale_y, centre_y], dim=1),
        ],
        dim=1,
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, [batch, channels, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# --------------------------------------------------------------------------------------------
# Colour: per-sample factors, formulas of torchvision's tensor kernels
# --------------------------------------------------------------------------------------------


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """ITU-R 601-2 luma ``0.2989 R + 0.587 G + 0.114 B``.

    Args:
        x: (B, 3, H, W) float images in [0, 1].

    Returns:
        (B, 1, H, W) luma.
    """
    r, g, b = x.unbind(dim=1)
    wr, wg, wb = LUMA_WEIGHTS
    return r.mul(wr).add_(g, alpha=wg).add_(b, alpha=wb).unsqueeze(1)


def _per_sample(values: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, 1) for broadcasting over images."""
    return values.view(-1, 1, 1, 1)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """``clamp(f * x + (1 - f) * other, 0, 1)`` with per-sample f of shape (B,).

    Written as two products (not ``lerp``) so that f = 1 returns ``x`` bit for bit.
    """
    f = _per_sample(factor)
    return (f * x + (1.0 - f) * other).clamp_(0.0, 1.0)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """Scale intensities: ``clamp(f * x, 0, 1)``.

    Args:
        x: (B, 3, H, W) float images in [0, 1].
        factor: (B,) non-negative factors (1 = identity).
    """
    return (_per_sample(factor) * x).clamp_(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the image's mean luma: ``clamp(f * x + (1 - f) * mean(gray(x)), 0, 1)``.

    Args:
        x: (B, 3, H, W) float images in [0, 1].
        factor: (B,) non-negative factors (1 = identity).
    """
    mean = rgb_to_grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean, factor)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the grayscale image: ``clamp(f * x + (1 - f) * gray(x), 0, 1)``.

    Args:
        x: (B, 3, H, W) float images in [0, 1].
        factor: (B,) non-negative factors (1 = identity).
    """
    return _blend(x, rgb_to_grayscale(x), factor)


# Channel offsets n of the closed-form HSV -> RGB map, R, G, B (see ``adjust_hue``).
_HSV_CHANNEL_OFFSETS = (5.0, 3.0, 1.0)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue by ``shift`` turns, keeping HSV saturation and value (as torchvision).

    RGB -> HSV uses the PIL / torchvision sector formulas (hue in sixths of a turn, red first);
    HSV -> RGB uses the closed form ``c_n = v - v s clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + 6 h) mod 6`` and ``n = 5, 3, 1`` for R, G, B, which equals the six-sector table
    but needs no gather. Since ``v = max`` and ``v s = max - min``, no division by ``v`` is needed.

    Args:
        x: (B, 3, H, W) float images in [0, 1].
        shift: (B,) hue shifts in [-0.5, 0.5].

    Returns:
        (B, 3, H, W) images in [0, 1]; grays (max = min) are unchanged.
    """
    # Branch-free on purpose: masked sums and elementwise max/min are several times faster on
    # CPU than torch.where chains and reductions over the 3-channel axis.
    r, g, b = x.unbind(dim=1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    chroma = maxc - minc  # v * s
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    is_b = ~(is_r | is_g)
    # hue * 6 * chroma, by the sector of the largest channel (red first, as PIL / torchvision)
    numerator = (g - b) * is_r + (b - r + 2.0 * chroma) * is_g + (r - g + 4.0 * chroma) * is_b
    hue6 = numerator / (chroma + (chroma == 0))  # grays: 0 / 1
    hue6 = hue6 + 6.0 * shift.view(-1, 1, 1)  # (B, H, W), hue in sixths of a turn, mod 6
    offsets = torch.tensor(_HSV_CHANNEL_OFFSETS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    k = torch.remainder(hue6.unsqueeze(1) + offsets, 6.0)  # (B, 3, H, W)
    weight = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return maxc.unsqueeze(1) - chroma.unsqueeze(1) * weight


def color_jitter(x: Tensor, apply: Tensor, order: Tensor, factors: Tensor) -> Tensor:
    """Colour jitter with per-sample factors applied in a per-sample order (torchvision's rule).

    Stage k applies, to each sample, the op ``order[:, k]``. Brightness, contrast and saturation
    are all blends ``f * x + (1 - f) * y`` (y = 0, the mean luma, the luma), so one stage does
    all three at once with per-sample f and y; samples whose op at this stage is another one get
    f = 1, which leaves them unchanged bit for bit. Hue runs on the subset that needs it.

    Args:
        x: (B, 3, H, W) float images in [0, 1].
        apply: (B,) bool, samples that are jittered at all.
        order: (B, 4) int64 permutations of 0..3 (brightness, contrast, saturation, hue).
        factors: (B, 4) brightness, contrast, saturation factors and hue shift.

    Returns:
        (B, 3, H, W) jittered images in [0, 1].
    """
    none = torch.full_like(order[:, 0], -1)
    brightness, contrast, saturation, hue = factors.unbind(dim=1)
    for k in range(4):
        op = torch.where(apply, order[:, k], none)
        f = torch.ones_like(brightness)
        f = torch.where(op == 0, brightness, f)
        f = torch.where(op == 1, contrast, f)
        f = torch.where(op == 2, saturation, f)
        gray = rgb_to_grayscale(x)  # (B, 1, H, W)
        is_contrast = _per_sample(op == 1).to(x.dtype)
        is_saturation = _per_sample(op == 2).to(x.dtype)
        # (B, 1, H, W): mean luma for contrast, luma for saturation, 0 for brightness
        other = gray * is_saturation + gray.mean(dim=(1, 2, 3), keepdim=True) * is_contrast
        x = _blend(x, other, f)
        rows = torch.nonzero((op == 3) & (hue != 0)).squeeze(1)
        if rows.numel():
            x[rows] = adjust_hue(x[rows], hue[rows])
    return x


def grayscale(x: Tensor, apply: Tensor) -> Tensor:
    """Replace the selected samples by their luma on all 3 channels.

    Args:
        x: (B, 3, H, W) float images.
        apply: (B,) bool.
    """
    return torch.where(_per_sample(apply), rgb_to_grayscale(x).expand_as(x), x)


def solarize(x: Tensor, apply: Tensor, threshold: float) -> Tensor:
    """Invert pixels at or above ``threshold`` (``x >= t -> 1 - x``) in the selected samples.

    Args:
        x: (B, 3, H, W) float images in [0, 1].
        apply: (B,) bool.
        threshold: in [0, 1].
    """
    return torch.where(_per_sample(apply) & (x >= threshold), 1.0 - x, x)


# --------------------------------------------------------------------------------------------
# Blur: per-sample separable Gaussian kernels as one depthwise convolution
# --------------------------------------------------------------------------------------------


def blur_kernel_size(size: int) -> int:
    """Odd kernel side of about 10% of the view, as in SimCLR (23 for 224 px).

    At least 3 (1, no blur, for views under 2 px where reflect padding has nothing to reflect).
    """
    if size < 2:
        return 1
    radius = (size // 10) // 2
    return max(2 * radius + 1, 3)


def gaussian_kernel1d(sigma: Tensor, kernel_size: int) -> Tensor:
    """Normalised 1-D Gaussian kernels at integer offsets.

    Args:
        sigma: (B,) standard deviations in pixels.
        kernel_size: odd kernel length k.

    Returns:
        (B, k) kernels, each summing to 1.
    """
    radius = kernel_size // 2
    offsets = torch.arange(-radius, radius + 1, dtype=sigma.dtype, device=sigma.device)
    return torch.softmax(-(offsets**2) / (2.0 * sigma[:, None] ** 2), dim=1)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Blur each sample with its own Gaussian (reflect padding, like torchvision).

    The 2-D Gaussian is separable, so it is applied as a horizontal then a vertical depthwise
    convolution; the batch is folded into the channels (one group per sample and channel) so
    that every sample gets its own kernel in a single ``conv2d`` call.

    Args:
        x: (B, C, H, W) float images, H and W larger than ``kernel_size // 2``.
        sigma: (B,) standard deviations in pixels.
        kernel_size: odd kernel side k.

    Returns:
        (B, C, H, W) blurred images.
    """
    batch, channels, height, width = x.shape
    radius = kernel_size // 2
    kernel = gaussian_kernel1d(sigma.to(x.dtype), kernel_size)  # (B, k)
    kernel = kernel.repeat_interleave(channels, dim=0)  # (B * C, k)
    groups = batch * channels
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    out = padded.reshape(1, groups, height + 2 * radius, width + 2 * radius)
    out = F.conv2d(out, kernel.view(groups, 1, 1, kernel_size), groups=groups)
    out = F.conv2d(out, kernel.view(groups, 1, kernel_size, 1), groups=groups)
    return out.view(batch, channels, height, width)


# --------------------------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------------------------


def sample_view_params(
    batch: int,
    height: int | Tensor,
    width: int | Tensor,
    spec: ViewSpec,
    generator: torch.Generator,
) -> ViewParams:
    """Draw the per-sample parameters of one view from ``generator`` only.

    The number and order of draws does not depend on the probabilities, so a spec change never
    shifts the random stream of the other ops.

    Args:
        batch: number of samples B.
        height: source image height (int, or (B,) int64 per-sample heights).
        width: source image width (int, or (B,) int64 per-sample widths).
        spec: the view's spec.
        generator: the augmentation generator (on the images' device).
    """
    boxes = sample_crop_boxes(batch, height, width, spec.scale, spec.ratio, generator)
    u = torch.rand(batch, _N_VIEW_DRAWS, generator=generator, device=generator.device)
    lows = torch.tensor(
        [max(0.0, 1.0 - v) for v in (spec.brightness, spec.contrast, spec.saturation)]
        + [-spec.hue],
        device=u.device,
    )
    highs = torch.tensor(
        [1.0 + v for v in (spec.brightness, spec.contrast, spec.saturation)] + [spec.hue],
        device=u.device,
    )
    sigma_lo, sigma_hi = spec.blur_sigma
    return ViewParams(
        boxes=boxes,
        flip=u[:, _U_FLIP] < spec.flip_p,
        jitter=u[:, _U_JITTER] < spec.jitter_p,
        jitter_order=torch.argsort(u[:, _U_ORDER], dim=1),  # uniform random permutation
        jitter_factors=lows + (highs - lows) * u[:, _U_FACTORS],
        gray=u[:, _U_GRAY] < spec.gray_p,
        blur=u[:, _U_BLUR] < spec.blur_p,
        blur_sigma=sigma_lo + (sigma_hi - sigma_lo) * u[:, _U_SIGMA],
        solarize=u[:, _U_SOLARIZE] < spec.solarize_p,
    )


def apply_view(x: Tensor, params: ViewParams, spec: ViewSpec) -> Tensor:
    """Render one view (before normalisation).

    Args:
        x: (B, 3, H, W) float source images in [0, 1].
        params: per-sample parameters from :func:`sample_view_params`.
        spec: the view's spec (sizes and which ops are enabled).

    Returns:
        (B, 3, s, s) float32 view in [0, 1].
    """
    v = resized_crop(x, params.boxes, params.flip, spec.size).clamp_(0.0, 1.0)
    if spec.jitter_p > 0:
        v = color_jitter(v, params.jitter, params.jitter_order, params.jitter_factors)
    if spec.gray_p > 0:
        v = grayscale(v, params.gray)
    if spec.blur_p > 0:
        rows = torch.nonzero(params.blur).squeeze(1)
        if rows.numel():
            v[rows] = gaussian_blur(v[rows], params.blur_sigma[rows], blur_kernel_size(spec.size))
    if spec.solarize_p > 0:
        v = solarize(v, params.solarize, spec.solarize_threshold)
    return v


def normalize(x: Tensor, norm: Normalization = IMAGENET_NORM) -> Tensor:
    """(B, 3, H, W) in [0, 1] -> ``(x - mean) / std`` with ``norm``'s statistics."""
    mean, std = norm.tensors(x)
    return (x - mean) / std


def denormalize(x: Tensor, norm: Normalization = IMAGENET_NORM) -> Tensor:
    """Invert :func:`normalize`: (B, 3, H, W) normalised -> [0, 1] intensities."""
    mean, std = norm.tensors(x)
    return x * std + mean


def _check_images(images: Tensor) -> None:
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if images.numel() == 0:
        raise ValueError(f"images must be non-empty, got shape {tuple(images.shape)}")


def make_views(
    images: Tensor,
    preset: AugmentPreset,
    generator: torch.Generator,
    extents: Tensor | None = None,
) -> list[Tensor]:
    """Make every view of a batch on the images' device.

    All random parameters are drawn per sample from ``generator`` (never the global RNG), so the
    same generator state gives bitwise-identical views.

    Args:
        images: (B, 3, H, W) uint8 source images on any device.
        preset: the views to make.
        generator: ``torch.Generator`` on the same device as ``images``.
        extents: optional (B, 2) int64 true ``(h, w)`` of each image when the batch holds whole
            images of different shapes padded to (H, W) (:meth:`~divssl.data.cache.StoredPool.
            gather`); crops are then sampled over each image's own extent. ``None``: every
            image fills (H, W).

    Returns:
        ``preset.n_views`` float32 tensors (B, 3, s, s), normalised with ``preset.norm``, global
        views first.
    """
    _check_images(images)
    if generator.device != images.device:
        raise ValueError(
            f"generator is on {generator.device} but images are on {images.device}; "
            "create the augmentation generator on the training device"
        )
    batch, _, height, width = images.shape
    heights: int | Tensor = height
    widths: int | Tensor = width
    if extents is not None:
        heights, widths = _check_extents(extents, images)
    x = images.to(torch.float32).div_(255.0)
    views = []
    for spec in preset.views:
        params = sample_view_params(batch, heights, widths, spec, generator)
        views.append(normalize(apply_view(x, params, spec), preset.norm))
    return views


def _check_extents(extents: Tensor, images: Tensor) -> tuple[Tensor, Tensor]:
    """Validate (B, 2) extents against the padded batch; return (B,) heights and widths."""
    batch, _, height, width = images.shape
    if extents.shape != (batch, 2):
        raise ValueError(f"extents must have shape ({batch}, 2), got {tuple(extents.shape)}")
    extents = extents.to(device=images.device, dtype=torch.int64)
    heights, widths = extents.unbind(dim=1)
    if bool((heights < 1).any() | (heights > height).any() | (widths < 1).any()) or bool(
        (widths > width).any()
    ):
        raise ValueError(f"extents must lie in [1, {height}] x [1, {width}]")
    return heights, widths


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------


def _simclr(image_size: int, n_local: int, local_size: int) -> AugmentPreset:
    """SimCLR (Chen et al. 2020, App. A; solo-learn symmetric.yaml): colour strength s = 1 ->
    jitter 0.8/0.8/0.8/0.2 with p = 0.8, grayscale p = 0.2, blur p = 0.5; both views alike."""
    s = 1.0
    spec = ViewSpec(
        image_size, brightness=0.8 * s, contrast=0.8 * s, saturation=0.8 * s, hue=0.2 * s
    )
    return AugmentPreset([spec, spec])


def _byol_view(size: int, blur_p: float, solarize_p: float, scale: tuple[float, float]) -> ViewSpec:
    """One BYOL view (Grill et al. 2020, Table 6): jitter 0.4/0.4/0.2/0.1 p 0.8, gray 0.2."""
    return ViewSpec(
        size,
        scale=scale,
        brightness=0.4,
        contrast=0.4,
        saturation=0.2,
        hue=0.1,
        blur_p=blur_p,
        solarize_p=solarize_p,
    )


def _byol(image_size: int, n_local: int, local_size: int) -> AugmentPreset:
    """BYOL's asymmetric pair: blur p 1.0 / 0.1, solarize p 0.0 / 0.2 (also MoCo v3, Barlow
    Twins, VICReg)."""
    scale = (0.08, 1.0)
    return AugmentPreset(
        [_byol_view(image_size, 1.0, 0.0, scale), _byol_view(image_size, 0.1, 0.2, scale)]
    )


def _dino(image_size: int, n_local: int, local_size: int) -> AugmentPreset:
    """DINO (Caron et al. 2021): BYOL's asymmetric global pair, local crops at scale (0.05, 0.4)
    with blur p 0.5. Global scale (0.4, 1) with local crops, (0.14, 1) without (the DINO repo's
    advice when multi-crop is off)."""
    scale = (0.4, 1.0) if n_local > 0 else (0.14, 1.0)
    local = _byol_view(local_size, 0.5, 0.0, (0.05, 0.4))
    return AugmentPreset(
        [_byol_view(image_size, 1.0, 0.0, scale), _byol_view(image_size, 0.1, 0.2, scale)],
        [local] * n_local,
    )


def _swav(image_size: int, n_local: int, local_size: int) -> AugmentPreset:
    """SwAV (Caron et al. 2020): colour distortion s = 1 (jitter 0.8/0.8/0.8/0.2 p 0.8, gray
    0.2) and blur p 0.5 on every crop; global scale (0.14, 1), local scale (0.05, 0.14)."""

    def view(size: int, scale: tuple[float, float]) -> ViewSpec:
        return ViewSpec(
            size, scale=scale, brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2, blur_p=0.5
        )

    glob = view(image_size, (0.14, 1.0))
    return AugmentPreset([glob, glob], [view(local_size, (0.05, 0.14))] * n_local)


def _vicreg(image_size: int, n_local: int, local_size: int) -> AugmentPreset:
    """VICReg as solo-learn runs it (scripts/pretrain/imagenet-100/vicreg.yaml): both views at
    scale (0.2, 1), BYOL's jitter, blur p 0.5 (0 at <= 64 px, cifar/vicreg.yaml), solarize 0.1."""
    blur = 0.0 if image_size <= BLUR_MAX_DISABLED_SIZE else 0.5
    view = _byol_view(image_size, blur, 0.1, (0.2, 1.0))
    return AugmentPreset([view, view])


def _supervised(image_size: int, n_local: int, local_size: int) -> AugmentPreset:
    """Standard supervised training: random resized crop and flip only, one view."""
    return AugmentPreset([ViewSpec(image_size, jitter_p=0.0, gray_p=0.0, blur_p=0.0)])


PRESETS: dict[str, Callable[[int, int, int], AugmentPreset]] = {
    "simclr": _simclr,
    "byol": _byol,
    "dino": _dino,
    "swav": _swav,
    "vicreg": _vicreg,
    "supervised": _supervised,
}
MULTI_CROP_PRESETS = ("dino", "swav")


def get_preset(
    name: str,
    image_size: int,
    n_local_crops: int = 0,
    local_size: int | None = None,
    norm: Normalization = IMAGENET_NORM,
) -> AugmentPreset:
    """Build a method's view preset for a given image size.

    Rule (solo-learn's CIFAR asymmetric preset): for ``image_size <= 64`` Gaussian blur is
    switched off in every view of the asymmetric presets (``byol``, ``dino``); the other ops and
    presets keep the paper's settings. Runs take their views from the recipe
    (:func:`preset_from_config`); named presets are an alternative set of views.

    Args:
        name: one of :data:`PRESETS`.
        image_size: side of the global views.
        n_local_crops: number of small multi-crop views (``dino`` and ``swav`` only).
        local_size: side of the local views; default ``round(image_size * 96 / 224)``, >= 8.
        norm: the normalisation of the views (a run's: :func:`run_normalization`).

    Raises:
        ConfigError: unknown name, non-positive sizes, negative or unsupported local crops.
    """
    if name not in PRESETS:
        raise unknown_choice("augment.preset", name, PRESETS)
    if not isinstance(image_size, int) or image_size < 1:
        raise ConfigError("image_size", f"must be a positive integer, got {image_size!r}")
    if n_local_crops < 0:
        raise ConfigError("augment.n_local_crops", f"must be >= 0, got {n_local_crops}")
    if n_local_crops and name not in MULTI_CROP_PRESETS:
        raise ConfigError(
            "augment.n_local_crops",
            f"preset {name!r} has no local crops; multi-crop presets are listed",
            MULTI_CROP_PRESETS,
        )
    if local_size is None:
        local_size = max(8, round(image_size * 96 / 224))
    if local_size < 1:
        raise ConfigError("augment.local_size", f"must be positive, got {local_size}")
    preset = PRESETS[name](image_size, n_local_crops, local_size)
    if image_size <= BLUR_MAX_DISABLED_SIZE and name in ASYMMETRIC_PRESETS:
        preset = AugmentPreset(
            [dataclasses.replace(v, blur_p=0.0) for v in preset.global_views],
            [dataclasses.replace(v, blur_p=0.0) for v in preset.local_views],
        )
    return dataclasses.replace(preset, norm=norm)


# --------------------------------------------------------------------------------------------
# Views of a resolved config
# --------------------------------------------------------------------------------------------

VIEW_FIELDS = (
    "scale_min",
    "scale_max",
    "flip_p",
    "jitter_p",
    "brightness",
    "contrast",
    "saturation",
    "hue",
    "gray_p",
    "blur_p",
    "solarize_p",
)


def view_values(spec: ViewSpec) -> dict[str, float]:
    """The config values (``augment.view1.*`` keys) of a view spec."""
    return {
        "scale_min": spec.scale[0],
        "scale_max": spec.scale[1],
        "flip_p": spec.flip_p,
        "jitter_p": spec.jitter_p,
        "brightness": spec.brightness,
        "contrast": spec.contrast,
        "saturation": spec.saturation,
        "hue": spec.hue,
        "gray_p": spec.gray_p,
        "blur_p": spec.blur_p,
        "solarize_p": spec.solarize_p,
    }


def view_spec(values: dict[str, float], size: int) -> ViewSpec:
    """A :class:`ViewSpec` of side ``size`` from resolved view values.

    Raises:
        ConfigError: a value is unset or out of range (named by field).
    """
    missing = [k for k in VIEW_FIELDS if values.get(k) is None]
    if missing:
        raise ConfigError(f"augment.{missing[0]}", "unset; resolve the config first")
    return ViewSpec(
        size,
        scale=(float(values["scale_min"]), float(values["scale_max"])),
        flip_p=values["flip_p"],
        jitter_p=values["jitter_p"],
        brightness=values["brightness"],
        contrast=values["contrast"],
        saturation=values["saturation"],
        hue=values["hue"],
        gray_p=values["gray_p"],
        blur_p=values["blur_p"],
        solarize_p=values["solarize_p"],
    )


def preset_from_config(cfg: Any) -> AugmentPreset:
    """The views of a resolved :class:`divssl.pretrain.config.Config`: ``augment.view1`` (and
    ``augment.view2`` for two-view methods) at ``image_size``, then ``n_local_crops`` copies of
    ``augment.local`` at ``local_size``."""
    from divssl.pretrain.methods import get_method

    aug = cfg.augment
    n_global = get_method(cfg.method).n_global_views
    glob = [view_spec(aug.view1.model_dump(), cfg.image_size)]
    if n_global > 1:
        glob.append(view_spec(aug.view2.model_dump(), cfg.image_size))
    n_local = int(aug.n_local_crops or 0)
    local = [view_spec(aug.local.model_dump(), int(aug.local_size))] * n_local
    return AugmentPreset(glob, local, run_normalization(cfg.model_dump(mode="python")))


def run_normalization(run_config: dict[str, Any]) -> Normalization:
    """The normalisation of a run from its resolved config (``config.yaml`` as a dict).

    Runs record ``augment.mean`` and ``augment.std`` (from their recipe, or the user's keys);
    run dirs written before these keys existed normalised with ImageNet statistics, which is
    what they get here.

    Raises:
        ConfigError: a recorded mean/std that is not three finite numbers (std > 0).
    """
    aug = run_config.get("augment")
    aug = aug if isinstance(aug, dict) else {}
    mean, std = aug.get("mean"), aug.get("std")
    if mean is None and std is None:
        return IMAGENET_NORM
    return Normalization(
        IMAGENET_MEAN if mean is None else mean, IMAGENET_STD if std is None else std
    )
