"""Surface-normal metrics: angular error in degrees, its mean / median, % within thresholds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from featureflow.typing import Bool, Float, ShapeError, Tensor, check_finite, typechecked

__all__ = ["angular_error", "normal_metrics"]


@typechecked
def angular_error(
    pred: Float[Tensor, "*batch 3 H W"], target: Float[Tensor, "*batch 3 H W"]
) -> Float[Tensor, "*batch H W"]:
    """Per-pixel angle in degrees between ``pred`` and ``target`` (both normalised first;
    channels-first, the probe heads' layout).

    Example:
        >>> import torch
        >>> p = torch.tensor([1.0, 0.0, 0.0]).reshape(3, 1, 1)
        >>> t = torch.tensor([0.0, 2.0, 0.0]).reshape(3, 1, 1)
        >>> angular_error(p, t).flatten().tolist()
        [90.0]
    """
    check_finite("pred", pred)
    p = torch.nn.functional.normalize(pred.double(), dim=-3, eps=1e-12)
    t = torch.nn.functional.normalize(target.double(), dim=-3, eps=1e-12)
    cos = (p * t).sum(-3).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cos)).to(pred.dtype)


@typechecked
def normal_metrics(
    pred: Float[Tensor, "*batch 3 H W"],
    target: Float[Tensor, "*batch 3 H W"],
    valid: Bool[Tensor, "*batch H W"] | None = None,
    thresholds: Sequence[float] = (11.25, 22.5, 30.0),
) -> dict[str, float]:
    """Mean and median angular error (degrees) and the percentage of pixels within each
    threshold, over valid pixels pooled over the batch.

    A pixel is valid when the target is finite with non-zero length (and ``valid`` is
    True there, if given). The median of an even count averages the two middle values.

    Returns:
        ``{"mean", "median", "within_11.25", "within_22.5", "within_30"}`` (percent in
        [0, 100]; keys follow ``thresholds`` formatted with ``:g``).

    Example:
        >>> import torch, math
        >>> t = torch.tensor([0.0, 0.0, 1.0]).reshape(3, 1, 1).expand(3, 1, 2)
        >>> a = math.radians(20.0)
        >>> p = torch.tensor([[0.0, math.sin(a)], [0.0, 0.0], [1.0, math.cos(a)]]).reshape(3, 1, 2)
        >>> m = normal_metrics(p, t)
        >>> round(m["mean"], 4), round(m["median"], 4), m["within_11.25"], m["within_22.5"]
        (10.0, 10.0, 50.0, 100.0)
    """
    mask = torch.isfinite(target).all(-3) & (target.nan_to_num().norm(dim=-3) > 0)
    if valid is not None:
        mask = mask & valid
    if not bool(mask.any()):
        raise ValueError("no valid normal pixels (expected some finite, non-zero target normals)")
    if pred.shape != target.shape:  # pragma: no cover - the annotation already enforces it
        raise ShapeError("pred and target must have the same shape")
    err = angular_error(pred, target.nan_to_num()).double()[mask]
    s = err.sort().values
    n = s.numel()
    out = {"mean": float(s.mean()), "median": float((s[(n - 1) // 2] + s[n // 2]) / 2)}
    for thr in thresholds:
        if not math.isfinite(thr) or thr <= 0:
            raise ValueError(f"thresholds must be positive degrees, got {thr}")
        out[f"within_{thr:g}"] = float((s < thr).double().mean()) * 100.0
    return out
