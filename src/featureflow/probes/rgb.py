"""RGB reconstruction from features on top of any probe head (a ConvDecoderHead by default choice)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from featureflow.probes._common import ImageSize
from featureflow.probes.task import TaskHead
from featureflow.typing import Float, FrameFeatures, typechecked
from featureflow.utils import register_component

__all__ = ["RGBHead"]

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
