"""Model-predictive control: replan every step with CEM, execute the first action."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from featureflow.rl.planner import CEMPlanner, CostFn, Dynamics, PlanResult
from featureflow.utils import progress_bar

__all__ = ["MPCController", "EpisodeResult", "run_episode", "evaluate_policy", "random_policy"]

#: ``policy(observation, info) -> action``.
Policy = Callable[[Any, dict[str, Any]], Any]


class MPCController:
    """Receding-horizon control with a :class:`CEMPlanner`.

    Each :meth:`act` plans over the planner's horizon from whatever the ``dynamics``
    model currently holds as its starting point (update it from the new observation
    first) and returns the first action; the rest of the plan warm-starts the next step.

    Args:
        planner: the CEM planner.
        dynamics: ``dynamics(actions (N, H, A), K) -> predictions``.
        cost: ``cost(predictions, actions) -> (N, K)``; may be replaced between steps
            (e.g. a new goal) through the ``cost`` attribute.
        generator: source of the planner's candidate draws.

    Example:
        >>> target = torch.tensor([0.5, -0.5])
        >>> dyn = lambda a, k: a.unsqueeze(1).expand(-1, k, -1, -1)
        >>> mpc = MPCController(CEMPlanner(2, 64, 8, 3, 1), dyn, lambda p, a: ((p - target) ** 2).sum((-1, -2)),
        ...                     generator=torch.Generator().manual_seed(0))
        >>> a = mpc.act()
        >>> a.shape, bool((a - target).abs().max() < 0.2)
        (torch.Size([2]), True)
    """

    def __init__(self, planner: CEMPlanner, dynamics: Dynamics, cost: CostFn, generator: torch.Generator | None = None) -> None:
        self.planner, self.dynamics, self.cost, self.generator = planner, dynamics, cost, generator
        self.last: PlanResult | None = None

    def reset(self) -> None:
        """Forget the warm start (call at the start of each episode)."""
        self.last = None

    def act(self) -> Tensor:
        """Plan and return the first action (A,)."""
        mean = None if self.last is None else self.planner.shift(self.last.mean)
        self.last = self.planner.plan(self.dynamics, self.cost, mean=mean, generator=self.generator)
        return self.last.actions[0]


@dataclass
class EpisodeResult:
    """Summary of one episode."""

    success: bool
    steps: int
    episode_return: float
    final_distance: float | None = None
    actions: list[np.ndarray] = field(default_factory=list)


def run_episode(env: gym.Env, policy: Policy, seed: int | None = None, options: dict[str, Any] | None = None) -> EpisodeResult:
    """Run ``policy(obs, info) -> action`` in ``env`` until it terminates or truncates.

    Success is ``info["is_success"]`` at the end (or termination if absent).

    Example:
        >>> from featureflow.rl import ToyWorldEnv
        >>> env = ToyWorldEnv(resolution=8, max_steps=2)
        >>> r = run_episode(env, lambda obs, info: np.zeros(2, dtype=np.float32), seed=0)
        >>> r.steps, r.success
        (2, False)
    """
    obs, info = env.reset(seed=seed, options=options)
    total, steps, actions = 0.0, 0, []
    while True:
        action = policy(obs, info)
        action = np.asarray(action.detach().cpu() if isinstance(action, Tensor) else action, dtype=np.float32)
        actions.append(action)
        obs, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        steps += 1
        if terminated or truncated:
            success = bool(info.get("is_success", terminated))
            return EpisodeResult(success, steps, total, info.get("distance"), actions)


def evaluate_policy(
    env: gym.Env, make_policy: Callable[[], Policy], seeds: Sequence[int], progress: bool = False, desc: str = "episodes"
) -> list[EpisodeResult]:
    """Run one episode per seed, each with a fresh policy from ``make_policy()``.

    Example:
        >>> from featureflow.rl import ToyWorldEnv
        >>> env = ToyWorldEnv(resolution=8, max_steps=2)
        >>> rs = evaluate_policy(env, lambda: random_policy(env.action_space, seed=0), seeds=[0, 1])
        >>> len(rs)
        2
    """
    return [run_episode(env, make_policy(), seed=s) for s in progress_bar(list(seeds), progress=progress, desc=desc)]


def random_policy(action_space: gym.spaces.Space, seed: int = 0) -> Policy:
    """A policy that samples uniformly from ``action_space`` (seeded)."""
    action_space.seed(seed)
    return lambda obs, info: action_space.sample()
