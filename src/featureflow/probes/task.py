"""The common part of the task heads: wrap any probe head, check its output width."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from featureflow.probes._common import ImageSize, as_module
from featureflow.typing import Float, FrameFeatures, ShapeError, typechecked
from featureflow.utils import Configurable

__all__ = ["TaskHead"]


class TaskHead(nn.Module, Configurable):
    """Base class of the task heads: ``self.head`` is any probe head.

    ``head(features, size)`` returns the wrapped head's raw output (b, c, H, W);
    subclasses add ``predict(features, size)`` (the decoded value) and
    ``loss(features, target)``. The wrapped head lives at ``self.head``, so the state
    dict keys are ``head.*`` — the layout of the released Lightning head checkpoints.
    ``config["head"]`` is the wrapped head's ``{"type", "config"}`` spec, so
    ``from_config`` rebuilds the pair.

    Example:
        >>> from featureflow.probes import LinearHead, NormalsHead
        >>> head = NormalsHead(LinearHead(8, 3))
        >>> spec = head.config["head"]
        >>> spec["type"], sorted(head.state_dict())[0]
        ('LinearHead', 'head.linear.bias')
    """

    #: Short name of the task (subclasses override).
    task = "task"

    def __init__(self, head: nn.Module | dict[str, Any], out_channels: int) -> None:
        super().__init__()
        self.head = as_module(head, type(self).__name__)
        if int(self.head.out_channels) != out_channels:
            raise ValueError(
                f"{type(self).__name__} needs a head with {out_channels} output channels; "
                f"{type(self.head).__name__} has out_channels={self.head.out_channels}"
            )
        self.config: dict[str, Any] = {"head": self.head.describe()}

    @property
    def feature_dim(self) -> int:
        """Input channels D of the wrapped head."""
        return int(self.head.feature_dim)

    @property
    def out_channels(self) -> int:
        """Raw output channels of the wrapped head."""
        return int(self.head.out_channels)

    @typechecked
    def forward(self, features: FrameFeatures, size: ImageSize = None) -> Float[Tensor, "b c H W"]:
        """Raw output of the wrapped head (logits / unnormalised values)."""
        return self.head(features, size=size)

    def _raw_for(self, features: Tensor, target: Tensor, target_name: str) -> Tensor:
        if target.shape[0] != features.shape[0]:
            raise ShapeError(
                f"{type(self).__name__}.loss: {target_name} batch {target.shape[0]} does not match "
                f"features batch {features.shape[0]}"
            )
        return self.head(features, size=(int(target.shape[-2]), int(target.shape[-1])))
