"""`ActionFlowForecaster`: flow matching of the next latent frame given the action taken.

A thin adapter around :class:`~featureflow.forecast.Denoiser` (``arch="causal"``,
``cond_dim`` = action size): the action that leads from the last context frame to the
target is passed as the denoiser's ``cond`` vector (added to the target frame's
conditioning). Training and sampling mirror
:class:`~featureflow.forecast.FlowForecaster` (linear path, velocity target
``data - noise``, Euler/Heun/... integration from noise at t=0 to data at t=1), with
consecutive frames only (one action per step).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featureflow.forecast.rollout import Rollout, randn
from featureflow.solvers import ODESolver, resolve
from featureflow.typing import Float, Latents, check_finite, typechecked
from featureflow.utils import Configurable, build_component, register_component

__all__ = ["ActionFlowForecaster"]


@register_component
class ActionFlowForecaster(nn.Module, Configurable):
    """Samples p(z_{t+1} | z_{≤t}, a_t) with an action-conditioned causal denoiser.

    Args:
        denoiser: a causal :class:`~featureflow.forecast.Denoiser` built with
            ``cond_dim`` = action size (or its ``describe()`` spec).
        min_context: fewest context frames in a training window.

    Example:
        >>> from featureflow.forecast import Denoiser
        >>> fc = ActionFlowForecaster(Denoiser(latent_dim=4, width=16, depth=1, heads=2, max_context=2, cond_dim=2))
        >>> clip, actions = torch.randn(3, 4, 2, 2, 4), torch.rand(3, 3, 2)
        >>> fc.loss(clip, actions, generator=torch.Generator().manual_seed(0)).dim()
        0
        >>> fc.rollout(clip[:1, :2], torch.rand(1, 5, 3, 2), num_samples=2, steps=2).latents.shape
        torch.Size([1, 5, 2, 3, 2, 2, 4])
    """

    def __init__(self, denoiser: Any, min_context: int = 1) -> None:
        super().__init__()
        if isinstance(denoiser, dict):
            denoiser = build_component(denoiser)
        cond_dim = getattr(denoiser, "config", {}).get("cond_dim")
        if getattr(denoiser, "arch", None) != "causal" or not cond_dim:
            raise ValueError("ActionFlowForecaster needs a causal Denoiser built with cond_dim = action size")
        if not 1 <= min_context <= denoiser.max_context:
            raise ValueError(f"min_context must be in 1..{denoiser.max_context}, got {min_context}")
        self.denoiser = denoiser
        self.action_dim = int(cond_dim)
        self.min_context = int(min_context)
        self.config: dict[str, Any] = {"denoiser": denoiser.describe(), "min_context": self.min_context}

    @property
    def max_context(self) -> int:
        return int(self.denoiser.max_context)

    @property
    def latent_dim(self) -> int:
        return int(self.denoiser.latent_dim)

    def _check_actions(self, actions: Tensor, lead: tuple[int, ...]) -> None:
        if tuple(actions.shape) != (*lead, self.action_dim):
            raise ValueError(f"actions: expected shape {(*lead, self.action_dim)}, got {tuple(actions.shape)}")

    @typechecked
    def loss(self, clip: Latents, actions: Float[Tensor, "b T1 A"], generator: torch.Generator | None = None) -> Tensor:
        """Flow-matching loss on random windows of latent clips (b, T, h, w, C) with their
        actions (b, T - 1, A) (``actions[:, i]`` leads from frame i to frame i + 1).

        One context length is drawn per batch and a start per clip; the target is the
        frame after the context, conditioned on the action before it.
        """
        b, T = clip.shape[:2]
        self._check_actions(actions, (b, T - 1))
        if T < self.min_context + 1:
            raise ValueError(f"clips need at least min_context + 1 = {self.min_context + 1} frames, got {T}")
        dev = generator.device if generator is not None else "cpu"
        hi = min(self.max_context, T - 1)
        c = int(torch.randint(self.min_context, hi + 1, (1,), generator=generator, device=dev))
        start = torch.randint(0, T - c, (b,), generator=generator, device=dev).cpu().to(clip.device)
        rows = torch.arange(b, device=clip.device)[:, None]
        idx = start[:, None] + torch.arange(c + 1, device=clip.device)[None]
        frames = clip[rows, idx]
        context, data = frames[:, :c], frames[:, c]
        cond = actions[torch.arange(b, device=clip.device), start + c - 1]
        noise = randn(tuple(data.shape), generator, data.device, data.dtype)
        t = torch.rand(b, generator=generator, device=dev).to(data.device, data.dtype)
        tb = t.view(b, 1, 1, 1)
        v = self.denoiser.velocity(context, (1 - tb) * noise + tb * data, t, cond)
        return F.mse_loss(v.float(), (data - noise).float())

    @typechecked
    @torch.no_grad()
    def rollout(
        self,
        context: Latents,
        actions: Float[Tensor, "b n k A"],
        num_samples: int = 1,
        solver: str | ODESolver = "euler",
        steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Rollout:
        """Forecast ``k`` frames under each of ``n`` action sequences per clip.

        The context (b, t, h, w, C) is prefilled once per clip; the cache is then
        expanded to all ``n * num_samples`` rows, which run as one batch per ODE step.

        Args:
            context: clean context latents (b, t, h, w, C) (the last ``max_context`` are used).
            actions: (b, n, k, A) ``n`` candidate action sequences of ``k`` steps per clip.
            num_samples: stochastic futures s per action sequence.
            solver: solver name or :class:`~featureflow.solvers.ODESolver`.
            steps: network evaluations per frame for a named solver.
            generator: noise source.

        Returns:
            ``Rollout`` whose latents have shape (b, n, s, k, h, w, C).
        """
        if context.shape[-1] != self.latent_dim:
            raise ValueError(f"context has {context.shape[-1]} latent channels; the denoiser expects {self.latent_dim}")
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        b, n, k, a = actions.shape
        if b != context.shape[0] or a != self.action_dim:
            raise ValueError(f"actions: expected (b={context.shape[0]}, n, k, A={self.action_dim}), got {tuple(actions.shape)}")
        check_finite("context", context)
        context = context[:, -self.max_context :]
        _, _, h, w, c = context.shape
        rows = n * num_samples
        ode = resolve(solver, steps)
        state = self.denoiser.prefill(context).expand(rows)
        cond = actions.to(context).unsqueeze(2).expand(b, n, num_samples, k, a).reshape(b * rows, k, a)
        out = context.new_empty(b * rows, k, h, w, c)
        nfes = []
        for j in range(k):
            x0 = randn((b * rows, h, w, c), generator, context.device, context.dtype)
            cj = cond[:, j].contiguous()

            def fn(t: Tensor, x: Tensor, _cj: Tensor = cj, _state: Any = state) -> Tensor:
                return self.denoiser.step(_state, x, t.expand(x.shape[0]), _cj)

            res = ode.integrate(fn, x0)
            out[:, j] = res.x
            nfes.append(res.nfe)
            if j + 1 < k:
                state = self.denoiser.append(state, res.x)
        return Rollout(out.view(b, n, num_samples, k, h, w, c), tuple(nfes))
