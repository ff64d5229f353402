"""Monocular depth metrics: AbsRel, RMSE and threshold accuracy δ < 1.25ⁿ."""

from __future__ import annotations

import torch

from featureflow.typing import Bool, Float, ShapeError, Tensor, check_finite, typechecked

__all__ = ["depth_valid_mask", "abs_rel", "rmse", "delta_accuracy", "depth_metrics"]


def depth_valid_mask(pred: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """Pixels that count: ``target > 0`` and finite, and'ed with ``valid`` if given.

    Example:
        >>> import torch
        >>> depth_valid_mask(torch.ones(3), torch.tensor([1.0, 0.0, 2.0])).tolist()
        [True, False, True]
    """
    if pred.shape != target.shape:
        raise ShapeError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    check_finite("pred", pred)
    mask = torch.isfinite(target) & (target > 0)
    if valid is not None:
        if valid.shape != target.shape:
            raise ShapeError(f"valid must have the target's shape {tuple(target.shape)}, got {tuple(valid.shape)}")
        mask = mask & valid.bool()
    if not bool(mask.any()):
        raise ValueError("no valid depth pixels (expected some target > 0)")
    return mask


def _pairs(pred: Tensor, target: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
    mask = depth_valid_mask(pred, target, valid)
    return pred[mask].double(), target[mask].double()


@typechecked
def abs_rel(
    pred: Float[Tensor, "*shape"], target: Float[Tensor, "*shape"], valid: Bool[Tensor, "*shape"] | None = None
) -> float:
    """Mean of ``|pred - target| / target`` over valid pixels (pooled over the batch).

    Example:
        >>> import torch
        >>> abs_rel(torch.tensor([1.5, 2.0, 9.0]), torch.tensor([1.0, 4.0, 0.0]))
        0.5
    """
    p, t = _pairs(pred, target, valid)
    return float(((p - t).abs() / t).mean())


@typechecked
def rmse(
    pred: Float[Tensor, "*shape"], target: Float[Tensor, "*shape"], valid: Bool[Tensor, "*shape"] | None = None
) -> float:
    """Root mean squared error over valid pixels (pooled over the batch).

    Example:
        >>> import torch
        >>> rmse(torch.tensor([1.0, 5.0]), torch.tensor([4.0, 1.0]))
        3.5355339059327378
    """
    p, t = _pairs(pred, target, valid)
    return float(((p - t) ** 2).mean().sqrt())


@typechecked
def delta_accuracy(
    pred: Float[Tensor, "*shape"],
    target: Float[Tensor, "*shape"],
    threshold: float = 1.25,
    valid: Bool[Tensor, "*shape"] | None = None,
) -> float:
    """Fraction of valid pixels with ``max(pred / target, target / pred) < threshold``.

    A non-positive prediction never counts as within the threshold.

    Example:
        >>> import torch
        >>> delta_accuracy(torch.tensor([1.2, 2.0, 1.0, -1.0]), torch.tensor([1.0, 1.0, 1.0, 1.0]))
        0.5
    """
    p, t = _pairs(pred, target, valid)
    ratio = torch.where(p > 0, torch.maximum(p / t, t / p.clamp_min(1e-300)), torch.full_like(p, float("inf")))
    return float((ratio < threshold).double().mean())


@typechecked
def depth_metrics(
    pred: Float[Tensor, "*shape"], target: Float[Tensor, "*shape"], valid: Bool[Tensor, "*shape"] | None = None
) -> dict[str, float]:
    """``{"abs_rel", "rmse", "delta1", "delta2", "delta3"}`` (δ thresholds 1.25, 1.25², 1.25³).

    Example:
        >>> import torch
        >>> m = depth_metrics(torch.tensor([2.0, 2.0]), torch.tensor([2.0, 4.0]))
        >>> m["abs_rel"], m["delta1"]
        (0.25, 0.5)
    """
    return {
        "abs_rel": abs_rel(pred, target, valid),
        "rmse": rmse(pred, target, valid),
        "delta1": delta_accuracy(pred, target, 1.25, valid),
        "delta2": delta_accuracy(pred, target, 1.25**2, valid),
        "delta3": delta_accuracy(pred, target, 1.25**3, valid),
    }
