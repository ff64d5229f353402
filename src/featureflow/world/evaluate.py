"""Score decoded forecasts against ground truth, per sample and per forecast step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from featureflow.metrics import abs_rel, angular_error, miou
from featureflow.typing import typechecked

__all__ = ["score_decoded", "summarize_scores", "METRICS"]

#: metric name → (modality, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "miou": ("segmentation", True),
    "abs_rel": ("depth", False),
    "normal_err": ("normals", False),
}


@torch.no_grad()
@typechecked
def score_decoded(
    predictions: dict[str, Tensor], targets: dict[str, Tensor], *, num_classes: int, background: int | None = 0
) -> dict[str, Tensor]:
    """Per-image metrics of decoded predictions, shape (b, s, k) for each metric.

    Args:
        predictions: modality → (b, s, k, ...) as `Forecast.decode` returns them.
        targets: modality → (b, k, ...) ground truth (segmentation ids, depth, normals).
        num_classes: segmentation classes (mIoU ignores classes absent from both maps).
        background: segmentation id whose pixels are left out of depth and normal
            metrics (None = keep every pixel).

    Returns:
        ``{"miou", "abs_rel", "normal_err"}`` for the modalities present, each (b, s, k):
        mIoU in %, AbsRel, and mean angular error in degrees.

    Example:
        >>> import torch
        >>> seg = torch.randint(0, 3, (1, 2, 8, 8))
        >>> s = score_decoded({"segmentation": seg[:, None]}, {"segmentation": seg}, num_classes=3)
        >>> s["miou"].tolist()
        [[[100.0, 100.0]]]
    """
    out: dict[str, Tensor] = {}
    seg_t = targets.get("segmentation")
    for name, (modality, _) in METRICS.items():
        if modality not in predictions or modality not in targets:
            continue
        pred, tgt = predictions[modality], targets[modality]
        b, s, k = pred.shape[:3]
        vals = torch.zeros(b, s, k, dtype=torch.float64)
        for i in range(b):
            for j in range(k):
                valid = None
                if background is not None and seg_t is not None and modality != "segmentation":
                    valid = seg_t[i, j] != background
                for n in range(s):
                    p, t = pred[i, n, j], tgt[i, j]
                    if name == "miou":
                        vals[i, n, j] = 100.0 * miou(p, t, num_classes=num_classes)
                    elif name == "abs_rel":
                        vals[i, n, j] = abs_rel(p, t, valid)
                    else:
                        err = angular_error(p, t)
                        vals[i, n, j] = float(err[valid].mean() if valid is not None else err.mean())
        out[name] = vals
    return out


@typechecked
def summarize_scores(scores: dict[str, Tensor]) -> dict[str, dict[str, Any]]:
    """Mean over samples ("mean") and best-of-K ("best") per metric, averaged over clips.

    Returns ``{metric: {"mean": float, "best": float, "per_step_mean": [..k], "per_step_best": [..k]}}``.

    Example:
        >>> import torch
        >>> summarize_scores({"abs_rel": torch.tensor([[[0.1], [0.3]]])})["abs_rel"]["best"]
        0.1
    """
    summary: dict[str, dict[str, Any]] = {}
    for name, vals in scores.items():
        higher = METRICS[name][1]
        best = vals.max(dim=1).values if higher else vals.min(dim=1).values  # (b, k)
        mean = vals.mean(dim=1)
        summary[name] = {
            "mean": round(float(mean.mean()), 4),
            "best": round(float(best.mean()), 4),
            "per_step_mean": [round(float(v), 4) for v in mean.mean(0)],
            "per_step_best": [round(float(v), 4) for v in best.mean(0)],
        }
    return summary
