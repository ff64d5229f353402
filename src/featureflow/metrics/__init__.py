"""Evaluation metrics for decoded forecasts and for ensembles of sampled futures.

* segmentation: :func:`confusion_matrix`, :func:`miou`, :func:`pixel_accuracy`
* depth: :func:`abs_rel`, :func:`rmse`, :func:`delta_accuracy`, :func:`depth_metrics`
* normals: :func:`angular_error`, :func:`normal_metrics`
* images: :func:`psnr`
* ensembles: :func:`sample_scores`, :func:`mean_of_k`, :func:`best_of_k`,
  :func:`energy_score`, :func:`crps`, :func:`energy_distance`, :func:`coverage`

Batch metrics pool pixels over the whole batch and return Python floats; ensemble
metrics take ``reduction="none"`` for per-example tensors.

Example:
    >>> import torch
    >>> from featureflow import metrics
    >>> metrics.miou(torch.tensor([0, 1]), torch.tensor([0, 1]), num_classes=2)
    1.0
"""

from featureflow.metrics.depth import abs_rel, delta_accuracy, depth_metrics, depth_valid_mask, rmse
from featureflow.metrics.ensemble import (
    best_of_k,
    coverage,
    crps,
    energy_distance,
    energy_score,
    mean_of_k,
    sample_scores,
)
from featureflow.metrics.image import psnr
from featureflow.metrics.normals import angular_error, normal_metrics
from featureflow.metrics.segmentation import (
    confusion_matrix,
    iou_per_class,
    miou,
    miou_from_confusion,
    pixel_accuracy,
)

__all__ = [
    "confusion_matrix",
    "iou_per_class",
    "miou_from_confusion",
    "miou",
    "pixel_accuracy",
    "depth_valid_mask",
    "abs_rel",
    "rmse",
    "delta_accuracy",
    "depth_metrics",
    "angular_error",
    "normal_metrics",
    "psnr",
    "sample_scores",
    "mean_of_k",
    "best_of_k",
    "energy_score",
    "crps",
    "energy_distance",
    "coverage",
]
