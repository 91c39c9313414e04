"""Offline extractors: clean resizing, weight loading and its errors, hooks, pool features."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

from divssl.data.pool import ArrayPool, CorruptImage
from divssl.distances import extractors as ext_module
from divssl.distances import get_extractor
from divssl.distances.extractors import clean_resize
from divssl.distances.metrics import vdna, vdna_ranges
from divssl.distances.pipeline import (
    distance_matrix,
    index_features,
    parse_metrics,
    pool_features,
    pool_vendi,
    reference_ranges,
    sample_indices,
    tables_to_csv,
)
from divssl.errors import ConfigError
from divssl.io import atomic_write_yaml
from divssl.pretrain.backbones import build_backbone, export_backbone

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIVSSL_CACHE", str(tmp_path / "cache"))
    for var in ext_module.WEIGHT_ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    path = tmp_path_factory.mktemp("w") / "resnet18.pt"
    torch.save(model.state_dict(), path)  # includes the classifier, as real checkpoints do
    return path, model.eval()


def make_run_dir(root: Path, seed: int = 0, **extra: object) -> Path:
    """A minimal run dir: convnet_tiny backbone.pt + config.yaml (``extra``: more keys)."""
    torch.manual_seed(seed)
    model, _ = build_backbone("convnet_tiny", 16)
    root.mkdir(parents=True, exist_ok=True)
    export_backbone(model, root / "backbone.pt")
    atomic_write_yaml(
        root / "config.yaml",
        {
            "method": "simclr",
            "backbone": "convnet_tiny",
            "image_size": 16,
            "cifar_stem": False,
            "data": {"pool": "world:classes=4:per_class=20:size=16"},
            "seed": seed,
            **extra,
        },
    )
    return root


def _pil_bicubic(image: np.ndarray, size: int) -> np.ndarray:
    """clean-fid's resize: PIL bicubic on each float32 channel, then clip."""
    chans = [
        np.asarray(
            Image.fromarray(image[..., c].astype(np.float32), mode="F").resize(
                (size, size), resample=Image.BICUBIC
            )
        )
        for c in range(3)
    ]
    return np.clip(np.stack(chans), 0.0, 255.0)


@pytest.mark.parametrize(("src", "dst"), [(16, 75), (64, 29), (40, 40), (300, 224)])
def test_clean_resize_matches_pil_float_bicubic(src: int, dst: int) -> None:
    image = np.random.default_rng(src).integers(0, 256, (src, src, 3), dtype=np.uint8)
    got = clean_resize(torch.from_numpy(image).permute(2, 0, 1)[None], dst)[0].numpy()
    assert got.dtype == np.float32
    assert np.abs(got - _pil_bicubic(image, dst)).max() < 0.05
    # No re-quantisation: values are not all integers after a real resize.
    if src != dst:
        assert not np.allclose(got, np.round(got))


def test_missing_weights_say_where_to_put_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError) as err:
        get_extractor("inception")
    assert err.value.field == "weights"
    assert "--weights" in str(err.value) and "$DIVSSL_INCEPTION_WEIGHTS" in str(err.value)
    missing = tmp_path / "pt_inception.pth"
    monkeypatch.setenv("DIVSSL_INCEPTION_WEIGHTS", str(missing))
    with pytest.raises(ConfigError, match=str(missing)):
        get_extractor("inception")
    with pytest.raises(ConfigError, match="DIVSSL_MUGS_VITB16_WEIGHTS"):
        get_extractor("mugs_vitb16")
    with pytest.raises(ConfigError, match="no weights file"):
        get_extractor("tv:resnet18", tmp_path / "nope.pt")


def test_unknown_names_and_bad_files(tmp_path: Path, resnet_weights: tuple) -> None:
    path, _ = resnet_weights
    with pytest.raises(ConfigError) as err:
        get_extractor("clip")
    assert err.value.field == "extractor" and "inception" in (err.value.choices or [])
    with pytest.raises(ConfigError, match="unknown torchvision model"):
        get_extractor("tv:resnet19", path)
    with pytest.raises(ConfigError, match="does not match|expects"):
        get_extractor("tv:resnet34", path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="weights_only"):
        get_extractor("tv:resnet18", junk)
    with pytest.raises(ConfigError, match="unknown module"):
        get_extractor("tv:resnet18", path, input_size=32, layers=["layer9"])


