"""`FlowForecaster`: conditional flow matching of the next latent frame (the paper's model)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from featureflow.forecast.base import ForecasterBase, _cond
from featureflow.forecast.rollout import randn
from featureflow.solvers import ODESolver
from featureflow.typing import Float, Latents, typechecked
from featureflow.utils import register_component

__all__ = ["FlowForecaster"]

_TIME_SAMPLING = ("uniform", "logit_normal")


@register_component
class FlowForecaster(ForecasterBase):
    """Samples p(z_{t+1} | z_{1..t}) by integrating a learned velocity from noise to data.

    Training uses the linear path ``x_t = (1 - t) * noise + t * data`` with the velocity
    target ``data - noise``; the loss is the MSE on the target frames. With a causal
    denoiser (``teacher_forcing=True``, the default) every frame of a training clip is a
    target in one pass, each with its own clean context of random length
    (``min_context..max_context``), noise and flow time; otherwise one window per clip is
    drawn as in the paper. Each batch draws a frame stride (``1..max_stride``).

    Args:
        denoiser: a :class:`~featureflow.forecast.Denoiser` (or its ``describe()`` spec).
        time_sampling: ``"uniform"`` (as released) or ``"logit_normal"``
            (``t = sigmoid(logit_mean + logit_std * n)``).
        history_dropout: probability of dropping a clip's whole context during
            training (the velocity is then unconditional), enabling classifier-free
            guidance with ``guidance != 1`` at sampling.
        min_context: fewest context frames in a training window.
        max_stride: largest frame stride in a training window.
        residual: model the change since the last context frame (see ``ForecasterBase``).
        residual_scale: per-channel scale (C,) of that change; the flow's data is
            ``(next - last) / residual_scale``, matched in scale to its unit source noise
            (set it from data with :meth:`fit_residual_scale`).
        teacher_forcing: train every frame of a clip in one pass (causal denoisers).
        context_noise: training noise on the context frames against rollout drift
            (see :class:`~featureflow.forecast.base.ForecasterBase`; 0 = off).
        logit_mean: mean of the normal behind logit-normal time sampling.
        logit_std: standard deviation of that normal.
        noise_scale: standard deviation of the sampling noise (1 = the trained path; see
            :meth:`~featureflow.forecast.base.ForecasterBase.set_noise_scale`).

    Example:
        >>> import torch
        >>> from featureflow.forecast import Denoiser, FlowForecaster
        >>> den = Denoiser(latent_dim=4, width=16, depth=1, heads=2, max_context=2)
        >>> fc = FlowForecaster(den)
        >>> g = torch.Generator().manual_seed(0)
        >>> fc.loss(torch.randn(2, 3, 2, 2, 4), generator=g).dim()
        0
        >>> fc.rollout(torch.randn(1, 2, 2, 2, 4), horizon=3, num_samples=2, steps=2).latents.shape
        torch.Size([1, 2, 3, 2, 2, 4])

        Action-conditioned (a causal denoiser with ``cond_dim``; one action per step):

        >>> act = FlowForecaster(Denoiser(latent_dim=4, width=16, depth=1, heads=2, cond_dim=2), max_stride=1)
        >>> act.loss(torch.randn(2, 3, 2, 2, 4), g, actions=torch.rand(2, 2, 2)).dim()
        0
        >>> act.rollout(torch.randn(1, 2, 2, 2, 4), 3, 2, steps=2, actions=torch.rand(1, 3, 2)).latents.shape
        torch.Size([1, 2, 3, 2, 2, 4])
    """

    stochastic = True

    def __init__(
        self,
        denoiser: Any,
        time_sampling: str = "uniform",
        history_dropout: float = 0.0,
        *,
        min_context: int = 1,
        max_stride: int = 4,
        residual: bool = False,
        residual_scale: list[float] | tuple[float, ...] | None = None,
        teacher_forcing: bool = True,
        context_noise: float = 0.0,
        noise_scale: float = 1.0,
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
    ) -> None:
        super().__init__(denoiser, min_context=min_context, max_stride=max_stride, residual=residual,
                         residual_scale=residual_scale, teacher_forcing=teacher_forcing,
                         context_noise=context_noise, noise_scale=noise_scale)
        if time_sampling not in _TIME_SAMPLING:
            raise ValueError(f"time_sampling must be one of {_TIME_SAMPLING}, got {time_sampling!r}")
        if not 0.0 <= history_dropout < 1.0:
            raise ValueError(f"history_dropout must be in [0, 1), got {history_dropout}")
        if logit_std <= 0:
            raise ValueError(f"logit_std must be positive, got {logit_std}")
        self.time_sampling = time_sampling
        self.history_dropout = float(history_dropout)
        self.logit_mean = float(logit_mean)
        self.logit_std = float(logit_std)
        self.config.update(
            time_sampling=time_sampling, history_dropout=self.history_dropout,
            logit_mean=self.logit_mean, logit_std=self.logit_std,
        )

    def sample_time(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Flow times for ``n`` training examples, (n,) in [0, 1], on the generator's device."""
        device = generator.device if generator is not None else "cpu"
        if self.time_sampling == "uniform":
            return torch.rand(n, generator=generator, device=device)
        return torch.sigmoid(self.logit_mean + self.logit_std * torch.randn(n, generator=generator, device=device))

    def _velocity(
        self, context: Tensor, x_t: Tensor, t: Tensor, generator: torch.Generator | None, cond: Tensor | None = None
    ) -> Tensor:
        if self.history_dropout == 0.0:
            return self.denoiser.velocity(context, x_t, t, *_cond(cond))
        device = generator.device if generator is not None else "cpu"
        drop = (torch.rand(x_t.shape[0], generator=generator, device=device) < self.history_dropout).cpu()
        keep_idx = (~drop).nonzero().squeeze(1).to(x_t.device)
        drop_idx = drop.nonzero().squeeze(1).to(x_t.device)
        v = x_t.new_zeros(x_t.shape)
        extra = _cond(cond)  # the action (if any) stays with its row whether or not the history is dropped
        if keep_idx.numel():
            v = v.index_put((keep_idx,), self.denoiser.velocity(context[keep_idx], x_t[keep_idx], t[keep_idx],
                                                                *(e[keep_idx] for e in extra)))
        if drop_idx.numel():
            v = v.index_put((drop_idx,), self.denoiser.velocity(None, x_t[drop_idx], t[drop_idx],
                                                                *(e[drop_idx] for e in extra)))
        return v

    @typechecked
    def loss(
        self, clip: Latents, generator: torch.Generator | None = None, actions: Float[Tensor, "b T1 A"] | None = None
    ) -> Tensor:
        """Flow-matching loss of a batch of latent clips (b, T, h, w, C), T >= 2; a scalar.

        Randomness (window, noise, times, history dropout) comes from ``generator``
        (on any device) or the global RNG. An action-conditioned forecaster needs the
        clips' ``actions`` (b, T - 1, A); its windows are consecutive frames.
        """
        if self.teacher_forcing:
            return self._teacher_forced_loss(clip, generator, actions)
        context, data, cond = self.draw_window(clip, generator, actions)
        context = self.perturb_context(context, generator)
        data = self.to_target(data, context[:, -1])
        b = data.shape[0]
        noise = randn(tuple(data.shape), generator, data.device, data.dtype)
        t = self.sample_time(b, generator).to(data.device, data.dtype)
        tb = t.view(b, 1, 1, 1)
        x_t = (1 - tb) * noise + tb * data
        v = self._velocity(context, x_t, t, generator, cond)
        return F.mse_loss(v.float(), (data - noise).float())

    def _teacher_forced_loss(self, clip: Tensor, generator: torch.Generator | None, actions: Tensor | None) -> Tensor:
        """Every frame of the clips a target in one pass, each with its own context length,
        noise and flow time (see :meth:`~featureflow.forecast.Denoiser.teacher_forced`)."""
        clip, lengths, acts = self.draw_targets(clip, generator, actions, dropout=self.history_dropout)
        context = self.perturb_context(clip, generator)  # the frames as context (noisy if context_noise > 0)
        data = self.to_target(clip[:, 1:], context[:, :-1])
        b, n = data.shape[:2]
        noise = randn(tuple(data.shape), generator, data.device, data.dtype)
        t = self.sample_time(b * n, generator).to(data.device, data.dtype).view(b, n)
        tb = t.view(b, n, 1, 1, 1)
        x_t = (1 - tb) * noise + tb * data
        v = self.denoiser.teacher_forced(context, x_t, t, lengths, acts)
        keep = self.trained_targets(lengths).to(data.device)
        return F.mse_loss(v[:, keep].float(), (data - noise)[:, keep].float())

    def _next_frame(
        self, state: Any, rows: int, solver: ODESolver | None, generator: torch.Generator | None, guidance: float,
        cond: Tensor | None = None,
    ) -> tuple[Tensor, int]:
        assert solver is not None
        frames = state.frames
        x0 = randn((rows, frames.shape[2], frames.shape[3], self.latent_dim), generator, frames.device, frames.dtype)
        guided = float(guidance) != 1.0

        def fn(t: Tensor, x: Tensor) -> Tensor:
            tt = t.expand(rows)
            v = self.denoiser.step(state, x, tt, *_cond(cond))
            if guided:
                v_u = self.denoiser.velocity(None, x, tt, *_cond(cond))
                v = v_u + guidance * (v - v_u)
            return v

        result = solver.integrate(fn, x0)
        return self.from_target(result.x, frames[:, -1]), result.nfe * (2 if guided else 1)
