"""`CausalDenoiser` (``arch="causal"``): causal temporal attention, one flow time per frame,
relative positions, and an exact context key/value cache for sampling.

A clean context frame attends to itself; a target frame attends to itself and the clean
context frames before it, at every layer (``docs/denoisers.md``). Each context frame's
keys and values are computed once and reused for every ODE step of a frame and across
the sliding window of a rollout; cached and uncached outputs agree.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from featureflow.forecast.causal_trunk import CausalTrunk, teacher_mask
from featureflow.forecast.denoiser import Denoiser, register_arch
from featureflow.forecast.fast_sampling import COMPILED_STEPS, writable
from featureflow.forecast.kv_cache import DenoiserState, context_views
from featureflow.typing import Float, typechecked

__all__ = ["CausalDenoiser"]


@register_arch
class CausalDenoiser(Denoiser):
    """The causal denoiser (``Denoiser(arch="causal", ...)``; arguments as in `Denoiser`).

    ``interval_cond=True`` adds a second time input, the interval length ``h`` of an
    average velocity (`MeanFlowForecaster`): ``velocity``, ``step`` and
    ``teacher_forced`` then take ``h`` (None = 0). Its embedding's last layer starts at
    zero, so a plain flow denoiser's weights load into it (``load_state_dict(...,
    strict=False)``, only the ``interval_embed`` keys missing) with the same outputs at any
    ``h``. Only recorded in the config when on, so older configs load unchanged.

    Example:
        >>> import torch
        >>> den = CausalDenoiser(latent_dim=4, width=32, depth=1, heads=2, max_context=2)
        >>> den.describe()["config"].get("arch"), den.teacher_forcing
        ('causal', True)
        >>> s = den.prefill(torch.randn(1, 2, 3, 3, 4))
        >>> den.step(s, torch.randn(1, 3, 3, 4), torch.tensor(0.5)).shape
        torch.Size([1, 3, 3, 4])
    """

    arch = "causal"

    def __init__(self, *args: Any, interval_cond: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        c = self.config
        if not isinstance(interval_cond, bool):
            raise ValueError(f"interval_cond must be True or False, got {interval_cond!r}")
        if interval_cond:  # only recorded when on, so configs saved without it stay valid
            c["interval_cond"] = True
        self.trunk: nn.Module = CausalTrunk(
            c["latent_dim"], c["width"], c["depth"], c["heads"], self.hidden, dropout=c["dropout"],
            frequency_dim=c["frequency_dim"], rope_base=c["rope_base"], cond_dim=c["cond_dim"],
            interval_cond=interval_cond,
        )  # fmt: skip

    @property
    def interval_cond(self) -> bool:
        """True when the denoiser takes an interval length ``h`` (average velocities)."""
        return bool(self.config.get("interval_cond", False))

    def _window_velocity(self, frames: Tensor, t: Tensor, cond: Tensor | None, h: Tensor | None = None) -> Tensor:
        b = frames.shape[0]
        times = torch.cat([frames.new_ones(b, frames.shape[1] - 1), t[:, None].to(frames.dtype)], dim=1)
        if h is None:
            return self.trunk(frames, times, cond)
        return self.trunk(frames, times, cond, h.to(frames.dtype))

    @property
    def teacher_forcing(self) -> bool:
        """True: a context frame attends only to itself, so every frame of a clip can be a target in one pass."""
        return True

    @typechecked
    def teacher_forced(
        self,
        clip: Float[Tensor, "b T h w C"],
        x_t: Float[Tensor, "b T1 h w C"],
        t: Float[Tensor, "b T1"],
        lengths: list[int] | tuple[int, ...],
        cond: Float[Tensor, "b T1 d"] | None = None,
        h: Float[Tensor, "b T1"] | None = None,
    ) -> Float[Tensor, "b T1 h w C"]:
        """Velocities of every target frame of clean clips in one pass.

        Target ``j`` (1..T-1) is the noisy ``x_t[:, j - 1]`` at flow time ``t[:, j - 1]``
        with clean context ``clip[:, j - m : j]``, ``m = lengths[j - 1]`` (0 = none). Each
        output equals ``velocity(clip[:, j - m : j], x_t[:, j - 1], t[:, j - 1])``, at the
        cost of one pass over 2T - 1 frames instead of T - 1 windows.

        Args:
            clip: (b, T, h, w, C) clean frames.
            x_t: (b, T - 1, h, w, C) noisy targets of frames 1..T-1.
            t: (b, T - 1) their flow times.
            lengths: T - 1 context lengths, each in 0..min(j, max_context).
            cond: optional (b, T - 1, cond_dim) conditioning of each target.
            h: (b, T - 1) interval lengths of the targets (``interval_cond`` only; None = 0).

        Example:
            >>> import torch
            >>> den = Denoiser(latent_dim=4, width=32, depth=1, heads=2, max_context=2)
            >>> clip, x, t = torch.randn(1, 3, 2, 2, 4), torch.randn(1, 2, 2, 2, 4), torch.rand(1, 2)
            >>> v = den.teacher_forced(clip, x, t, [1, 2])
            >>> bool(torch.allclose(v[:, 1], den.velocity(clip[:, :2], x[:, 1], t[:, 1]), atol=1e-5))
            True
        """
        b, T = clip.shape[:2]
        self._check("clip", clip)
        if len(lengths) != T - 1:
            raise ValueError(f"lengths: expected {T - 1} context lengths (one per target frame), got {len(lengths)}")
        if any(m > self.max_context for m in lengths):
            raise ValueError(f"lengths: at most max_context={self.max_context} context frames, got {list(lengths)}")
        if cond is not None:
            self._check_cond(cond.reshape(-1, cond.shape[-1]), b * (T - 1))
        mask = teacher_mask(lengths, clip.device)
        if h is None:
            return self.trunk.teacher_forced(clip, x_t, t.to(clip.dtype), mask, cond)
        self._check_interval(h.reshape(-1), b * (T - 1))
        return self.trunk.teacher_forced(clip, x_t, t.to(clip.dtype), mask, cond, h.to(clip.dtype))

    # --------------------------------------------------------------- cached
    @typechecked
    def prefill(self, context: Float[Tensor, "b t h w C"] | None) -> DenoiserState:
        """Build the sampling state of a context window (``None``: an empty window).

        Each context frame's per-layer temporal keys/values are computed once. For many
        samples per context, prefill on (b, ...) and call ``state.expand(num_samples)``.

        Example:
            >>> import torch
            >>> den = Denoiser(latent_dim=4, width=32, depth=2, heads=2)
            >>> s = den.prefill(torch.randn(1, 3, 2, 2, 4))
            >>> s.num_frames, len(s.keys)
            (3, 2)
        """
        if context is None:
            return DenoiserState(frames=None)
        self._check("context", context, context.shape[1])
        if context.shape[1] == 0:
            return DenoiserState(frames=context)
        keys, values = self.trunk.encode_frames(context.to(self.weight_dtype))
        return self._causal_state(context, tuple(keys), tuple(values))

    def _causal_state(self, frames: Tensor, raw_keys: tuple[Tensor, ...], values: tuple) -> DenoiserState:
        """A causal state whose rotated keys and values sit in windows with a scratch slot
        (``values``: per layer a tensor or a pair of tensors to concatenate, see
        `CausalTrunk.context_windows`)."""
        key_window, value_window = self.trunk.context_windows(raw_keys, values)
        return DenoiserState(
            frames=frames, keys=context_views(key_window), raw_keys=raw_keys, values=context_views(value_window),
            key_window=key_window, value_window=value_window,
        )

    @typechecked
    def step(
        self,
        state: DenoiserState,
        x_t: Float[Tensor, "b h w C"],
        t: Float[Tensor, "b"] | Float[Tensor, ""],
        cond: Float[Tensor, "b d"] | None = None,
        h: Float[Tensor, "b"] | Float[Tensor, ""] | None = None,
    ) -> Float[Tensor, "b h w C"]:
        """Velocity of ``x_t`` given the state's window: the same value as :meth:`velocity`.

        With ``interval_cond``, ``h`` is the interval length of an average velocity
        (None = 0, the instantaneous velocity).

        Only the target frame's tokens run (its temporal queries attend to the cached
        context keys/values).

        Example:
            >>> import torch
            >>> den = Denoiser(latent_dim=4, width=32, depth=1, heads=2)
            >>> s = den.prefill(torch.randn(2, 1, 3, 3, 4))
            >>> den.step(s, torch.randn(2, 3, 3, 4), torch.tensor(0.5)).shape
            torch.Size([2, 3, 3, 4])
        """
        t = self._check_step(state, x_t, t, cond)
        if h is not None:
            h = self._check_interval(h, x_t.shape[0])
        if state.num_frames == 0:
            return self.velocity(None, x_t, t, cond, h=h)
        dt = self.weight_dtype
        xt, tt, cc = x_t.to(dt), t.to(dt), None if cond is None else cond.to(dt)
        extra = () if h is None else (h.to(dt),)
        if state.key_window and writable(state.key_window[0]):
            fn = COMPILED_STEPS.get(self, self.trunk.step_window)
            v = fn(state.key_window, state.value_window, xt, tt, cc, *extra)
        else:
            v = self.trunk.step(state.keys, state.values, xt, tt, cc, *extra)
        return v.to(x_t.dtype)

    @typechecked
    def append(self, state: DenoiserState, frame: Float[Tensor, "b h w C"]) -> DenoiserState:
        """Add a clean ``frame`` to the window, keeping the last ``max_context`` frames.

        Returns a new state (the old one stays valid). Only the new frame's keys/values
        are computed and the oldest frame's dropped; nothing cached is recomputed (keys
        are re-rotated for their new window positions, an elementwise product).

        Example:
            >>> import torch
            >>> den = Denoiser(latent_dim=4, width=32, depth=1, heads=2, max_context=2)
            >>> s = den.prefill(torch.randn(1, 2, 3, 3, 4))
            >>> den.append(s, torch.randn(1, 3, 3, 4)).num_frames
            2
        """
        frames = self._slide(state, frame)
        new_keys, new_values = self.trunk.encode_frames(frame[:, None].to(self.weight_dtype))
        keep = self.max_context - 1

        def slide(old: tuple[Tensor, ...], new: list[Tensor]) -> tuple[Tensor, ...]:
            if not old:
                return tuple(new)
            return tuple(torch.cat([o[..., -keep:, :] if keep else o[..., :0, :], n], dim=-2) for o, n in zip(old, new))

        # values go straight into the new window (kept old slots, then the new frame's)
        values = tuple((o[..., -keep:, :] if keep else o[..., :0, :], n) for o, n in zip(state.values, new_values))
        return self._causal_state(frames, slide(state.raw_keys, new_keys), values or tuple(new_values))