def test_torchvision_extractor_end_to_end(resnet_weights: tuple) -> None:
    path, reference = resnet_weights
    extractor = get_extractor("tv:resnet18", path, input_size=32)
    assert extractor.layers == ["layer1", "layer2", "layer3", "layer4"]
    assert "weights=" in extractor.identity
    images = np.random.default_rng(0).integers(0, 256, (3, 20, 20, 3), dtype=np.uint8)
    feats, acts = extractor(images, with_acts=True)
    # Reference: resize + ImageNet normalisation by hand, torchvision forward without the head.
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(32, 32), mode="bicubic", antialias=True).clamp(0, 255) / 255.0
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    captured: dict[str, torch.Tensor] = {}
    handle = reference.layer3.register_forward_hook(
        lambda _m, _i, out: captured.__setitem__("layer3", out)
    )
    with torch.no_grad():
        trunk = torch.nn.Sequential(*list(reference.children())[:-1])
        expected = trunk(x).flatten(1)
    handle.remove()
    assert feats.shape == (3, 512)
    np.testing.assert_allclose(feats, expected.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        acts["layer3"], captured["layer3"].mean(dim=(2, 3)).numpy(), rtol=1e-4, atol=1e-5
    )
    assert {k: v.shape[1] for k, v in acts.items()} == {
        "layer1": 64,
        "layer2": 128,
        "layer3": 256,
        "layer4": 512,
    }
    # Without activations nothing is captured; mixed image sizes are resized one by one.
    feats2, acts2 = extractor([images[0], images[1, :16, :12]], with_acts=False)
    assert acts2 == {} and feats2.shape == (2, 512)
    np.testing.assert_allclose(feats2[0], feats[0], rtol=1e-4, atol=1e-5)


def test_fid_inception_blocks_pool_like_tensorflow() -> None:
    blocks = ext_module._fid_inception_blocks()
    torch.manual_seed(0)
    block_a = blocks["A"](8, pool_features=4).eval()
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        got = block_a(x)
        # Reference: torchvision's InceptionA with the pool branch averaging only real pixels.
        ones = torch.ones(1, 1, 5, 5)
        counts = F.conv2d(F.pad(ones, (1, 1, 1, 1)), torch.ones(1, 1, 3, 3))
        pooled = F.avg_pool2d(x, 3, 1, 1, count_include_pad=True) * 9.0 / counts
        expected_pool = block_a.branch_pool(pooled)
        assert torch.allclose(got[:, -4:], expected_pool, atol=1e-5)
        tv_out = torchvision.models.inception.InceptionA.forward(block_a, x)
        assert torch.allclose(got[:, :-4], tv_out[:, :-4])
        block_e2 = blocks["E2"](8).eval()
        e2 = block_e2(x)
        expected_e2 = block_e2.branch_pool(F.max_pool2d(x, 3, 1, 1))
        assert torch.allclose(e2[:, -192:], expected_e2, atol=1e-5)


