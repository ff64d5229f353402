"""`ForecasterBase`: what flow and regression forecasters share (denoiser, windows, rollout loop)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from featureflow.forecast.rollout import Rollout, _randint, draw_window
from featureflow.forecast.rollout import SampleStreams, check_rollout_size
from featureflow.solvers import DEFAULT_SOLVER, ODESolver, resolve
from featureflow.typing import Float, Latents, check_finite, typechecked
from featureflow.utils import Configurable, build_component, progress_bar

__all__ = ["ForecasterBase"]


def _build_denoiser(denoiser: Any) -> nn.Module:
    if isinstance(denoiser, dict):
        denoiser = build_component(denoiser)
    missing = [m for m in ("velocity", "prefill", "step", "append") if not callable(getattr(denoiser, m, None))]
    if not isinstance(denoiser, nn.Module) or missing or not hasattr(denoiser, "max_context"):
        raise TypeError(
            "denoiser must be an nn.Module with velocity/prefill/step/append and max_context "
            f"(e.g. featureflow.forecast.Denoiser) or its component spec dict; got {type(denoiser).__name__}"
            + (f" missing {missing}" if missing else "")
        )
    return denoiser


def _cond(cond: Tensor | None) -> tuple[Tensor, ...]:
    """Extra positional arguments for a denoiser call: ``(cond,)``, or none without actions
    (so denoisers that take no ``cond`` keep working)."""
    return () if cond is None else (cond,)


class ForecasterBase(nn.Module, Configurable):
    """Shared machinery; subclasses define ``loss`` and ``_next_frame``.

    Args:
        denoiser: a :class:`~featureflow.forecast.Denoiser` (or its ``describe()`` spec).
        min_context: fewest context frames drawn for a training window.
        max_stride: largest frame stride drawn for a training window (1 = consecutive).
        residual: model the change from the last context frame instead of the frame
            itself (the target becomes ``next − last``; a network that outputs zero is
            the copy-last-frame baseline, which makes small models train much faster).
        residual_scale: per-channel scale (C,) of that change (see :meth:`to_target`).
        teacher_forcing: train every frame of a clip in one pass (causal denoisers).
        context_noise: training-time noise on the context frames, against the drift of
            autoregressive rollouts (whose context is the model's own imperfect output):
            each training clip draws ``sigma = context_noise * u``, ``u ~ U(0, 1)``, and
            its context frames get Gaussian noise of std ``sigma`` per channel (times
            ``residual_scale`` for a residual forecaster); the targets stay clean, and a
            residual target is taken from the noisy last frame, so the network learns to
            correct its context. 0 (the default) trains on clean context.
        noise_scale: standard deviation of the source noise at sampling time (1 = the
            trained path; below 1 narrows the samples, like a temperature). A calibration
            of a trained model, chosen on held-out clips (:meth:`set_noise_scale`); stochastic
            forecasters only (flow and MeanFlow).

    Action conditioning: when the denoiser was built with ``cond_dim`` (``arch="causal"``),
    the forecaster is action-conditioned (:attr:`action_dim` = ``cond_dim``): ``loss``
    takes the clips' actions (b, T - 1, A), draws consecutive-frame windows and
    conditions each target on the action that led to it; ``rollout`` takes one action per
    forecast step, shared by the samples (b, k, A) or per sample (b, s, k, A). The action
    embedding is added to the target frame's conditioning.
    """

    def __init__(
        self,
        denoiser: Any,
        *,
        min_context: int = 1,
        max_stride: int = 4,
        residual: bool = False,
        residual_scale: list[float] | tuple[float, ...] | None = None,
        teacher_forcing: bool = True,
        context_noise: float = 0.0,
        noise_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.denoiser = _build_denoiser(denoiser)
        if not (0.0 <= float(context_noise) < float("inf")):
            raise ValueError(f"context_noise must be a finite number >= 0, got {context_noise}")
        if not 1 <= min_context <= self.max_context:
            raise ValueError(f"min_context must be in 1..max_context={self.max_context}, got {min_context}")
        if max_stride < 1:
            raise ValueError(f"max_stride must be >= 1, got {max_stride}")
        self.min_context = int(min_context)
        self.max_stride = int(max_stride)
        self.residual = bool(residual)
        self.teacher_forcing = bool(teacher_forcing) and bool(getattr(self.denoiser, "teacher_forcing", False))
        self.config: dict[str, Any] = {
            "denoiser": self.denoiser.describe(),
            "min_context": self.min_context,
            "max_stride": self.max_stride,
        }
        if self.residual:  # only recorded when on, so older configs stay valid
            self.config["residual"] = True
        if not teacher_forcing:
            self.config["teacher_forcing"] = False
        self.context_noise = float(context_noise)
        if self.context_noise > 0:  # only recorded when on, so older configs stay valid
            self.config["context_noise"] = self.context_noise
        # per-channel scale of the residual target (next - last) / scale: the flow's data
        # then has unit variance like its source noise; not persistent (it lives in the config)
        self.register_buffer("residual_scale", torch.ones(self.latent_dim), persistent=False)
        if residual_scale is not None:
            self.set_residual_scale(torch.as_tensor(residual_scale, dtype=torch.float32))
        self.noise_scale = 1.0
        if float(noise_scale) != 1.0:
            self.set_noise_scale(noise_scale)

    #: whether sampling draws source noise (flow-type forecasters); see :meth:`set_noise_scale`
    stochastic: bool = False

    def set_noise_scale(self, scale: float) -> None:
        """Set the standard deviation of the sampling noise (recorded in the config when not 1).

        Every sample starts from ``scale * N(0, I)`` instead of ``N(0, I)``: below 1 the
        samples draw nearer the conditional mean (a temperature). Use it to calibrate a
        trained model's spread on held-out clips, e.g. a few-step sampler that spreads
        wider than the futures it forecasts (``docs/speed.md``, "Few-step sampling").

        Example:
            >>> from featureflow.forecast import Denoiser, FlowForecaster
            >>> fc = FlowForecaster(Denoiser(latent_dim=2, width=16, depth=1, heads=2))
            >>> fc.set_noise_scale(0.9)
            >>> fc.noise_scale, fc.config["noise_scale"]
            (0.9, 0.9)
        """
        if not self.stochastic:
            raise ValueError(f"{type(self).__name__} draws no sampling noise; noise_scale applies to flow forecasters")
        value = float(scale)
        if not (0.0 < value < float("inf")):
            raise ValueError(f"noise_scale must be a finite number > 0, got {scale}")
        self.noise_scale = value
        if value == 1.0:  # only recorded when not 1, so older configs stay valid
            self.config.pop("noise_scale", None)
        else:
            self.config["noise_scale"] = value

    def set_residual_scale(self, scale: Tensor) -> None:
        """Set the per-channel residual scale (C,) (recorded in the config; residual models only)."""
        if not self.residual:
            raise ValueError("residual_scale applies to residual forecasters (residual=True)")
        scale = scale.detach().float().flatten().cpu()
        if scale.numel() != self.latent_dim or not bool(torch.isfinite(scale).all()) or bool((scale <= 0).any()):
            raise ValueError(f"residual_scale: expected {self.latent_dim} positive finite values, got {scale.tolist()}")
        self.residual_scale.copy_(scale.to(self.residual_scale.device))
        self.config["residual_scale"] = [round(float(v), 6) for v in scale]

    @torch.no_grad()
    def fit_residual_scale(self, clips: Tensor) -> Tensor:
        """Set :attr:`residual_scale` to the per-channel std of ``next - last`` over latent
        clips (N, T, h, w, C) (consecutive frames) and return it.

        Example:
            >>> import torch
            >>> from featureflow.forecast import Denoiser, FlowForecaster
            >>> fc = FlowForecaster(Denoiser(latent_dim=2, width=16, depth=1, heads=2), residual=True)
            >>> clips = torch.zeros(3, 4, 2, 2, 2); clips[:, :, ..., 1] = torch.arange(4.0).view(1, 4, 1, 1)
            >>> fc.fit_residual_scale(clips + 0.1 * torch.randn(3, 4, 2, 2, 2)).shape
            torch.Size([2])
        """
        if clips.dim() != 5 or clips.shape[1] < 2:
            raise ValueError(f"expected latent clips (N, T >= 2, h, w, C), got shape {tuple(clips.shape)}")
        diff = (clips[:, 1:] - clips[:, :-1]).float().reshape(-1, clips.shape[-1])
        scale = diff.pow(2).mean(0).sqrt().clamp_min(1e-4)
        self.set_residual_scale(scale)
        return self.residual_scale.clone()

    def to_target(self, nxt: Tensor, last: Tensor) -> Tensor:
        """What the network models for the frame ``nxt`` after ``last``: the frame itself,
        or for a residual forecaster ``(nxt - last) / residual_scale``."""
        if not self.residual:
            return nxt
        return (nxt - last) / self.residual_scale.to(nxt.dtype)

    def from_target(self, x: Tensor, last: Tensor) -> Tensor:
        """Inverse of :meth:`to_target`: the frame from the network's output."""
        if not self.residual:
            return x
        return x * self.residual_scale.to(x.dtype) + last

    def perturb_context(self, frames: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Context frames (b, T, h, w, C) with the training noise of ``context_noise``
        (one noise level per clip); returned unchanged when ``context_noise`` is 0.

        Example:
            >>> import torch
            >>> from featureflow.forecast import Denoiser, RegressionForecaster
            >>> den = Denoiser(latent_dim=2, width=16, depth=1, heads=2)
            >>> fc = RegressionForecaster(den, context_noise=0.5)
            >>> x = torch.zeros(3, 2, 2, 2, 2)
            >>> y = fc.perturb_context(x, torch.Generator().manual_seed(0))
            >>> y.shape, bool((y.abs() > 0).any()), float(y.abs().max()) < 0.5 * 6
            (torch.Size([3, 2, 2, 2, 2]), True, True)
        """
        if self.context_noise == 0.0:
            return frames
        device = generator.device if generator is not None else "cpu"
        b = frames.shape[0]
        sigma = self.context_noise * torch.rand(b, generator=generator, device=device)
        noise = torch.randn(tuple(frames.shape), generator=generator, device=device)
        scale = sigma.view(b, *([1] * (frames.dim() - 1))).to(frames.device, frames.dtype)
        if self.residual:
            scale = scale * self.residual_scale.to(frames.dtype)
        return frames + noise.to(frames.device, frames.dtype) * scale

    def draw_targets(
        self, clip: Latents, generator: torch.Generator | None = None, actions: Tensor | None = None,
        dropout: float = 0.0,
    ) -> tuple[Tensor, list[int], Tensor | None]:
        """A teacher-forced training draw: ``(clip, lengths, actions)``.

        A frame stride (``1..max_stride``, 1 with actions) and offset are drawn per batch
        and the clip is subsampled; then every frame ``j >= min_context`` is a target with
        its own context length ``lengths[j - 1]`` uniform in ``min_context..min(j,
        max_context)`` (0 = unconditional, with probability ``dropout``; 0 also marks the
        targets ``j < min_context`` that are not trained). ``actions[:, j - 1]`` leads to frame j.

        Example:
            >>> import torch
            >>> from featureflow.forecast import Denoiser, FlowForecaster
            >>> fc = FlowForecaster(Denoiser(latent_dim=2, width=16, depth=1, heads=2, max_context=2), max_stride=1)
            >>> clip, lengths, _ = fc.draw_targets(torch.randn(1, 4, 2, 2, 2), torch.Generator().manual_seed(0))
            >>> clip.shape[1], len(lengths), lengths[0]
            (4, 3, 1)
        """
        self._expect_actions(actions, f"the clips' actions (b, T - 1, {self.action_dim})")
        b, T = int(clip.shape[0]), int(clip.shape[1])
        if T < self.min_context + 1:
            raise ValueError(f"clips have {T} frames but training needs at least min_context + 1 = {self.min_context + 1}")
        if actions is not None:
            if actions.dim() != 3 or tuple(actions.shape[:2]) != (b, T - 1) or actions.shape[-1] != self.action_dim:
                raise ValueError(f"actions: expected shape ({b}, {T - 1}, {self.action_dim}), got {tuple(actions.shape)}")
            stride = 1
        else:
            stride = int(_randint(1, max(1, min(self.max_stride, (T - 1) // self.min_context)), generator))
        if stride > 1:
            offset = int(_randint(0, min(stride - 1, T - 1 - self.min_context * stride), generator))
            clip = clip[:, offset::stride]
        n = int(clip.shape[1])
        hi = torch.tensor([min(j, self.max_context) for j in range(1, n)])
        lo = torch.full_like(hi, self.min_context)
        device = generator.device if generator is not None else "cpu"
        u = torch.rand(n - 1, generator=generator, device=device).cpu()
        lengths = (lo + (u * (hi - lo + 1).clamp_min(1)).floor().long()).clamp(max=hi)
        lengths[hi < self.min_context] = 0
        if dropout > 0:
            d = torch.rand(n - 1, generator=generator, device=device)
            lengths[d.cpu() < dropout] = 0
        return clip, [int(m) for m in lengths], (actions.to(clip.dtype) if actions is not None else None)

    def trained_targets(self, lengths: list[int]) -> Tensor:
        """Bool (T - 1,) of the targets a teacher-forced loss trains (``j >= min_context``)."""
        return torch.tensor([j >= self.min_context for j in range(1, len(lengths) + 1)])

    @property
    def max_context(self) -> int:
        """Largest context window (that of the denoiser); longer contexts keep their last frames."""
        return int(self.denoiser.max_context)

    @property
    def latent_dim(self) -> int:
        """Latent channels C."""
        return int(self.denoiser.latent_dim)

    @property
    def action_dim(self) -> int | None:
        """Size A of the action this forecaster is conditioned on (None: not action-conditioned)."""
        cond_dim = getattr(self.denoiser, "config", {}).get("cond_dim")
        return int(cond_dim) if cond_dim else None

    def draw_window(
        self, clip: Latents, generator: torch.Generator | None = None, actions: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """A random (context, target, action-or-None) training window; see :func:`draw_window`."""
        self._expect_actions(actions, f"the clips' actions (b, T - 1, {self.action_dim})")
        out = draw_window(
            clip, min_context=self.min_context, max_context=self.max_context, max_stride=self.max_stride,
            generator=generator, actions=actions,
        )
        if actions is None:
            return out[0], out[1], None
        if out[2].shape[-1] != self.action_dim:
            raise ValueError(f"actions: expected {self.action_dim} values per step, got {out[2].shape[-1]}")
        return out[0], out[1], out[2].to(clip.dtype)

    def _expect_actions(self, actions: Tensor | None, wanted: str) -> None:
        """Actions must be given exactly when the forecaster is action-conditioned."""
        if actions is None and self.action_dim is not None:
            raise ValueError(f"this forecaster is action-conditioned: pass {wanted}")
        if actions is not None and self.action_dim is None:
            raise ValueError("this forecaster is not action-conditioned (its denoiser has no cond_dim); pass actions=None")

    def _check_actions(self, actions: Tensor | None, b: int, num_samples: int, horizon: int) -> Tensor | None:
        """Rollout actions as (b, s or 1, k, A), or None; errors name the expected shape."""
        a = self.action_dim
        self._expect_actions(actions, f"actions of shape (b, {horizon}, {a}) or (b, s, {horizon}, {a})")
        if actions is None:
            return None
        if actions.dim() == 3:
            actions = actions.unsqueeze(1)
        if actions.dim() != 4 or actions.shape[0] != b or actions.shape[1] not in (1, num_samples) \
                or actions.shape[2] != horizon or actions.shape[3] != a:
            raise ValueError(
                f"actions: expected shape ({b}, {horizon}, {a}) or ({b}, {num_samples}, {horizon}, {a}), got {tuple(actions.shape)}"
            )
        check_finite("actions", actions)
        return actions

    # --- sampling ------------------------------------------------------------------
    def _rows_per_element(self, num_samples: int) -> int:
        """Distinct rows computed per batch element (1 for deterministic forecasters)."""
        return num_samples

    def _solver(self, solver: str | ODESolver, steps: int | None) -> ODESolver | None:
        """The solver a rollout uses (resolved once per rollout)."""
        return resolve(solver, steps)

    def _next_frame(
        self, state: Any, rows: int, solver: ODESolver | None, generator: torch.Generator | None, guidance: float,
        cond: Tensor | None = None,
    ) -> tuple[Tensor, int]:
        """The next frame (rows, h, w, C) given the window ``state`` (and action ``cond`` (rows, A)), and the NFE spent."""
        raise NotImplementedError

    def _check_context(self, context: Tensor, horizon: int, num_samples: int) -> Tensor:
        if context.shape[-1] != self.latent_dim:
            raise ValueError(f"context has {context.shape[-1]} latent channels; the denoiser expects {self.latent_dim}")
        if context.shape[1] < 1:
            raise ValueError("context must hold at least one frame")
        check_rollout_size(horizon, num_samples)
        check_finite("context", context)
        return context[:, -self.max_context :]

    @torch.no_grad()
    @typechecked
    def rollout(
        self,
        context: Latents,
        horizon: int,
        num_samples: int = 1,
        solver: str | ODESolver = DEFAULT_SOLVER,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        guidance: float | int = 1.0,
        progress: bool = False,
        actions: Float[Tensor, "..."] | None = None,
    ) -> Rollout:
        """Forecast ``horizon`` frames autoregressively, ``num_samples`` futures per clip.

        The context window slides: each new frame is appended and the oldest dropped
        once ``max_context`` frames are held (contexts longer than that keep their last
        ``max_context`` frames). The context is prefilled once per clip and expanded to
        the samples, which run batched (b * s rows); the denoiser's cache is reused along
        the rollout, and memory holds only the window and the outputs.

        Args:
            context: clean context latents (b, t, h, w, C).
            horizon: forecast steps k.
            num_samples: samples s per clip.
            solver: a solver name (``"euler"``, ``"heun"``, ...) or an ``ODESolver``.
            steps: network evaluations per frame for a named solver (None = its default).
            generator: source of the noise (deterministic output given its state).
            guidance: classifier-free guidance scale on the context (1 = off; other
                values cost a second, unconditional evaluation per ODE step).
            progress: show a progress bar over the horizon.
            actions: for an action-conditioned forecaster (:attr:`action_dim` set), the
                action taken before each forecast frame: (b, k, A) shared by all samples,
                or (b, s, k, A) one sequence per sample (e.g. a planner's candidates).

        Returns:
            ``Rollout(latents (b, s, k, h, w, C), nfe_per_frame)``.
        """
        context = self._check_context(context, horizon, num_samples)
        b, _, h, w, c = context.shape
        acts = self._check_actions(actions, b, num_samples, horizon)
        per_sample = acts is not None and acts.shape[1] > 1
        rows = num_samples if per_sample else self._rows_per_element(num_samples)
        if acts is not None:  # (b * rows, k, A), row i * rows + j is sample j of clip i
            acts = acts.to(context.dtype).expand(b, rows, horizon, acts.shape[-1]).reshape(b * rows, horizon, -1)
        ode = self._solver(solver, steps)
        state = self.denoiser.prefill(context)  # the context cache is computed once per clip ...
        if rows > 1:
            expand = getattr(state, "expand", None)  # ... and copied to the samples
            state = expand(rows) if expand is not None else self.denoiser.prefill(context.repeat_interleave(rows, 0))
        out = context.new_empty(b * rows, horizon, h, w, c)
        nfes: list[int] = []
        noise = SampleStreams(generator, b, rows, self.noise_scale)  # sample j's noise does not depend on num_samples
        for k in progress_bar(range(horizon), progress=progress, desc="rollout", total=horizon):
            cond = acts[:, k].contiguous() if acts is not None else None
            frame, nfe = self._next_frame(state, b * rows, ode, noise, guidance, cond)
            out[:, k] = frame
            nfes.append(nfe)
            if k + 1 < horizon:
                state = self.denoiser.append(state, frame)
        latents = out.view(b, rows, horizon, h, w, c)
        if rows != num_samples:
            latents = latents.expand(b, num_samples, horizon, h, w, c).contiguous()
        return Rollout(latents, tuple(nfes))

    @typechecked
    def sample(
        self,
        context: Latents,
        num_samples: int = 1,
        solver: str | ODESolver = DEFAULT_SOLVER,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        guidance: float | int = 1.0,
        actions: Float[Tensor, "..."] | None = None,
    ) -> Float[Tensor, "b s h w C"]:
        """Samples of the next frame, (b, s, h, w, C); see :meth:`rollout` for the arguments
        (``actions``: (b, A) or (b, s, A) for an action-conditioned forecaster)."""
        if actions is not None:
            actions = actions.unsqueeze(-2)
        return self.rollout(context, 1, num_samples, solver, steps, generator, guidance, actions=actions).latents[:, :, 0]
