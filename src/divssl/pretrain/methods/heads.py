"""Heads shared by the methods: MLP projectors/predictors, the DINO head, SwAV prototypes, and the
multi-crop backbone forward.

Every head maps features (B, D_in) to (B, D_out); BatchNorm layers normalise over the rows of the
batch they see, so how views are grouped into forward passes matters and is chosen per method to
match its original code (see :func:`forward_multicrop`).
"""

from __future__ import annotations

from itertools import groupby

import torch
import torch.nn.functional as F
from torch import nn


def mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    num_layers: int,
    bn_last: bool = False,
    bn_last_affine: bool = True,
    *,
    bias: bool = True,
    use_bn: bool = True,
    activation: type[nn.Module] = nn.ReLU,
) -> nn.Sequential:
    """A ``num_layers``-layer MLP: ``(Linear-BN-act) x (num_layers - 1)`` then ``Linear``.

    Args:
        in_dim: input width.
        hidden_dim: width of the hidden layers.
        out_dim: output width.
        num_layers: number of Linear layers (>= 1).
        bn_last: append a BatchNorm1d after the last Linear (SimCLR v2 / MoCo v3 projectors).
        bn_last_affine: whether that last BatchNorm has a learnable scale and shift (MoCo v3 uses
            ``affine=False``).
        bias: bias in the Linear layers (MoCo v3 uses none; BN follows each layer).
        use_bn: BatchNorm1d after the hidden Linear layers.
        activation: hidden activation class (ReLU; GELU for DINO).

    Returns:
        The module mapping (B, in_dim) -> (B, out_dim).

    Raises:
        ValueError: ``num_layers < 1``.
    """
    if num_layers < 1:
        raise ValueError(f"an MLP needs at least one layer, got num_layers={num_layers}")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers.append(nn.Linear(dim, hidden_dim, bias=bias))
        if use_bn:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(activation())
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=bias))
    if bn_last:
        layers.append(nn.BatchNorm1d(out_dim, affine=bn_last_affine))
    return nn.Sequential(*layers)


class DINOHead(nn.Module):
    """DINO projection head: MLP (GELU) to a bottleneck, L2 normalisation, weight-normalised
    linear layer onto K prototypes (Caron et al., 2021, and their ``DINOHead``).

    Args:
        in_dim: backbone feature width.
        num_prototypes: K, the output width.
        hidden_dim: MLP hidden width.
        bottleneck_dim: MLP output width (input of the last layer).
        num_layers: Linear layers of the MLP (>= 1).
        use_bn: BatchNorm in the MLP (off in DINO's ViT recipe and solo-learn's default).
        norm_last_layer: fix the weight-norm magnitude ``g`` to 1 (not trained), so each
            prototype is a unit vector; DINO's default for stability.
    """

    def __init__(
        self,
        in_dim: int,
        num_prototypes: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        self.mlp = mlp(
            in_dim, hidden_dim, bottleneck_dim, num_layers, use_bn=use_bn, activation=nn.GELU
        )
        self.mlp.apply(_trunc_normal_init)
        last = nn.Linear(bottleneck_dim, num_prototypes, bias=False)
        self.last_layer = nn.utils.parametrizations.weight_norm(last)
        magnitude = self.last_layer.parametrizations.weight.original0  # g: (K, 1)
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad_(not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) features -> (B, K) logits."""
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)


def _trunc_normal_init(module: nn.Module) -> None:
    """DINO's init of the head's Linear layers: truncated normal (std 0.02), zero bias."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class Prototypes(nn.Module):
    """SwAV prototypes: a bias-free linear layer whose rows are kept on the unit sphere.

    As in SwAV's ``main_swav.py``, the rows are re-normalised in place (without gradient) before
    each forward pass by :meth:`normalize_`, rather than through a weight-norm reparametrisation.

    Args:
        dim: feature width D.
        num_prototypes: K.
    """

    def __init__(self, dim: int, num_prototypes: int) -> None:
        super().__init__()
        self.layer = nn.Linear(dim, num_prototypes, bias=False)
        self.normalize_()

    @property
    def weight(self) -> torch.Tensor:
        """(K, D) prototype matrix."""
        return self.layer.weight

    @torch.no_grad()
    def normalize_(self) -> None:
        """L2-normalise every prototype (row) in place."""
        self.layer.weight.copy_(F.normalize(self.layer.weight, dim=1, p=2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D) normalised features -> (B, K) scores (cosine similarities)."""
        return self.layer(z)


def forward_multicrop(backbone: nn.Module, views: list[torch.Tensor]) -> torch.Tensor:
    """Run the backbone on all crops, one forward pass per run of same-resolution crops.

    This is DINO's ``MultiCropWrapper`` (and SwAV's multi-resolution forward): consecutive crops
    of the same size are concatenated along the batch, so BatchNorm sees e.g. both global crops
    together and all local crops together.

    Args:
        backbone: (n B, 3, h, w) -> (n B, D).
        views: crops, each (B, 3, h_i, w_i), global crops first.

    Returns:
        (n_views, B, D) features in the order of ``views``.
    """
    if not views:
        raise ValueError("forward_multicrop needs at least one view")
    batch = views[0].shape[0]
    feats: list[torch.Tensor] = []
    for _, group in groupby(views, key=lambda v: tuple(v.shape[-2:])):
        crops = list(group)
        feats.append(backbone(torch.cat(crops, dim=0)))
    out = torch.cat(feats, dim=0)
    return out.reshape(len(views), batch, out.shape[-1])


def check_two_views(views: list[torch.Tensor], method: str) -> None:
    """Two-view methods take exactly the 2 global crops; local crops are a DINO/SwAV feature.

    Args:
        views: the step's views.
        method: method name for the message.

    Raises:
        ValueError: not exactly two views.
    """
    if len(views) != 2:
        raise ValueError(
            f"{method} takes exactly 2 views (got {len(views)}); set augment.n_local_crops=0"
        )
