"""`Denoiser`: the flow-matching velocity network behind every forecaster, in two architectures.

* ``arch="causal"`` (default): causal spatio-temporal DiT with one flow time per frame,
  rotary temporal and 2-D spatial positions (any grid, any context length up to
  ``max_context``) and an exact context key/value cache. See
  :mod:`featureflow.forecast.causal_trunk` and ``docs/denoisers.md``.
* ``arch="vfmf"``: the released VFMF trunk (learned t/h/w position tables for one grid);
  released weights load through :meth:`Denoiser.load_released_state_dict`.

Both share one interface: :meth:`~Denoiser.velocity` (uncached, for training),
:meth:`~Denoiser.prefill` / :meth:`~Denoiser.step` / :meth:`~Denoiser.append` (sampling).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from featureflow.forecast.causal_trunk import CausalTrunk, teacher_mask
from featureflow.forecast.fast_sampling import COMPILED_STEPS, FastSampling, writable
from featureflow.forecast.kv_cache import DenoiserState, context_views, with_scratch_slot
from featureflow.forecast.vfmf_trunk import VFMFTrunk, convert_released_state_dict, released_config
from featureflow.typing import Float, ShapeError, typechecked
from featureflow.utils import Configurable, register_component

__all__ = ["Denoiser", "DenoiserState"]

ARCHS = ("causal", "vfmf")

@register_component
class Denoiser(FastSampling, nn.Module, Configurable):
    """Velocity network v(x_t, t | context) for the next latent frame.

    Args:
        arch: ``"causal"`` (default for new models) or ``"vfmf"`` (the released trunk).
        latent_dim: latent channels C.
        width: hidden size. ``vfmf``: divisible by 3; ``causal``: ``width / heads``
            divisible by 4.
        depth: number of layers.
        heads: attention heads.
        mlp_ratio: MLP hidden size as a multiple of ``width`` (ignored if ``mlp_dim``).
        mlp_dim: MLP hidden size (overrides ``mlp_ratio``).
        max_context: most context frames the model sees (the rollout window).
        grid: (h, w) patch grid; required for ``vfmf`` (learned tables), ignored by
            ``causal`` (which works on any grid).
        dropout: dropout in attention and MLPs, training mode only.
        cond_dim: ``causal`` only: size of an optional per-sample vector (e.g. an action)
            added to the target frame's conditioning; ``None`` disables it.
        rope_base: ``causal`` only: rotary wavelength base.
        frequency_dim: size of the sinusoidal flow-time features.

    Attributes:
        arch, latent_dim, max_context: as given; ``trunk``: the network.

    Example:
        >>> import torch
        >>> den = Denoiser(latent_dim=4, width=32, depth=1, heads=2, max_context=2)
        >>> ctx, x = torch.randn(1, 2, 3, 5, 4), torch.randn(1, 3, 5, 4)
        >>> t = torch.rand(1)
        >>> den.velocity(ctx, x, t).shape
        torch.Size([1, 3, 5, 4])
        >>> state = den.prefill(ctx)
        >>> bool(torch.allclose(den.step(state, x, t), den.velocity(ctx, x, t), atol=1e-5))
        True
    """

    def __init__(
        self,
        arch: str = "causal",
        latent_dim: int = 16,
        width: int = 256,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        mlp_dim: int | None = None,
        max_context: int = 4,
        grid: tuple[int, int] | list[int] | None = None,
        dropout: float = 0.0,
        cond_dim: int | None = None,
        rope_base: float = 100.0,
        frequency_dim: int = 256,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
        for name, val in (("latent_dim", latent_dim), ("width", width), ("depth", depth), ("heads", heads)):
            if not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        if not isinstance(max_context, int) or max_context < 1:
            raise ValueError(f"max_context must be a positive int, got {max_context!r}")
        hidden = int(mlp_dim) if mlp_dim is not None else int(round(mlp_ratio * width))
        self.arch, self.latent_dim, self.max_context = arch, latent_dim, max_context
        self.grid: tuple[int, int] | None = (int(grid[0]), int(grid[1])) if grid is not None else None
        self.config: dict[str, Any] = {
            "arch": arch, "latent_dim": latent_dim, "width": width, "depth": depth, "heads": heads,
            "mlp_ratio": float(mlp_ratio), "mlp_dim": mlp_dim, "max_context": max_context,
            "grid": list(self.grid) if self.grid is not None else None, "dropout": float(dropout),
            "cond_dim": cond_dim, "rope_base": float(rope_base), "frequency_dim": frequency_dim,
        }  # fmt: skip
        if arch == "vfmf":
            if self.grid is None:
                raise ValueError("arch='vfmf' has learned spatial position tables: pass grid=(h, w)")
            if cond_dim is not None:
                raise ValueError("arch='vfmf' does not support cond_dim (the released trunk has no extra conditioning)")
            self.trunk: nn.Module = VFMFTrunk(
                latent_dim, width, depth, heads, hidden, max_frames=max_context + 1, grid=self.grid,
                dropout=dropout, frequency_dim=frequency_dim,
            )  # fmt: skip
        else:
            self.trunk = CausalTrunk(
                latent_dim, width, depth, heads, hidden, dropout=dropout, frequency_dim=frequency_dim,
                rope_base=rope_base, cond_dim=cond_dim,
            )  # fmt: skip

    # ------------------------------------------------------------ validation
    def _check(self, name: str, x: Tensor, context_len: int | None = None) -> None:
        if x.shape[-1] != self.latent_dim:
            raise ShapeError(
                f"{name}: expected latents with latent_dim={self.latent_dim} channels (last axis), "
                f"got shape {tuple(x.shape)}"
            )
        if self.grid is not None and tuple(x.shape[-3:-1]) != self.grid:
            raise ShapeError(
                f"{name}: arch='vfmf' was built for a {self.grid[0]}x{self.grid[1]} patch grid, "
                f"got {x.shape[-3]}x{x.shape[-2]}"
            )
        if context_len is not None and context_len > self.max_context:
            raise ValueError(
                f"{name}: at most max_context={self.max_context} context frames, got {context_len}; "
                "keep the last max_context frames"
            )

    def _check_cond(self, cond: Tensor | None, b: int) -> None:
        if cond is None:
            return
        if self.arch == "vfmf":
            raise ValueError("arch='vfmf' does not take cond")
        if self.config["cond_dim"] is None:
            raise ValueError("this denoiser was built without cond_dim; pass cond=None or set cond_dim")
        if cond.ndim != 2 or cond.shape[0] != b or cond.shape[1] != self.config["cond_dim"]:
            raise ShapeError(f"cond: expected shape ({b}, {self.config['cond_dim']}), got {tuple(cond.shape)}")

    @staticmethod
    def _times(t: Tensor, b: int) -> Tensor:
        return t.expand(b) if t.ndim == 0 else t

    # ------------------------------------------------------------- uncached
    @typechecked
    def velocity(
        self,
        context: Float[Tensor, "b t h w C"] | None,
        x_t: Float[Tensor, "b h w C"],
        t: Float[Tensor, "b"] | Float[Tensor, ""],
        cond: Float[Tensor, "b d"] | None = None,
    ) -> Float[Tensor, "b h w C"]:
        """Velocity of the target frame ``x_t`` at flow time ``t`` given clean ``context``.

        Args:
            context: (b, t, h, w, C) clean frames, oldest first, ``t <= max_context``;
                ``None`` (or t = 0) for the unconditional velocity (classifier-free guidance).
            x_t: (b, h, w, C) the noisy target, x_t = (1 - t) noise + t data.
            t: (b,) flow times in [0, 1] (a 0-d tensor is broadcast).
            cond: optional (b, cond_dim) extra conditioning of the target (``causal`` only).

        Returns:
            (b, h, w, C) velocity. Uncached: the whole window is computed (training path).

        Example:
            >>> import torch
            >>> den = Denoiser(latent_dim=4, width=32, depth=1, heads=2)
            >>> den.velocity(None, torch.randn(2, 3, 3, 4), torch.rand(2)).shape
            torch.Size([2, 3, 3, 4])
        """
        b = x_t.shape[0]
        self._check("x_t", x_t)
        self._check_cond(cond, b)
        t = self._times(t, b)
        if context is not None:
            self._check("context", context, context.shape[1])
        frames = x_t[:, None] if context is None else torch.cat([context, x_t[:, None]], dim=1)
        dt = self.weight_dtype
        if dt != frames.dtype:  # e.g. a bf16 sampling copy (sampling_copy) given fp32 latents
            return self._cast_call(x_t.dtype, self.velocity, context, x_t, t, cond)
        if self.arch == "vfmf":
            return self.trunk(frames, t)[:, -1]
        times = torch.cat([frames.new_ones(b, frames.shape[1] - 1), t[:, None].to(frames.dtype)], dim=1)
        return self.trunk(frames, times, cond)

    @property
    def teacher_forcing(self) -> bool:
        """True when :meth:`teacher_forced` can train every frame of a clip in one pass
        (``causal``: a context frame attends only to itself)."""
        return self.arch == "causal"

    @typechecked
    def teacher_forced(
        self,
        clip: Float[Tensor, "b T h w C"],
        x_t: Float[Tensor, "b T1 h w C"],
        t: Float[Tensor, "b T1"],
        lengths: list[int] | tuple[int, ...],
        cond: Float[Tensor, "b T1 d"] | None = None,
    ) -> Float[Tensor, "b T1 h w C"]:
        """Velocities of every target frame of clean clips in one pass (``causal`` only).

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

        Example:
            >>> import torch
            >>> den = Denoiser(latent_dim=4, width=32, depth=1, heads=2, max_context=2)
            >>> clip, x, t = torch.randn(1, 3, 2, 2, 4), torch.randn(1, 2, 2, 2, 4), torch.rand(1, 2)
            >>> v = den.teacher_forced(clip, x, t, [1, 2])
            >>> bool(torch.allclose(v[:, 1], den.velocity(clip[:, :2], x[:, 1], t[:, 1]), atol=1e-5))
            True
        """
        if not self.teacher_forcing:
            raise NotImplementedError("teacher_forced needs arch='causal' (the released trunk lets context frames "
                                      "attend to each other); train arch='vfmf' one window at a time")
        b, T = clip.shape[:2]
        self._check("clip", clip)
        if len(lengths) != T - 1:
            raise ValueError(f"lengths: expected {T - 1} context lengths (one per target frame), got {len(lengths)}")
        if any(m > self.max_context for m in lengths):
            raise ValueError(f"lengths: at most max_context={self.max_context} context frames, got {list(lengths)}")
        if cond is not None:
            self._check_cond(cond.reshape(-1, cond.shape[-1]), b * (T - 1))
        return self.trunk.teacher_forced(clip, x_t, t.to(clip.dtype), teacher_mask(lengths, clip.device), cond)

    def forward(self, context: Tensor | None, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Same as :meth:`velocity`."""
        return self.velocity(context, x_t, t, cond)

    # --------------------------------------------------------------- cached
    @typechecked
    def prefill(self, context: Float[Tensor, "b t h w C"] | None) -> DenoiserState:
        """Build the sampling state of a context window (``None``: an empty window).

        ``causal`` computes each context frame's per-layer temporal keys/values once;
        ``vfmf`` keeps the raw window. For many samples per context, prefill on (b, ...)
        and call ``state.expand(num_samples)``.

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
        if self.arch == "vfmf" or context.shape[1] == 0:
            return DenoiserState(frames=context)
        keys, values = self.trunk.encode_frames(context.to(self.weight_dtype))
        return self._causal_state(context, tuple(keys), tuple(values))

    def _causal_state(self, frames: Tensor, raw_keys: tuple[Tensor, ...], values: tuple[Tensor, ...]) -> DenoiserState:
        """A causal state whose rotated keys and values sit in windows with a scratch slot."""
        key_window = tuple(with_scratch_slot(k) for k in self.trunk.rotate_keys(raw_keys))
        value_window = tuple(with_scratch_slot(v) for v in values)
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
    ) -> Float[Tensor, "b h w C"]:
        """Velocity of ``x_t`` given the state's window: the same value as :meth:`velocity`.

        ``causal`` runs only the target frame's tokens (its temporal queries attend to the
        cached context keys/values); ``vfmf`` recomputes the whole window.

        Example:
            >>> import torch
            >>> den = Denoiser(latent_dim=4, width=32, depth=1, heads=2)
            >>> s = den.prefill(torch.randn(2, 1, 3, 3, 4))
            >>> den.step(s, torch.randn(2, 3, 3, 4), torch.tensor(0.5)).shape
            torch.Size([2, 3, 3, 4])
        """
        b = x_t.shape[0]
        self._check("x_t", x_t)
        self._check_cond(cond, b)
        self._check_state(state, x_t)
        t = self._times(t, b)
        if self.arch == "vfmf" or state.num_frames == 0:
            return self.velocity(state.frames if state.num_frames else None, x_t, t, cond)
        dt = self.weight_dtype
        xt, tt, cc = x_t.to(dt), t.to(dt), None if cond is None else cond.to(dt)
        if state.key_window and writable(state.key_window[0]):
            fn = COMPILED_STEPS.get(self, self.trunk.step_window)
            v = fn(state.key_window, state.value_window, xt, tt, cc)
        else:
            v = self.trunk.step(state.keys, state.values, xt, tt, cc)
        return v.to(x_t.dtype)

    @typechecked
    def append(self, state: DenoiserState, frame: Float[Tensor, "b h w C"]) -> DenoiserState:
        """Add a clean ``frame`` to the window, keeping the last ``max_context`` frames.

        Returns a new state (the old one stays valid). ``causal`` computes only the new
        frame's keys/values and drops the oldest frame's; nothing cached is recomputed
        (keys are re-rotated for their new window positions, an elementwise product).

        Example:
            >>> import torch
            >>> den = Denoiser(latent_dim=4, width=32, depth=1, heads=2, max_context=2)
            >>> s = den.prefill(torch.randn(1, 2, 3, 3, 4))
            >>> den.append(s, torch.randn(1, 3, 3, 4)).num_frames
            2
        """
        self._check("frame", frame)
        self._check_state(state, frame)
        frames = frame[:, None] if state.frames is None else torch.cat([state.frames, frame[:, None]], dim=1)
        frames = frames[:, -self.max_context :]
        if self.arch == "vfmf":
            return DenoiserState(frames=frames)
        new_keys, new_values = self.trunk.encode_frames(frame[:, None].to(self.weight_dtype))
        keep = self.max_context - 1

        def slide(old: tuple[Tensor, ...], new: list[Tensor]) -> tuple[Tensor, ...]:
            if not old:
                return tuple(new)
            return tuple(torch.cat([o[..., -keep:, :] if keep else o[..., :0, :], n], dim=-2) for o, n in zip(old, new))

        return self._causal_state(frames, slide(state.raw_keys, new_keys), slide(state.values, new_values))

    def _check_state(self, state: DenoiserState, x: Tensor) -> None:
        if not isinstance(state, DenoiserState):
            raise TypeError(f"expected a DenoiserState from Denoiser.prefill, got {type(state).__name__}")
        if state.frames is None:
            return
        if state.batch_size != x.shape[0]:
            raise ShapeError(
                f"state has batch size {state.batch_size} but the input has {x.shape[0]}; "
                "for several samples per context use state.expand(num_samples)"
            )
        if state.grid != tuple(x.shape[1:3]):
            raise ShapeError(f"state holds a {state.grid} patch grid but the input has {tuple(x.shape[1:3])}")

    # ------------------------------------------------------ released weights
    def load_released_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        """Load a released VFMF ``MaskTransformer`` state dict (``arch="vfmf"`` only).

        Keys are renamed by :func:`featureflow.forecast.vfmf_trunk.convert_released_state_dict`
        (complete and strict: every released key used, every parameter filled). Strip any
        outer prefix (the released checkpoints store the trunk under ``transformer.``) first.

        Example:
            >>> den = Denoiser("vfmf", latent_dim=4, width=24, depth=1, heads=2, grid=(2, 2), max_context=1)
            >>> from featureflow.forecast.vfmf_trunk import vfmf_key_map
            >>> inverse = {v: k for k, v in vfmf_key_map(1).items()}
            >>> den.load_released_state_dict({inverse[k]: v for k, v in den.trunk.state_dict().items()})
        """
        if self.arch != "vfmf":
            raise ValueError("released VFMF weights load only into arch='vfmf'")
        self.load_state_dict(convert_released_state_dict(state_dict, prefix="trunk."), strict=True)

    @classmethod
    def from_released_state_dict(cls, state_dict: dict[str, Tensor], dropout: float = 0.0) -> Denoiser:
        """Build an ``arch="vfmf"`` denoiser sized from a released state dict and load it.

        Example:
            >>> den = Denoiser("vfmf", latent_dim=4, width=24, depth=1, heads=2, grid=(2, 2), max_context=1)
            >>> from featureflow.forecast.vfmf_trunk import vfmf_key_map
            >>> inverse = {v: k for k, v in vfmf_key_map(1).items()}
            >>> sd = {inverse[k]: v for k, v in den.trunk.state_dict().items()}
            >>> Denoiser.from_released_state_dict(sd).grid
            (2, 2)
        """
        model = cls(**released_config(state_dict), dropout=dropout)
        model.load_released_state_dict(state_dict)
        return model
