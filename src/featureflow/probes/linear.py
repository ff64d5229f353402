"""The light probe: one linear map per patch, then upsampling."""

from __future__ import annotations

from torch import Tensor, nn

from featureflow.probes._common import ImageSize, check_head_input, check_resize_mode, resize
from featureflow.typing import Float, FrameFeatures, typechecked
from featureflow.utils import Configurable, record_config, register_component

__all__ = ["LinearHead"]


@register_component
class LinearHead(nn.Module, Configurable):
    """Per-patch linear probe: (optional BatchNorm over channels) → Linear → resize.

    The usual linear-probe protocol for frozen ViT features: the features of each patch
    are normalised by a BatchNorm over the ``feature_dim`` channels (statistics over
    batch and patches; turn off with ``batch_norm=False``), mapped linearly to
    ``out_channels``, and the (b, c, h, w) map is interpolated to the image size.

    Args:
        feature_dim: input channels D.
        out_channels: output channels c.
        batch_norm: BatchNorm on the features before the linear map.
        resize_mode: interpolation to ``size`` ("bilinear", "bicubic" or "nearest").

    Example:
        >>> import torch
        >>> head = LinearHead(feature_dim=16, out_channels=3)
        >>> head(torch.randn(2, 4, 4, 16)).shape                 # native: the patch grid
        torch.Size([2, 3, 4, 4])
        >>> head(torch.randn(2, 4, 4, 16), size=(32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """

    #: Native output resolution = patch grid × this factor.
    upsample_factor = 1

    @record_config(feature_dim=int, out_channels=int, batch_norm=bool)
    def __init__(
        self, feature_dim: int, out_channels: int, batch_norm: bool = True, resize_mode: str = "bilinear"
    ) -> None:
        super().__init__()
        if feature_dim < 1 or out_channels < 1:
            raise ValueError(
                f"LinearHead needs positive sizes, got feature_dim={feature_dim}, out_channels={out_channels}"
            )
        check_resize_mode(resize_mode)
        self.feature_dim = int(feature_dim)
        self.out_channels = int(out_channels)
        self.resize_mode = resize_mode
        self.norm = nn.BatchNorm2d(feature_dim) if batch_norm else nn.Identity()
        self.linear = nn.Conv2d(feature_dim, out_channels, kernel_size=1)

    @typechecked
    def forward(self, features: FrameFeatures, size: ImageSize = None) -> Float[Tensor, "b c H W"]:
        """Raw output (b, out_channels, H, W); the patch grid when ``size`` is None."""
        check_head_input("LinearHead", features, self.feature_dim)
        x = features.permute(0, 3, 1, 2)
        out = self.linear(self.norm(x))
        return resize(out, size, self.resize_mode)
