"""Surface normals on top of any probe head."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featureflow.probes._common import ImageSize, valid_mean
from featureflow.probes.task import TaskHead
from featureflow.typing import Float, FrameFeatures, typechecked
from featureflow.utils import register_component

__all__ = ["NormalsHead"]

_COS_LIMIT = 1.0 - 1e-6


@register_component
class NormalsHead(TaskHead):
    """Per-pixel unit normals (b, 3, H, W) from a 3-output head.

    ``predict`` L2-normalises the raw output over the 3 channels after resizing (as the
    released decoder does). ``loss`` is the mean angular error in radians,
    ``acos(<n̂, t̂>)``, over pixels whose target has length > 0.5 (zero vectors mark
    "no normal"); the cosine is clamped to ±(1 − 1e-6) so the gradient stays finite.

    Args:
        head: probe head with 3 outputs (or its component spec).

    Example:
        >>> import torch
        >>> from featureflow.probes import LinearHead
        >>> normals = NormalsHead(LinearHead(16, 3))
        >>> n = normals.predict(torch.randn(2, 4, 4, 16), size=(8, 8))
        >>> n.shape, bool(torch.allclose(n.norm(dim=1), torch.ones(2, 8, 8), atol=1e-5))
        (torch.Size([2, 3, 8, 8]), True)
    """

    task = "normals"

    def __init__(self, head: nn.Module | dict[str, Any]) -> None:
        super().__init__(head, out_channels=3)

    @typechecked
    def decode(self, raw: Float[Tensor, "b 3 H W"]) -> Float[Tensor, "b 3 H W"]:
        """Normalise raw output to unit vectors (a zero vector maps to +z)."""
        norm = raw.norm(dim=1, keepdim=True)
        fallback = torch.zeros_like(raw)
        fallback[:, 2] = 1.0
        return torch.where(norm > 1e-12, raw / norm.clamp_min(1e-12), fallback)

    @typechecked
    def predict(self, features: FrameFeatures, size: ImageSize = None) -> Float[Tensor, "b 3 H W"]:
        """Unit normals (b, 3, H, W)."""
        return self.decode(self.head(features, size=size))

    @typechecked
    def loss(self, features: FrameFeatures, target: Float[Tensor, "b 3 H W"]) -> Float[Tensor, ""]:
        """Mean angular error (radians) over pixels with a valid target normal."""
        raw = self._raw_for(features, target, "target normals")
        valid = torch.isfinite(target).all(dim=1)
        safe = torch.where(torch.isfinite(target), target, torch.zeros_like(target))
        valid &= safe.norm(dim=1) > 0.5
        cos = (F.normalize(raw, dim=1, eps=1e-12) * F.normalize(safe, dim=1, eps=1e-12)).sum(dim=1)
        angle = torch.acos(cos.clamp(-_COS_LIMIT, _COS_LIMIT))
        return valid_mean(angle, valid)
