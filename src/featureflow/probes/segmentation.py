"""Semantic segmentation on top of any probe head."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from featureflow.probes._common import ImageSize
from featureflow.probes.task import TaskHead
from featureflow.typing import Float, FrameFeatures, Int, typechecked
from featureflow.utils import register_component

__all__ = ["SegmentationHead"]


@register_component
class SegmentationHead(TaskHead):
    """Per-pixel classification into ``num_classes`` classes.

    ``predict`` → (b, H, W) int64 class ids (argmax of the logits after resizing to
    ``size``, as the released decoder does); ``probabilities`` → softmax (b, C, H, W);
    ``loss`` → cross-entropy over pixels whose label is not ``ignore_index``.

    Args:
        head: a probe head with ``num_classes`` outputs (or its component spec).
        num_classes: number of classes.
        ignore_index: label value excluded from the loss (default 255).

    Example:
        >>> import torch
        >>> from featureflow.probes import LinearHead
        >>> seg = SegmentationHead(LinearHead(16, 5), num_classes=5)
        >>> f = torch.randn(2, 4, 4, 16)
        >>> seg.predict(f, size=(8, 8)).dtype, seg.predict(f, size=(8, 8)).shape
        (torch.int64, torch.Size([2, 8, 8]))
        >>> bool(seg.loss(f, torch.randint(0, 5, (2, 8, 8))) > 0)
        True
    """

    task = "segmentation"

    def __init__(self, head: nn.Module | dict[str, Any], num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 2:
            raise ValueError(f"SegmentationHead needs num_classes >= 2, got {num_classes}")
        super().__init__(head, out_channels=num_classes)
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.config.update(num_classes=self.num_classes, ignore_index=self.ignore_index)

    @typechecked
    def probabilities(self, features: FrameFeatures, size: ImageSize = None) -> Float[Tensor, "b c H W"]:
        """Class probabilities (b, num_classes, H, W), summing to 1 over classes."""
        return self.head(features, size=size).softmax(dim=1)

    @typechecked
    def predict(self, features: FrameFeatures, size: ImageSize = None) -> Int[Tensor, "b H W"]:
        """Class ids (b, H, W) int64 in [0, num_classes)."""
        return self.head(features, size=size).argmax(dim=1)

    @typechecked
    def loss(self, features: FrameFeatures, target: Int[Tensor, "b H W"]) -> Float[Tensor, ""]:
        """Mean cross-entropy over labelled pixels (0 when every pixel is ignored)."""
        valid = target != self.ignore_index
        bad = valid & ((target < 0) | (target >= self.num_classes))
        if bool(bad.any()):
            value = int(target[bad][0])
            raise ValueError(
                f"SegmentationHead.loss: target labels must be in [0, {self.num_classes}) or "
                f"ignore_index={self.ignore_index}; found {value}"
            )
        logits = self._raw_for(features, target, "target")
        if not bool(valid.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target.long(), ignore_index=self.ignore_index)

