"""`MeanFlowForecaster`: one- and two-step sampling with an average-velocity objective (MeanFlow).

MeanFlow (Geng et al., arXiv 2505.13447) trains a network ``u(z_t, t, h)`` for the
*average* velocity over the interval ``[t, t + h]`` of the flow's ODE, so that one jump
``z_{t+h} = z_t + h * u(z_t, t, h)`` replaces integrating the instantaneous velocity.
With featureflow's path ``x_t = (1 - t) * noise + t * data`` (t = 0 noise, t = 1 data),
the average velocity satisfies the MeanFlow identity

    u(z_t, t, h) = v(z_t, t) + h * d/dt u(z_t, t, r - t)    (r = t + h fixed),

whose total derivative is one forward-mode product (``torch.func.jvp``) with tangents
``(v, 1, -1)`` for ``(z, t, h)``. The right-hand side, with a stop-gradient, is the
regression target. ``h = 0`` is plain flow matching.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from featureflow.forecast.base import ForecasterBase, _cond
from featureflow.forecast.rollout import randn
from featureflow.solvers import ODESolver
from featureflow.typing import Float, Latents, typechecked
from featureflow.utils import build_component, register_component

__all__ = ["MeanFlowForecaster"]

_TIME_SAMPLING = ("uniform", "logit_normal")
_VELOCITY_TARGETS = ("data", "teacher")
_SOLVERS = ("euler", "meanflow")
#: The (t, h) jumps of 1- and 2-step sampling (see ``grid_ratio``).
_GRID = ((0.0, 1.0), (0.0, 0.5), (0.5, 0.5))


@register_component
class MeanFlowForecaster(ForecasterBase):
    """Next-frame sampling in 1, 2 (or more) network evaluations with an average velocity.

    The denoiser must take an interval length (``Denoiser(arch="causal",
    interval_cond=True)``). Training draws two flow times per target, ``t <= r``
    (``h = r - t``), and with probability ``flow_ratio`` sets ``r = t`` (``h = 0``, plain
    flow matching). The target is ``v + h * du/dt`` (stop-gradient), with ``v = data -
    noise`` (``velocity_target="data"``, the paper) or a frozen flow teacher's velocity
    (``"teacher"``, distillation; attach one with :meth:`set_teacher` or
    :meth:`from_flow`). Each target frame's squared error is weighted by ``1 / (err +
    norm_eps) ** norm_p`` (stop-gradient; the paper's adaptive loss, 0 = plain MSE). With a
    causal denoiser every frame of a clip is a target in one pass (``teacher_forcing``), as
    in `FlowForecaster`. ``grid_ratio`` (not in the paper; for short few-step fine-tuning)
    places that fraction of the ``h > 0`` targets on the jumps that 1- and 2-step
    sampling take, ``(t, h)`` in ``(0, 1), (0, ½), (½, ½)``: two uniformly drawn times
    almost never span the whole interval, which is the one jump 1-step sampling makes.

    Sampling: ``rollout(..., solver="euler", steps=n)`` takes ``n`` jumps over the
    uniform grid ``0, 1/n, ..., 1``: ``n`` network evaluations per frame (``steps=None``
    is 1). ``"meanflow"`` is the same solver's other name; ODE solvers and classifier-free
    guidance do not apply.

    Args:
        denoiser: a causal `Denoiser` with ``interval_cond=True`` (or its ``describe()`` spec).
        flow_ratio: fraction of training targets with ``h = 0``, in [0, 1].
        grid_ratio: fraction of the other targets on the 1-/2-step jumps, in [0, 1].
        time_sampling: ``"uniform"`` or ``"logit_normal"`` for both drawn times.
        velocity_target: ``"data"`` (``data - noise``) or ``"teacher"`` (a flow teacher's velocity).
        logit_mean: mean of the normal behind logit-normal time sampling.
        logit_std: its standard deviation.
        norm_p: power of the adaptive loss weight (0 = MSE).
        norm_eps: the constant in that weight.
        min_context: fewest context frames in a training window.
        max_stride: largest frame stride in a training window.
        residual: model the change since the last context frame (see `ForecasterBase`).
        residual_scale: per-channel scale (C,) of that change.
        teacher_forcing: train every frame of a clip in one pass (causal denoisers).
        context_noise: training noise on the context frames (see `ForecasterBase`).
        noise_scale: standard deviation of the sampling noise (1 = the trained path): a
            calibration of a fine-tuned model's spread, chosen on held-out clips (see
            `ForecasterBase.set_noise_scale`).

    Example:
        >>> import torch
        >>> from featureflow.forecast import Denoiser, MeanFlowForecaster
        >>> den = Denoiser(latent_dim=4, width=16, depth=1, heads=2, max_context=2, interval_cond=True)
        >>> mf = MeanFlowForecaster(den)
        >>> mf.loss(torch.randn(2, 3, 2, 2, 4), torch.Generator().manual_seed(0)).dim()
        0
        >>> r = mf.rollout(torch.randn(1, 2, 2, 2, 4), horizon=3, num_samples=2, steps=2)
        >>> r.latents.shape, r.nfe
        (torch.Size([1, 2, 3, 2, 2, 4]), 2)
    """

    stochastic = True

    def __init__(
        self,
        denoiser: Any,
        flow_ratio: float = 0.5,
        time_sampling: str = "uniform",
        velocity_target: str = "data",
        *,
        grid_ratio: float = 0.0,
        logit_mean: float = -0.4,
        logit_std: float = 1.0,
        norm_p: float = 1.0,
        norm_eps: float = 1e-3,
        min_context: int = 1,
        max_stride: int = 4,
        residual: bool = False,
        residual_scale: list[float] | tuple[float, ...] | None = None,
        teacher_forcing: bool = True,
        context_noise: float = 0.0,
        noise_scale: float = 1.0,
    ) -> None:
        super().__init__(denoiser, min_context=min_context, max_stride=max_stride, residual=residual,
                         residual_scale=residual_scale, teacher_forcing=teacher_forcing,
                         context_noise=context_noise, noise_scale=noise_scale)
        if not getattr(self.denoiser, "interval_cond", False):
            raise ValueError("MeanFlowForecaster needs a denoiser with an interval input: "
                             "Denoiser(arch='causal', interval_cond=True, ...) (or use MeanFlowForecaster.from_flow)")
        for name, ratio in (("flow_ratio", flow_ratio), ("grid_ratio", grid_ratio)):
            if not 0.0 <= float(ratio) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {ratio}")
        if time_sampling not in _TIME_SAMPLING:
            raise ValueError(f"time_sampling must be one of {_TIME_SAMPLING}, got {time_sampling!r}")
        if velocity_target not in _VELOCITY_TARGETS:
            raise ValueError(f"velocity_target must be one of {_VELOCITY_TARGETS}, got {velocity_target!r}")
        if logit_std <= 0:
            raise ValueError(f"logit_std must be positive, got {logit_std}")
        if norm_p < 0 or norm_eps <= 0:
            raise ValueError(f"norm_p must be >= 0 and norm_eps > 0, got {norm_p} and {norm_eps}")
        self.flow_ratio, self.time_sampling, self.velocity_target = float(flow_ratio), time_sampling, velocity_target
        self.grid_ratio = float(grid_ratio)
        self.logit_mean, self.logit_std = float(logit_mean), float(logit_std)
        self.norm_p, self.norm_eps = float(norm_p), float(norm_eps)
        self.config.update(
            flow_ratio=self.flow_ratio, grid_ratio=self.grid_ratio, time_sampling=time_sampling,
            velocity_target=velocity_target,
            logit_mean=self.logit_mean, logit_std=self.logit_std, norm_p=self.norm_p, norm_eps=self.norm_eps,
        )
        self.__dict__["_teacher"] = None  # not a submodule: never saved, never trained

    # ------------------------------------------------------------------ building
    @classmethod
    def from_flow(cls, flow: nn.Module, distill: bool = False, **overrides: Any) -> "MeanFlowForecaster":
        """A MeanFlow forecaster initialised from a trained `FlowForecaster`.

        The flow's causal denoiser is rebuilt with ``interval_cond=True`` and its weights
        loaded (the interval embedding starts at zero, so ``u(z, t, h)`` equals the flow's
        velocity at every ``h`` before fine-tuning); the window, residual and context
        settings are copied. ``distill=True`` also attaches a frozen copy of the flow's
        denoiser as the teacher and sets ``velocity_target="teacher"``. ``overrides`` go to
        the constructor.

        Example:
            >>> import torch
            >>> from featureflow.forecast import Denoiser, FlowForecaster, MeanFlowForecaster
            >>> flow = FlowForecaster(Denoiser(latent_dim=4, width=16, depth=1, heads=2, max_context=2))
            >>> mf = MeanFlowForecaster.from_flow(flow, distill=True)
            >>> mf.velocity_target, mf.teacher is not None
            ('teacher', True)
        """
        den = getattr(flow, "denoiser", None)
        spec = den.describe() if den is not None and callable(getattr(den, "describe", None)) else None
        if spec is None or spec["config"].get("arch") != "causal":
            raise ValueError(f"from_flow needs a FlowForecaster with a causal denoiser, got {type(flow).__name__}"
                             + ("" if spec is None else f" with arch={spec['config'].get('arch')!r}"))
        param = next(den.parameters())
        new = build_component({**spec, "config": {**spec["config"], "interval_cond": True}}).to(param.device, param.dtype)
        result = new.load_state_dict(den.state_dict(), strict=False)
        if result.unexpected_keys or any("interval_embed" not in k for k in result.missing_keys):
            raise ValueError(f"the flow's denoiser weights do not fit: missing {result.missing_keys}, "
                             f"unexpected {result.unexpected_keys}")
        fc = dict(flow.config)
        settings = {k: fc[k] for k in ("min_context", "max_stride", "residual", "residual_scale", "teacher_forcing",
                                       "context_noise") if k in fc}
        if distill:
            settings["velocity_target"] = "teacher"
        model = cls(new, **{**settings, **overrides})
        if distill:
            model.set_teacher(den)
        return model

    def set_teacher(self, denoiser: nn.Module | None) -> "MeanFlowForecaster":
        """Attach a frozen copy of a flow denoiser as the source of ``v`` for
        ``velocity_target="teacher"`` (None detaches). The copy is not a submodule: it is
        not trained, saved or moved by ``.to()``. Returns ``self``."""
        if denoiser is None:
            self.__dict__["_teacher"] = None
            return self
        if not callable(getattr(denoiser, "velocity", None)):
            raise TypeError(f"the teacher must be a Denoiser (with velocity / teacher_forced), got {type(denoiser).__name__}")
        teacher = copy.deepcopy(denoiser).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.__dict__["_teacher"] = teacher
        return self

    @property
    def teacher(self) -> nn.Module | None:
        """The attached teacher denoiser (None: none attached)."""
        return self.__dict__.get("_teacher")

    # ------------------------------------------------------------------ training
    def sample_time(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Flow times for ``n`` training examples, (n,) in [0, 1], on the generator's device."""
        device = generator.device if generator is not None else "cpu"
        if self.time_sampling == "uniform":
            return torch.rand(n, generator=generator, device=device)
        return torch.sigmoid(self.logit_mean + self.logit_std * torch.randn(n, generator=generator, device=device))

    def sample_interval(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Start times and interval lengths ``(t, h)``, each (n,), with ``0 <= t <= t + h <= 1``.

        Two times are drawn per example and sorted; with probability ``flow_ratio`` the
        interval is empty (``h = 0``, ``t`` the first time drawn); with probability
        ``grid_ratio`` a non-empty interval is one of the 1-/2-step sampling jumps.

        Example:
            >>> from featureflow.forecast import Denoiser, MeanFlowForecaster
            >>> mf = MeanFlowForecaster(Denoiser(latent_dim=2, width=16, depth=1, heads=2, interval_cond=True))
            >>> t, h = mf.sample_interval(1000, torch.Generator().manual_seed(0))
            >>> bool((t >= 0).all() and (t + h <= 1).all()), 0.4 < float((h == 0).float().mean()) < 0.6
            (True, True)
        """
        a, b = self.sample_time(n, generator), self.sample_time(n, generator)
        device = generator.device if generator is not None else "cpu"
        flow = torch.rand(n, generator=generator, device=device) < self.flow_ratio
        t = torch.where(flow, a, torch.minimum(a, b))
        h = torch.where(flow, torch.zeros_like(a), torch.maximum(a, b) - t)
        if self.grid_ratio > 0:
            on_grid = (torch.rand(n, generator=generator, device=device) < self.grid_ratio) & ~flow
            jump = torch.randint(0, len(_GRID), (n,), generator=generator, device=device)
            grid = torch.tensor(_GRID, device=a.device, dtype=a.dtype)[jump]
            t, h = torch.where(on_grid, grid[:, 0], t), torch.where(on_grid, grid[:, 1], h)
        return t, h

    @typechecked
    def loss(
        self, clip: Latents, generator: torch.Generator | None = None, actions: Float[Tensor, "b T1 A"] | None = None
    ) -> Tensor:
        """MeanFlow loss of a batch of latent clips (b, T, h, w, C), T >= 2; a scalar.

        Randomness (window, noise, times) comes from ``generator`` or the global RNG; an
        action-conditioned forecaster needs the clips' ``actions`` (b, T - 1, A).
        """
        return self.loss_terms(clip, generator, actions)["loss"]

    def loss_terms(
        self, clip: Tensor, generator: torch.Generator | None = None, actions: Tensor | None = None
    ) -> dict[str, Tensor]:
        """``{"loss": weighted loss, "mse": plain MSE to the target (detached), "h_mean": mean h}``
        of a batch of latent clips (see :meth:`loss`)."""
        if self.velocity_target == "teacher" and self.teacher is None:
            raise ValueError("velocity_target='teacher' needs a teacher denoiser: use "
                             "MeanFlowForecaster.from_flow(flow, distill=True) or set_teacher(flow.denoiser)")
        if self.teacher_forcing:
            clip, lengths, acts = self.draw_targets(clip, generator, actions)
            context = self.perturb_context(clip, generator)
            data = self.to_target(clip[:, 1:], context[:, :-1])
            keep: Tensor | slice = self.trained_targets(lengths).to(data.device)

            def net(den: nn.Module, x: Tensor, t: Tensor, h: Tensor | None) -> Tensor:
                extra = {} if h is None else {"h": h}
                return den.teacher_forced(context, x, t, lengths, acts, **extra)
        else:
            context, nxt, cond = self.draw_window(clip, generator, actions)
            context = self.perturb_context(context, generator)
            data = self.to_target(nxt, context[:, -1])[:, None]  # one target per clip: (b, 1, h, w, C)
            keep = slice(None)

            def net(den: nn.Module, x: Tensor, t: Tensor, h: Tensor | None) -> Tensor:
                extra = {} if h is None else {"h": h[:, 0]}
                return den.velocity(context, x[:, 0], t[:, 0], *_cond(cond), **extra)[:, None]
        b, n = data.shape[:2]
        noise = randn(tuple(data.shape), generator, data.device, data.dtype)
        t, h = (u.to(data.device, data.dtype).view(b, n) for u in self.sample_interval(b * n, generator))
        x_t = (1 - t.view(b, n, 1, 1, 1)) * noise + t.view(b, n, 1, 1, 1) * data
        if self.velocity_target == "teacher":
            with torch.no_grad():
                v = net(self.teacher, x_t, t, None)
        else:
            v = data - noise
        with sdpa_kernel([SDPBackend.MATH]):  # the fused attention kernels have no forward-mode derivative
            u, dudt = jvp(lambda x, tt, hh: net(self.denoiser, x, tt, hh), (x_t, t, h),
                          (v, torch.ones_like(t), -torch.ones_like(h)))
        target = (v + h.view(b, n, 1, 1, 1) * dudt).detach()
        err = (u.float() - target.float()).pow(2).flatten(2).mean(2)[:, keep]  # per target frame
        weight = (err.detach() + self.norm_eps).pow(-self.norm_p) if self.norm_p > 0 else torch.ones_like(err)
        return {"loss": (weight * err).mean(), "mse": err.detach().mean(), "h_mean": h[:, keep].detach().mean()}

    # ------------------------------------------------------------------ sampling
    def _solver(self, solver: str | ODESolver, steps: int | None) -> Any:
        if not isinstance(solver, str) or solver.lower() not in _SOLVERS:
            raise ValueError(f"MeanFlowForecaster samples by average-velocity jumps: solver must be one of {_SOLVERS} "
                             f"(steps = jumps = network evaluations per frame), got {solver!r}")
        if steps is None:
            return 1
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int (network evaluations per frame), got {steps!r}")
        return steps

    def _next_frame(
        self, state: Any, rows: int, solver: Any, generator: torch.Generator | None, guidance: float,
        cond: Tensor | None = None,
    ) -> tuple[Tensor, int]:
        if float(guidance) != 1.0:
            raise ValueError(f"MeanFlowForecaster has no classifier-free guidance; pass guidance=1, got {guidance}")
        steps = int(solver)
        frames = state.frames
        x = randn((rows, frames.shape[2], frames.shape[3], self.latent_dim), generator, frames.device, frames.dtype)
        grid = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64).tolist()
        for t0, t1 in zip(grid[:-1], grid[1:]):
            tt = x.new_full((rows,), t0)
            hh = x.new_full((rows,), t1 - t0)
            x = x + (t1 - t0) * self.denoiser.step(state, x, tt, *_cond(cond), h=hh)
        return self.from_target(x, frames[:, -1]), steps
