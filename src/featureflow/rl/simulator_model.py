"""`SimulatorModel`: ToyWorld's own stochastic dynamics as a batched planning model.

This is the *oracle* model: it plans with the true simulator (other objects' random
turns are re-drawn per sample, so the K futures are genuinely different). It is the
upper bound a learned world model is compared against, and it lets the planner and the
MPC loop be tested without a trained model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from featureflow.data.dynamics import ToyState, mix_seed
from featureflow.rl.agent_world import AgentToyWorld

__all__ = ["SimulatorModel"]

_PLAN = 0x91A7


class SimulatorModel:
    """Predict N × K futures of an :class:`AgentToyWorld` state under N action sequences.

    Call :meth:`set_state` with the current world state (e.g. ``env.state``), then pass
    the model as the ``dynamics`` of :meth:`CEMPlanner.plan`. Predictions are a dict
    with ``positions`` (N, K, H, m, 2) and, with ``render=True``, the rendered
    ``instances`` (N, K, H, R, R) and ``rgb`` (N, K, H, 3, R, R) at ``render_resolution``.

    Args:
        world: the simulator.
        render: also render the predicted frames (for image-space costs).
        render_resolution: resolution of those renders (default: the world's).
        seed: mixed into the random streams of the sampled futures.
        frame_skip: simulation steps per predicted step (as in ``ToyWorldEnv(frame_skip=...)``).

    Example:
        >>> w = AgentToyWorld(resolution=16)
        >>> model = SimulatorModel(w)
        >>> model.set_state(w.reset(0))
        >>> pred = model(torch.zeros(5, 3, 2), 4)
        >>> tuple(pred["positions"].shape[:3])
        (5, 4, 3)
    """

    def __init__(self, world: AgentToyWorld, render: bool = False, render_resolution: int | None = None, seed: int = 0,
                 frame_skip: int = 1) -> None:
        if not isinstance(world, AgentToyWorld):
            raise TypeError(f"world must be an AgentToyWorld, got {type(world).__name__}")
        self.world = world
        self.render = bool(render)
        res = render_resolution or world.resolution
        self._render_world = world if res == world.resolution else AgentToyWorld(res, **_world_kwargs(world))
        self.seed = int(seed)
        if not isinstance(frame_skip, int) or frame_skip < 1:
            raise ValueError(f"frame_skip must be an int >= 1, got {frame_skip!r}")
        self.frame_skip = frame_skip
        self.state: ToyState | None = None
        self.calls = 0

    def set_state(self, state: ToyState) -> None:
        """The state future predictions start from."""
        self.state = state

    @torch.no_grad()
    def __call__(self, actions: Tensor, num_samples: int) -> dict[str, Tensor]:
        if self.state is None:
            raise RuntimeError("call set_state(state) before predicting")
        if actions.dim() != 3 or actions.shape[-1] != 2:
            raise ValueError(f"actions: expected (N, H, 2), got shape {tuple(actions.shape)}")
        state, (n, h, _), k = self.state, actions.shape, int(num_samples)
        m = state.num_objects
        keys = [mix_seed(state.key, _PLAN, self.seed, self.calls, j) for j in range(k)] * n  # row = cand * K + sample
        self.calls += 1
        pos = np.broadcast_to(state.positions.numpy(), (n * k, m, 2)).copy()
        vel = np.broadcast_to(state.velocities.numpy(), (n * k, m, 2)).copy()
        acts = actions.double().cpu().numpy().repeat(k, axis=0)  # (N*K, H, 2)
        out = np.empty((n * k, h, m, 2))
        step = state.step
        for j in range(h):
            for _ in range(self.frame_skip):
                pos, vel = self.world.act_batch(pos, vel, state, keys, step, acts[:, j])
                step += 1
            out[:, j] = pos
        positions = torch.from_numpy(out).reshape(n, k, h, m, 2)
        pred = {"positions": positions}
        if self.render:
            rw = self._render_world
            frames = rw._render_positions(state, positions.reshape(-1, m, 2))
            pred["instances"] = frames["instances"].reshape(n, k, h, *frames["instances"].shape[1:])
            pred["rgb"] = frames["rgb"].reshape(n, k, h, *frames["rgb"].shape[1:])
        return pred


def _world_kwargs(world: AgentToyWorld) -> dict[str, Any]:
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in world.config.items()}
    cfg.pop("resolution")
    return cfg
