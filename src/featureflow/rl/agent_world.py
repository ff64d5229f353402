"""ToyWorld with an agent: object 0 follows a bounded 2-D velocity command.

The agent is object 0 of the world (instance id 1 in ``instances``) and is painted a
fixed colour (:data:`AGENT_COLOUR`, saturated red) that no other object gets (their hues
are kept away from red), so it can be found both from instance maps and from RGB. The
other objects keep ToyWorld's stochastic motion (sliding, bounces, random turns). Each
step, the agent's velocity is set to ``action * max_speed`` (the action is clipped to
``[-1, 1]`` per component) before ToyWorld's step rule runs, so the agent still bounces
off walls and pushes other objects.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from featureflow.data.dynamics import ToyState, footprint_radius, mix_seed, step_batch, step_randoms
from featureflow.data.raycast import hsv_to_rgb
from featureflow.data.toyworld import ToyClip, ToyWorld

__all__ = ["AGENT_COLOUR", "AgentClip", "AgentToyWorld", "step_with_actions"]

#: Albedo of the controlled object (other objects never get a red hue).
AGENT_COLOUR: tuple[float, float, float] = (0.95, 0.12, 0.1)
_ACTIONS = 0xAC7
_HUE_GAP = 0.12  # other objects' hues stay in [gap, 1 - gap], away from red (hue 0)


@dataclass
class AgentClip(ToyClip):
    """A :class:`~featureflow.data.ToyClip` of ToyWorld with an agent, plus its actions.

    Attributes:
        actions: (t - 1, 2) float32 in [-1, 1]; ``actions[i]`` moves frame ``i`` to ``i + 1``.
    """

    actions: Tensor = None  # type: ignore[assignment]


def step_with_actions(
    positions: np.ndarray,
    velocities: np.ndarray,
    radius: np.ndarray,
    randoms: np.ndarray,
    actions: np.ndarray,
    *,
    arena: float,
    dt: float,
    turn_prob: float,
    max_speed: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One ToyWorld step of B worlds whose object 0 is driven by ``actions`` (B, 2).

    The agent's velocity is replaced by ``clip(action, -1, 1) * max_speed`` and it never
    turns at random; then ToyWorld's step rule (collisions, motion, walls) applies.

    Example:
        >>> import numpy as np
        >>> p, v = np.zeros((1, 1, 2)), np.zeros((1, 1, 2))
        >>> p2, _ = step_with_actions(p, v, np.array([0.2]), np.zeros((1, 2, 1)), np.array([[1.0, -3.0]]),
        ...                           arena=1.5, dt=0.1, turn_prob=0.1, max_speed=1.0)
        >>> p2[0, 0].round(3).tolist()
        [0.1, -0.1]
    """
    if actions.ndim != 2 or actions.shape != (positions.shape[0], 2):
        raise ValueError(f"actions: expected shape ({positions.shape[0]}, 2), got {actions.shape}")
    vel = velocities.copy()
    vel[:, 0] = np.clip(actions, -1.0, 1.0) * max_speed
    rnd = randoms.copy()
    rnd[:, 0, 0] = 2.0  # uniforms are < 1: the agent never turns at random
    return step_batch(positions, vel, radius, rnd, arena=arena, dt=dt, turn_prob=turn_prob)


