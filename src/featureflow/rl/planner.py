"""`CEMPlanner`: the cross-entropy method over action sequences, risk-aware over K samples.

Each iteration draws ``num_candidates`` action sequences (N, horizon, A) from a
diagonal Gaussian (clipped to the action bounds), asks the model for ``num_samples``
stochastic futures of *all* candidates at once, scores every future with the cost
function, reduces the K costs of a candidate to one number (``risk``), and refits the
Gaussian to the ``num_elites`` cheapest candidates. The model therefore sees one batch
of N candidates per iteration (it decides how to batch the N × K futures, e.g. as one
N·K-row forward pass per forecast step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from featureflow.typing import Float, typechecked

__all__ = ["CEMPlanner", "PlanResult", "RISKS", "aggregate_risk"]

#: Ways to reduce the K sampled costs of a plan to one number.
RISKS = ("mean", "cvar", "worst")

#: ``dynamics(actions (N, H, A), num_samples) -> predictions`` (any structure).
Dynamics = Callable[[Tensor, int], object]
#: ``cost(predictions, actions (N, H, A)) -> (N, K)`` costs (lower is better).
CostFn = Callable[[object, Tensor], Tensor]


@typechecked
def aggregate_risk(costs: Float[Tensor, "n k"], risk: str = "mean", alpha: float | int = 0.25) -> Float[Tensor, " n"]:
    """Reduce the K sampled costs of each plan: expectation, CVaR or worst case.

    ``"cvar"`` is the mean of the ``ceil(alpha * K)`` highest costs (the expected cost in
    the worst ``alpha`` fraction of futures); ``"worst"`` is the maximum.

    Example:
        >>> c = torch.tensor([[1.0, 2.0, 3.0, 10.0]])
        >>> aggregate_risk(c, "mean").item(), aggregate_risk(c, "cvar", 0.5).item(), aggregate_risk(c, "worst").item()
        (4.0, 6.5, 10.0)
    """
    if risk == "mean":
        return costs.mean(1)
    if risk == "worst":
        return costs.max(1).values
    if risk == "cvar":
        if not 0 < alpha <= 1:
            raise ValueError(f"cvar alpha must be in (0, 1], got {alpha}")
        k = max(1, int(-(-alpha * costs.shape[1] // 1)))
        return costs.topk(k, dim=1).values.mean(1)
    raise ValueError(f"risk must be one of {RISKS}, got {risk!r}")


@dataclass(frozen=True)
class PlanResult:
    """The outcome of one :meth:`CEMPlanner.plan`.

    Attributes:
        actions: (H, A) the best plan found (lowest risk-aggregated cost seen).
        cost: its risk-aggregated cost.
        mean: (H, A) the final sampling mean (warm start for the next MPC step).
        std: (H, A) the final sampling standard deviation.
        history: best cost after each iteration (non-increasing).
        model_calls: number of batched model calls made (one per iteration).
    """

    actions: Tensor
    cost: float
    mean: Tensor
    std: Tensor
    history: tuple[float, ...]
    model_calls: int


class CEMPlanner:
    """Cross-entropy-method planner over action sequences.

    Args:
        horizon: plan length H (model steps).
        num_candidates: sequences N sampled per iteration (all evaluated in one model call).
        num_elites: cheapest sequences the Gaussian is refitted to.
        iterations: CEM iterations per plan.
        num_samples: stochastic futures K per candidate.
        risk: ``"mean"`` (expected cost), ``"cvar"`` or ``"worst"``; see :func:`aggregate_risk`.
        alpha: tail fraction for ``"cvar"``.
        action_dim: A.
        low: lower action bound (per component).
        high: upper action bound.
        init_std: initial standard deviation of the sampling Gaussian.
        min_std: floor on the standard deviation (keeps exploring).
        momentum: weight of the previous mean/std when refitting (0 = plain CEM).

    Example:
        >>> target = torch.tensor([0.5, -0.3])
        >>> dyn = lambda a, k: a.unsqueeze(1).expand(-1, k, -1, -1)          # (N, K, H, A)
        >>> cost = lambda p, a: ((p - target) ** 2).sum((-1, -2))            # (N, K)
        >>> planner = CEMPlanner(horizon=3, num_candidates=64, num_elites=8, iterations=4, num_samples=2)
        >>> result = planner.plan(dyn, cost, generator=torch.Generator().manual_seed(0))
        >>> bool(result.cost < 0.05), result.actions.shape
        (True, torch.Size([3, 2]))
    """

    def __init__(
        self,
        horizon: int,
        num_candidates: int = 300,
        num_elites: int = 30,
        iterations: int = 4,
        num_samples: int = 4,
        risk: str = "mean",
        *,
        alpha: float = 0.25,
        action_dim: int = 2,
        low: float = -1.0,
        high: float = 1.0,
        init_std: float = 0.6,
        min_std: float = 0.05,
        momentum: float = 0.1,
    ) -> None:
        for name, v in (("horizon", horizon), ("num_candidates", num_candidates), ("num_elites", num_elites),
                        ("iterations", iterations), ("num_samples", num_samples), ("action_dim", action_dim)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if num_elites > num_candidates:
            raise ValueError(f"num_elites ({num_elites}) must be <= num_candidates ({num_candidates})")
        if risk not in RISKS:
            raise ValueError(f"risk must be one of {RISKS}, got {risk!r}")
        if not low < high:
            raise ValueError(f"expected low < high, got low={low}, high={high}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.horizon, self.num_candidates, self.num_elites = horizon, num_candidates, num_elites
        self.iterations, self.num_samples, self.risk, self.alpha = iterations, num_samples, risk, float(alpha)
        self.action_dim, self.low, self.high = action_dim, float(low), float(high)
        self.init_std, self.min_std, self.momentum = float(init_std), float(min_std), float(momentum)

    def __repr__(self) -> str:
        return (f"CEMPlanner(horizon={self.horizon}, num_candidates={self.num_candidates}, num_elites={self.num_elites}, "
                f"iterations={self.iterations}, num_samples={self.num_samples}, risk={self.risk!r})")

    def initial_mean(self) -> Tensor:
        """The default sampling mean: the centre of the action box, (H, A)."""
        return torch.full((self.horizon, self.action_dim), (self.low + self.high) / 2)

    def shift(self, mean: Tensor) -> Tensor:
        """Warm start for the next MPC step: drop the executed first action, repeat the last."""
        return torch.cat([mean[1:], mean[-1:]], 0)

    def _score(self, dynamics: Dynamics, cost: CostFn, actions: Tensor) -> Tensor:
        costs = cost(dynamics(actions, self.num_samples), actions)
        if not isinstance(costs, Tensor) or costs.shape != (actions.shape[0], self.num_samples):
            got = tuple(costs.shape) if isinstance(costs, Tensor) else type(costs).__name__
            raise ValueError(f"cost function must return (num_candidates, num_samples) = "
                             f"({actions.shape[0]}, {self.num_samples}) costs, got {got}")
        costs = torch.nan_to_num(costs.float(), nan=float("inf"))
        return aggregate_risk(costs, self.risk, self.alpha)

    @torch.no_grad()
    def plan(
        self,
        dynamics: Dynamics,
        cost: CostFn,
        mean: Tensor | None = None,
        std: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> PlanResult:
        """Search for the action sequence with the lowest risk-aggregated cost.

        Args:
            dynamics: ``dynamics(actions (N, H, A), K) -> predictions`` for all N candidates.
            cost: ``cost(predictions, actions) -> (N, K)`` tensor of costs.
            mean: (H, A) initial sampling mean (e.g. :meth:`shift` of the last plan's mean).
            std: (H, A) initial standard deviation (default ``init_std``).
            generator: source of the candidate draws.

        Returns:
            a :class:`PlanResult`. The previous mean itself is always evaluated as one of
            the candidates, so a warm start is never lost.
        """
        shape = (self.horizon, self.action_dim)
        mean = self.initial_mean() if mean is None else mean.detach().float().cpu().clone()
        std = torch.full(shape, self.init_std) if std is None else std.detach().float().cpu().clone()
        if tuple(mean.shape) != shape or tuple(std.shape) != shape:
            raise ValueError(f"mean and std must have shape {shape}, got {tuple(mean.shape)} and {tuple(std.shape)}")
        best_actions, best_cost, history = mean.clamp(self.low, self.high), float("inf"), []
        for _ in range(self.iterations):
            noise = torch.randn((self.num_candidates, *shape), generator=generator)
            cand = (mean + std * noise).clamp(self.low, self.high)
            cand[0] = mean.clamp(self.low, self.high)
            scores = self._score(dynamics, cost, cand)
            order = scores.argsort()
            elites = cand[order[: self.num_elites]]
            if float(scores[order[0]]) < best_cost:
                best_cost, best_actions = float(scores[order[0]]), cand[order[0]].clone()
            history.append(best_cost)
            m = self.momentum
            mean = m * mean + (1 - m) * elites.mean(0)
            std = (m * std + (1 - m) * elites.std(0, unbiased=False)).clamp(min=self.min_std)
        return PlanResult(best_actions, best_cost, mean, std, tuple(history), self.iterations)
