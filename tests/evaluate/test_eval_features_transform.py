"""The evaluation transform per recipe scale against the references' validation transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from divssl.data.cache import resize_center_crop
from divssl.errors import ConfigError
from divssl.evaluate.features import (
    EVAL_PROTOCOLS,
    decode_size,
    eval_geometry,
    eval_transform,
)
from divssl.pretrain.augment import IMAGENET_MEAN, IMAGENET_STD, Normalization
from divssl.pretrain.recipes import RECIPE_NAMES

SOLO = "vturrisi/solo-learn@9187ea3 solo/data/classification_dataloader.py"

# Read by hand from solo-learn at 9187ea3, solo/data/classification_dataloader.py,
# prepare_transforms: (CenterCrop side, Resize shorter side, Normalize mean, Normalize std).
# cifar_pipeline["T_val"] = ToTensor + Normalize (32 px images used whole);
# imagenet_pipeline["T_val"] = Resize(256) + CenterCrop(224) + Normalize(IMAGENET_DEFAULT_*),
# used for both "imagenet100" and "imagenet"; divssl's recipe "small" is the cifar rows.
CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
REFERENCE = {
    "cifar": (32, 32, *CIFAR_STATS),
    "imagenet100": (224, 256, *IMAGENET_STATS),
    "imagenet": (224, 256, *IMAGENET_STATS),
    "small": (32, 32, *CIFAR_STATS),
}


def test_protocol_table_matches_the_reference_values() -> None:
    assert set(EVAL_PROTOCOLS) == set(RECIPE_NAMES) == set(REFERENCE)
    for name, (crop, resize, mean, std) in REFERENCE.items():
        ref = EVAL_PROTOCOLS[name]
        assert (ref.crop, ref.resize, ref.mean, ref.std) == (crop, resize, mean, std), name
        assert ref.source  # every row names where it was read
        if name != "small":
            assert ref.source.startswith(SOLO), name
        # at the reference's own size the resolved geometry is the reference's, value for value
        g = eval_geometry(crop, name)
        assert (g.recipe, g.resize, g.crop) == (name, resize, crop)
        assert decode_size(crop, name) == resize
    # normalisation is honoured: every scale evaluates a run with the statistics it was
    # pretrained with (its config's augment.mean / augment.std), and the table says so
    for name, ref in EVAL_PROTOCOLS.items():
        assert "not honoured" not in ref.note and "augment.mean" in ref.note, name


def test_geometry_keeps_the_reference_ratio_at_other_sizes() -> None:
    for size in (16, 48, 64, 96, 128, 160, 224, 288):
        for recipe in ("imagenet100", "imagenet"):
            g = eval_geometry(size, recipe)
            assert g.crop == size and g.resize == round(size * 256 / 224)
        for recipe in ("cifar", "small"):
            assert eval_geometry(size, recipe).resize == size
    # no recipe (or auto): picked from the size as pretraining picks it
    assert eval_geometry(32).recipe == "cifar" and eval_geometry(32).resize == 32
    assert eval_geometry(96).recipe == "imagenet100" and eval_geometry(96).resize == 110
    assert eval_geometry(224, "auto").resize == 256
    with pytest.raises(ConfigError, match="recipe"):
        eval_geometry(32, "cifar10")
    with pytest.raises(ConfigError, match="image_size"):
        eval_geometry(0)


def _photo(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx * yy) % 251], -1)
    noise = rng.integers(0, 40, base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def _reference_t_val(img: Image.Image, resize: int | None, crop: int | None) -> torch.Tensor:
    """solo-learn's T_val built from torchvision's PIL transforms (Normalize left out)."""
    import torchvision.transforms as T

    steps = []
    if resize is not None:
        steps += [T.Resize(resize), T.CenterCrop(crop)]
    return T.Compose([*steps, T.ToTensor()])(img)


def _normalized(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


@pytest.mark.parametrize("shape", [(375, 500), (500, 333), (257, 300), (256, 256), (300, 451)])
def test_imagenet_scale_decode_and_transform_equal_resize256_centrecrop224(shape) -> None:
    # divssl decodes the pool once (shorter side 256, centre square; PIL, as the readers do) and
    # the transform takes the centre 224: pixel for pixel the reference's Resize(256) +
    # CenterCrop(224) on the PIL image.
    img = _photo(np.random.default_rng(sum(shape)), *shape)
    g = eval_geometry(224, "imagenet100")
    decoded = resize_center_crop(img, decode_size(224, "imagenet100"))
    batch = torch.from_numpy(np.array(decoded)).permute(2, 0, 1)[None]
    ours = eval_transform(batch, g)[0]
    ref = _normalized(_reference_t_val(img, 256, 224))
    assert ours.shape == (3, 224, 224)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def test_imagenet_scale_transform_resizes_undecoded_images_like_torchvision() -> None:
    # Given a whole non-square image, the transform itself resizes (shorter side 256) and crops.
    import torchvision.transforms.v2 as T2

    img = torch.from_numpy(np.array(_photo(np.random.default_rng(5), 300, 420)))
    batch = img.permute(2, 0, 1)[None]
    ours = eval_transform(batch, eval_geometry(224, "imagenet"))
    ref = T2.CenterCrop(224)(T2.Resize(256, antialias=True)(batch)).float() / 255
    torch.testing.assert_close(ours, _normalized(ref[0])[None], rtol=0, atol=1e-5)
    # and the reference's geometry: the crop is centred in the 256 x 358 resized image
    resized = T2.Resize(256, antialias=True)(batch)
    assert tuple(resized.shape[-2:]) == (256, 358)


def test_cifar_scale_uses_the_whole_32px_image() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    batch = torch.from_numpy(images).permute(0, 3, 1, 2)
    for recipe in ("cifar", "small"):
        out = eval_transform(batch, eval_geometry(32, recipe))
        for i in range(4):
            ref = _reference_t_val(Image.fromarray(images[i]), None, None)  # ToTensor only
            torch.testing.assert_close(out[i], _normalized(ref), rtol=0, atol=1e-6)


def test_transform_rejects_float_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        eval_transform(torch.zeros(1, 3, 8, 8), eval_geometry(8, "cifar"))


def test_pixel_baselines_share_the_probes_geometry_and_skip_normalisation() -> None:
    # divssl.evaluate.baselines.pixel_features: the probe's decode + eval_pixels, no mean/std.
    from divssl.evaluate.baselines import pixel_features

    img = _photo(np.random.default_rng(3), 300, 420)
    for recipe in ("imagenet100", "imagenet"):
        decoded = np.array(resize_center_crop(img, decode_size(224, recipe)))[None]
        feats = pixel_features(decoded, 224, recipe=recipe)
        ref = _reference_t_val(img, 256, 224)  # PIL Resize(256), CenterCrop(224), ToTensor
        np.testing.assert_allclose(feats[0], ref.flatten().numpy(), rtol=0, atol=1e-6)
    # at 32 px the two scales crop differently (resize 32 vs 37): the recipe decides
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (3, 30, 44, 3), dtype=np.uint8)
    batch = torch.from_numpy(images).permute(0, 3, 1, 2)
    for recipe in ("cifar", "imagenet100"):
        g = eval_geometry(32, recipe, Normalization((0.5, 0.4, 0.3), (0.2, 0.3, 0.4)))
        probe_input = eval_transform(batch, g)
        mean = torch.tensor(g.norm.mean).view(1, 3, 1, 1)
        std = torch.tensor(g.norm.std).view(1, 3, 1, 1)
        np.testing.assert_allclose(
            pixel_features(images, 32, recipe=recipe),
            (probe_input * std + mean).flatten(1).numpy(),
            rtol=0,
            atol=1e-5,
        )
    assert not np.allclose(
        pixel_features(images, 32, recipe="cifar"), pixel_features(images, 32, recipe="imagenet100")
    )


def test_eval_transform_normalises_with_the_geometrys_statistics() -> None:
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    batch = torch.from_numpy(images).permute(0, 3, 1, 2)
    # solo-learn 9187ea3 pretrain_dataloader.py MEANS_N_STD["cifar10"], written by hand
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    out = eval_transform(batch, eval_geometry(32, "cifar", Normalization(mean, std)))
    x = images.astype(np.float64).transpose(0, 3, 1, 2) / 255.0
    ref = (x - np.array(mean).reshape(1, 3, 1, 1)) / np.array(std).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-5)
    assert eval_geometry(32, "cifar").norm == Normalization()  # ImageNet statistics by default
