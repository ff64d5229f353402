"""Semantic segmentation metrics from a confusion matrix: mIoU and pixel accuracy."""

from __future__ import annotations

import torch
from jaxtyping import Integer

from featureflow.typing import Float, Int, ShapeError, Tensor, typechecked

__all__ = ["confusion_matrix", "iou_per_class", "miou_from_confusion", "miou", "pixel_accuracy"]


def _valid(pred: Tensor, target: Tensor, num_classes: int | None, ignore_index: int | None) -> Tensor:
    if pred.shape != target.shape:
        raise ShapeError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    if num_classes is not None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        bad_t = valid & ((target < 0) | (target >= num_classes))
        if bool(bad_t.any()):
            raise ValueError(
                f"target has class ids outside [0, {num_classes}) that are not ignore_index={ignore_index}: "
                f"{sorted(set(target[bad_t].tolist()))[:5]}"
            )
        bad_p = valid & ((pred < 0) | (pred >= num_classes))
        if bool(bad_p.any()):
            raise ValueError(f"pred has class ids outside [0, {num_classes}): {sorted(set(pred[bad_p].tolist()))[:5]}")
    return valid


@typechecked
def confusion_matrix(
    pred: Integer[Tensor, "*shape"],
    target: Integer[Tensor, "*shape"],
    num_classes: int,
    ignore_index: int | None = None,
) -> Int[Tensor, "K K"]:
    """Counts ``M[i, j]`` of pixels with true class ``i`` predicted as ``j``.

    Pixels whose target equals ``ignore_index`` are skipped. Class ids outside
    ``[0, num_classes)`` raise ``ValueError``. Matrices of several batches add up.

    Args:
        pred: predicted class ids, any shape.
        target: true class ids, same shape.
        num_classes: K.
        ignore_index: target value to skip (e.g. 255), or ``None``.

    Returns:
        ``(K, K)`` int64, rows = target, columns = prediction.

    Example:
        >>> import torch
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 2).tolist()
        [[1, 1], [0, 1]]
    """
    valid = _valid(pred, target, num_classes, ignore_index)
    idx = target[valid].long() * num_classes + pred[valid].long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@typechecked
def iou_per_class(confusion: Int[Tensor, "K K"]) -> Float[Tensor, "K"]:
    """Per-class IoU ``TP / (TP + FP + FN)``; NaN for classes absent from both
    prediction and target (their union is empty).

    Example:
        >>> import torch
        >>> iou_per_class(torch.tensor([[1, 1, 0], [0, 1, 0], [0, 0, 0]])).tolist()
        [0.5, 0.5, nan]
    """
    c = confusion.double()
    tp = c.diagonal()
    union = c.sum(0) + c.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


@typechecked
def miou_from_confusion(confusion: Int[Tensor, "K K"], ignore_index: int | None = None) -> float:
    """Mean IoU over the classes present in the prediction or the target.

    A class id ``ignore_index`` inside ``[0, K)`` is left out of the mean (its target
    pixels are already skipped by `confusion_matrix`; pixels predicted as it still count
    as errors for their true class).

    Example:
        >>> import torch
        >>> miou_from_confusion(torch.tensor([[1, 1], [0, 1]]))
        0.5
        >>> miou_from_confusion(torch.tensor([[0, 0], [1, 1]]), ignore_index=0)  # class 0 out of the mean
        0.5
    """
    iou = iou_per_class(confusion)
    if ignore_index is not None and 0 <= ignore_index < iou.shape[0]:
        iou[ignore_index] = float("nan")
    present = ~iou.isnan()
    if not bool(present.any()):
        raise ValueError("mIoU is undefined: no valid pixels (every class absent from prediction and target)")
    return float(iou[present].mean())


@typechecked
def miou(
    pred: Integer[Tensor, "*shape"],
    target: Integer[Tensor, "*shape"],
    num_classes: int,
    ignore_index: int | None = None,
) -> float:
    """Mean intersection-over-union over a batch (pixels pooled over all images).

    Classes absent from both prediction and target (after ignoring) do not count, and
    neither does the class ``ignore_index`` when it lies inside ``[0, K)``.

    Args:
        pred: predicted class ids, e.g. ``(b, H, W)``.
        target: true class ids, same shape.
        num_classes: K.
        ignore_index: target value to skip (and, inside ``[0, K)``, the class left out
            of the mean), or ``None``.

    Example:
        >>> import torch
        >>> pred = torch.tensor([[0, 1], [1, 1]])
        >>> target = torch.tensor([[0, 0], [1, 255]])
        >>> miou(pred, target, num_classes=3, ignore_index=255)
        0.5
    """
    return miou_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index), ignore_index)


@typechecked
def pixel_accuracy(
    pred: Integer[Tensor, "*shape"],
    target: Integer[Tensor, "*shape"],
    ignore_index: int | None = None,
) -> float:
    """Fraction of non-ignored pixels whose predicted class is right.

    Example:
        >>> import torch
        >>> pixel_accuracy(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 0, 1, 255]), ignore_index=255)
        0.6666666666666666
    """
    valid = _valid(pred, target, None, ignore_index)
    n = int(valid.sum())
    if n == 0:
        raise ValueError("pixel accuracy is undefined: every pixel is ignore_index")
    return int((pred[valid] == target[valid]).sum()) / n
