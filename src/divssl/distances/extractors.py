"""Offline feature extractors for distribution distances.

:func:`get_extractor` turns a name into an :class:`Extractor` that maps uint8 images to one
feature vector per image (for FID / KID) and, with forward hooks, to per-neuron activations of
several layers (for VisualDNA). Nothing is downloaded: pretrained weights come from local files.

Names:

* ``inception`` — InceptionV3 pool3 features (2048-d), the FID standard. The architecture is
  ``torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)`` with the
  four blocks that the TensorFlow FID graph computes differently patched as pytorch-fid does
  (average pools that ignore padding, a max pool in ``Mixed_7c``). Weights: the standard FID
  weights in torchvision's layout, i.e. pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``
  (a plain state_dict; its 1008-way ``fc`` is dropped), via ``weights=PATH`` / ``--weights`` or
  ``$DIVSSL_INCEPTION_WEIGHTS``. Input: 299 px, scaled to [-1, 1].
* ``dinov2_vitb14`` — timm ``vit_base_patch14_dinov2`` at 224 px (the VDNA library's DINOv2
  setting); the official ``dinov2_vitb14_pretrain.pth`` or a timm state_dict
  (``$DIVSSL_DINOV2_VITB14_WEIGHTS``); timm's ``checkpoint_filter_fn`` converts the official
  layout and resamples the position embedding to the 16x16 grid.
* ``mugs_vitb16`` — timm ``vit_base_patch16_224`` with MUGS ViT-B/16 weights
  (``$DIVSSL_MUGS_VITB16_WEIGHTS``; ``state_dict`` / ``teacher`` wrappers, ``module.`` /
  ``backbone.`` prefixes and MUGS's ``relation_blocks`` are handled).
* ``run:DIR`` — the backbone of a divssl run directory (``backbone.pt`` + ``config.yaml``),
  fed exactly what the probes see: ``divssl.evaluate.features.eval_transform`` with the run's
  own geometry and normalisation (``run_eval_geometry``: its recipe scale at its image size, its
  ``augment.mean`` / ``augment.std``; ImageNet statistics for run dirs without them).
* ``tv:NAME`` / ``timm:NAME`` — any torchvision / timm architecture with ``weights=PATH``; its
  classification head is replaced by the identity so the features are the pooled penultimate layer.
* ``pixels`` — no network: the image resized to ``input_size`` (default 32) px and flattened,
  raw values in [0, 255] (3·S² features). The Vendi score's pixel features (Friedman & Dieng 2023;
  vertaix/Vendi-Score ``vendi_score/image_utils.py``, ``get_pixel_vectors(images, resize=32)``);
  needs no weights, so ``divssl data inspect`` uses it by default. No layers (no VisualDNA).

Resizing (all names except ``run:DIR``) follows clean-fid: every image is resized straight to the
extractor's square input from its uint8 pixels with ``F.interpolate(mode="bicubic",
antialias=True)`` on float32, with no uint8 re-quantisation in between. This matches PIL's bicubic
filter applied to float32 channels (clean-fid's "clean" resize) to within 0.01 grey levels while
running batched; the tests check the agreement.

Activations for VisualDNA are reduced to one vector per image and layer: conv maps (B, C, H, W)
are averaged over space and transformer tokens (B, T, C) over all tokens, class token included.
The VDNA library instead histograms every spatial position / token; pass ``(N, C, S)`` arrays to
:func:`divssl.distances.vdna` for that variant. Default layers: every transformer block and the
final norm for ViTs (as VDNA does for MUGS and DINOv2), the ``Mixed_*`` blocks for Inception,
``layer1``-``layer4`` for ResNets, each conv block for ``convnet_tiny``, timm's ``feature_info``
stages for other timm models.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from divssl.cache import file_sha256
from divssl.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

WEIGHT_ENV_VARS = {
    "inception": "DIVSSL_INCEPTION_WEIGHTS",
    "dinov2_vitb14": "DIVSSL_DINOV2_VITB14_WEIGHTS",
    "mugs_vitb16": "DIVSSL_MUGS_VITB16_WEIGHTS",
}
WEIGHT_SOURCES = {
    "inception": "pytorch-fid's pt_inception-2015-12-05-6726825d.pth (the TF FID Inception "
    "weights converted to torchvision's layout)",
    "dinov2_vitb14": "Meta's dinov2_vitb14_pretrain.pth (or a timm vit_base_patch14_dinov2 "
    "state_dict)",
    "mugs_vitb16": "the MUGS ViT-B/16 checkpoint (or a timm vit_base_patch16_224 state_dict)",
}
NAMED_EXTRACTORS = tuple(WEIGHT_ENV_VARS)
PREFIXES = ("run:", "tv:", "timm:")
PIXELS = "pixels"
PIXELS_SIZE = 32  # vertaix/Vendi-Score vendi_score/image_utils.py: get_pixel_vectors(resize=32)

# Keys a checkpoint may carry that the feature extractor deliberately does not have.
_EXTRA_KEY_PREFIXES = (
    "fc.",
    "head.",
    "heads.",
    "classifier.",
    "AuxLogits.",
    "relation_blocks.",
    "mask_token",
)

Transform = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- preprocessing


def clean_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 images to ``size`` x ``size`` the clean-fid way.

    Args:
        images: uint8 tensor of shape (B, 3, H, W).
        size: output side in pixels.

    Returns:
        float32 tensor of shape (B, 3, size, size) in [0, 255] (not re-quantised).
    """
    x = images.to(torch.float32)
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x.clamp_(0.0, 255.0)


