"""Solvers: order of accuracy, exact NFE, agreement with torchdiffeq, registry."""

from __future__ import annotations

import math

import pytest
import torch
from torchdiffeq import odeint

from featureflow import solvers
from featureflow.solvers import RK4, Euler, Heun, Midpoint, SolveResult, TorchDiffEq, time_grid


def f(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x' = cos(t) x + t, a non-autonomous ODE."""
    return torch.cos(t) * x + t


def exact_linear(t1: float, x0: torch.Tensor) -> torch.Tensor:
    # x' = cos(t) x has solution x0 exp(sin t); used with g below.
    return x0 * math.exp(math.sin(t1))


def g(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.cos(t) * x


X0 = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)


def logistic(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x * (1 - x)


def logistic_exact(t1: float, x0: torch.Tensor) -> torch.Tensor:
    return 1 / (1 + (1 / x0 - 1) * math.exp(-t1))


XL = torch.tensor([0.5, 0.2, 0.9], dtype=torch.float64)


def _order(make, steps: int) -> float:
    target = logistic_exact(1.0, XL)
    e1 = (make(steps).integrate(logistic, XL).x - target).abs().max().item()
    e2 = (make(2 * steps).integrate(logistic, XL).x - target).abs().max().item()
    return math.log2(e1 / e2)


@pytest.mark.parametrize(
    "make, order, steps",
    [
        (lambda s: Euler(steps=s), 1, 32),
        (lambda s: Heun(steps=s), 2, 32),
        (lambda s: Midpoint(steps=s), 2, 32),
        (lambda s: RK4(steps=s), 4, 32),
        (lambda s: RK4(steps=s, rule="3/8"), 4, 64),
        (lambda s: Heun(steps=s, shift=2.0), 2, 32),
    ],
)
def test_order_of_accuracy(make, order, steps):
    """Halving the step divides the error by about 2**order."""
    assert abs(_order(make, steps) - order) < 0.2


def test_odd_budget_keeps_second_order():
    # 2n+1 evaluations: n two-stage intervals + one Euler interval; still order 2 on [0, 2].
    target = exact_linear(2.0, X0)
    e = [(Heun(steps=s).integrate(g, X0, t1=2.0).x - target).abs().max().item() for s in (15, 31, 63)]
    assert 1.6 < math.log2(e[1] / e[2]) < 2.4


@pytest.mark.parametrize(
    "solver, nfe",
    [(Euler(steps=7), 7), (Heun(steps=9), 9), (Heun(steps=4), 4), (Midpoint(steps=5), 5), (RK4(steps=12), 12),
     (Heun(steps=1), 1)],
)
def test_nfe_is_exact(solver, nfe):
    calls = []

    def fn(t, x):
        calls.append(t)
        return -x

    result = solver.integrate(fn, torch.ones(2))
    assert result.nfe == nfe == len(calls) == solver.nfe
    assert all(isinstance(t, torch.Tensor) and t.dim() == 0 for t in calls)


def test_heun_odd_budget_rule():
    # 9 NFE = 5 intervals on a uniform grid; the last is a plain Euler step.
    x0 = torch.tensor([1.0], dtype=torch.float64)
    ts = time_grid(5, dtype=torch.float64)
    x = x0
    for i in range(4):
        t, dt = ts[i], ts[i + 1] - ts[i]
        k1 = f(t, x)
        k2 = f(t + dt, x + dt * k1)
        x = x + dt / 2 * (k1 + k2)
    x = x + (ts[5] - ts[4]) * f(ts[4], x)
    torch.testing.assert_close(Heun(steps=9).integrate(f, x0).x, x, rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    "ours, method",
    [(Euler(steps=6, shift=2.0), "euler"), (Midpoint(steps=12, shift=0.5), "midpoint"),
     (Heun(steps=10, shift=3.0), "heun2"), (RK4(steps=8, shift=2.0, rule="3/8"), "rk4")],
)
def test_matches_torchdiffeq_on_same_grid(ours, method):
    x0 = torch.randn(4, 3, dtype=torch.float64)
    grid = time_grid(ours.intervals, shift=ours.shift, t0=0.2, t1=1.0, dtype=torch.float64)
    ref = odeint(f, x0, grid, method=method)[-1]
    torch.testing.assert_close(ours.integrate(f, x0, t0=0.2, t1=1.0).x, ref, rtol=1e-12, atol=1e-12)


def test_classic_rk4_close_to_torchdiffeq_rk4():
    x0 = torch.randn(3, dtype=torch.float64)
    ref = odeint(f, x0, time_grid(8, dtype=torch.float64), method="rk4")[-1]
    torch.testing.assert_close(RK4(steps=32).integrate(f, x0).x, ref, rtol=1e-4, atol=1e-4)


def test_explicit_grid_and_shift():
    grid = [0.0, 0.5, 0.9, 1.0]
    seen = []
    Euler(grid=grid).integrate(lambda t, x: seen.append(float(t)) or x, torch.ones(1))
    assert seen == pytest.approx([0.0, 0.5, 0.9])
    assert Euler(grid=grid).nfe == 3 and Heun(grid=grid).nfe == 6
    shifted = time_grid(4, shift=3.0)
    steps = shifted[1:] - shifted[:-1]
    assert bool((steps[1:] < steps[:-1]).all())  # finer near t = 1
    with pytest.raises(ValueError, match="increase strictly"):
        Euler(grid=[0.0, 0.7, 0.5, 1.0])
    with pytest.raises(ValueError, match="explicit grid has 2"):
        Euler(steps=5, grid=[0.0, 0.5, 1.0])


def test_bad_budgets():
    with pytest.raises(ValueError, match="multiple of 4; got 6 \\(try 4 or 8\\)"):
        RK4(steps=6)
    for steps in (1, 3):
        with pytest.raises(ValueError, match=f"got {steps} \\(try 4\\)$"):
            RK4(steps=steps)
    with pytest.raises(ValueError, match="got 9 \\(try 8 or 12\\)$"):
        RK4(steps=9)
    with pytest.raises(ValueError, match="positive int"):
        Euler(steps=0)


def test_dtype_and_device_follow_state():
    seen = []
    x0 = torch.ones(2, dtype=torch.float64)
    Heun(steps=2).integrate(lambda t, x: seen.append(t.dtype) or x, x0)
    assert seen == [torch.float64, torch.float64]


def test_torchdiffeq_adaptive_counts_nfe():
    calls = []
    x0 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    r = TorchDiffEq("dopri5", rtol=1e-8, atol=1e-8).integrate(lambda t, x: calls.append(1) or g(t, x), x0, t1=2.0)
    assert r.nfe == len(calls) > 6
    torch.testing.assert_close(r.x, exact_linear(2.0, x0), rtol=1e-6, atol=1e-6)
    fixed = TorchDiffEq("euler", options={"step_size": 0.25}).integrate(lambda t, x: -x, torch.ones(1))
    assert fixed.nfe == 4
    with pytest.raises(ValueError, match="unknown torchdiffeq method"):
        TorchDiffEq("nope")


def test_registry_and_custom_solver():
    assert isinstance(solvers.get("euler", steps=3), Euler)
    assert solvers.get("HEUN", steps=4).nfe == 4
    assert solvers.get("bosh3").method == "bosh3"

    class HalfStep:
        """User solver: two Euler half steps, NFE 2."""

        def __init__(self, scale: float = 1.0) -> None:
            self.scale = scale

        def integrate(self, fn, x0, *, t0=0.0, t1=1.0):
            h = (t1 - t0) / 2
            x = x0 + h * fn(torch.tensor(t0), x0)
            x = x + h * fn(torch.tensor(t0 + h), x)
            return SolveResult(self.scale * x, 2)

    solvers.register("test-halfstep", HalfStep, overwrite=True)
    s = solvers.get("test-halfstep", scale=1.0)
    assert isinstance(s, solvers.ODESolver)
    assert s.integrate(lambda t, x: torch.ones_like(x), torch.zeros(1)).x.tolist() == [1.0]
    with pytest.raises(ValueError, match="already registered"):
        solvers.register("test-halfstep", Euler)
    with pytest.raises(ValueError, match="unknown solver 'nope'"):
        solvers.get("nope")
    assert solvers.resolve(s) is s
    with pytest.raises(ValueError, match="solver instance"):
        solvers.resolve(s, steps=3)
    with pytest.raises(ValueError, match="adaptive"):
        solvers.resolve("dopri5", steps=3)
