"""RGB reconstruction from features on top of any probe head (a ConvDecoderHead by default choice)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featureflow.probes._common import ImageSize
from featureflow.probes.task import TaskHead
from featureflow.typing import Float, FrameFeatures, typechecked
from featureflow.utils import Configurable, record_config, register_component

__all__ = ["RGBHead", "PixelPatchRGBHead"]

LOSSES = ("l1", "mse")


@register_component
class RGBHead(TaskHead):
    """Pixels (b, 3, H, W) in [0, 1] from a 3-output head: ``sigmoid(raw)``.

    Meant to wrap a :class:`ConvDecoderHead` (progressive ×2 upsampling from the patch
    grid), though any 3-output head works. The sigmoid is applied after resizing, so
    every output is in [0, 1] whatever the interpolation. ``loss`` is the mean L1 (or
    MSE with ``loss="mse"``) between ``sigmoid(raw)`` and the target image.

    Args:
        head: probe head with 3 outputs (or its component spec).
        loss: "l1" (default) or "mse".

    Example:
        >>> import torch
        >>> from featureflow.probes import ConvDecoderHead
        >>> rgb = RGBHead(ConvDecoderHead(feature_dim=16, hidden_dim=16, num_upsamples=2))
        >>> img = rgb.predict(torch.randn(1, 4, 4, 16), size=(16, 16))
        >>> img.shape, bool(((img >= 0) & (img <= 1)).all())
        (torch.Size([1, 3, 16, 16]), True)
    """

    task = "rgb"

    def __init__(self, head: nn.Module | dict[str, Any], loss: str = "l1") -> None:
        if loss not in LOSSES:
            raise ValueError(f"RGBHead loss must be one of {LOSSES}, got {loss!r}")
        super().__init__(head, out_channels=3)
        self.loss_kind = loss
        self.config.update(loss=loss)

    @typechecked
    def predict(self, features: FrameFeatures, size: ImageSize = None) -> Float[Tensor, "b 3 H W"]:
        """Image (b, 3, H, W) in [0, 1]."""
        return torch.sigmoid(self.head(features, size=size))

    @typechecked
    def loss(self, features: FrameFeatures, target: Float[Tensor, "b 3 H W"]) -> Float[Tensor, ""]:
        """Mean L1 (or MSE) between the predicted and the target image (target in [0, 1])."""
        if bool((target < 0).any() or (target > 1).any()) or not bool(torch.isfinite(target).all()):
            raise ValueError("RGBHead.loss: target must be a finite float image in [0, 1] (convert uint8 with / 255)")
        pred = torch.sigmoid(self._raw_for(features, target, "target image"))
        diff = pred - target
        return diff.abs().mean() if self.loss_kind == "l1" else diff.pow(2).mean()


@register_component
class PixelPatchRGBHead(nn.Module, Configurable):
    """The exact "probe" of :class:`~featureflow.encoders.PixelPatchEncoder` features:
    un-patchify them back to pixels (no parameters, nothing to train).

    ``predict(features (b, h, w, 3·p²), size)`` returns (b, 3, H, W) clamped to [0, 1],
    bilinearly resized when ``size`` differs from the patch grid times ``p``.

    Args:
        patch_size: the encoder's patch size.

    Example:
        >>> from featureflow.encoders import PixelPatchEncoder
        >>> x = torch.rand(1, 3, 8, 8)
        >>> bool(torch.equal(PixelPatchRGBHead(4).predict(PixelPatchEncoder(4)(x)), x))
        True
    """

    task = "rgb"

    @record_config
    def __init__(self, patch_size: int) -> None:
        super().__init__()
        if not isinstance(patch_size, int) or isinstance(patch_size, bool) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
        self.patch_size = patch_size

    @typechecked
    def predict(self, features: FrameFeatures, size: ImageSize = None) -> Float[Tensor, "b 3 H W"]:
        """Image (b, 3, H, W) in [0, 1]."""
        from featureflow.encoders.pixels import unpatchify

        img = unpatchify(features, self.patch_size).clamp(0, 1)
        if size is not None and tuple(size) != tuple(img.shape[-2:]):
            img = F.interpolate(img, size=tuple(size), mode="bilinear", align_corners=False).clamp(0, 1)
        return img

    def forward(self, features: Tensor, size: ImageSize = None) -> Tensor:
        return self.predict(features, size)