@pytest.mark.slow
def test_inception_loads_fid_layout_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ext_module.build_fid_inception()
    state = model.state_dict()
    state["fc.weight"] = torch.zeros(1008, 2048)  # the FID weights keep their 1008-way head
    state["fc.bias"] = torch.zeros(1008)
    path = tmp_path / "pt_inception.pth"
    torch.save(state, path)
    extractor = get_extractor("inception", path, input_size=75)
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    feats, acts = extractor(images, with_acts=True)
    x = clean_resize(torch.from_numpy(images).permute(0, 3, 1, 2), 75) / 127.5 - 1.0
    with torch.no_grad():
        expected = model.eval()(x)
    assert feats.shape == (2, 2048) and acts["Mixed_7c"].shape == (2, 2048)
    np.testing.assert_allclose(feats, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_run_dir_extractor_uses_eval_transform(tmp_path: Path) -> None:
    from divssl.evaluate.features import eval_geometry, eval_transform
    from divssl.pretrain.backbones import load_backbone

    run = make_run_dir(tmp_path / "run")
    extractor = get_extractor(f"run:{run}")
    assert extractor.input_size == 16
    assert len(extractor.layers) == 4  # one per conv block of convnet_tiny
    images = np.random.default_rng(1).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    feats, acts = extractor(images, with_acts=True)
    model, _ = load_backbone(run / "backbone.pt", "convnet_tiny", 16)
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2)
        expected = model.eval()(eval_transform(x, eval_geometry(16)))  # old run: ImageNet stats
    np.testing.assert_allclose(feats, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert [a.shape[1] for a in acts.values()] == [16, 32, 64, 128]
    with pytest.raises(ConfigError, match="config.yaml"):
        get_extractor(f"run:{tmp_path / 'missing'}")
    with pytest.raises(ConfigError) as err:
        get_extractor(f"run:{run}", input_size=32)
    assert err.value.field == "input_size"


# --------------------------------------------------------------------------- pool features


class _FlakyPool(ArrayPool):
    """An ArrayPool whose every 5th sample is corrupt."""

    def read(self, index: int) -> np.ndarray:
        if index % 5 == 0:
            raise CorruptImage(f"sample {index}")
        return super().read(index)


class _CountingExtractor:
    """Wraps an extractor and counts the images it sees."""

    def __init__(self, inner: ext_module.Extractor) -> None:
        self.inner, self.seen = inner, 0
        self.identity, self.layers = inner.identity, inner.layers

    def __call__(self, images: Sequence[np.ndarray], with_acts: bool = False) -> tuple:
        self.seen += len(images)
        return self.inner(images, with_acts)


def test_sample_indices_seeded_sorted_and_capped() -> None:
    idx = sample_indices(1000, 100, seed=3)
    assert len(idx) == 100 and len(set(idx.tolist())) == 100
    assert np.all(np.diff(idx) > 0)
    assert np.array_equal(idx, sample_indices(1000, 100, seed=3))
    assert not np.array_equal(idx, sample_indices(1000, 100, seed=4))
    assert np.array_equal(sample_indices(50, 100, seed=0), np.arange(50))


def test_pool_features_cached_and_corrupt_skipped(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    pool = _FlakyPool(rng.integers(0, 256, (30, 16, 16, 3), dtype=np.uint8), spec="flaky")
    counting = _CountingExtractor(get_extractor(f"run:{make_run_dir(tmp_path / 'run')}"))
    first = pool_features(pool, counting, max_images=20, seed=1, with_acts=True, batch_size=7)
    assert first.requested == 20
    assert len(first.indices) == first.features.shape[0] == 20 - first.corrupt
    assert first.corrupt == int(np.sum(sample_indices(30, 20, 1) % 5 == 0)) > 0
    assert np.all(first.indices % 5 != 0)
    assert set(first.acts) == set(counting.layers)
    seen = counting.seen
    second = pool_features(pool, counting, max_images=20, seed=1, with_acts=True)
    assert counting.seen == seen  # served from the cache
    np.testing.assert_array_equal(second.features, first.features)
    features_only = pool_features(pool, counting, max_images=20, seed=1, with_acts=False)
    assert counting.seen == seen  # the entry with activations also serves features-only calls
    np.testing.assert_array_equal(features_only.features, first.features)
    pool_features(pool, counting, max_images=20, seed=2, with_acts=True)
    assert counting.seen > seen  # another sample is another cache entry


def test_distance_matrix_and_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    extractor = get_extractor(f"run:{make_run_dir(tmp_path / 'run')}")
    bright = ArrayPool(rng.integers(128, 256, (40, 16, 16, 3), dtype=np.uint8), spec="bright")
    dark = ArrayPool(rng.integers(0, 128, (40, 16, 16, 3), dtype=np.uint8), spec="dark")
    feats = {p.spec: pool_features(p, extractor, 40, 0, with_acts=True) for p in (bright, dark)}
    tables = distance_matrix(
        {"bright": feats["bright"]}, feats, ["fid", "kid", "vdna"], kid_subsets=5, vdna_bins=20
    )
    assert list(tables) == ["fid", "kid", "vdna"]
    for table in tables.values():
        assert table.values.shape == (1, 2)
        assert table.values[0, 1] > table.values[0, 0]
    assert abs(tables["fid"].values[0, 0]) < 1e-3
    assert tables["vdna"].values[0, 0] == 0.0
    assert tables["kid"].std is not None and set(tables["vdna"].per_layer) == set(extractor.layers)
    lines = tables_to_csv(tables).splitlines()
    assert lines[0] == "metric,a,b,value,std" and len(lines) == 1 + 3 * 2
    assert parse_metrics(["fid,kid", "fid"]) == ["fid", "kid"]
    with pytest.raises(ConfigError) as err:
        parse_metrics("fid,lpips")
    assert err.value.field == "metric" and err.value.choices == ["fid", "kid", "vdna"]


def test_vdna_reference_ranges_cached_and_shared_by_every_pair(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    counting = _CountingExtractor(get_extractor(f"run:{make_run_dir(tmp_path / 'run')}"))
    ref = ArrayPool(rng.integers(0, 256, (30, 16, 16, 3), dtype=np.uint8), spec="ref")
    bright = ArrayPool(rng.integers(128, 256, (30, 16, 16, 3), dtype=np.uint8), spec="bright")
    dark = ArrayPool(rng.integers(0, 128, (30, 16, 16, 3), dtype=np.uint8), spec="dark")
    ranges = reference_ranges(ref, counting, max_images=30, seed=0)
    acts = pool_features(ref, counting, 30, 0, with_acts=True).acts
    assert set(ranges) == set(counting.layers)
    for layer, value in vdna_ranges(acts).items():
        np.testing.assert_array_equal(ranges[layer], value)
    seen = counting.seen
    again = reference_ranges(ref, counting, max_images=30, seed=0)
    assert counting.seen == seen  # served from the vdna-ranges cache
    np.testing.assert_array_equal(again[counting.layers[0]], ranges[counting.layers[0]])
    feats = {p.spec: pool_features(p, counting, 30, 0, with_acts=True) for p in (bright, dark)}
    tables = distance_matrix(
        {"bright": feats["bright"], "dark": feats["dark"]},
        {"dark": feats["dark"]},
        ["vdna"],
        vdna_bins=20,
        vdna_fixed_ranges=ranges,
        vdna_reference="ref",
    )
    table = tables["vdna"]
    assert table.params == {"bins": 20, "reference": "ref"}
    # Every cell is in the reference's units, whichever pair it compares.
    expected = vdna(feats["bright"].acts, feats["dark"].acts, 20, ranges).mean
    assert table.values[0, 0] == pytest.approx(expected, rel=1e-12)
    assert table.values[1, 0] == 0.0
    # Without declared ranges the first row pool is the reference, and the table says so.
    default = distance_matrix(
        {"bright": feats["bright"]}, {"dark": feats["dark"]}, ["vdna"], vdna_bins=20
    )
    assert default["vdna"].params["reference"] == "bright"
    own = vdna(feats["bright"].acts, feats["dark"].acts, 20, vdna_ranges(feats["bright"].acts))
    assert default["vdna"].values[0, 0] == pytest.approx(own.mean, rel=1e-12)


def test_pixels_extractor_flattens_resized_raw_pixels() -> None:
    # vertaix/Vendi-Score get_pixel_vectors: resize to 32 px, flatten raw [0, 255] values.
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (3, 20, 20, 3), dtype=np.uint8)
    default = get_extractor("pixels")
    feats, acts = default(images)
    assert feats.shape == (3, 3 * 32 * 32) and acts == {} and default.layers == []
    expected = np.stack([_pil_bicubic(im, 32) for im in images]).reshape(3, -1)
    np.testing.assert_allclose(feats, expected, atol=0.05)  # clean resize, channel-major
    native = get_extractor("pixels", input_size=20)
    np.testing.assert_array_equal(native(images)[0], images.transpose(0, 3, 1, 2).reshape(3, -1))
    assert native.identity != default.identity
    with pytest.raises(ConfigError) as err:
        get_extractor("pixels", weights="w.pt")
    assert err.value.field == "weights"
    with pytest.raises(ConfigError) as err:
        get_extractor("pixels", layers=["0"])
    assert err.value.field == "layers"
    assert "pixels" in ext_module.extractor_names()


def test_index_features_cached_per_index_list(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    pool = _FlakyPool(rng.integers(0, 256, (30, 16, 16, 3), dtype=np.uint8), spec="flaky")
    counting = _CountingExtractor(get_extractor("pixels", input_size=16))
    order = np.array([7, 3, 10, 11, 2, 29, 1], dtype=np.int64)  # 10 is corrupt (10 % 5 == 0)
    first = index_features(pool, counting, order, batch_size=3)
    assert first.requested == 7 and first.corrupt == 1
    np.testing.assert_array_equal(first.indices, [7, 3, 11, 2, 29, 1])  # order kept
    np.testing.assert_array_equal(first.features[1], pool.read(3).transpose(2, 0, 1).ravel())
    seen = counting.seen
    again = index_features(pool, counting, order)
    assert counting.seen == seen  # served from the cache
    np.testing.assert_array_equal(again.features, first.features)
    index_features(pool, counting, order[::-1])
    assert counting.seen > seen  # another order is another entry


def test_pool_vendi_uses_the_sampled_images_labels() -> None:
    images = np.zeros((8, 8, 8, 3), np.uint8)
    images[:4, :4] = 200  # class 0: one image, four copies
    images[4:, 4:] = 200  # class 1: another image
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    pool = ArrayPool(images, labels, class_names=["top", "bottom"], spec="two")
    feats = pool_features(pool, get_extractor("pixels", input_size=8), max_images=8)
    result = pool_vendi(pool, feats)
    assert result.score == pytest.approx(2.0, rel=1e-9)
    assert result.per_class == pytest.approx({"top": 1.0, "bottom": 1.0}, rel=1e-9)


def test_check_extractor_name_loads_nothing() -> None:
    for name in ("inception", "pixels", "run:/no/such/run", "tv:resnet18", "timm:vit_small"):
        ext_module.check_extractor_name(name)  # names only: no weights are needed
    for name in ("sift", "tv:", "pixel"):
        with pytest.raises(ConfigError) as err:
            ext_module.check_extractor_name(name, "vendi.extractor")
        assert err.value.field == "vendi.extractor" and "pixels" in err.value.choices


def test_run_dir_extractor_sees_what_the_probe_sees(tmp_path: Path) -> None:
    # A run pretrained with CIFAR statistics at the ImageNet-100 scale's geometry: the distance
    # extractor's input is the probe's input (features.encoder_geometry), value for value.
    from divssl.evaluate.features import encoder_geometry, eval_transform, load_encoder

    # solo-learn 9187ea3 pretrain_dataloader.py MEANS_N_STD["cifar10"], written by hand
    mean, std = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
    run = make_run_dir(tmp_path / "run", recipe="imagenet100", augment={"mean": mean, "std": std})
    extractor = get_extractor(f"run:{run}")
    encoder = load_encoder(run)
    images = np.random.default_rng(2).integers(0, 256, (3, 20, 26, 3), dtype=np.uint8)
    batch = torch.from_numpy(images).permute(0, 3, 1, 2)
    geometry = encoder_geometry(encoder)
    assert (geometry.recipe, geometry.resize, geometry.crop) == ("imagenet100", 18, 16)
    probe_input = eval_transform(batch, geometry)
    torch.testing.assert_close(extractor.prepare(images), probe_input, rtol=0, atol=0)
    # the normalisation is the run's: undo it by hand and get [0, 1] pixels back
    pixels = probe_input * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    feats, _ = extractor(images)
    with torch.no_grad():
        expected = encoder.model.eval()(probe_input)
    np.testing.assert_allclose(feats, expected.numpy(), rtol=1e-5, atol=1e-6)
    # the identity (distance cache key) names the statistics: an ImageNet-statistics run of the
    # same weights is another extractor
    other = make_run_dir(tmp_path / "old")
    assert get_extractor(f"run:{other}").identity != extractor.identity
