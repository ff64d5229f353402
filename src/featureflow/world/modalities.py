"""The modality table: one entry per thing a probe decodes, and everything decided about it.

Each `Modality` says what `Forecast.decode` returns (layout), how to colour it, how the
spread of sampled futures is measured (uncertainty), and which metric scores it. A new
modality is one entry here (plus its probe head); `Forecast`, the forecast pictures,
``featureflow forecast``, the demo and the evaluation read this table.

Example:
    >>> import torch
    >>> MODALITY_TABLE["depth"].layout
    '(b, s, k, H, W) float, metres'
    >>> u = MODALITY_TABLE["depth"].uncertainty(torch.tensor([1.0, 3.0]).view(1, 2, 1, 1, 1))
    >>> u["mean"].flatten().tolist(), u["spread"].flatten().tolist()
    ([2.0], [1.0])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from featureflow import viz
from featureflow.typing import Float, typechecked

__all__ = ["Modality", "MODALITY_TABLE", "MODALITIES", "colour", "modality"]


def _segmentation_uncertainty(probs: Tensor) -> dict[str, Tensor]:
    p = probs.float().mean(dim=1)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=2)
    return {"mean": p.argmax(dim=2), "spread": entropy}


def _depth_uncertainty(x: Tensor) -> dict[str, Tensor]:
    x = x.float()
    return {"mean": x.mean(dim=1), "spread": x.std(dim=1, unbiased=False)}


def _normals_uncertainty(x: Tensor) -> dict[str, Tensor]:
    x = x.float()
    m = x.mean(dim=1)
    m = m / m.norm(dim=2, keepdim=True).clamp_min(1e-8)
    cos = (x * m.unsqueeze(1)).sum(dim=3).clamp(-1.0, 1.0)
    return {"mean": m, "spread": torch.rad2deg(torch.acos(cos)).mean(dim=1)}


def _rgb_uncertainty(x: Tensor) -> dict[str, Tensor]:
    x = x.float()
    return {"mean": x.mean(dim=1), "spread": x.std(dim=1, unbiased=False).mean(dim=2)}


def _colour_depth(x: Tensor, value_range: tuple[float, float]) -> Tensor:
    return viz.colorize_depth(x.clamp(*value_range), vmin=value_range[0], vmax=value_range[1])


@dataclass(frozen=True)
class Modality:
    """Everything featureflow decides about one decoded modality.

    Attributes:
        name: the probe's key in ``WorldModel.probes``.
        layout: what ``Forecast.decode(name)`` returns.
        probe_method: the probe method whose output the uncertainty reads (``"predict"``
            or ``"probabilities"``).
        uncertainty: that output of every sample (b, s, k, ...) → ``{"mean", "spread"}``
            over the sample axis.
        spread_unit: what the spread measures, for labels.
        colour: one decoded frame (or a batch) and a value range → RGB (..., 3, H, W);
            the range matters for depth only.
        metric: the name of its score in `featureflow.world.evaluate.METRICS`, or None.
        higher_is_better: the direction of that score.
    """

    name: str
    layout: str
    probe_method: str
    uncertainty: Callable[[Tensor], dict[str, Tensor]]
    spread_unit: str
    colour: Callable[[Tensor, tuple[float, float]], Tensor]
    metric: str | None = None
    higher_is_better: bool = True


#: Modality name → `Modality`, in the order pictures show them (rows).
MODALITY_TABLE: dict[str, Modality] = {
    m.name: m
    for m in (
        Modality("rgb", "(b, s, k, 3, H, W) in [0, 1]", "predict", _rgb_uncertainty, "std. dev.",
                 lambda x, _: x.clamp(0, 1)),
        Modality("segmentation", "(b, s, k, H, W) int64 class ids", "probabilities", _segmentation_uncertainty,
                 "entropy, nats", lambda x, _: viz.colorize_segmentation(x), metric="miou"),
        Modality("depth", "(b, s, k, H, W) float, metres", "predict", _depth_uncertainty, "std. dev., m",
                 _colour_depth, metric="abs_rel", higher_is_better=False),
        Modality("normals", "(b, s, k, 3, H, W) unit vectors, camera frame", "predict", _normals_uncertainty,
                 "degrees from the mean", lambda x, _: viz.colorize_normals(x), metric="normal_err",
                 higher_is_better=False),
    )
}

#: Modality name → the layout ``Forecast.decode`` returns (derived from `MODALITY_TABLE`).
MODALITIES: dict[str, str] = {name: m.layout for name, m in MODALITY_TABLE.items()}


def modality(name: str) -> Modality:
    """The table entry of ``name``; an unknown name is an error naming the known ones.

    Example:
        >>> modality("normals").spread_unit
        'degrees from the mean'
    """
    if name not in MODALITY_TABLE:
        raise ValueError(f"unknown modality {name!r}; expected one of {sorted(MODALITY_TABLE)}")
    return MODALITY_TABLE[name]


@typechecked
def colour(name: str, x: Tensor, value_range: tuple[float | int, float | int] = (0.0, 1.0)) -> Float[Tensor, "*batch 3 H W"]:
    """Colour decoded ``name`` output (one frame or a batch) as RGB (..., 3, H, W) in [0, 1].

    Example:
        >>> import torch
        >>> colour("depth", torch.tensor([[1.0, 2.0]]), (1.0, 2.0)).shape
        torch.Size([3, 1, 2])
    """
    return modality(name).colour(x, value_range)
