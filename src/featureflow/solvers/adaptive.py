"""Any torchdiffeq method (adaptive dopri5 by default) behind the solver protocol, NFE counted."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from featureflow.typing import Float, typechecked

from featureflow.solvers.base import SolveResult, VelocityFn

__all__ = ["TorchDiffEq", "torchdiffeq_methods"]


def torchdiffeq_methods() -> list[str]:
    """Names of the methods torchdiffeq's ``odeint`` accepts.

    Example:
        >>> "dopri5" in torchdiffeq_methods()
        True
    """
    from torchdiffeq._impl.odeint import SOLVERS

    return sorted(SOLVERS)


class TorchDiffEq:
    """Integrate with ``torchdiffeq.odeint``; ``nfe`` counts every call of ``fn``.

    Adaptive methods (``dopri5``, ``dopri8``, ``bosh3``, ``adaptive_heun``, ...) choose
    their own steps, so the NFE is only known after the solve. Fixed-grid torchdiffeq
    methods (``euler``, ``midpoint``, ``rk4``, ``heun2``, ...) take ``step_size`` in
    ``options``. Adaptive step control synchronises host and device; use a fixed-step
    solver when that matters.

    Args:
        method: a torchdiffeq method name (see :func:`torchdiffeq_methods`).
        rtol: relative tolerance of adaptive methods.
        atol: absolute tolerance of adaptive methods.
        options: passed to ``odeint`` as ``options`` (e.g. ``{"step_size": 0.1}``).

    Example:
        >>> import torch
        >>> r = TorchDiffEq("dopri5").integrate(lambda t, x: -x, torch.ones(1))
        >>> round(r.x.item(), 4), r.nfe > 0
        (0.3679, True)
    """

    name = "torchdiffeq"

    def __init__(
        self, method: str = "dopri5", *, rtol: float = 1e-5, atol: float = 1e-5, options: dict[str, Any] | None = None
    ) -> None:
        methods = torchdiffeq_methods()
        if method not in methods:
            raise ValueError(f"unknown torchdiffeq method {method!r}; expected one of {methods}")
        if rtol <= 0 or atol <= 0:
            raise ValueError(f"rtol and atol must be positive, got rtol={rtol}, atol={atol}")
        self.method = method
        self.rtol = float(rtol)
        self.atol = float(atol)
        self.options = dict(options or {})

    @typechecked
    def integrate(
        self, fn: VelocityFn, x0: Float[Tensor, "..."], *, t0: float | int = 0.0, t1: float | int = 1.0
    ) -> SolveResult:
        """Integrate ``dx/dt = fn(t, x)`` from ``t0`` to ``t1``; returns ``SolveResult(x, nfe)``."""
        from torchdiffeq import odeint

        calls = 0

        def counted(t: Tensor, x: Tensor) -> Tensor:
            nonlocal calls
            calls += 1
            return fn(t, x)

        ts = torch.tensor([t0, t1], dtype=x0.dtype, device=x0.device)
        out = odeint(counted, x0, ts, method=self.method, rtol=self.rtol, atol=self.atol, options=self.options or None)
        return SolveResult(out[-1], calls)

    def __repr__(self) -> str:
        return f"TorchDiffEq(method={self.method!r}, rtol={self.rtol}, atol={self.atol})"

    def describe(self) -> dict[str, Any]:
        """JSON-able description: name and arguments."""
        return {"name": self.name, "method": self.method, "rtol": self.rtol, "atol": self.atol, "options": self.options}
