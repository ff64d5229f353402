"""Fixed-step solvers whose ``steps`` argument is the exact number of network evaluations.

Budget rules (``steps`` = NFE, always spent exactly):

* :class:`Euler`: ``steps`` intervals, 1 evaluation each.
* :class:`Heun`, :class:`Midpoint` (2 evaluations per interval):
  ``ceil(steps / 2)`` intervals; with an even budget every interval takes the full
  two-stage step; with an odd budget the *last* interval takes a single Euler step (the
  EDM convention of skipping Heun's correction on the final interval). So 9 NFE gives
  5 intervals, 4 two-stage and a final Euler step. One Euler step over the last
  interval has local error O(h^2), so the global order stays 2.
* :class:`RK4` (4 evaluations per interval): ``steps`` must be a multiple of 4
  (``steps // 4`` intervals); any other budget raises ``ValueError``.

The loop runs a Python ``for`` over a precomputed grid tensor on the state's device:
no ``.item()`` and no branching on tensor values, hence no host-device synchronisation.
The updates go through :func:`featureflow.kernels.axpy` / :func:`~featureflow.kernels.heun_combine`
(``x + dt * v`` and ``x + dt * 0.5 * (k1 + k2)``: fused on CUDA with Triton, the same
expressions otherwise); ``dt`` stays a 0-d tensor on the state's device.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from torch import Tensor

from featureflow.kernels import axpy, heun_combine
from featureflow.solvers.base import DEFAULT_STEPS, SolveResult, VelocityFn, time_grid
from featureflow.typing import Float, typechecked

__all__ = ["FixedStepSolver", "Euler", "Heun", "Midpoint", "RK4"]


class FixedStepSolver:
    """Base class of the fixed-step solvers: a budget of ``steps`` evaluations on a grid.

    Args:
        steps: network evaluations (NFE) per solve; ``None`` means
            `featureflow.solvers.DEFAULT_STEPS` (8), or with an
            explicit ``grid`` the full budget of that grid.
        shift: grid warp, see :func:`featureflow.solvers.time_grid` (``> 1`` = finer
            steps near t = 1, the data end).
        grid: explicit increasing fractions of ``[t0, t1]`` from 0 to 1 (overrides
            ``shift``); its length fixes the number of intervals.
    """

    #: Network evaluations per full interval.
    evals_per_interval: int = 1
    name: str = "fixed"
    #: Budget used when neither ``steps`` nor ``grid`` is given.
    default_steps: int = DEFAULT_STEPS

    def __init__(self, steps: int | None = None, *, shift: float = 1.0, grid: Sequence[float] | None = None) -> None:
        if steps is None and grid is None:
            steps = self.default_steps
        if grid is not None:
            grid = [float(v) for v in grid]
            full = (len(grid) - 1) * self.evals_per_interval
            if steps is None:
                steps = full
            if self._intervals_for(steps) != len(grid) - 1:
                raise ValueError(
                    f"{type(self).__name__}: steps={steps} needs {self._intervals_for(steps)} intervals but the "
                    f"explicit grid has {len(grid) - 1}; pass steps=None to use the grid's full budget ({full})"
                )
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"{type(self).__name__}: steps (network evaluations) must be a positive int, got {steps!r}")
        self._check_budget(steps)
        self.steps = steps
        self.shift = float(shift)
        self.grid = grid
        time_grid(self.intervals, shift=self.shift, grid=self.grid)  # validate eagerly

    # --- budget rules -------------------------------------------------------------
    @classmethod
    def _intervals_for(cls, steps: int) -> int:
        return math.ceil(steps / cls.evals_per_interval)

    def _check_budget(self, steps: int) -> None:
        return None

    @property
    def intervals(self) -> int:
        """Number of grid intervals for this budget."""
        return self._intervals_for(self.steps)

    @property
    def nfe(self) -> int:
        """Network evaluations one :meth:`integrate` call spends (== ``steps``)."""
        return self.steps

    def _full_intervals(self) -> int:
        return self.steps // self.evals_per_interval

    # --- integration -----------------------------------------------------------------
    def _step(self, fn: VelocityFn, t: Tensor, dt: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError

    @typechecked
    def integrate(
        self, fn: VelocityFn, x0: Float[Tensor, "..."], *, t0: float | int = 0.0, t1: float | int = 1.0
    ) -> SolveResult:
        """Integrate ``dx/dt = fn(t, x)`` from ``t0`` to ``t1``; returns ``SolveResult(x, nfe)``."""
        ts = time_grid(self.intervals, shift=self.shift, grid=self.grid, t0=t0, t1=t1, device=x0.device, dtype=x0.dtype)
        calls = 0

        def counted(t: Tensor, x: Tensor) -> Tensor:
            nonlocal calls
            calls += 1
            return fn(t, x)

        x = x0
        full = self._full_intervals()
        for i in range(self.intervals):
            t, dt = ts[i], ts[i + 1] - ts[i]
            if i < full:
                x = self._step(counted, t, dt, x)
            else:  # odd remainder: one Euler step on the last interval
                x = axpy(x, counted(t, x), dt)
        if calls != self.steps:  # pragma: no cover - guards the budget rules above
            raise RuntimeError(f"{type(self).__name__} spent {calls} evaluations, expected {self.steps}")
        return SolveResult(x, calls)

    def __repr__(self) -> str:
        extra = f", grid={self.grid}" if self.grid is not None else (f", shift={self.shift}" if self.shift != 1 else "")
        return f"{type(self).__name__}(steps={self.steps}{extra})"

    def describe(self) -> dict[str, Any]:
        """JSON-able description: name and arguments."""
        return {"name": self.name, "steps": self.steps, "shift": self.shift, "grid": self.grid}


class Euler(FixedStepSolver):
    """Explicit Euler: ``steps`` network evaluations = ``steps`` intervals (order 1).

    Example:
        >>> import torch
        >>> r = Euler(steps=4).integrate(lambda t, x: torch.ones_like(x), torch.zeros(2))
        >>> r.x.tolist(), r.nfe
        ([1.0, 1.0], 4)
    """

    evals_per_interval = 1
    name = "euler"

    def _step(self, fn: VelocityFn, t: Tensor, dt: Tensor, x: Tensor) -> Tensor:
        return axpy(x, fn(t, x), dt)


class Heun(FixedStepSolver):
    """Heun's method (explicit trapezoid, order 2); ``steps`` = network evaluations.

    Two evaluations per interval; an odd budget ends with one Euler step (EDM style),
    e.g. ``steps=9`` is 4 Heun intervals + 1 Euler interval on a 5-interval grid.

    Example:
        >>> import torch
        >>> r = Heun(steps=4).integrate(lambda t, x: 2 * t * torch.ones_like(x), torch.zeros(1))
        >>> round(r.x.item(), 6), r.nfe   # integral of 2t over [0, 1] is exact for order 2
        (1.0, 4)
    """

    evals_per_interval = 2
    name = "heun"

    def _step(self, fn: VelocityFn, t: Tensor, dt: Tensor, x: Tensor) -> Tensor:
        k1 = fn(t, x)
        k2 = fn(t + dt, axpy(x, k1, dt))
        return heun_combine(x, k1, k2, dt)


class Midpoint(FixedStepSolver):
    """Explicit midpoint method (order 2); ``steps`` = network evaluations.

    Two evaluations per interval; an odd budget ends with one Euler step, as for
    :class:`Heun`.

    Example:
        >>> import torch
        >>> r = Midpoint(steps=2).integrate(lambda t, x: 2 * t * torch.ones_like(x), torch.zeros(1))
        >>> round(r.x.item(), 6), r.nfe
        (1.0, 2)
    """

    evals_per_interval = 2
    name = "midpoint"

    def _step(self, fn: VelocityFn, t: Tensor, dt: Tensor, x: Tensor) -> Tensor:
        k1 = fn(t, x)
        return axpy(x, fn(t + 0.5 * dt, axpy(x, k1, 0.5 * dt)), dt)


class RK4(FixedStepSolver):
    """Fourth-order Runge-Kutta; ``steps`` = network evaluations, a multiple of 4.

    Args:
        steps: network evaluations, ``4 * intervals``.
        rule: ``"classic"`` (the textbook 1/6-1/3-1/3-1/6 tableau) or ``"3/8"`` (Kutta's
            3/8 rule, what torchdiffeq calls ``rk4``).

    Example:
        >>> import torch
        >>> r = RK4(steps=4).integrate(lambda t, x: 4 * t**3 * torch.ones_like(x), torch.zeros(1))
        >>> round(r.x.item(), 6), r.nfe
        (1.0, 4)
    """

    evals_per_interval = 4
    name = "rk4"

    def __init__(
        self, steps: int | None = None, *, shift: float = 1.0, grid: Sequence[float] | None = None, rule: str = "classic"
    ) -> None:
        if rule not in ("classic", "3/8"):
            raise ValueError(f"RK4 rule must be 'classic' or '3/8', got {rule!r}")
        self.rule = rule
        super().__init__(steps, shift=shift, grid=grid)

    def _check_budget(self, steps: int) -> None:
        if steps % 4:
            below = steps - steps % 4  # the nearest valid budgets: the multiples of 4 around steps
            nearest = f"{below} or {below + 4}" if below else "4"
            raise ValueError(
                f"RK4 spends 4 network evaluations per interval, so steps must be a multiple of 4; "
                f"got {steps} (try {nearest})"
            )

    def _step(self, fn: VelocityFn, t: Tensor, dt: Tensor, x: Tensor) -> Tensor:
        k1 = fn(t, x)
        if self.rule == "classic":
            k2 = fn(t + 0.5 * dt, x + 0.5 * dt * k1)
            k3 = fn(t + 0.5 * dt, x + 0.5 * dt * k2)
            k4 = fn(t + dt, x + dt * k3)
            return x + dt / 6.0 * (k1 + 2.0 * (k2 + k3) + k4)
        k2 = fn(t + dt / 3.0, x + dt * k1 / 3.0)
        k3 = fn(t + dt * (2.0 / 3.0), x + dt * (k2 - k1 / 3.0))
        k4 = fn(t + dt, x + dt * (k1 - k2 + k3))
        return x + dt * 0.125 * (k1 + 3.0 * (k2 + k3) + k4)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "rule": self.rule}
