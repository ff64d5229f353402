"""The solver protocol, its result type and the time grids shared by fixed-step solvers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

from featureflow.typing import Float, typechecked

__all__ = ["SolveResult", "ODESolver", "VelocityFn", "time_grid", "DEFAULT_SOLVER", "DEFAULT_STEPS"]

#: The solver a forecast uses when none is named (`WorldModel.forecast`, `SamplingRecipe`).
DEFAULT_SOLVER = "euler"
#: Network evaluations per solve of a fixed-step solver built without ``steps`` or a grid.
DEFAULT_STEPS = 8

#: ``fn(t, x) -> velocity``: torchdiffeq argument order, ``t`` a 0-d tensor.
VelocityFn = Callable[[Tensor, Tensor], Tensor]


class SolveResult(NamedTuple):
    """The state at ``t1`` and the number of function (network) evaluations spent.

    Example:
        >>> import torch
        >>> r = SolveResult(torch.zeros(2), 4)
        >>> r.nfe
        4
    """

    x: Tensor
    nfe: int


@runtime_checkable
class ODESolver(Protocol):
    """Anything that integrates ``dx/dt = fn(t, x)`` from ``t0`` (noise) to ``t1`` (data).

    A user-defined solver only needs this one method; register it with
    :func:`featureflow.solvers.register` to make it available by name.

    Example:
        >>> import torch
        >>> from featureflow.solvers import Euler
        >>> isinstance(Euler(steps=2), ODESolver)
        True
    """

    def integrate(self, fn: VelocityFn, x0: Tensor, *, t0: float = 0.0, t1: float = 1.0) -> SolveResult:
        """Integrate ``fn`` from ``t0`` to ``t1`` starting at ``x0``."""
        ...


@typechecked
def time_grid(
    intervals: int,
    *,
    shift: float | int = 1.0,
    grid: Sequence[float | int] | Float[Tensor, " n"] | None = None,
    t0: float | int = 0.0,
    t1: float | int = 1.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Float[Tensor, " n"]:
    """The ``intervals + 1`` time points of a fixed-step solve, increasing from ``t0`` to ``t1``.

    The grid is built on the unit interval and mapped affinely to ``[t0, t1]``.

    * ``grid`` given: an explicit, strictly increasing sequence of fractions starting at 0
      and ending at 1 (``intervals`` must equal ``len(grid) - 1``).
    * otherwise the uniform grid ``u_i = i / intervals`` is warped by
      ``u -> shift * u / (1 + (shift - 1) * u)``: ``shift = 1`` is uniform, ``shift > 1``
      packs the points closer together near ``t = 1`` (the data end, where detail is
      resolved), ``shift < 1`` near ``t = 0``.

    Example:
        >>> time_grid(4).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
        >>> tuple(round(v, 3) for v in time_grid(2, shift=3.0).tolist())
        (0.0, 0.75, 1.0)
    """
    if intervals < 1:
        raise ValueError(f"a time grid needs at least 1 interval, got {intervals}")
    if not shift > 0:
        raise ValueError(f"shift must be a positive number, got {shift}")
    if grid is not None:
        u = torch.as_tensor(grid, dtype=torch.float64).flatten()
        if u.numel() != intervals + 1:
            raise ValueError(f"explicit grid has {u.numel()} points; expected intervals + 1 = {intervals + 1}")
        if not (u[0] == 0 and u[-1] == 1 and bool((u[1:] > u[:-1]).all())):
            raise ValueError(
                f"explicit grid must increase strictly from 0 to 1 (fractions of [t0, t1]), got {u.tolist()}"
            )
    else:
        u = torch.linspace(0.0, 1.0, intervals + 1, dtype=torch.float64)
        u = shift * u / (1.0 + (shift - 1.0) * u)
    t = t0 + (t1 - t0) * u
    t[0], t[-1] = t0, t1
    return t.to(device=device, dtype=dtype)
