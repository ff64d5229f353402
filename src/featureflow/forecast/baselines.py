"""Baseline forecasters: what a world model has to beat.

`CopyLastForecaster` predicts that nothing moves: every future frame is the last
context frame's latents. Every quality figure is reported beside it (DESIGN.md, "How a
forecast is judged"). It has the rollout signature of the flow forecaster, so it is a
`WorldModel` baseline like any other (``forecast(baseline="copy-last")``), and it
refuses the sampling options it has no use for instead of dropping them.

Example:
    >>> import torch
    >>> r = CopyLastForecaster().rollout(torch.arange(4.0).view(1, 4, 1, 1, 1), horizon=2, num_samples=3)
    >>> r.latents.shape, r.latents.flatten().tolist(), r.nfe
    (torch.Size([1, 3, 2, 1, 1, 1]), [3.0, 3.0, 3.0, 3.0, 3.0, 3.0], 0)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from featureflow.forecast.rollout import Rollout, check_rollout_size
from featureflow.typing import Float, Latents, check_finite, typechecked
from featureflow.utils import Configurable, record_config, register_component

__all__ = ["CopyLastForecaster", "refuse_sampling_options"]


def refuse_sampling_options(who: str, solver: Any, steps: Any, guidance: Any) -> None:
    """A deterministic forecaster has no ODE to solve: name the options it was given in vain.

    Example:
        >>> refuse_sampling_options("copy-last", None, None, 1.0)
        >>> refuse_sampling_options("copy-last", "heun", 4, 1.0)
        Traceback (most recent call last):
        ...
        ValueError: copy-last spends no network evaluations: solver='heun', steps=4 do not apply; pass solver=None, steps=None, guidance=1.0
    """
    given = [f"{name}={value!r}" for name, value, default in
             (("solver", solver, None), ("steps", steps, None), ("guidance", guidance, 1.0)) if value != default]
    if given:
        verb = "does" if len(given) == 1 else "do"
        raise ValueError(f"{who} spends no network evaluations: {', '.join(given)} {verb} not apply; "
                         "pass solver=None, steps=None, guidance=1.0")


@register_component
class CopyLastForecaster(nn.Module, Configurable):
    """The copy-last-frame baseline: every forecast frame is the last context frame.

    Args:
        max_context: context frames it is given (only the last is used); 1 by default,
            as the last frame is all it reads.

    Example:
        >>> import torch
        >>> fc = CopyLastForecaster()
        >>> ctx = torch.randn(2, 3, 4, 4, 8)
        >>> r = fc.rollout(ctx, horizon=3)
        >>> bool(torch.equal(r.latents[:, 0, 2], ctx[:, -1])), r.nfe_per_frame
        (True, (0, 0, 0))
    """

    @record_config
    def __init__(self, max_context: int = 1) -> None:
        super().__init__()
        if not isinstance(max_context, int) or isinstance(max_context, bool) or max_context < 1:
            raise ValueError(f"max_context must be a positive int, got {max_context!r}")
        self.max_context = max_context

    @torch.no_grad()
    @typechecked
    def rollout(
        self,
        context: Latents,
        horizon: int,
        num_samples: int = 1,
        solver: Any = None,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        guidance: float | int = 1.0,
        progress: bool = False,
        actions: Float[Tensor, "..."] | None = None,
    ) -> Rollout:
        """``horizon`` copies of the last context frame for each of ``num_samples`` samples.

        Args:
            context: (b, t, h, w, C) context latents (t >= 1).
            horizon: forecast steps k >= 1.
            num_samples: samples s >= 1 (all equal).
            solver: refused unless None (nothing is solved).
            steps: refused unless None.
            guidance: refused unless 1.0.
            generator: accepted and unused (nothing is drawn).
            progress: accepted and unused (nothing takes long).
            actions: refused: nothing moves, whatever the action.

        Returns:
            ``Rollout(latents (b, s, k, h, w, C), nfe_per_frame = (0,) * k)``.
        """
        refuse_sampling_options("the copy-last baseline", solver, steps, guidance)
        if actions is not None:
            raise ValueError("the copy-last baseline is not action-conditioned; pass actions=None")
        check_rollout_size(horizon, num_samples)
        check_finite("context", context)
        last = context[:, -1]
        b = last.shape[0]
        latents = last[:, None, None].expand(b, num_samples, horizon, *last.shape[1:]).contiguous()
        return Rollout(latents, (0,) * horizon)

    @typechecked
    def sample(self, context: Latents, num_samples: int = 1, **options: Any) -> Float[Tensor, "b s h w C"]:
        """The next frame, (b, s, h, w, C): the last context frame (options as in :meth:`rollout`).

        Example:
            >>> import torch
            >>> CopyLastForecaster().sample(torch.zeros(1, 2, 3, 3, 4), num_samples=2).shape
            torch.Size([1, 2, 3, 3, 4])
        """
        return self.rollout(context, 1, num_samples, **options).latents[:, :, 0]
