"""`Denoiser`: the flow-matching velocity network behind every forecaster, in two architectures.

* ``arch="causal"`` (default): `CausalDenoiser`, a causal spatio-temporal DiT with one
  flow time per frame, rotary temporal and 2-D spatial positions (any grid, any context
  length up to ``max_context``) and an exact context key/value cache. See
  :mod:`featureflow.forecast.causal_denoiser` and ``docs/denoisers.md``.
* ``arch="vfmf"``: `VFMFDenoiser`, the released VFMF trunk (learned t/h/w position
  tables for one grid); released weights load through
  :meth:`VFMFDenoiser.load_released_state_dict`.

``Denoiser(arch=..., ...)`` builds the class of that architecture (so saved configs,
which record ``arch``, load unchanged); both meet
`featureflow.forecast.DenoiserProtocol`: :meth:`~Denoiser.velocity` (uncached, for
training), :meth:`~Denoiser.prefill` / :meth:`~Denoiser.step` / :meth:`~Denoiser.append`
(sampling). This module holds what they share: argument checks, input validation, the
saved config.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from featureflow.forecast.fast_sampling import FastSampling
from featureflow.forecast.kv_cache import DenoiserState
from featureflow.forecast.vfmf_trunk import released_config
from featureflow.typing import Float, ShapeError, typechecked
from featureflow.utils import Configurable, int_list, record_config, register_component

__all__ = ["Denoiser", "DenoiserState", "ARCHS", "register_arch"]

#: Architecture name → its class; filled by the modules that define them.
ARCHS: dict[str, type["Denoiser"]] = {}


class _ArchFactory(type):
    """Metaclass of `Denoiser`: ``Denoiser(arch, ...)`` builds ``ARCHS[arch](...)``.

    A concrete class called with ``arch=`` checks that it is its own.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is Denoiser:
            arch = args[0] if args else kwargs.pop("arch", "causal")
            args = args[1:]
            if arch not in ARCHS:
                raise ValueError(f"arch must be one of {tuple(ARCHS)}, got {arch!r}")
            return ARCHS[arch](*args, **kwargs)
        arch = kwargs.pop("arch", cls.arch)
        if arch != cls.arch:
            raise ValueError(f"{cls.__name__} is arch={cls.arch!r}, got arch={arch!r}; use Denoiser(arch={arch!r}, ...)")
        return super().__call__(*args, **kwargs)


