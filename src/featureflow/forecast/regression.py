"""`RegressionForecaster`: the same trunk predicting the next latent directly (the matched baseline)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from featureflow.forecast.base import ForecasterBase, _cond
from featureflow.solvers import ODESolver
from featureflow.typing import Float, FrameLatents, Latents, typechecked
from featureflow.utils import register_component

__all__ = ["RegressionForecaster"]

_LOSSES = ("mse", "smooth_l1")


@register_component
class RegressionForecaster(ForecasterBase):
    """Deterministic next-frame prediction with the denoiser trunk (DINO-Foresight style).

    The prediction is ``denoiser.velocity(context, x_t=0, t=0)``: the trunk sees an
    all-zero target frame at flow time 0 and its output is read as the next latent
    itself (not a velocity). Training windows are drawn exactly as for
    :class:`FlowForecaster`, so the two are compute-matched. ``sample``/``rollout`` have
    the flow forecaster's signature; solver, steps, generator and guidance are accepted
    and ignored, every sample is the same prediction, and ``nfe`` is 1 per frame.

    Args:
        denoiser: a :class:`~featureflow.forecast.Denoiser` (or its ``describe()`` spec).
        loss: ``"mse"`` or ``"smooth_l1"`` (Huber with beta 1).
        min_context: fewest context frames in a training window (as for ``FlowForecaster``).
        max_stride: largest frame stride in a training window.
        residual: predict the change since the last context frame.
        residual_scale: per-channel scale (C,) of that change (the network predicts
            ``(next - last) / residual_scale``).
        teacher_forcing: train every frame of a clip in one pass (causal denoisers).
        context_noise: training noise on the context frames against rollout drift
            (see :class:`~featureflow.forecast.base.ForecasterBase`; 0 = off).

    Example:
        >>> import torch
        >>> from featureflow.forecast import Denoiser, RegressionForecaster
        >>> den = Denoiser(latent_dim=4, width=16, depth=1, heads=2, max_context=2)
        >>> fc = RegressionForecaster(den)
        >>> s = fc.sample(torch.randn(1, 2, 2, 2, 4), num_samples=3)
        >>> s.shape, bool((s[:, 0] == s[:, 2]).all())
        (torch.Size([1, 3, 2, 2, 4]), True)
    """

    def __init__(
        self,
        denoiser: Any,
        loss: str = "mse",
        *,
        min_context: int = 1,
        max_stride: int = 4,
        residual: bool = False,
        residual_scale: list[float] | tuple[float, ...] | None = None,
        teacher_forcing: bool = True,
        context_noise: float = 0.0,
    ) -> None:
        super().__init__(denoiser, min_context=min_context, max_stride=max_stride, residual=residual,
                         residual_scale=residual_scale, teacher_forcing=teacher_forcing,
                         context_noise=context_noise)
        if loss not in _LOSSES:
            raise ValueError(f"loss must be one of {_LOSSES}, got {loss!r}")
        self.loss_type = loss
        self.config["loss"] = loss

    @typechecked
    def predict(self, context: Latents, actions: Float[Tensor, "b A"] | None = None) -> FrameLatents:
        """The predicted next frame (b, h, w, C) given context (b, t, h, w, C) (uncached)
        and, for an action-conditioned forecaster, the action (b, A) taken after it."""
        context = context[:, -self.max_context :]
        x = context.new_zeros(context[:, -1].shape)
        out = self.denoiser.velocity(context, x, x.new_zeros(x.shape[0]), *_cond(actions))
        return self.from_target(out, context[:, -1])

    @typechecked
    def loss(
        self, clip: Latents, generator: torch.Generator | None = None, actions: Float[Tensor, "b T1 A"] | None = None
    ) -> Tensor:
        """Regression loss of a batch of latent clips (b, T, h, w, C), T >= 2; a scalar
        (``actions`` (b, T - 1, A) for an action-conditioned forecaster)."""
        if self.teacher_forcing:
            clip, lengths, acts = self.draw_targets(clip, generator, actions)
            context = self.perturb_context(clip, generator)
            target = self.to_target(clip[:, 1:], context[:, :-1])
            zeros = target.new_zeros(target.shape)
            pred = self.denoiser.teacher_forced(context, zeros, zeros.new_zeros(target.shape[:2]), lengths, acts)
            keep = self.trained_targets(lengths).to(target.device)
            pred, target = pred[:, keep], target[:, keep]
        else:
            context, nxt, cond = self.draw_window(clip, generator, actions)
            context = self.perturb_context(context, generator)
            target = self.to_target(nxt, context[:, -1])
            x = target.new_zeros(target.shape)
            pred = self.denoiser.velocity(context, x, x.new_zeros(x.shape[0]), *_cond(cond))
        # the loss is taken on what the network outputs (for a residual forecaster the
        # scaled change since the last frame), so flow and regression weigh channels alike
        if self.loss_type == "mse":
            return F.mse_loss(pred.float(), target.float())
        return F.smooth_l1_loss(pred.float(), target.float())

    def _rows_per_element(self, num_samples: int) -> int:
        return 1

    def _solver(self, solver: str | ODESolver, steps: int | None) -> ODESolver | None:
        return None  # one network evaluation per frame, no ODE

    def _next_frame(
        self, state: Any, rows: int, solver: ODESolver | None, generator: torch.Generator | None, guidance: float,
        cond: Tensor | None = None,
    ) -> tuple[Tensor, int]:
        frames = state.frames
        x = frames.new_zeros(rows, frames.shape[2], frames.shape[3], frames.shape[4])
        out = self.denoiser.step(state, x, x.new_zeros(rows), *_cond(cond))
        return self.from_target(out, frames[:, -1]), 1
