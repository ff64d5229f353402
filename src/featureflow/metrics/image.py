"""Image reconstruction metrics: PSNR."""

from __future__ import annotations

from typing import Literal

import torch

from featureflow.typing import Float, Tensor, check_finite, typechecked

__all__ = ["psnr"]


@typechecked
def psnr(
    pred: Float[Tensor, "*batch C H W"],
    target: Float[Tensor, "*batch C H W"],
    data_range: float = 1.0,
    reduction: Literal["mean", "none"] = "mean",
) -> float | Float[Tensor, "*batch"]:
    """Peak signal-to-noise ratio ``10·log10(data_range² / MSE)`` in dB, per image
    (MSE over C, H, W), then averaged over images.

    An image identical to its target has infinite PSNR.

    Args:
        pred: ``(*batch, C, H, W)`` images.
        target: same shape.
        data_range: the value range (1.0 for images in [0, 1], 255 for uint8 scale).
        reduction: ``"mean"`` → float averaged over images; ``"none"`` → per-image tensor.

    Example:
        >>> import torch
        >>> round(psnr(torch.full((1, 3, 2, 2), 0.1), torch.zeros(1, 3, 2, 2)), 4)
        20.0
    """
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    check_finite("pred", pred)
    check_finite("target", target)
    mse = ((pred.double() - target.double()) ** 2).mean(dim=(-3, -2, -1))
    values = 10.0 * torch.log10(data_range**2 / mse)
    if reduction == "none":
        return values.to(pred.dtype)
    return float(values.mean())