@register_component
class Denoiser(FastSampling, nn.Module, Configurable, metaclass=_ArchFactory):
    """Velocity network v(x_t, t | context) for the next latent frame.

    ``Denoiser(arch=...)`` returns a `CausalDenoiser` (``"causal"``, default for new
    models) or a `VFMFDenoiser` (``"vfmf"``, the released trunk); both are ``Denoiser``
    instances and save as ``{"type": "Denoiser", "config": {"arch": ..., ...}}``. The
    architecture is the first argument of the factory (``arch``, default ``"causal"``);
    the other arguments go to the class it picks. `CausalDenoiser` also takes the keyword
    ``interval_cond`` (a second time input, the interval length ``h`` of an average
    velocity, for `MeanFlowForecaster`; default False).

    Args:
        latent_dim: latent channels C.
        width: hidden size. ``vfmf``: divisible by 3; ``causal``: ``width / heads``
            divisible by 4.
        depth: number of layers.
        heads: attention heads.
        mlp_ratio: MLP hidden size as a multiple of ``width`` (ignored if ``mlp_dim``).
        mlp_dim: MLP hidden size (overrides ``mlp_ratio``).
        max_context: most context frames the model sees (the rollout window).
        grid: (h, w) patch grid; required for ``vfmf`` (learned tables), optional for
            ``causal`` (which works on any grid; a given grid is enforced).
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
        >>> type(den).__name__, isinstance(den, Denoiser)
        ('CausalDenoiser', True)
        >>> ctx, x = torch.randn(1, 2, 3, 5, 4), torch.randn(1, 3, 5, 4)
        >>> t = torch.rand(1)
        >>> den.velocity(ctx, x, t).shape
        torch.Size([1, 3, 5, 4])
        >>> state = den.prefill(ctx)
        >>> bool(torch.allclose(den.step(state, x, t), den.velocity(ctx, x, t), atol=1e-5))
        True
    """

    #: The architecture name recorded in the config.
    arch: str = ""

    @record_config(attrs=("arch",), mlp_ratio=float, grid=int_list, dropout=float, rope_base=float)
    def __init__(
        self,
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
        for name, val in (("latent_dim", latent_dim), ("width", width), ("depth", depth), ("heads", heads)):
            if not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        if not isinstance(max_context, int) or max_context < 1:
            raise ValueError(f"max_context must be a positive int, got {max_context!r}")
        self.latent_dim, self.max_context = latent_dim, max_context
        self.grid: tuple[int, int] | None = (int(grid[0]), int(grid[1])) if grid is not None else None
        #: MLP hidden size.
        self.hidden = int(mlp_dim) if mlp_dim is not None else int(round(mlp_ratio * width))

    def describe(self) -> dict[str, Any]:
        """``{"type": "Denoiser", "config": {...}}``: every architecture saves under the factory's name."""
        return {**super().describe(), "type": "Denoiser"}

    # ------------------------------------------------------------ validation
    def _check(self, name: str, x: Tensor, context_len: int | None = None) -> None:
        if x.shape[-1] != self.latent_dim:
            raise ShapeError(
                f"{name}: expected latents with latent_dim={self.latent_dim} channels (last axis), "
                f"got shape {tuple(x.shape)}"
            )
        if self.grid is not None and tuple(x.shape[-3:-1]) != self.grid:
            raise ShapeError(
                f"{name}: arch={self.arch!r} was built for a {self.grid[0]}x{self.grid[1]} patch grid, "
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
        if self.config["cond_dim"] is None:
            raise ValueError("this denoiser was built without cond_dim; pass cond=None or set cond_dim")
        if cond.ndim != 2 or cond.shape[0] != b or cond.shape[1] != self.config["cond_dim"]:
            raise ShapeError(f"cond: expected shape ({b}, {self.config['cond_dim']}), got {tuple(cond.shape)}")

    @property
    def interval_cond(self) -> bool:
        """True when the denoiser takes an interval length ``h`` (``causal`` with ``interval_cond=True``)."""
        return False

    def _check_interval(self, h: Tensor, b: int) -> Tensor:
        """Interval lengths ``h`` as (b,) (a 0-d tensor is broadcast); errors name what was expected."""
        if not self.interval_cond:
            raise ValueError(f"this {self.arch!r} denoiser was built without interval_cond; pass h=None "
                             "(or build Denoiser(arch='causal', interval_cond=True))")
        h = self._times(h, b)
        if h.shape != (b,):
            raise ShapeError(f"h: expected interval lengths of shape ({b},) or (), got {tuple(h.shape)}")
        return h

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

    @staticmethod
    def _times(t: Tensor, b: int) -> Tensor:
        return t.expand(b) if t.ndim == 0 else t

    def _check_step(self, state: DenoiserState, x_t: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        """Validate the arguments of :meth:`step`; returns the flow times as (b,)."""
        self._check("x_t", x_t)
        self._check_cond(cond, x_t.shape[0])
        self._check_state(state, x_t)
        return self._times(t, x_t.shape[0])

    def _slide(self, state: DenoiserState, frame: Tensor) -> Tensor:
        """Validate the arguments of :meth:`append`; returns the window's frames with
        ``frame`` added, the oldest dropped past ``max_context``."""
        self._check("frame", frame)
        self._check_state(state, frame)
        frames = frame[:, None] if state.frames is None else torch.cat([state.frames, frame[:, None]], dim=1)
        return frames[:, -self.max_context :]

    # ------------------------------------------------------------- uncached
    @typechecked
    def velocity(
        self,
        context: Float[Tensor, "b t h w C"] | None,
        x_t: Float[Tensor, "b h w C"],
        t: Float[Tensor, "b"] | Float[Tensor, ""],
        cond: Float[Tensor, "b d"] | None = None,
        h: Float[Tensor, "b"] | Float[Tensor, ""] | None = None,
    ) -> Float[Tensor, "b h w C"]:
        """Velocity of the target frame ``x_t`` at flow time ``t`` given clean ``context``.

        Args:
            context: (b, t, h, w, C) clean frames, oldest first, ``t <= max_context``;
                ``None`` (or t = 0) for the unconditional velocity (classifier-free guidance).
            x_t: (b, h, w, C) the noisy target, x_t = (1 - t) noise + t data.
            t: (b,) flow times in [0, 1] (a 0-d tensor is broadcast).
            cond: optional (b, cond_dim) extra conditioning of the target (``causal`` only).
            h: (b,) interval lengths for an ``interval_cond`` denoiser: the average
                velocity over ``[t, t + h]`` (None = 0, the instantaneous velocity).

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
        if h is not None:
            h = self._check_interval(h, b)
        if context is not None:
            self._check("context", context, context.shape[1])
        frames = x_t[:, None] if context is None else torch.cat([context, x_t[:, None]], dim=1)
        if self.weight_dtype != frames.dtype:  # e.g. a bf16 sampling copy (sampling_copy) given fp32 latents
            if h is None:
                return self._cast_call(x_t.dtype, self.velocity, context, x_t, t, cond)
            return self._cast_call(x_t.dtype, lambda *a: self.velocity(*a, h=h.to(self.weight_dtype)),
                                   context, x_t, t, cond)
        if h is None:
            return self._window_velocity(frames, t, cond)
        return self._window_velocity(frames, t, cond, h)

    def _window_velocity(self, frames: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        """The trunk on a checked window (b, n, h, w, C) whose last frame is the target."""
        raise NotImplementedError

    @property
    def teacher_forcing(self) -> bool:
        """True when :meth:`teacher_forced` can train every frame of a clip in one pass."""
        return False

    def teacher_forced(self, clip: Tensor, x_t: Tensor, t: Tensor, lengths: list[int] | tuple[int, ...],
                       cond: Tensor | None = None) -> Tensor:
        """Velocities of every target frame of clean clips in one pass (architectures with
        :attr:`teacher_forcing` only; see `CausalDenoiser.teacher_forced`)."""
        raise NotImplementedError(f"teacher_forced needs arch='causal' (arch={self.arch!r} lets context frames "
                                  f"attend to each other); train arch={self.arch!r} one window at a time")

    def forward(self, context: Tensor | None, x_t: Tensor, t: Tensor, cond: Tensor | None = None,
                h: Tensor | None = None) -> Tensor:
        """Same as :meth:`velocity`."""
        if h is None:
            return self.velocity(context, x_t, t, cond)
        return self.velocity(context, x_t, t, cond, h=h)

    # --------------------------------------------------------------- cached
    def prefill(self, context: Tensor | None) -> DenoiserState:
        """Build the sampling state of a context window (``None``: an empty window)."""
        raise NotImplementedError

    def step(self, state: DenoiserState, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Velocity of ``x_t`` given the state's window: the same value as :meth:`velocity`."""
        raise NotImplementedError

    def append(self, state: DenoiserState, frame: Tensor) -> DenoiserState:
        """Add a clean ``frame`` to the window, keeping the last ``max_context`` frames."""
        raise NotImplementedError

    # ------------------------------------------------------ released weights
    @typechecked
    def load_released_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        """Load a released VFMF ``MaskTransformer`` state dict (``arch="vfmf"`` only; see
        `VFMFDenoiser.load_released_state_dict`)."""
        raise ValueError(f"released VFMF weights load only into arch='vfmf', not arch={self.arch!r}")

    @classmethod
    @typechecked
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
        model = Denoiser(**released_config(state_dict), dropout=dropout)
        model.load_released_state_dict(state_dict)
        return model


def register_arch(cls: type[Denoiser]) -> type[Denoiser]:
    """Class decorator: make ``Denoiser(arch=cls.arch)`` build ``cls``.

    Example:
        >>> sorted(ARCHS)
        ['causal', 'vfmf']
    """
    if not cls.arch or (cls.arch in ARCHS and ARCHS[cls.arch] is not cls):
        raise ValueError(f"{cls.__name__}: arch {cls.arch!r} is empty or registered twice")
    ARCHS[cls.arch] = cls
    return cls

