"""`ToyWorldEnv`: ToyWorld with an agent as a Gymnasium environment (the real simulator)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from featureflow.data.dynamics import ToyState
from featureflow.rl.agent_world import AgentToyWorld

__all__ = ["ToyWorldEnv", "rgb_to_uint8"]


def rgb_to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] → (H, W, 3) uint8 (Gymnasium's image layout).

    Example:
        >>> rgb_to_uint8(torch.ones(3, 2, 2)).shape
        (2, 2, 3)
    """
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


class ToyWorldEnv(gym.Env):
    """Drive the red agent of :class:`AgentToyWorld` to a goal position on the floor.

    Observation: the rendered frame, (H, W, 3) uint8; with ``include_position=True``
    a dict ``{"rgb": image, "position": agent (x, y) metres, "goal": goal (x, y)}``.
    Action: Box(-1, 1, (2,)), the agent's velocity command (``max_speed`` per unit).
    Reward: minus the distance (metres) of the agent to the goal after the step.
    Terminated when that distance is below ``goal_radius``; truncated after
    ``max_steps`` steps. ``reset(seed=...)`` draws the world and a goal (at least
    ``min_goal_distance`` from the agent) from ``np_random``. ``info`` holds
    ``distance``, ``goal``, ``position``, ``is_success`` and ``steps``; the world's
    :class:`~featureflow.data.ToyState` is ``env.state``.

    Args:
        resolution: image size in pixels.
        max_steps: episode length limit.
        goal_radius: success radius, metres.
        min_goal_distance: smallest start-to-goal distance drawn at reset, metres.
        include_position: add the agent's and the goal's positions to the observation.
        render_mode: ``None`` or ``"rgb_array"``.
        world: an :class:`AgentToyWorld` to use (default ``AgentToyWorld(resolution)``).
        frame_skip: simulation steps per env step (the action is held throughout).

    Example:
        >>> env = ToyWorldEnv(resolution=16, max_steps=3)
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, obs.dtype.name
        ((16, 16, 3), 'uint8')
        >>> obs, reward, terminated, truncated, info = env.step(np.array([1.0, 0.0], dtype=np.float32))
        >>> reward == -info["distance"], truncated
        (True, False)
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        resolution: int = 64,
        max_steps: int = 50,
        goal_radius: float = 0.25,
        min_goal_distance: float = 1.0,
        include_position: bool = False,
        render_mode: str | None = None,
        world: AgentToyWorld | None = None,
        frame_skip: int = 1,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
        if goal_radius <= 0:
            raise ValueError(f"goal_radius must be > 0 metres, got {goal_radius}")
        self.world = world if world is not None else AgentToyWorld(resolution)
        if not isinstance(self.world, AgentToyWorld):
            raise TypeError(f"world must be an AgentToyWorld, got {type(self.world).__name__}")
        if not isinstance(frame_skip, int) or frame_skip < 1:
            raise ValueError(f"frame_skip must be an int >= 1, got {frame_skip!r}")
        self.frame_skip = frame_skip
        self.max_steps = max_steps
        self.goal_radius = float(goal_radius)
        self.min_goal_distance = float(min_goal_distance)
        self.include_position = bool(include_position)
        self.render_mode = render_mode
        res, arena = self.world.resolution, self.world.arena
        image = spaces.Box(0, 255, (res, res, 3), dtype=np.uint8)
        if include_position:
            xy = spaces.Box(-arena, arena, (2,), dtype=np.float32)
            self.observation_space: spaces.Space = spaces.Dict({"rgb": image, "position": xy, "goal": xy})
        else:
            self.observation_space = image
        self.action_space = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
        self.state: ToyState | None = None
        self.goal = np.zeros(2)
        self.steps = 0
        self._frame: np.ndarray | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def position(self) -> np.ndarray:
        """The agent's (x, y) position, metres."""
        if self.state is None:
            raise RuntimeError("call reset() first")
        return self.state.positions[0].numpy().copy()

    def distance(self) -> float:
        """Distance of the agent to the goal, metres."""
        return float(np.linalg.norm(self.position - self.goal))

    def _observe(self) -> Any:
        assert self.state is not None
        self._frame = rgb_to_uint8(self.world.render(self.state).rgb)
        if not self.include_position:
            return self._frame
        return {"rgb": self._frame, "position": self.position.astype(np.float32), "goal": self.goal.astype(np.float32)}

    def _info(self) -> dict[str, Any]:
        d = self.distance()
        return {"distance": d, "goal": self.goal.copy(), "position": self.position, "is_success": d < self.goal_radius,
                "steps": self.steps}

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Draw a new world and goal; ``options={"goal": (x, y)}`` fixes the goal."""
        super().reset(seed=seed)
        world_seed = int(self.np_random.integers(0, 2**62))
        self.state = self.world.reset(world_seed)
        radius = float(self.world.size[1]) * 1.5
        lim = self.world.arena - radius
        if options and "goal" in options:
            goal = np.asarray(options["goal"], dtype=np.float64).reshape(2)
            if np.abs(goal).max() > self.world.arena:
                raise ValueError(f"goal must lie inside the arena |x|, |y| <= {self.world.arena}, got {goal}")
        else:
            for _ in range(100):
                goal = self.np_random.uniform(-lim, lim, 2)
                if np.linalg.norm(goal - self.position) >= self.min_goal_distance:
                    break
        self.goal = goal
        self.steps = 0
        return self._observe(), self._info()

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (2,) or not np.isfinite(a).all():
            raise ValueError(f"action must be a finite array of shape (2,), got shape {a.shape}")
        self.state = self.world.act(self.state, np.clip(a, -1.0, 1.0), self.frame_skip)
        self.steps += 1
        obs, info = self._observe(), self._info()
        terminated = bool(info["is_success"])
        truncated = bool(self.steps >= self.max_steps and not terminated)
        return obs, -float(info["distance"]), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """The current frame, (H, W, 3) uint8, for ``render_mode="rgb_array"``."""
        if self.render_mode != "rgb_array":
            return None
        if self._frame is None:
            raise RuntimeError("call reset() before render()")
        return self._frame.copy()
