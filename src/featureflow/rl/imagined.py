"""`ImaginedEnv`: a Gymnasium env whose `step` advances a world model, not the simulator."""

from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from featureflow.solvers import DEFAULT_SOLVER

__all__ = ["ImaginedEnv"]

#: ``reward_fn(latent (h, w, C), rgb (3, H, W) | None, action (A,)) -> float``.
RewardFn = Callable[[Tensor, "Tensor | None", np.ndarray], float]


class ImaginedEnv(gym.Env):
    """Train an agent in imagination: each step samples the next latent frame from a world model.

    The model is an action-conditioned :class:`~featureflow.world.WorldModel`
    (``model.action_dim`` set, e.g. ``WorldModel.from_pretrained("toyworld-agent")`` or
    :func:`~featureflow.rl.pixel_world_model`); ``observation="rgb"`` and rendering need
    its ``"rgb"`` probe.

    ``reset`` takes real starting frames from ``initial_frames(rng) -> (t, 3, H, W)`` (float
    in [0, 1] or uint8; e.g. a few frames of :class:`~featureflow.rl.ToyWorldEnv`) and
    encodes them; ``step(action)`` samples one future latent conditioned on the action
    (noise from a generator seeded by ``reset(seed=...)``, so episodes are reproducible),
    slides the context window, and scores the result with ``reward_fn``.

    Args:
        model: the action-conditioned world model.
        initial_frames: ``initial_frames(np_random) -> (t, 3, H, W)`` starting frames.
        reward_fn: ``reward_fn(latent, rgb_or_None, action) -> float``.
        observation: ``"latent"`` (float32 (h, w, C)) or ``"rgb"`` (uint8 (H, W, 3), decoded).
        max_steps: truncation limit.
        terminate_fn: optional ``terminate_fn(latent, rgb_or_None) -> bool``.
        latent_bound: half-width of the latent observation Box (latents are clamped to it).
        solver: ODE solver name for sampling; ``steps``: its network evaluations.

    Example:
        >>> from featureflow.rl import pixel_world_model
        >>> wm = pixel_world_model(2, width=16, depth=1, heads=2)
        >>> env = ImaginedEnv(wm, lambda rng: torch.rand(2, 3, 8, 8), lambda z, rgb, a: -float(abs(a).sum()))
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, env.step(np.zeros(2, dtype=np.float32))[1]
        ((4, 4, 12), -0.0)
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        model: Any,
        initial_frames: Callable[[np.random.Generator], Tensor],
        reward_fn: RewardFn,
        observation: str = "latent",
        max_steps: int = 50,
        terminate_fn: Callable[[Tensor, "Tensor | None"], bool] | None = None,
        latent_bound: float = 10.0,
        solver: str = DEFAULT_SOLVER,
        steps: int = 2,
        render_mode: str | None = None,
    ) -> None:
        if observation not in ("latent", "rgb"):
            raise ValueError(f"observation must be 'latent' or 'rgb', got {observation!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if not callable(getattr(model, "encode", None)) or not hasattr(model, "forecaster") \
                or not callable(getattr(model, "decode_latents", None)):
            raise TypeError(f"model must be an action-conditioned WorldModel (encode(), forecaster, decode_latents()), got {type(model).__name__}")
        if getattr(model, "action_dim", None) is None:
            raise ValueError("model is not action-conditioned (its forecaster's denoiser has no cond_dim)")
        if (observation == "rgb" or render_mode) and "rgb" not in model.probes:
            raise ValueError(f"observation='rgb' and rendering need an 'rgb' probe; the model has {sorted(model.probes)}")
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
        self.model, self.initial_frames, self.reward_fn, self.terminate_fn = model, initial_frames, reward_fn, terminate_fn
        self.observation, self.max_steps, self.latent_bound = observation, max_steps, float(latent_bound)
        self.solver, self.solver_steps, self.render_mode = solver, steps, render_mode
        self.action_dim = int(model.action_dim)
        self.action_space = spaces.Box(-1.0, 1.0, (self.action_dim,), dtype=np.float32)
        # Probe the shapes once with the frames of a fixed generator.
        frames = self._frames(np.random.default_rng(0))
        self.image_size = (int(frames.shape[-2]), int(frames.shape[-1]))
        lat = model.encode(frames.unsqueeze(0))
        self.latent_shape = tuple(int(v) for v in lat.shape[2:])
        if observation == "latent":
            self.observation_space: spaces.Space = spaces.Box(-latent_bound, latent_bound, self.latent_shape, dtype=np.float32)
        else:
            self.observation_space = spaces.Box(0, 255, (*self.image_size, 3), dtype=np.uint8)
        self.context: Tensor | None = None
        self.steps = 0
        self.generator = torch.Generator().manual_seed(0)

    def _frames(self, rng: np.random.Generator) -> Tensor:
        frames = torch.as_tensor(self.initial_frames(rng))
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"initial_frames must return (t, 3, H, W) frames, got shape {tuple(frames.shape)}")
        return frames.float() / 255 if frames.dtype == torch.uint8 else frames.float()

    def _rgb(self, latent: Tensor) -> Tensor | None:
        if self.observation != "rgb" and self.render_mode is None:
            return None
        return self.model.decode_latents(latent, "rgb", self.image_size)

    def _obs(self, latent: Tensor, rgb: Tensor | None) -> np.ndarray:
        if self.observation == "latent":
            return latent.clamp(-self.latent_bound, self.latent_bound).float().cpu().numpy()
        assert rgb is not None
        return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.generator = torch.Generator().manual_seed(int(self.np_random.integers(0, 2**62)))
        frames = self._frames(self.np_random)
        self.context = self.model.encode(frames.unsqueeze(0))[:, -self.model.max_context :]
        self.steps = 0
        latent = self.context[0, -1]
        self._last_rgb = self._rgb(latent)
        return self._obs(latent, self._last_rgb), {"steps": 0}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.context is None:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(action, dtype=np.float32)
        if a.shape != (self.action_dim,) or not np.isfinite(a).all():
            raise ValueError(f"action must be a finite array of shape ({self.action_dim},), got shape {a.shape}")
        a = np.clip(a, -1.0, 1.0)
        act = torch.from_numpy(a).to(self.context.dtype).view(1, 1, self.action_dim)
        nxt = self.model.forecaster.rollout(self.context, 1, 1, self.solver, self.solver_steps, self.generator,
                                            actions=act).latents
        latent = nxt.reshape(1, *self.latent_shape)
        self.context = torch.cat([self.context, latent.unsqueeze(1)], 1)[:, -self.model.max_context :]
        self.steps += 1
        rgb = self._rgb(latent[0])
        self._last_rgb = rgb
        reward = float(self.reward_fn(latent[0], rgb, a))
        terminated = bool(self.terminate_fn(latent[0], rgb)) if self.terminate_fn is not None else False
        truncated = bool(self.steps >= self.max_steps and not terminated)
        return self._obs(latent[0], rgb), reward, terminated, truncated, {"steps": self.steps}

    def render(self) -> np.ndarray | None:
        """The current imagined frame, (H, W, 3) uint8, for ``render_mode="rgb_array"``."""
        if self.render_mode != "rgb_array":
            return None
        if self.context is None:
            raise RuntimeError("call reset() before render()")
        rgb = self._last_rgb if self._last_rgb is not None else self._rgb(self.context[0, -1])
        return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
