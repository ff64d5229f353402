"""`PixelPatchEncoder`: the raw pixels of each patch as its feature (exactly invertible)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from featureflow.typing import Float, typechecked
from featureflow.utils import Configurable, record_config, register_component

__all__ = ["PixelPatchEncoder", "unpatchify"]


def unpatchify(features: Tensor, patch_size: int) -> Tensor:
    """Inverse of :class:`PixelPatchEncoder`: features (*batch, h, w, 3·p²) → images (*batch, 3, h·p, w·p).

    Example:
        >>> unpatchify(torch.zeros(2, 3, 4, 12), 2).shape
        torch.Size([2, 3, 6, 8])
    """
    p = patch_size
    if features.shape[-1] != 3 * p * p:
        raise ValueError(f"features: expected {3 * p * p} channels (3·patch_size²) for patch_size={p}, got {features.shape[-1]}")
    lead, (h, w) = features.shape[:-3], features.shape[-3:-1]
    x = features.reshape(-1, h, w, 3, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(*lead, 3, h * p, w * p)


@register_component
class PixelPatchEncoder(nn.Module, Configurable):
    """A parameter-free encoder: the raw pixels of each ``patch_size`` patch as its feature.

    Features (b, h, w, 3·p²) are exactly invertible (:func:`unpatchify`,
    :class:`~featureflow.probes.PixelPatchRGBHead`), so a world model on them can be
    read as images without a trained probe. It satisfies the
    :class:`~featureflow.encoders.Encoder` protocol (``resize="error"``: frame sides must
    be multiples of the patch). Useful for small simulated worlds and as a
    "no foundation model" baseline.

    Args:
        patch_size: pixels per patch side.

    Example:
        >>> enc = PixelPatchEncoder(patch_size=4)
        >>> x = torch.rand(2, 3, 8, 8)
        >>> enc(x).shape, bool(torch.equal(unpatchify(enc(x), 4), x))
        (torch.Size([2, 2, 2, 48]), True)
    """

    resize = "error"

    @record_config
    def __init__(self, patch_size: int = 4) -> None:
        super().__init__()
        if not isinstance(patch_size, int) or isinstance(patch_size, bool) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
        self.patch_size = patch_size
        self.feature_dim = 3 * patch_size**2

    @typechecked
    def forward(self, images: Float[Tensor, "b 3 H W"]) -> Float[Tensor, "b h w D"]:
        b, _, hh, ww = images.shape
        p = self.patch_size
        if hh % p or ww % p:
            raise ValueError(f"image size ({hh}, {ww}) must be divisible by patch_size={p}")
        x = images.reshape(b, 3, hh // p, p, ww // p, p)
        return x.permute(0, 2, 4, 1, 3, 5).reshape(b, hh // p, ww // p, self.feature_dim)

    def decode(self, features: Tensor) -> Tensor:
        """Features (*batch, h, w, 3·p²) → images (*batch, 3, h·p, w·p)."""
        return unpatchify(features, self.patch_size)
