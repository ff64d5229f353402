"""ToyWorld: the procedural world featureflow ships with (see ``docs/toyworld.md``).

A static perspective camera looks down at a square arena floor. Two to four objects
(spheres, cubes, cylinders) of random colour and size slide on it, bounce off its walls
and each other, and at random moments turn to a new random heading. Frames are rendered
by analytic ray casting with exact depth, normals, segmentation and instance ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from featureflow.data.camera import PinholeCamera
from featureflow.data.dynamics import ToyState, footprint_radius, mix_seed, step_batch, step_randoms
from featureflow.data.raycast import CUBE, CYLINDER, SPHERE, SceneRenderer, hsv_to_rgb
from featureflow.utils import Configurable

__all__ = ["CLASSES", "SPLITS", "ToyClip", "ToyWorld"]

#: Segmentation class names, indexed by class id.
CLASSES: tuple[str, ...] = ("background", "floor", "sphere", "cube", "cylinder")

#: Disjoint seed ranges of the splits: ``seed in range(*SPLITS[split])``.
SPLITS: dict[str, tuple[int, int]] = {
    "train": (0, 1_000_000),
    "val": (1_000_000, 1_010_000),
    "test": (1_010_000, 1_020_000),
}

_RESET, _DYNAMICS, _BRANCH = 0x5EED, 0xD1CE, 0xB7A2


@dataclass
class ToyClip:
    """Rendered ToyWorld frames and the object states behind them.

    Leading axes ``*`` are ``(t,)`` for :meth:`ToyWorld.clip`, ``(n, steps)`` for
    :meth:`ToyWorld.branch` and ``()`` for :meth:`ToyWorld.render`.

    Attributes:
        rgb: (*, 3, H, W) float32 in [0, 1].
        depth: (*, H, W) float32 metres (camera z); background pixels hold ``world.far``.
        normals: (*, 3, H, W) float32 unit vectors in the camera frame (x right, y down,
            z forward); background pixels hold (0, 0, -1), pointing at the camera.
        segmentation: (*, H, W) int64 class ids, see :data:`CLASSES`.
        instances: (*, H, W) int64: 0 for background and floor, ``i + 1`` for object ``i``.
        positions: (*, m, 2) float64 object centres on the floor, metres.
        velocities: (*, m, 2) float64 metres per second.
        shapes: (m,) int64 class id of each object.
        sizes: (m,) float64 radius (sphere, cylinder) or half-extent (cube), metres.
        yaws: (m,) float64 cube yaw, radians.
        colours: (m, 3) float32 albedo.
    """

    rgb: Tensor
    depth: Tensor
    normals: Tensor
    segmentation: Tensor
    instances: Tensor
    positions: Tensor
    velocities: Tensor
    shapes: Tensor
    sizes: Tensor
    yaws: Tensor
    colours: Tensor

    def to_dict(self) -> dict[str, Tensor]:
        """All fields as a dict of tensors."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class ToyWorld(Configurable):
    """The ToyWorld simulator and renderer.

    Args:
        resolution: image height and width in pixels (64 by default; tested up to 256).
        num_objects: inclusive range of the number of objects per world.
        turn_prob: probability, per object and per step, of turning to a new heading
            drawn uniformly in [0, 2π).
        dt: simulated seconds per step.
        speed: range of the initial speeds, metres per second.
        size: range of object sizes (sphere/cylinder radius; cubes get 0.8× this as
            half-extent), metres.
        arena: half-size of the square arena, metres (walls at ±arena).
        camera_distance: distance of the camera from the arena centre, metres.
        elevation: camera elevation above the floor, degrees.
        fov: full field of view, degrees.
        light: direction towards the directional light (world frame, z up).
        ambient: ambient light fraction.
        shadows: objects cast shadows on the floor.
        far: depth written for background pixels, metres.

    Example:
        >>> world = ToyWorld(resolution=16)
        >>> clip = world.clip(seed=0, length=3)
        >>> tuple(clip.rgb.shape), tuple(clip.segmentation.shape)
        ((3, 3, 16, 16), (3, 16, 16))
        >>> bool((world.clip(seed=0, length=3).rgb == clip.rgb).all())
        True
    """

    CLASSES = CLASSES

    def __init__(
        self,
        resolution: int = 64,
        *,
        num_objects: tuple[int, int] = (2, 4),
        turn_prob: float = 0.1,
        dt: float = 0.1,
        speed: tuple[float, float] = (0.5, 1.0),
        size: tuple[float, float] = (0.2, 0.35),
        arena: float = 1.5,
        camera_distance: float = 4.8,
        elevation: float = 60.0,
        fov: float = 42.0,
        light: tuple[float, float, float] = (-0.4, -0.5, 1.0),
        ambient: float = 0.35,
        shadows: bool = True,
        far: float = 20.0,
    ) -> None:
        if not isinstance(resolution, int) or not 8 <= resolution <= 1024:
            raise ValueError(f"resolution must be an int in [8, 1024] pixels, got {resolution!r}")
        lo, hi = (int(v) for v in num_objects)
        if not 1 <= lo <= hi <= 8:
            raise ValueError(f"num_objects must be (lo, hi) with 1 <= lo <= hi <= 8, got {num_objects!r}")
        if not 0.0 <= turn_prob <= 1.0:
            raise ValueError(f"turn_prob must be a probability in [0, 1], got {turn_prob}")
        if not (0 < size[0] <= size[1]) or not (0 <= speed[0] <= speed[1]) or dt <= 0:
            raise ValueError(f"expected 0 < size[0] <= size[1], 0 <= speed[0] <= speed[1] and dt > 0; got size={size}, speed={speed}, dt={dt}")
        if 4 * size[1] * math.sqrt(2.0) >= 2 * arena:
            raise ValueError(f"arena={arena} is too small for objects of size up to {size[1]}")
        self.config: dict[str, Any] = dict(
            resolution=resolution, num_objects=[lo, hi], turn_prob=float(turn_prob), dt=float(dt),
            speed=[float(v) for v in speed], size=[float(v) for v in size], arena=float(arena),
            camera_distance=float(camera_distance), elevation=float(elevation), fov=float(fov),
            light=[float(v) for v in light], ambient=float(ambient), shadows=bool(shadows), far=float(far),
        )
        self.resolution = resolution
        self.num_objects = (lo, hi)
        self.turn_prob = float(turn_prob)
        self.dt = float(dt)
        self.speed = (float(speed[0]), float(speed[1]))
        self.size = (float(size[0]), float(size[1]))
        self.arena = float(arena)
        self.far = float(far)
        self.camera = PinholeCamera.look_at(resolution, camera_distance, elevation, fov)
        self.renderer = SceneRenderer(
            self.camera, arena=arena, light=tuple(light), ambient=ambient, far=far, shadows=shadows
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ToyWorld":
        cfg = dict(config)
        return cls(cfg.pop("resolution", 64), **{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})

    # ------------------------------------------------------------------ splits
    @staticmethod
    def split_seeds(split: str) -> range:
        """The seeds of a split: ``"train"``, ``"val"`` or ``"test"`` (disjoint ranges).

        Example:
            >>> ToyWorld.split_seeds("val")
            range(1000000, 1010000)
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
        return range(*SPLITS[split])

    # ------------------------------------------------------------------ dynamics
    def reset(self, seed: int) -> ToyState:
        """A fresh world drawn from ``seed`` (objects placed without overlap).

        Example:
            >>> s = ToyWorld(resolution=8).reset(3)
            >>> 2 <= s.num_objects <= 4, s.step
            (True, 0)
        """
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        g = torch.Generator().manual_seed(mix_seed(seed, _RESET))
        f64 = torch.float64
        lo, hi = self.num_objects
        m = int(torch.randint(lo, hi + 1, (1,), generator=g))
        shapes = torch.tensor([SPHERE, CUBE, CYLINDER])[torch.randint(0, 3, (m,), generator=g)]
        u = torch.rand(m, 6, generator=g, dtype=f64)
        sizes = self.size[0] + (self.size[1] - self.size[0]) * u[:, 0]
        sizes = torch.where(shapes == CUBE, 0.8 * sizes, sizes)
        yaws = u[:, 1] * (math.pi / 2)
        hsv = torch.stack([u[:, 2], 0.55 + 0.4 * u[:, 3], 0.7 + 0.3 * u[:, 4]], dim=-1)
        colours = hsv_to_rgb(hsv).to(torch.float32)
        radius = footprint_radius(shapes, sizes)
        positions = torch.zeros(m, 2, dtype=f64)
        for i in range(m):
            lim = self.arena - float(radius[i])
            for _ in range(200):
                cand = (torch.rand(2, generator=g, dtype=f64) * 2 - 1) * lim
                gap = (positions[:i] - cand).norm(dim=-1) - (radius[:i] + radius[i]) if i else torch.ones(1)
                if bool((gap > 0.02).all()):
                    break
            positions[i] = cand
        heading = u[:, 5] * (2 * math.pi)
        speed = self.speed[0] + (self.speed[1] - self.speed[0]) * torch.rand(m, generator=g, dtype=f64)
        velocities = torch.stack([speed * torch.cos(heading), speed * torch.sin(heading)], dim=-1)
        return ToyState(positions, velocities, shapes, sizes, yaws, colours, key=mix_seed(seed, _DYNAMICS), step=0)

    def _simulate(self, state: ToyState, keys: list[int], count: int, stride: int) -> tuple[Tensor, Tensor]:
        """Positions and velocities (B, count, m, 2) after each block of ``stride`` steps.

        World ``b`` of the batch starts from ``state`` and draws from stream ``keys[b]``.
        """
        b, m = len(keys), state.num_objects
        pos = np.broadcast_to(state.positions.numpy(), (b, m, 2)).copy()
        vel = np.broadcast_to(state.velocities.numpy(), (b, m, 2)).copy()
        radius = footprint_radius(state.shapes, state.sizes).numpy()
        ps, vs = np.empty((b, count, m, 2)), np.empty((b, count, m, 2))
        step = state.step
        for j in range(count):
            for _ in range(stride):
                randoms = step_randoms(keys, step, m)
                pos, vel = step_batch(pos, vel, radius, randoms, arena=self.arena, dt=self.dt, turn_prob=self.turn_prob)
                step += 1
            ps[:, j], vs[:, j] = pos, vel
        return torch.from_numpy(ps), torch.from_numpy(vs)

    def step(self, state: ToyState, steps: int = 1) -> ToyState:
        """The state ``steps`` simulation steps later (``state`` is not modified).

        Example:
            >>> w = ToyWorld(resolution=8)
            >>> s = w.reset(0)
            >>> w.step(s).step, s.step
            (1, 0)
        """
        _check_positive("steps", steps, allow_zero=True)
        if steps == 0:
            return state
        pos, vel = self._simulate(state, [state.key], 1, steps)
        return replace(state, positions=pos[0, 0], velocities=vel[0, 0], step=state.step + steps)

    def state_at(self, seed: int, steps: int) -> ToyState:
        """``reset(seed)`` advanced by ``steps`` steps (no rendering)."""
        return self.step(self.reset(seed), steps)

    # ------------------------------------------------------------------ rendering
    def _render_positions(self, state: ToyState, positions: Tensor) -> dict[str, Tensor]:
        """Render positions (N, m, 2) in chunks that keep memory bounded."""
        n = positions.shape[0]
        chunk = max(1, (1 << 18) // self.resolution**2)
        parts = [
            self.renderer.render(positions[i : i + chunk], state.shapes, state.sizes, state.yaws, state.colours)
            for i in range(0, n, chunk)
        ]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def _make_clip(self, state: ToyState, positions: Tensor, velocities: Tensor, lead: tuple[int, ...]) -> ToyClip:
        m = state.num_objects
        frames = self._render_positions(state, positions.reshape(-1, m, 2))
        frames = {k: v.reshape(*lead, *v.shape[1:]) for k, v in frames.items()}
        return ToyClip(
            **frames,
            positions=positions.reshape(*lead, m, 2),
            velocities=velocities.reshape(*lead, m, 2),
            shapes=state.shapes, sizes=state.sizes, yaws=state.yaws, colours=state.colours,
        )

    def render(self, state: ToyState) -> ToyClip:
        """Render one state: a :class:`ToyClip` whose tensors have no time axis.

        Example:
            >>> w = ToyWorld(resolution=8)
            >>> tuple(w.render(w.reset(0)).normals.shape)
            (3, 8, 8)
        """
        return self._make_clip(state, state.positions.unsqueeze(0), state.velocities.unsqueeze(0), ())

    def rollout(self, state: ToyState, length: int, stride: int = 1) -> ToyClip:
        """Frames of ``state`` and of every ``stride``-th later step: ``length`` frames."""
        _check_positive("length", length)
        _check_positive("stride", stride)
        pos, vel = self._simulate(state, [state.key], length - 1, stride)
        pos = torch.cat([state.positions.unsqueeze(0), pos[0]])
        vel = torch.cat([state.velocities.unsqueeze(0), vel[0]])
        return self._make_clip(state, pos, vel, (length,))

    def clip(self, seed: int, length: int, stride: int = 1, start: int = 0) -> ToyClip:
        """A clip of ``length`` frames, ``stride`` steps apart, from ``reset(seed)``.

        Args:
            seed: the world's seed (see :meth:`split_seeds`).
            length: number of frames.
            stride: simulation steps between consecutive frames.
            start: simulation steps taken before the first frame.
        """
        _check_positive("start", start, allow_zero=True)
        return self.rollout(self.state_at(seed, start), length, stride)

    def branch(self, state: ToyState, n: int, steps: int, seed: int = 0, stride: int = 1) -> ToyClip:
        """``n`` independent futures of ``steps`` frames each, all starting from ``state``.

        Future ``i`` draws its random turns from its own stream ``(state.key, seed, i)``,
        so the futures share the starting state and differ afterwards; the result is
        deterministic given ``seed``. Frame ``j`` of a future is the state
        ``(j + 1) * stride`` steps after ``state`` (the shared start is not repeated).

        Returns:
            a :class:`ToyClip` with leading axes (n, steps).

        Example:
            >>> w = ToyWorld(resolution=8, turn_prob=1.0)
            >>> futures = w.branch(w.reset(0), n=3, steps=2)
            >>> tuple(futures.rgb.shape)
            (3, 2, 3, 8, 8)
        """
        _check_positive("n", n)
        _check_positive("steps", steps)
        _check_positive("stride", stride)
        keys = [mix_seed(state.key, _BRANCH, seed, i) for i in range(n)]
        pos, vel = self._simulate(state, keys, steps, stride)
        return self._make_clip(state, pos, vel, (n, steps))

    def __repr__(self) -> str:
        return f"ToyWorld(resolution={self.resolution}, turn_prob={self.turn_prob}, num_objects={self.num_objects})"


def _check_positive(name: str, value: Any, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
