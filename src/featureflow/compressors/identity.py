"""The identity compressor: latents are the standardised features."""

from __future__ import annotations

from featureflow.compressors.base import StandardizedCompressor
from featureflow.typing import Tensor
from featureflow.utils import record_config, register_component

__all__ = ["Identity"]


@register_component
class Identity(StandardizedCompressor):
    """No compression: ``latent_dim == feature_dim`` and the latents are the
    standardised features (the "diffuse raw features" baseline of the paper).

    Its latent statistics stay the identity unless set; :meth:`encode` then returns
    ``(features - mean) / std`` with the feature statistics.

    Args:
        feature_dim: number of feature channels D.

    Example:
        >>> import torch
        >>> from featureflow.compressors import Identity
        >>> c = Identity(4)
        >>> c.set_feature_stats(torch.ones(4), 2 * torch.ones(4))
        >>> x = torch.full((1, 2, 2, 4), 3.0)
        >>> c.encode(x)[0, 0, 0].tolist()
        [1.0, 1.0, 1.0, 1.0]
        >>> bool((c.decode(c.encode(x)) == x).all())
        True
    """

    @record_config(feature_dim=int)
    def __init__(self, feature_dim: int) -> None:
        super().__init__(feature_dim, feature_dim)

    def _core_encode(self, x: Tensor) -> Tensor:
        return x

    def _core_decode(self, z: Tensor) -> Tensor:
        return z
