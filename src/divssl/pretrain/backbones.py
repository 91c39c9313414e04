"""Backbone registry: name -> feature extractor (B, 3, H, W) -> (B, feat_dim).

ResNets come from torchvision, ViTs from timm, and ``convnet_tiny`` is a 4-conv network small
enough for CPU smoke tests (about 2 MFLOP per 16 px image, forward). ``cifar_stem=True`` swaps a
ResNet's 7x7/2 convolution and max-pool for a 3x3/1 convolution, the usual choice for 32 px images.

``export_backbone`` writes a plain state_dict that loads into the library model of the same name
(``torchvision.models.resnet18()`` with ``fc = Identity()``, ``timm.create_model(...,
num_classes=0)``); ``build_backbone`` rebuilds it from a run's config.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from divssl.errors import ConfigError, unknown_choice


class ConvNetTiny(nn.Module):
    """Four 3x3 conv-BN-ReLU blocks (16, 32, 64, 128 channels), pooling, global average.

    Args:
        width: channels of the first block; doubled at each block.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i in range(4):
            c_out = width * 2**i
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            if i < 3:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 8 * width)."""
        return self.pool(self.features(x)).flatten(1)


def _resnet(name: str) -> Callable[[int, bool], tuple[nn.Module, int]]:
    def build(image_size: int, cifar_stem: bool) -> tuple[nn.Module, int]:
        import torchvision

        model = getattr(torchvision.models, name)(weights=None)
        if cifar_stem:
            model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            model.maxpool = nn.Identity()
        dim = model.fc.in_features
        model.fc = nn.Identity()
        return model, dim

    return build


def _vit(timm_name: str) -> Callable[[int, bool], tuple[nn.Module, int]]:
    def build(image_size: int, cifar_stem: bool) -> tuple[nn.Module, int]:
        import timm

        if cifar_stem:
            raise ConfigError("cifar_stem", "only ResNet backbones have a CIFAR stem")
        if image_size % 16:
            raise ConfigError("image_size", f"ViT/16 needs a multiple of 16, got {image_size}")
        model = timm.create_model(timm_name, pretrained=False, num_classes=0, img_size=image_size)
        return model, int(model.num_features)  # type: ignore[arg-type]  # timm: int attribute

    return build


def _tiny(image_size: int, cifar_stem: bool) -> tuple[nn.Module, int]:
    if cifar_stem:
        raise ConfigError("cifar_stem", "only ResNet backbones have a CIFAR stem")
    model = ConvNetTiny()
    return model, model.num_features


BACKBONES: dict[str, Callable[[int, bool], tuple[nn.Module, int]]] = {
    "resnet18": _resnet("resnet18"),
    "resnet50": _resnet("resnet50"),
    "resnet101": _resnet("resnet101"),
    "vit_small_patch16": _vit("vit_small_patch16_224"),
    "vit_base_patch16": _vit("vit_base_patch16_224"),
    "convnet_tiny": _tiny,
}


def build_backbone(
    name: str, image_size: int = 224, cifar_stem: bool = False
) -> tuple[nn.Module, int]:
    """Build a randomly initialised backbone.

    Args:
        name: registry name (see ``BACKBONES``).
        image_size: input side in pixels (ViTs size their position embedding from it).
        cifar_stem: ResNet 3x3/1 stem without max-pool.

    Returns:
        The module (classifier removed) and its feature width.

    Raises:
        ConfigError: unknown name or an option the backbone does not support.
    """
    if name not in BACKBONES:
        raise unknown_choice("backbone", name, BACKBONES)
    return BACKBONES[name](image_size, cifar_stem)


def export_backbone(backbone: nn.Module, path: str | Path) -> None:
    """Write the backbone's plain state_dict (CPU tensors) atomically."""
    from divssl.io import atomic_torch_save

    state = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
    atomic_torch_save(state, path)


def load_backbone(
    path: str | Path, name: str, image_size: int = 224, cifar_stem: bool = False
) -> tuple[nn.Module, int]:
    """Build ``name`` and load an exported ``backbone.pt`` into it (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no backbone file at {path}")
    model, dim = build_backbone(name, image_size, cifar_stem)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model, dim
