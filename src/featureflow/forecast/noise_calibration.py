"""Calibrating a few-step sampler's spread to its teacher's: the sampling noise scale.

A MeanFlow forecaster distilled from a flow samples in 1-2 network evaluations, but its
samples can spread wider than the teacher's (``docs/speed.md``, "Few-step sampling").
:func:`calibrate_noise_scale` picks, among candidate noise scales, the one whose samples
spread like the teacher's on held-out context clips, and sets it on the student
(:meth:`~featureflow.forecast.base.ForecasterBase.set_noise_scale`).

The spread of a forecaster at forecast step j is the mean pairwise latent distance
between its K samples, averaged over clips. The score of a scale is the mean, over the
student's step counts and the forecast steps, of ``|log(spread_student / spread_teacher)|``;
the lowest score wins (ties: the scale nearest 1). Only latents are needed: no probe
heads and no true futures. Every forecaster samples the same clips from the same seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from featureflow.typing import Float, typechecked
from featureflow.utils import progress_bar

__all__ = ["calibrate_noise_scale"]

#: candidate noise scales of :func:`calibrate_noise_scale` (1 = the trained path)
DEFAULT_SCALES = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)


def _spread(latents: Tensor) -> Tensor:
    """Mean pairwise latent distance between the samples of (b, s, k, h, w, C) latents, per step (k,)."""
    b, s, k = latents.shape[:3]
    flat = latents.permute(0, 2, 1, 3, 4, 5).reshape(b * k, s, -1).double()
    dist = torch.cdist(flat, flat)  # (b k, s, s), zero diagonal
    per = dist.sum((1, 2)) / (s * (s - 1))
    return per.view(b, k).mean(0)


@typechecked
def calibrate_noise_scale(
    student: Any,
    teacher: Any,
    context: Float[Tensor, "b t h w C"],
    *,
    scales: Sequence[float] = DEFAULT_SCALES,
    student_steps: Sequence[int] = (1, 2),
    teacher_solver: str = "euler",
    teacher_steps: int = 9,
    horizon: int = 3,
    num_samples: int = 8,
    seed: int = 0,
    apply: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Choose the student's sampling noise scale so its samples spread like the teacher's.

    Args:
        student: a stochastic forecaster with ``noise_scale`` (e.g. a
            `featureflow.forecast.MeanFlowForecaster`); its own scale is restored when
            ``apply`` is False.
        teacher: the forecaster whose spread is the target (e.g. the flow the student
            was distilled from), sampled at its own ``noise_scale``.
        context: held-out context latents (b, t, h, w, C), b ≥ 1 (use clips nobody
            reports on: the val split).
        scales: candidate noise scales (each finite and > 0).
        student_steps: the student's network evaluations per frame to score (all count).
        teacher_solver: the teacher's solver name.
        teacher_steps: the teacher's network evaluations per frame.
        horizon: forecast steps scored.
        num_samples: samples K per clip (≥ 2: the spread is a pairwise distance).
        seed: seed of the sampling noise (the same for every forecaster).
        apply: set the chosen scale on ``student``.
        progress: show a progress bar over the candidate scales.

    Returns:
        ``{"noise_scale": chosen, "scores": {scale: score}, "teacher_spread": [k],
        "student_spread": {scale: {steps: [k]}}}``; spreads per forecast step.

    Example:
        >>> import torch
        >>> from featureflow.forecast import Denoiser, FlowForecaster, MeanFlowForecaster
        >>> flow = FlowForecaster(Denoiser(latent_dim=2, width=16, depth=1, heads=2, max_context=2))
        >>> mf = MeanFlowForecaster.from_flow(flow)
        >>> out = calibrate_noise_scale(mf, flow, torch.randn(2, 2, 3, 3, 2), scales=(1.0, 0.8), horizon=2)
        >>> out["noise_scale"] == mf.noise_scale, sorted(out["scores"])
        (True, [0.8, 1.0])
    """
    if not scales:
        raise ValueError("scales must hold at least one candidate noise scale")
    bad = [s for s in scales if not (0.0 < float(s) < math.inf)]
    if bad:
        raise ValueError(f"noise scales must be finite numbers > 0, got {bad}")
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2 (the spread is a pairwise distance), got {num_samples}")
    if not student_steps:
        raise ValueError("student_steps must hold at least one step count")
    if not hasattr(student, "set_noise_scale") or not getattr(student, "stochastic", False):
        raise ValueError(f"the student must be a stochastic forecaster with set_noise_scale, got {type(student).__name__}")

    def spread(fc: Any, solver: str, steps: int) -> Tensor:
        g = torch.Generator(device=context.device).manual_seed(seed)
        return _spread(fc.rollout(context, horizon, num_samples, solver=solver, steps=steps, generator=g).latents)

    with torch.no_grad():
        target = spread(teacher, teacher_solver, teacher_steps)
        original = float(student.noise_scale)
        table: dict[float, dict[int, list[float]]] = {}
        scores: dict[float, float] = {}
        try:
            for scale in progress_bar(scales, progress=progress, desc="noise scale", total=len(scales)):
                student.set_noise_scale(float(scale))
                per = {n: spread(student, "euler", n) for n in student_steps}
                table[float(scale)] = {n: v.tolist() for n, v in per.items()}
                scores[float(scale)] = float(torch.stack([(v / target).log().abs() for v in per.values()]).mean())
        finally:
            student.set_noise_scale(original)
    best = min(scores, key=lambda s: (scores[s], abs(math.log(s))))
    if apply:
        student.set_noise_scale(best)
    return {"noise_scale": best, "scores": scores, "teacher_spread": target.tolist(), "student_spread": table}
