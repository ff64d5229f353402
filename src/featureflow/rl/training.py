"""Train a small action-conditioned world model on ToyWorld with an agent."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from featureflow.rl.action_model import pixel_world_model
from featureflow.rl.agent_world import AgentToyWorld
from featureflow.training.fingerprint import model_fingerprint
from featureflow.training.loop import FitConfig, fit
from featureflow.utils import progress_bar
from featureflow.world import WorldModel

__all__ = ["agent_clip_dataset", "train_action_world_model"]


def agent_clip_dataset(
    world: AgentToyWorld, seeds: range | list[int], length: int, frame_skip: int = 1, progress: bool = False,
    persistence: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Render clips under random actions: frames (n, length, 3, H, W) and actions (n, length - 1, 2).

    Each action is held for ``frame_skip`` simulation steps (see :meth:`AgentToyWorld.clip`).
    ``persistence`` is the chance that a step repeats the previous action; at the default
    0 every action is drawn afresh, so the agent's motion cannot be guessed from the past
    frames and a model must read it from the action.

    Example:
        >>> frames, actions = agent_clip_dataset(AgentToyWorld(resolution=8), range(2), 3)
        >>> frames.shape, actions.shape
        (torch.Size([2, 3, 3, 8, 8]), torch.Size([2, 2, 2]))
    """
    frames, actions = [], []
    for s in progress_bar(list(seeds), progress=progress, desc="clips"):
        clip = world.clip(int(s), length, stride=frame_skip, persistence=persistence)
        frames.append(clip.rgb)
        actions.append(clip.actions)
    return torch.stack(frames), torch.stack(actions)


class _ActionClips(torch.utils.data.Dataset):
    """Latent clips and the actions between their frames, as ``{"latents", "actions"}`` items."""

    def __init__(self, latents: Tensor, actions: Tensor) -> None:
        self.latents, self.actions = latents, actions

    def __len__(self) -> int:
        return self.latents.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"latents": self.latents[i], "actions": self.actions[i]}


def _action_loss(model: torch.nn.Module, batch: dict[str, Tensor], generator: torch.Generator) -> Tensor:
    return model.loss(batch["latents"], generator, batch["actions"])


def train_action_world_model(
    world: AgentToyWorld,
    *,
    num_clips: int = 1500,
    clip_length: int = 6,
    frame_skip: int = 1,
    patch_size: int = 4,
    width: int = 96,
    depth: int = 3,
    heads: int = 4,
    max_context: int = 2,
    train_steps: int = 1500,
    batch_size: int = 48,
    lr: float = 1e-3,
    residual: bool = True,
    seed: int = 0,
    log_path: str | os.PathLike | None = None,
    progress: bool = False,
) -> WorldModel:
    """Fit :func:`~featureflow.rl.pixel_world_model` (pixel patches, standardised Identity
    compressor, residual action-conditioned flow forecaster) on random-action clips of
    ``world`` (training seeds ``seed·10⁶ + i``), each action held for ``frame_skip``
    simulation steps (use the env's ``frame_skip``).

    The returned model's ``metadata`` records the world and data settings
    (``world``, ``frame_skip``, ``resolution``), which planners and the env need to match.

    Example:
        >>> wm = train_action_world_model(AgentToyWorld(resolution=8), num_clips=4, clip_length=3,
        ...                               patch_size=4, width=16, depth=1, heads=2, train_steps=2, batch_size=2)
        >>> wm.action_dim, wm.encode(torch.rand(1, 2, 3, 8, 8)).shape
        (2, torch.Size([1, 2, 2, 2, 48]))
    """
    torch.manual_seed(seed)
    frames, actions = agent_clip_dataset(world, range(seed * 10**6, seed * 10**6 + num_clips), clip_length, frame_skip, progress)
    wm = pixel_world_model(patch_size, 2, width=width, depth=depth, heads=heads, max_context=max_context, residual=residual)
    feats = wm.encoder(frames.flatten(0, 1))  # (n*t, h, w, D)
    flat = feats.reshape(-1, wm.encoder.feature_dim)
    # One shared scale for all pixels: a per-channel std would blow up rarely-changing
    # background pixels and let them dominate the loss.
    wm.compressor.set_feature_stats(flat.mean(0), flat.std(0).mean().clamp(min=1e-3).expand(flat.shape[1]).clone())
    latents = wm.compressor.encode(feats).reshape(*frames.shape[:2], *feats.shape[1:])
    forecaster = wm.forecaster
    if log_path is not None:
        Path(log_path).unlink(missing_ok=True)  # a fresh log per run
    cfg = FitConfig(steps=train_steps, batch_size=batch_size, lr=lr, weight_decay=0.01, warmup=max(1, train_steps // 20),
                    ema_decay=None, clip_grad=1.0, seed=seed, log_every=50)
    fit(forecaster, _action_loss, _ActionClips(latents.detach(), actions), cfg, log_path=log_path, progress=progress,
        desc="train", fingerprint={"model": model_fingerprint(forecaster)})
    wm.eval()
    wm.metadata = {
        "world": {"type": type(world).__name__, "config": dict(world.config)},
        "resolution": int(frames.shape[-1]),
        "frame_skip": int(frame_skip),
        "train": {"num_clips": num_clips, "clip_length": clip_length, "steps": train_steps, "batch_size": batch_size,
                  "lr": lr, "seed": seed},
    }
    return wm
