"""Helpers shared by the probe heads: feature checks, block splitting and resizing."""

from __future__ import annotations

from typing import Any, Union

import torch.nn.functional as F
from torch import Tensor, nn

from featureflow.probes.protocols import ProbeHead, missing_members
from featureflow.typing import ShapeError, check_finite
from featureflow.utils import build_component

__all__ = [
    "ImageSize",
    "RESIZE_MODES",
    "check_head_input",
    "check_resize_mode",
    "split_blocks",
    "resize",
    "as_module",
    "valid_mean",
]

#: An output size (H, W); ``None`` keeps the head's native resolution.
ImageSize = Union[tuple[int, int], list[int], None]

#: Interpolation modes accepted by the heads' ``resize_mode``.
RESIZE_MODES = ("bilinear", "bicubic", "nearest")


def check_head_input(owner: str, features: Tensor, feature_dim: int, detail: str = "") -> None:
    """Raise a clear error unless ``features`` is finite and (b, h, w, ``feature_dim``)."""
    if features.ndim != 4 or features.shape[-1] != feature_dim:
        extra = f" ({detail})" if detail else ""
        raise ShapeError(
            f"{owner} expected channels-last features of shape (b, h, w, {feature_dim}){extra}; "
            f"got shape {tuple(features.shape)}"
        )
    check_finite(f"{owner} features", features)


def split_blocks(features: Tensor, num_blocks: int) -> list[Tensor]:
    """Split (b, h, w, n·C) concatenated block features into n tensors (b, C, h, w)."""
    chunks = features.chunk(num_blocks, dim=-1)
    return [c.permute(0, 3, 1, 2).contiguous() for c in chunks]


def check_resize_mode(mode: str) -> str:
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {mode!r}")
    return mode


def resize(x: Tensor, size: ImageSize, mode: str) -> Tensor:
    """Interpolate (b, c, h, w) to ``size`` (no-op for ``None`` or the same size).

    Bilinear and bicubic use ``align_corners=False`` (the released probe convention).
    """
    if size is None:
        return x
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"size must be (H, W) with positive ints, got {size!r}")
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=tuple(size), mode="nearest")
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


def as_module(head: Any, owner: str) -> nn.Module:
    """Accept a head module or its ``{"type", "config"}`` spec (as saved in a config)."""
    if isinstance(head, dict):
        head = build_component(head)
    if not isinstance(head, nn.Module):
        raise TypeError(f"{owner} expects a probe head nn.Module (or its component spec), got {type(head).__name__}")
    missing = missing_members(head, ProbeHead)
    if missing:
        raise TypeError(
            f"{owner} expects a featureflow probe head with `feature_dim`, `out_channels` and "
            f"`describe()` (DPTHead, LinearHead, ConvDecoderHead, ...); {type(head).__name__} has no `{missing[0]}`"
        )
    return head


def valid_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask``; 0 (keeping the graph) when nothing is valid."""
    if bool(mask.any()):
        return values[mask].mean()
    return values.sum() * 0.0

