"""What the rest of featureflow needs from a probe head and from a task probe.

A `ProbeHead` maps features (b, h, w, D) to a raw map (b, c, H, W) (`DPTHead`,
`LinearHead`, `ConvDecoderHead`); a `Probe` decodes features into one modality with
``predict(features, size)`` (the task heads, `PixelPatchRGBHead`), which is what
`featureflow.world.WorldModel` keeps in ``probes``.

Example:
    >>> from featureflow.probes import LinearHead, NormalsHead
    >>> isinstance(LinearHead(8, 3), ProbeHead), isinstance(NormalsHead(LinearHead(8, 3)), Probe)
    (True, True)
    >>> missing_members(object(), ProbeHead)
    ['feature_dim', 'out_channels', 'describe']
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

__all__ = ["ProbeHead", "Probe", "missing_members"]


@runtime_checkable
class ProbeHead(Protocol):
    """Features (b, h, w, D) → raw map (b, c, H, W); saved through ``describe()``."""

    feature_dim: int
    out_channels: int

    def describe(self) -> dict[str, Any]: ...


@runtime_checkable
class Probe(Protocol):
    """Features (b, h, w, D) → one decoded modality at image ``size`` (H, W)."""

    def predict(self, features: Tensor, size: Any = None) -> Tensor: ...


def missing_members(obj: Any, protocol: type) -> list[str]:
    """The members of ``protocol`` that ``obj`` lacks, in the protocol's order (for error messages)."""
    wanted = [name for name in vars(protocol).get("__annotations__", {})]
    wanted += [name for name, value in vars(protocol).items() if callable(value) and not name.startswith("_")]
    return [name for name in dict.fromkeys(wanted) if not hasattr(obj, name)]