class AgentToyWorld(ToyWorld):
    """ToyWorld whose object 0 is an agent steered by 2-D velocity commands.

    Args:
        resolution: image size in pixels.
        max_speed: agent speed for an action of norm 1 per axis, metres per second.
        **kwargs: any other :class:`~featureflow.data.ToyWorld` argument; ``num_objects``
            counts the agent too (default 2–3 objects).

    :meth:`act` and :meth:`clip` apply actions; the inherited action-free ``step``,
    ``rollout`` and ``branch`` move the agent like any other object (it keeps its last
    velocity and may turn at random).

    Example:
        >>> import torch
        >>> w = AgentToyWorld(resolution=16)
        >>> s = w.reset(0)
        >>> s2 = w.act(s, torch.tensor([1.0, 0.0]))
        >>> round(float(s2.positions[0, 0] - s.positions[0, 0]), 3)
        0.1
        >>> clip = w.clip(seed=0, length=3)
        >>> tuple(clip.actions.shape), int(clip.instances.max()) >= 1
        ((2, 2), True)
    """

    def __init__(self, resolution: int = 64, *, max_speed: float = 1.0, num_objects: tuple[int, int] = (2, 3), **kwargs: Any) -> None:
        super().__init__(resolution, num_objects=num_objects, **kwargs)
        if not max_speed > 0:
            raise ValueError(f"max_speed must be > 0 metres per second, got {max_speed}")
        self.max_speed = float(max_speed)
        self.config["max_speed"] = self.max_speed

    def reset(self, seed: int) -> ToyState:
        """A fresh world from ``seed``; object 0 is the agent (red, initially at rest)."""
        state = super().reset(seed)
        colours = state.colours.clone()
        hsv = _rgb_hue_shift(colours[1:])
        colours[1:] = hsv
        colours[0] = torch.tensor(AGENT_COLOUR)
        velocities = state.velocities.clone()
        velocities[0] = 0.0
        return replace(state, colours=colours, velocities=velocities)

    def act_batch(self, positions: np.ndarray, velocities: np.ndarray, state: ToyState, keys: list[int], step: int,
                  actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance B copies (positions/velocities (B, m, 2)) of ``state``'s objects by one step.

        Copy ``b`` draws the other objects' random turns from stream ``keys[b]`` at
        simulation step ``step``.
        """
        radius = footprint_radius(state.shapes, state.sizes).numpy()
        randoms = step_randoms(keys, step, state.num_objects)
        return step_with_actions(
            positions, velocities, radius, randoms, np.asarray(actions, dtype=np.float64),
            arena=self.arena, dt=self.dt, turn_prob=self.turn_prob, max_speed=self.max_speed,
        )

    def act(self, state: ToyState, action: Tensor | np.ndarray, repeat: int = 1) -> ToyState:
        """The state ``repeat`` steps later under ``action`` (2,) held throughout (``state`` is not modified)."""
        if not isinstance(repeat, int) or repeat < 1:
            raise ValueError(f"repeat must be an int >= 1, got {repeat!r}")
        a = np.asarray(action, dtype=np.float64).reshape(1, 2)
        pos, vel = state.positions.numpy()[None], state.velocities.numpy()[None]
        for i in range(repeat):
            pos, vel = self.act_batch(pos, vel, state, [state.key], state.step + i, a)
        return replace(state, positions=torch.from_numpy(pos[0]), velocities=torch.from_numpy(vel[0]), step=state.step + repeat)

    def random_actions(self, seed: int, length: int, persistence: float = 0.8) -> Tensor:
        """A smooth random action sequence (length, 2) in [-1, 1]: each step keeps the
        previous command with probability ``persistence``, else draws a new uniform one.
        """
        rng = np.random.Generator(np.random.PCG64(mix_seed(seed, _ACTIONS)))
        out = np.empty((length, 2))
        a = rng.uniform(-1, 1, 2)
        for i in range(length):
            if i and rng.random() > persistence:
                a = rng.uniform(-1, 1, 2)
            out[i] = a
        return torch.from_numpy(out).to(torch.float32)

    def clip(  # type: ignore[override]
        self, seed: int, length: int, stride: int = 1, start: int = 0, actions: Tensor | None = None,
        frame_skip: int | None = None, persistence: float = 0.8,
    ) -> AgentClip:
        """A clip of ``length`` frames from ``reset(seed)`` under ``actions`` (length - 1, 2).

        ``stride`` means what it means in :meth:`ToyWorld.clip`: simulation steps between
        consecutive frames. Here each action is also held for those ``stride`` steps (one
        action per recorded frame), which is what ``ToyWorldEnv(frame_skip=...)`` does per env
        step, so a clip for an env with ``frame_skip=k`` is ``clip(..., stride=k)``.

        Args:
            seed: The episode (as in ``reset(seed)``).
            length: Number of frames, >= 1.
            stride: Simulation steps between consecutive frames, each action held throughout.
            start: Must stay 0 (the actions start at the first frame).
            actions: (length - 1, 2) commands in [-1, 1]; ``None`` draws
                :meth:`random_actions` from ``seed`` (with ``persistence``).
            frame_skip: Deprecated alias of ``stride`` (a ``DeprecationWarning``).
            persistence: Probability that a random action repeats the previous one.

        Returns:
            An :class:`AgentClip` with the ``actions`` used.

        Raises:
            ValueError: ``start`` is not 0, ``stride`` and ``frame_skip`` disagree, or
                ``length``/``actions`` have the wrong size.

        Example:
            >>> w = AgentToyWorld(resolution=16)
            >>> c = w.clip(0, 3, stride=2)
            >>> tuple(c.rgb.shape), tuple(c.actions.shape)
            ((3, 3, 16, 16), (2, 2))
        """
        if frame_skip is not None:
            warnings.warn(
                "AgentToyWorld.clip(frame_skip=...) is deprecated; use stride=... (simulation steps "
                "between frames, each action held throughout)", DeprecationWarning, stacklevel=2,
            )
            if stride not in (1, frame_skip):
                raise ValueError(f"stride={stride!r} and its deprecated alias frame_skip={frame_skip!r} disagree; give stride only")
            stride = frame_skip
        if start != 0:
            raise ValueError(f"AgentToyWorld.clip records the actions from the first frame: expected start=0, got {start!r}")
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be an int >= 1 (simulation steps between frames), got {stride!r}")
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be an int >= 1, got {length!r}")
        if actions is None:
            actions = self.random_actions(seed, max(length - 1, 0), persistence)
        if tuple(actions.shape) != (length - 1, 2):
            raise ValueError(f"actions: expected shape ({length - 1}, 2), got {tuple(actions.shape)}")
        actions = actions.to(torch.float32).clamp(-1, 1)
        state = self.reset(seed)
        pos, vel = [state.positions], [state.velocities]
        for a in actions:
            state = self.act(state, a, stride)
            pos.append(state.positions)
            vel.append(state.velocities)
        base = self._make_clip(state, torch.stack(pos), torch.stack(vel), (length,))
        return AgentClip(**base.to_dict(), actions=actions)


def _rgb_hue_shift(colours: Tensor) -> Tensor:
    """Re-draw the hue of colours (n, 3) deterministically into [gap, 1 - gap] (away from red)."""
    mx, mn = colours.max(-1).values, colours.min(-1).values
    sat = torch.where(mx > 0, (mx - mn) / mx.clamp(min=1e-6), torch.zeros_like(mx))
    r, g, b = colours.unbind(-1)
    d = (mx - mn).clamp(min=1e-6)
    hue = torch.where(mx == r, ((g - b) / d).remainder(6), torch.where(mx == g, (b - r) / d + 2, (r - g) / d + 4)) / 6
    hue = _HUE_GAP + (1 - 2 * _HUE_GAP) * hue
    return hsv_to_rgb(torch.stack([hue, sat, mx], -1)).to(colours.dtype)
