"""ToyWorld's stochastic dynamics: sliding, wall bounces, object collisions, random turns.

All randomness is counter-based: the random numbers of simulation step ``k`` of a world
with key ``key`` come from a fresh PCG64 generator seeded with ``mix_seed(key, k // 64)``. A
state is therefore a plain value (tensors + two integers), stepping never mutates it,
and the same seed always gives bit-identical trajectories, whatever else the process
does with its global random state.

One step of length ``dt``, for every object:

1. with probability ``turn_prob`` the object turns to a new heading drawn uniformly in
   [0, 2π) (its speed is kept);
2. touching objects that approach each other exchange the normal components of their
   velocities (equal masses, elastic; bounding circles in the floor plane);
3. positions advance by ``velocity * dt``;
4. an object crossing an arena wall is reflected back in and its velocity component
   normal to the wall is flipped;
5. overlapping objects are pushed apart along the line between their centres and
   clamped inside the arena (up to four relaxation rounds), so they never leave it; in a
   rare squeeze of several objects against a wall a small overlap can remain for a step.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from featureflow.data.raycast import CUBE

__all__ = ["ToyState", "mix_seed", "footprint_radius", "step_batch", "step_randoms"]

_MASK = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """Mix integers into one 63-bit seed (splitmix64 finaliser; order matters).

    Example:
        >>> mix_seed(1, 2) == mix_seed(1, 2), mix_seed(1, 2) == mix_seed(2, 1)
        (True, False)
    """
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & _MASK)) & _MASK
        x = (x + 0x9E3779B97F4A7C15) & _MASK
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
        x = x ^ (x >> 31)
    return x >> 1


@dataclass(frozen=True)
class ToyState:
    """The complete state of one ToyWorld (a value: stepping returns a new state).

    Attributes:
        positions: (m, 2) float64 object centres on the floor (x, y), metres.
        velocities: (m, 2) float64 metres per second.
        shapes: (m,) int64 class ids (2 sphere, 3 cube, 4 cylinder).
        sizes: (m,) float64 sphere/cylinder radius or cube half-extent, metres.
        yaws: (m,) float64 rotation of cubes about the vertical, radians.
        colours: (m, 3) float32 albedo in [0, 1].
        key: the random stream of this world (derived from the seed).
        step: number of simulation steps taken since ``reset``.
    """

    positions: Tensor
    velocities: Tensor
    shapes: Tensor
    sizes: Tensor
    yaws: Tensor
    colours: Tensor
    key: int
    step: int = 0

    @property
    def num_objects(self) -> int:
        return int(self.shapes.numel())

    def with_key(self, key: int) -> "ToyState":
        """The same physical state on another random stream (used by ``branch``)."""
        return replace(self, key=int(key))


def footprint_radius(shapes: Tensor, sizes: Tensor) -> Tensor:
    """Radius of each object's bounding circle on the floor (cubes: half-diagonal)."""
    return torch.where(shapes == CUBE, sizes * math.sqrt(2.0), sizes)


_BLOCK = 64
_SEPARATION_ROUNDS = 4


@functools.lru_cache(maxsize=4096)
def _random_block(key: int, block: int, m: int) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(mix_seed(key, block)))
    out = rng.random((_BLOCK, 2, m))
    out.setflags(write=False)
    return out


def step_randoms(keys: list[int], step: int, m: int) -> np.ndarray:
    """(B, 2, m) float64 uniforms of simulation step ``step`` for each world key.

    Row 0 decides the turns, row 1 the new headings. The numbers of step ``k`` come from
    a PCG64 stream seeded with ``mix_seed(key, k // 64)`` (row ``k % 64``), so they
    depend on nothing but the key and the step.
    """
    return np.stack([_random_block(int(key), step // _BLOCK, m)[step % _BLOCK] for key in keys])


def step_batch(
    positions: np.ndarray,
    velocities: np.ndarray,
    radius: np.ndarray,
    randoms: np.ndarray,
    *,
    arena: float,
    dt: float,
    turn_prob: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Advance B worlds of the same m objects by one step (see the module docstring).

    Plain float64 numpy: the arrays are tiny, so this avoids per-op tensor overhead.

    Args:
        positions: (B, m, 2) float64.
        velocities: (B, m, 2) float64.
        radius: (m,) footprint radii.
        randoms: (B, 2, m) uniforms from :func:`step_randoms`.
        arena: half-size of the arena, metres.
        dt: step length, seconds.
        turn_prob: per-object, per-step probability of a random turn.

    Returns:
        new (positions, velocities), both (B, m, 2).
    """
    pos, vel = positions, velocities
    # 1. random turns
    turn = randoms[:, 0] < turn_prob
    heading = randoms[:, 1] * (2.0 * math.pi)
    speed = np.sqrt((vel**2).sum(-1))
    turned = np.stack([speed * np.cos(heading), speed * np.sin(heading)], axis=-1)
    vel = np.where(turn[..., None], turned, vel)
    m = pos.shape[1]
    reach = radius[None, :, None] + radius[None, None, :]
    eye = np.eye(m, dtype=bool)
    if m > 1:
        # 2. elastic collisions between touching, approaching objects (simultaneous)
        diff = pos[:, :, None] - pos[:, None, :]  # (B, m, m, 2): p_i - p_j
        dist = np.maximum(np.sqrt((diff**2).sum(-1)), 1e-9)
        nrm = diff / dist[..., None]
        rel = ((vel[:, :, None] - vel[:, None, :]) * nrm).sum(-1)  # (v_i - v_j) . n_ij
        contact = (dist < reach) & (rel < 0) & ~eye
        vel = vel - (np.where(contact, rel, 0.0)[..., None] * nrm).sum(2)
    # 3. move
    pos = pos + vel * dt
    # 4. walls: reflect position and velocity
    lim = (arena - radius)[None, :, None]
    over, under = pos > lim, pos < -lim
    pos = np.where(over, 2 * lim - pos, np.where(under, -2 * lim - pos, pos))
    vel = np.where(over, -np.abs(vel), np.where(under, np.abs(vel), vel))
    pos = np.clip(pos, -lim, lim)
    # 5. separate overlapping objects (a few relaxation rounds, each clamped to the arena)
    for _ in range(_SEPARATION_ROUNDS if m > 1 else 0):
        diff = pos[:, :, None] - pos[:, None, :]
        dist = np.maximum(np.sqrt((diff**2).sum(-1)), 1e-9)
        overlap = np.where(eye, 0.0, np.maximum(reach - dist, 0.0))
        if not overlap.any():
            break
        pos = np.clip(pos + (0.5 * overlap[..., None] * diff / dist[..., None]).sum(2), -lim, lim)
    return pos, vel
