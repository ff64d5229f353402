"""A small convolutional decoder from patch features to pixels (used for RGB)."""

from __future__ import annotations

from torch import Tensor, nn

from featureflow.probes._common import ImageSize, check_head_input, check_resize_mode, resize
from featureflow.typing import Float, FrameFeatures, typechecked
from featureflow.utils import Configurable, record_config, register_component

__all__ = ["ConvDecoderHead"]


class _UpStage(nn.Module):
    """×2 bilinear upsampling, then two 3×3 convs with GroupNorm + GELU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.conv1 = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
        self.norm1 = nn.GroupNorm(1, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel_size=3, padding=1)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        y = self.act(self.norm1(self.conv1(self.up(x))))
        return self.act(self.conv2(y))


@register_component
class ConvDecoderHead(nn.Module, Configurable):
    """Patch features → pixels: LayerNorm, 1×1 projection, a 3×3 mixing conv at the
    patch grid, then ``num_upsamples`` stages of (×2 upsample, two 3×3 convs), halving
    the width each stage (never below 16), and a 1×1 conv to ``out_channels``.

    The native output is the patch grid × 2**``num_upsamples`` (choose it so that it
    matches the patch size, e.g. 3 for patch 8, 4 for patch 16); ``size`` interpolates
    the rest of the way. The output is raw (unbounded); :class:`RGBHead` applies the
    sigmoid.

    Args:
        feature_dim: input channels D.
        out_channels: output channels (3 for RGB).
        hidden_dim: width at the patch grid.
        num_upsamples: number of ×2 stages.
        resize_mode: interpolation to ``size``.

    Example:
        >>> import torch
        >>> head = ConvDecoderHead(feature_dim=16, hidden_dim=16, num_upsamples=2)
        >>> head(torch.randn(1, 4, 4, 16)).shape
        torch.Size([1, 3, 16, 16])
    """

    @record_config(feature_dim=int, out_channels=int, hidden_dim=int, num_upsamples=int)
    def __init__(
        self,
        feature_dim: int,
        out_channels: int = 3,
        hidden_dim: int = 64,
        num_upsamples: int = 3,
        resize_mode: str = "bilinear",
    ) -> None:
        super().__init__()
        if feature_dim < 1 or out_channels < 1 or hidden_dim < 1 or num_upsamples < 0:
            raise ValueError(
                "ConvDecoderHead needs positive sizes and num_upsamples >= 0; got "
                f"feature_dim={feature_dim}, out_channels={out_channels}, hidden_dim={hidden_dim}, "
                f"num_upsamples={num_upsamples}"
            )
        check_resize_mode(resize_mode)
        self.feature_dim = int(feature_dim)
        self.out_channels = int(out_channels)
        self.upsample_factor = 2 ** int(num_upsamples)
        self.resize_mode = resize_mode
        self.norm = nn.LayerNorm(feature_dim)
        self.proj = nn.Conv2d(feature_dim, hidden_dim, kernel_size=1)
        self.mix = nn.Sequential(nn.Conv2d(hidden_dim, hidden_dim, kernel_size=3, padding=1), nn.GELU())
        stages = []
        width = hidden_dim
        for _ in range(num_upsamples):
            nxt = max(width // 2, min(16, hidden_dim))
            stages.append(_UpStage(width, nxt))
            width = nxt
        self.stages = nn.Sequential(*stages)
        self.out = nn.Conv2d(width, out_channels, kernel_size=1)

    @typechecked
    def forward(self, features: FrameFeatures, size: ImageSize = None) -> Float[Tensor, "b c H W"]:
        """Raw output (b, out_channels, H, W); grid × 2**num_upsamples when ``size`` is None."""
        check_head_input("ConvDecoderHead", features, self.feature_dim)
        x = self.proj(self.norm(features).permute(0, 3, 1, 2))
        x = x + self.mix(x)
        out = self.out(self.stages(x))
        return resize(out, size, self.resize_mode)
