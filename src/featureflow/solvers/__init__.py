"""ODE solvers for sampling flows: ``fn(t, x) -> velocity`` integrated from t=0 (noise) to t=1 (data).

``steps`` always means network evaluations (NFE), and every solve reports the NFE it
actually spent.

Example:
    >>> import torch
    >>> import featureflow as ff
    >>> r = ff.solvers.get("heun", steps=4).integrate(lambda t, x: -x, torch.ones(1))
    >>> r.nfe
    4
"""

from featureflow.solvers.adaptive import TorchDiffEq, torchdiffeq_methods
from featureflow.solvers.base import DEFAULT_SOLVER, DEFAULT_STEPS, ODESolver, SolveResult, VelocityFn, time_grid
from featureflow.solvers.fixed import RK4, Euler, FixedStepSolver, Heun, Midpoint
from featureflow.solvers.registry import available, get, register, resolve

__all__ = [
    "ODESolver",
    "DEFAULT_SOLVER",
    "DEFAULT_STEPS",
    "SolveResult",
    "VelocityFn",
    "time_grid",
    "FixedStepSolver",
    "Euler",
    "Heun",
    "Midpoint",
    "RK4",
    "TorchDiffEq",
    "torchdiffeq_methods",
    "get",
    "register",
    "available",
    "resolve",
]
