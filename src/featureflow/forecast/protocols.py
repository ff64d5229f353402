"""What the rest of featureflow needs from a forecaster and from a denoiser.

`Forecaster` is the contract `WorldModel` and the released-recipe rollout rely on;
`DenoiserProtocol` is the contract the flow and regression forecasters rely on, met by
`CausalDenoiser` and `VFMFDenoiser` (built by the `Denoiser` factory).

Example:
    >>> from featureflow.forecast import CopyLastForecaster, Denoiser, FlowForecaster
    >>> isinstance(FlowForecaster(Denoiser(latent_dim=4, width=16, depth=1, heads=2)), Forecaster)
    True
    >>> isinstance(Denoiser(latent_dim=4, width=16, depth=1, heads=2), DenoiserProtocol)
    True
    >>> isinstance(CopyLastForecaster(), Forecaster)
    True
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from featureflow.forecast.kv_cache import DenoiserState
from featureflow.forecast.rollout import Rollout

__all__ = ["Forecaster", "DenoiserProtocol"]


@runtime_checkable
class Forecaster(Protocol):
    """Samples future latent frames after a context, autoregressively.

    ``rollout(context (b, t, h, w, C), horizon, num_samples, **options)`` returns a
    `Rollout` with latents (b, s, k, h, w, C); contexts longer than ``max_context`` keep
    their last frames. Options a forecaster has no use for (``solver``, ``steps``,
    ``guidance`` for a deterministic baseline) are refused with a clear error, never
    dropped silently.
    """

    @property
    def max_context(self) -> int: ...

    def rollout(self, context: Tensor, horizon: int, num_samples: int = 1, **options: Any) -> Rollout: ...


@runtime_checkable
class DenoiserProtocol(Protocol):
    """A velocity network over latent frames, with a cached sampling path.

    ``velocity`` is the uncached (training) path; ``prefill`` / ``step`` / ``append``
    sample along a rollout and give the same values. ``describe()`` is the component
    spec saved in ``config.json``.
    """

    latent_dim: int
    max_context: int

    @property
    def teacher_forcing(self) -> bool: ...

    def velocity(self, context: Tensor | None, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor: ...

    def prefill(self, context: Tensor | None) -> DenoiserState: ...

    def step(self, state: DenoiserState, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor: ...

    def append(self, state: DenoiserState, frame: Tensor) -> DenoiserState: ...

    def describe(self) -> dict[str, Any]: ...