def make_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> Transform:
    """Clean resize to ``size``, scale to [0, 1], then normalise with ``mean`` / ``std``.

    Returns:
        A function mapping uint8 (B, 3, H, W) to float32 (B, 3, size, size).
    """
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def transform(images: torch.Tensor) -> torch.Tensor:
        x = clean_resize(images, size) / 255.0
        return (x - mean_t.to(x.device)) / std_t.to(x.device)

    return transform


def pool_activation(output: Any) -> torch.Tensor:
    """Reduce a hooked layer output to one vector per image.

    Args:
        output: tensor of shape (B, C, H, W) (space-averaged), (B, T, C) (token-averaged) or
            (B, C); a tuple or list contributes its first element.

    Returns:
        float32 tensor of shape (B, C).
    """
    if isinstance(output, (tuple, list)):
        output = output[0]
    if output.ndim == 4:
        return output.float().mean(dim=(2, 3))
    if output.ndim == 3:
        return output.float().mean(dim=1)
    if output.ndim == 2:
        return output.float()
    raise ValueError(f"cannot pool a layer output of shape {tuple(output.shape)}")


# --------------------------------------------------------------------------- extractor


class Extractor:
    """A frozen network that maps images to features and (optionally) layer activations.

    Args:
        name: the name it was built from (``"inception"``, ``"run:/path"``, ...).
        identity: stable string naming the architecture, weights hash, input size and layers;
            used in cache keys.
        model: the network, mapping a normalised (B, 3, S, S) batch to (B, D) features.
        transform: maps uint8 (B, 3, H, W) to the model's normalised float32 input.
        input_size: S, the model's input side.
        layers: module names whose outputs are recorded for VisualDNA.
        device: where the model runs.
    """

    def __init__(
        self,
        name: str,
        identity: str,
        model: nn.Module,
        transform: Transform,
        input_size: int,
        layers: Sequence[str],
        device: str | torch.device = "cpu",
    ) -> None:
        self.name = name
        self.identity = identity
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.transform = transform
        self.input_size = input_size
        self.layers = list(layers)
        self._capture = False
        self._acts: dict[str, torch.Tensor] = {}
        modules = dict(self.model.named_modules())
        for layer in self.layers:
            modules[layer].register_forward_hook(self._hook(layer))

    def _hook(self, layer: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if self._capture:
                self._acts[layer] = pool_activation(output).detach()

        return hook

    def prepare(self, images: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
        """Turn decoded images into the model's input batch.

        Args:
            images: (H, W, 3) uint8 arrays (sizes may differ) or one (B, H, W, 3) array.

        Returns:
            float32 tensor of shape (B, 3, S, S) on the extractor's device.
        """
        if len(images) == 0:
            raise ValueError("no images to prepare")
        shapes = {tuple(np.shape(im)) for im in images}
        if len(shapes) == 1:
            batch = torch.from_numpy(np.ascontiguousarray(np.stack(list(images))))
            return self.transform(batch.permute(0, 3, 1, 2).to(self.device))
        parts = [
            self.transform(torch.from_numpy(np.array(im)).permute(2, 0, 1)[None])  # writable copy
            for im in images
        ]
        return torch.cat(parts).to(self.device)

    @torch.inference_mode()
    def __call__(
        self, images: Sequence[np.ndarray] | np.ndarray, with_acts: bool = False
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Features (and activations) of a batch of images.

        Args:
            images: (H, W, 3) uint8 arrays or one (B, H, W, 3) uint8 array.
            with_acts: also return the hooked layers' pooled activations.

        Returns:
            Features of shape (B, D), float32, and ``{layer: (B, C_layer)}`` (empty unless
            ``with_acts``).
        """
        x = self.prepare(images)
        self._capture = with_acts
        self._acts = {}
        try:
            feats = self.model(x)
        finally:
            self._capture = False
        if isinstance(feats, (tuple, list)):
            feats = feats[0]
        feats = feats.float().flatten(1).cpu().numpy()
        acts = {k: v.cpu().numpy() for k, v in self._acts.items()} if with_acts else {}
        return feats, acts


# --------------------------------------------------------------------------- weights


def _resolve_weights(name: str, weights: str | Path | None) -> Path:
    """The weights file for ``name``: the argument, else its environment variable."""
    env = WEIGHT_ENV_VARS.get(name)
    if weights is None and env:
        weights = os.environ.get(env) or None
    if weights is None:
        where = f"pass --weights PATH or set ${env}=PATH" if env else "pass --weights PATH"
        source = f" to {WEIGHT_SOURCES[name]}" if name in WEIGHT_SOURCES else ""
        raise ConfigError(
            "weights",
            f"extractor {name!r} needs a local weights file (nothing is downloaded): {where}"
            f"{source}, saved as a state_dict loadable with torch.load(weights_only=True)",
        )
    path = Path(weights).expanduser()
    if not path.is_file():
        hint = f" (from ${env})" if env and weights == os.environ.get(env) else ""
        raise ConfigError(
            "weights", f"no weights file at {path}{hint} for extractor {name!r}; put the file there"
        )
    return path


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the tensor dict in a checkpoint and strip ``module.`` / ``backbone.`` prefixes."""
    for key in ("state_dict", "model", "teacher", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError("weights", f"{path} does not hold a state_dict of tensors")
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        for prefix in ("module.", "backbone."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        state[key] = value
    return state


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint with ``weights_only=True`` and return its flat state_dict."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad or unsafe file
        raise ConfigError("weights", f"cannot load {path} with weights_only=True: {exc}") from exc
    return _unwrap_state_dict(obj, path)


def load_into(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load ``state`` into ``model``, allowing only known head / auxiliary keys to be left over.

    Raises:
        ConfigError: missing keys, unexpected non-head keys or shape mismatches.
    """
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith(_EXTRA_KEY_PREFIXES)}
    bad_shape = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad_shape:
        k = bad_shape[0]
        raise ConfigError(
            "weights",
            f"{path}: {k} has shape {tuple(state[k].shape)}, the model expects "
            f"{tuple(own[k].shape)} (wrong architecture?)",
        )
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ConfigError(
            "weights",
            f"{path} does not match the architecture: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}",
        )


# --------------------------------------------------------------------------- layers


def default_layers(model: nn.Module) -> list[str]:
    """The layers whose activations VisualDNA uses by default (see the module docstring).

    Raises:
        ConfigError: no rule applies to this architecture (pass ``layers`` explicitly).
    """
    from divssl.pretrain.backbones import ConvNetTiny

    names = dict(model.named_modules())
    if isinstance(model, ConvNetTiny):
        return [f"features.{i}" for i, m in enumerate(model.features) if isinstance(m, nn.ReLU)]
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks) > 0:
        layers = [f"blocks.{i}" for i in range(len(blocks))]
        norm = getattr(model, "norm", None)
        return layers + (["norm"] if isinstance(norm, nn.LayerNorm) else [])
    mixed = [n for n in names if n.startswith("Mixed_") and "." not in n]
    if mixed:
        return mixed
    if all(f"layer{i}" in names for i in range(1, 5)):
        return [f"layer{i}" for i in range(1, 5)]
    info = getattr(model, "feature_info", None)
    if info is not None:
        modules = [fi["module"] for fi in info]
        if modules and all(m in names for m in modules):
            return modules
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential):
        return [f"features.{i}" for i in range(len(features))]
    raise ConfigError(
        "layers", f"no default VisualDNA layers for {type(model).__name__}; pass them explicitly"
    )


def _check_layers(model: nn.Module, layers: Sequence[str]) -> list[str]:
    names = [n for n, _ in model.named_modules() if n]
    unknown = [layer for layer in layers if layer not in names]
    if unknown:
        near = difflib.get_close_matches(unknown[0], names, n=5, cutoff=0.3)
        raise ConfigError("layers", f"unknown module {unknown[0]!r}; close matches: {near}")
    return list(layers)


# --------------------------------------------------------------------------- architectures


def _fid_inception_blocks() -> dict[str, type[nn.Module]]:
    """Inception blocks as the TensorFlow FID graph computes them (after pytorch-fid).

    Hand-written rather than imported from pytorch-fid to avoid a dependency for four ``forward``
    overrides; the parameters (and state_dict keys) are torchvision's.
    """
    from torchvision.models import inception as tvi

    def avg_pool(x: torch.Tensor) -> torch.Tensor:
        # TF's average pool does not count the zero padding.
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)

    class FIDInceptionA(tvi.InceptionA):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b1 = self.branch1x1(x)
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return torch.cat([b1, b5, b3, self.branch_pool(avg_pool(x))], 1)

    class FIDInceptionC(tvi.InceptionC):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b1 = self.branch1x1(x)
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            b7d = self.branch7x7dbl_3(self.branch7x7dbl_2(self.branch7x7dbl_1(x)))
            b7d = self.branch7x7dbl_5(self.branch7x7dbl_4(b7d))
            return torch.cat([b1, b7, b7d, self.branch_pool(avg_pool(x))], 1)

    class FIDInceptionE(tvi.InceptionE):
        max_pool = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b1 = self.branch1x1(x)
            b3 = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
            b3d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            b3d = torch.cat([self.branch3x3dbl_3a(b3d), self.branch3x3dbl_3b(b3d)], 1)
            if self.max_pool:
                # The FID graph's last block max-pools here (an oddity of that TF graph).
                pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
            else:
                pooled = avg_pool(x)
            return torch.cat([b1, b3, b3d, self.branch_pool(pooled)], 1)

    class FIDInceptionE2(FIDInceptionE):
        max_pool = True

    return {"A": FIDInceptionA, "C": FIDInceptionC, "E1": FIDInceptionE, "E2": FIDInceptionE2}


def build_fid_inception() -> nn.Module:
    """InceptionV3 (torchvision layout) with the FID graph's patched blocks and ``fc = Identity``.

    Returns:
        A randomly initialised module mapping (B, 3, 299, 299) in [-1, 1] to (B, 2048) pool3.
    """
    import torchvision

    model = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    blocks = _fid_inception_blocks()
    model.Mixed_5b = blocks["A"](192, pool_features=32)
    model.Mixed_5c = blocks["A"](256, pool_features=64)
    model.Mixed_5d = blocks["A"](288, pool_features=64)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        setattr(model, name, blocks["C"](768, channels_7x7=c7))
    model.Mixed_7b = blocks["E1"](1280)
    model.Mixed_7c = blocks["E2"](2048)
    model.fc = nn.Identity()
    return model


def _strip_head(model: nn.Module) -> nn.Module:
    """Replace a torchvision classifier (``fc``, ``classifier`` or ``heads``) by the identity."""
    for attr in ("fc", "classifier", "heads", "head"):
        if isinstance(getattr(model, attr, None), nn.Module):
            setattr(model, attr, nn.Identity())
            return model
    return model


def _vit_input_size(model: nn.Module, fallback: int) -> int:
    patch_embed = getattr(model, "patch_embed", None)
    img_size = getattr(patch_embed, "img_size", None)
    if img_size is None:
        return fallback
    return int(img_size[0] if isinstance(img_size, (tuple, list)) else img_size)


def _timm_model(name: str, input_size: int | None) -> nn.Module:
    import timm

    if name not in timm.list_models():
        near = difflib.get_close_matches(name, timm.list_models(), n=5)
        raise ConfigError("extractor", f"unknown timm model {name!r}; close matches: {near}")
    if input_size is not None:
        try:
            return timm.create_model(name, pretrained=False, num_classes=0, img_size=input_size)
        except TypeError:
            pass  # a model without an img_size argument is resolution-agnostic
    return timm.create_model(name, pretrained=False, num_classes=0)


def _filter_vit_checkpoint(state: dict[str, torch.Tensor], model: nn.Module) -> dict:
    """timm's converter: official DINOv2 layout -> timm, position embedding resampled."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    return checkpoint_filter_fn(state, model)  # type: ignore[arg-type]  # a timm ViT


def _build_named(name: str, path: Path, input_size: int | None) -> tuple[nn.Module, Transform, int]:
    state = load_state_dict_file(path)
    if name == "inception":
        size = input_size or 299
        if size < 75:
            raise ConfigError("input_size", f"InceptionV3 needs at least 75 px, got {size}")
        model = build_fid_inception()
        load_into(model, state, path)
        return model, make_transform(size, (0.5,) * 3, (0.5,) * 3), size
    timm_name = "vit_base_patch14_dinov2" if name == "dinov2_vitb14" else "vit_base_patch16_224"
    patch = 14 if name == "dinov2_vitb14" else 16
    if input_size is not None and input_size % patch:
        raise ConfigError("input_size", f"{name} needs a multiple of {patch} px, got {input_size}")
    model = _timm_model(timm_name, input_size or 224)
    load_into(model, _filter_vit_checkpoint(state, model), path)
    size = _vit_input_size(model, 224)
    return model, make_transform(size, IMAGENET_MEAN, IMAGENET_STD), size


def _build_library(
    name: str, path: Path, input_size: int | None
) -> tuple[nn.Module, Transform, int]:
    kind, arch = name.split(":", 1)
    state = load_state_dict_file(path)
    if kind == "tv":
        import torchvision

        if arch not in torchvision.models.list_models():
            raise ConfigError(
                "extractor",
                f"unknown torchvision model {arch!r}",
                [f"tv:{m}" for m in torchvision.models.list_models()],
            )
        model = _strip_head(torchvision.models.get_model(arch, weights=None))
        size = input_size or 224
        load_into(model, state, path)
        return model, make_transform(size, IMAGENET_MEAN, IMAGENET_STD), size
    import timm.data

    model = _timm_model(arch, input_size)
    if getattr(model, "patch_embed", None) is not None:
        state = _filter_vit_checkpoint(state, model)
    load_into(model, state, path)
    cfg = timm.data.resolve_data_config({}, model=model)
    size = input_size or _vit_input_size(model, int(cfg["input_size"][-1]))
    return model, make_transform(size, cfg["mean"], cfg["std"]), size


def _build_run(run_dir: Path) -> tuple[nn.Module, Transform, int, str]:
    from divssl.evaluate.features import eval_transform, run_eval_geometry
    from divssl.io import read_yaml
    from divssl.pretrain.backbones import load_backbone

    cfg_path, weights = run_dir / "config.yaml", run_dir / "backbone.pt"
    for p in (cfg_path, weights):
        if not p.is_file():
            raise ConfigError("extractor", f"run:{run_dir}: missing {p.name} (not a run dir?)")
    cfg = read_yaml(cfg_path) or {}
    missing = [k for k in ("backbone", "image_size") if k not in cfg]
    if missing:
        raise ConfigError("extractor", f"run:{run_dir}: config.yaml lacks {missing}")
    size, cifar_stem = int(cfg["image_size"]), bool(cfg.get("cifar_stem", False))
    geometry = run_eval_geometry(cfg, size)  # the probes' transform of this run
    model, _ = load_backbone(weights, str(cfg["backbone"]), size, cifar_stem)
    identity = (
        f"{cfg['backbone']}|stem={cifar_stem}|weights={file_sha256(weights)}"
        f"|eval={geometry.recipe}:{geometry.resize}|mean={geometry.norm.mean}"
        f"|std={geometry.norm.std}"
    )
    return model, (lambda images: eval_transform(images, geometry)), size, identity


def extractor_names() -> list[str]:
    """The named extractors and the accepted prefixes."""
    return [*NAMED_EXTRACTORS, PIXELS, "run:DIR", "tv:NAME", "timm:NAME"]


def check_extractor_name(name: str, field: str = "extractor") -> None:
    """Refuse a name :func:`get_extractor` cannot build (no model or weights are loaded).

    Raises:
        ConfigError: naming ``field`` and the valid names.
    """
    prefixed = name.startswith(PREFIXES) and bool(name.split(":", 1)[1])
    if name not in (*NAMED_EXTRACTORS, PIXELS) and not prefixed:
        raise ConfigError(field, f"unknown extractor {name!r}", extractor_names())


def get_extractor(
    name: str,
    weights: str | Path | None = None,
    *,
    input_size: int | None = None,
    layers: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> Extractor:
    """Build a feature extractor from local files.

    Args:
        name: ``inception``, ``dinov2_vitb14``, ``mugs_vitb16``, ``pixels``, ``run:DIR``,
            ``tv:NAME`` or ``timm:NAME``.
        weights: state_dict file; for the named extractors it defaults to the environment
            variable in ``WEIGHT_ENV_VARS``; not allowed for ``run:DIR`` (its ``backbone.pt``).
        input_size: override of the model's input side (not for ``run:DIR``).
        layers: module names hooked for VisualDNA; defaults per :func:`default_layers`.
        device: where the model runs.

    Raises:
        ConfigError: unknown name, missing / unloadable / mismatching weights, bad layers.
    """
    if input_size is not None and input_size < 8:
        raise ConfigError("input_size", f"must be at least 8 px, got {input_size}")
    if name.startswith("run:"):
        if weights is not None or input_size is not None:
            raise ConfigError(
                "weights" if weights is not None else "input_size",
                "run:DIR uses the run's own backbone.pt and image_size",
            )
        run_dir = Path(name[len("run:") :]).expanduser()
        model, transform, size, identity = _build_run(run_dir)
    elif name == PIXELS:
        return _pixel_extractor(weights, input_size, layers, device)
    elif name in NAMED_EXTRACTORS:
        path = _resolve_weights(name, weights)
        model, transform, size = _build_named(name, path, input_size)
        identity = f"{name}|weights={file_sha256(path)}"
    elif name.startswith(("tv:", "timm:")) and name.split(":", 1)[1]:
        path = _resolve_weights(name, weights)
        model, transform, size = _build_library(name, path, input_size)
        identity = f"{name}|weights={file_sha256(path)}"
    else:
        raise ConfigError("extractor", f"unknown extractor {name!r}", extractor_names())
    chosen = _check_layers(model, layers) if layers else default_layers(model)
    identity += f"|size={size}|layers={','.join(chosen)}"
    return Extractor(name, identity, model, transform, size, chosen, device)


def _pixel_extractor(
    weights: str | Path | None,
    input_size: int | None,
    layers: Sequence[str] | None,
    device: str | torch.device,
) -> Extractor:
    """The ``pixels`` extractor: clean resize to S x S, then flatten (B, 3·S²) raw [0, 255]."""
    if weights is not None:
        raise ConfigError("weights", "the pixels extractor has no weights")
    if layers:
        raise ConfigError("layers", "the pixels extractor has no layers (no VisualDNA)")
    size = input_size or PIXELS_SIZE
    identity = f"{PIXELS}|size={size}|layers="
    return Extractor(
        PIXELS, identity, nn.Flatten(), lambda x: clean_resize(x, size), size, [], device
    )
