"""Solvers by name: ``get("heun", steps=4)``; ``register`` plugs in a user-defined solver."""

from __future__ import annotations

from typing import Any, Callable

from featureflow.solvers.adaptive import TorchDiffEq, torchdiffeq_methods
from featureflow.solvers.base import ODESolver
from featureflow.solvers.fixed import RK4, Euler, Heun, Midpoint

__all__ = ["get", "register", "available", "resolve"]

_REGISTRY: dict[str, Callable[..., ODESolver]] = {
    "euler": Euler,
    "heun": Heun,
    "midpoint": Midpoint,
    "rk4": RK4,
    "torchdiffeq": TorchDiffEq,
}


def register(name: str, factory: Callable[..., ODESolver], *, overwrite: bool = False) -> None:
    """Make ``get(name, **kw)`` return ``factory(**kw)``.

    ``factory`` is usually a class implementing :class:`~featureflow.solvers.ODESolver`.

    Example:
        >>> import torch
        >>> from featureflow.solvers import SolveResult
        >>> class Jump:
        ...     def integrate(self, fn, x0, *, t0=0.0, t1=1.0):
        ...         return SolveResult(x0 + (t1 - t0) * fn(torch.tensor(t0), x0), 1)
        >>> register("jump", Jump, overwrite=True)
        >>> get("jump").integrate(lambda t, x: x + 1, torch.zeros(1)).x.tolist()
        [1.0]
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"solver name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"solver factory for {name!r} must be callable (a class or function), got {factory!r}")
    key = name.lower()
    if key in _REGISTRY and _REGISTRY[key] is not factory and not overwrite:
        raise ValueError(f"solver {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[key] = factory


def available() -> list[str]:
    """Registered solver names (torchdiffeq method names are accepted by :func:`get` too).

    Example:
        >>> {"euler", "heun", "midpoint", "rk4"} <= set(available())
        True
    """
    return sorted(_REGISTRY)


def get(name: str, **kwargs: Any) -> ODESolver:
    """Build a solver by name.

    Registered names come first; any other torchdiffeq method name (``"dopri5"``,
    ``"bosh3"``, ...) gives ``TorchDiffEq(method=name, **kwargs)``.

    Example:
        >>> get("heun", steps=4)
        Heun(steps=4)
        >>> get("dopri5", rtol=1e-4).method
        'dopri5'
    """
    if not isinstance(name, str):
        raise TypeError(f"solver name must be a string, got {type(name).__name__}")
    key = name.lower()
    if key in _REGISTRY:
        solver = _REGISTRY[key](**kwargs)
    elif key in torchdiffeq_methods():
        solver = TorchDiffEq(method=key, **kwargs)
    else:
        raise ValueError(
            f"unknown solver {name!r}; expected one of {available()} or a torchdiffeq method {torchdiffeq_methods()}"
        )
    if not isinstance(solver, ODESolver):
        raise TypeError(f"solver {name!r} built {solver!r}, which has no integrate(fn, x0, *, t0, t1) method")
    return solver


def resolve(solver: str | ODESolver, steps: int | None = None) -> ODESolver:
    """A solver from a name (with ``steps`` = NFE budget) or an instance (``steps`` must be None).

    Example:
        >>> resolve("euler", 3)
        Euler(steps=3)
    """
    if isinstance(solver, str):
        if steps is None:
            return get(solver)
        if solver.lower() in _REGISTRY and _REGISTRY[solver.lower()] is TorchDiffEq or (
            solver.lower() not in _REGISTRY and solver.lower() in torchdiffeq_methods()
        ):
            raise ValueError(f"solver {solver!r} is adaptive and chooses its own steps; pass steps=None")
        return get(solver, steps=steps)
    if isinstance(solver, ODESolver):
        if steps is not None:
            raise ValueError(
                f"steps={steps} was given together with a solver instance {solver!r}; set the budget on the instance"
            )
        return solver
    raise TypeError(f"solver must be a name such as 'euler' or an object with integrate(fn, x0), got {solver!r}")
