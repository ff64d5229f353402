"""An isotropic ConvNeXt trunk (no downsampling), the backbone of :class:`FeatureVAE`.

Parameter names follow the released VFMF feature VAE (``stem``, ``blocks.<i>.dwconv``,
``.norm``, ``.pwconv1``, ``.pwconv2``, optional ``.gamma``) so its checkpoints load.
"""

from __future__ import annotations

import torch
from torch import nn

from featureflow.typing import Float, Tensor, typechecked

__all__ = ["ConvNeXtBlock", "ConvNeXtIsotropic"]


class _DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per example while training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class ConvNeXtBlock(nn.Module):
    """Depthwise 7×7 conv, channels-last LayerNorm (eps 1e-6), 4× MLP with GELU,
    optional layer scale, residual.

    Args:
        dim: channels.
        drop_path: stochastic-depth probability.
        layer_scale_init_value: initial layer-scale value; 0 disables layer scale
            (no ``gamma`` parameter, as in the released VAE).

    Example:
        >>> import torch
        >>> ConvNeXtBlock(8)(torch.zeros(1, 8, 3, 3)).shape
        torch.Size([1, 8, 3, 3])
    """

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init_value: float = 0.0) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        if layer_scale_init_value > 0:
            self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
        else:
            self.gamma = None
        self.drop_path = _DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """``x``: (n, dim, h, w) -> (n, dim, h, w)."""
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        if self.gamma is not None:
            y = y * self.gamma
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class ConvNeXtIsotropic(nn.Module):
    """A 1×1 conv stem to ``dim`` channels, then ``depth`` ConvNeXt blocks at full resolution.

    Args:
        in_channels: input channels.
        dim: width.
        depth: number of blocks.
        drop_path_rate: stochastic depth, linearly increasing from 0 to this value.
        layer_scale_init_value: see :class:`ConvNeXtBlock`.

    Example:
        >>> import torch
        >>> ConvNeXtIsotropic(5, dim=8, depth=2)(torch.zeros(2, 5, 4, 6)).shape
        torch.Size([2, 8, 4, 6])
    """

    def __init__(
        self,
        in_channels: int,
        dim: int,
        depth: int,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 0.0,
    ) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, dim, kernel_size=1)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # python, so it works on meta
        self.blocks = nn.Sequential(*[ConvNeXtBlock(dim, r, layer_scale_init_value) for r in rates])
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    @typechecked
    def forward(self, x: Float[Tensor, "n c h w"]) -> Float[Tensor, "n d h w"]:
        """``x``: (n, in_channels, h, w) -> (n, dim, h, w)."""
        return self.blocks(self.stem(x))
