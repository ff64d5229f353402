"""Does an action-conditioned world model move the agent where it is told to?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import Tensor

from featureflow.data.dynamics import ToyState
from featureflow.rl.agent_world import AgentClip, AgentToyWorld
from featureflow.rl.costs import SegmentationGoalCost

__all__ = ["ActionResponse", "UNIT_COMMANDS", "action_response", "resting_start"]

#: The four unit commands +x, −x, +y, −y.
UNIT_COMMANDS = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])


def resting_start(world: AgentToyWorld, seed: int, num_frames: int, frame_skip: int = 1) -> tuple[AgentClip, ToyState]:
    """Scene ``seed`` with the agent at rest for ``num_frames`` frames: the clip (the context
    a model sees) and the simulator state at its last frame (to apply commands to).

    Example:
        >>> clip, state = resting_start(AgentToyWorld(16), 0, 2)
        >>> tuple(clip.rgb.shape), bool((state.positions[0] == clip.positions[-1, 0]).all())
        ((2, 3, 16, 16), True)
    """
    clip = world.clip(int(seed), num_frames, actions=torch.zeros(num_frames - 1, 2), stride=frame_skip)
    state = world.reset(int(seed))
    for _ in range(num_frames - 1):
        state = world.act(state, torch.zeros(2), frame_skip)
    return clip, state


@dataclass(frozen=True)
class ActionResponse:
    """Agent displacements (metres, floor plane) after one step under each command.

    Attributes:
        commands: (m, 2) the commands.
        predicted: (n, m, 2) mean over samples of the displacement of the agent found in
            the model's decoded forecasts (red pixels back-projected to the floor), for
            each of n scenes.
        true: (n, m, 2) the simulator's displacement of the agent.
        visible: (n, m) the agent was found in the context frame and in every sample.
    """

    commands: Tensor
    predicted: Tensor
    true: Tensor
    visible: Tensor

    def along(self) -> Tensor:
        """(n, m) predicted displacement projected on each command's direction, metres."""
        unit = self.commands / self.commands.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        return (self.predicted * unit).sum(-1)

    def fraction_moved(self, threshold: float = 0.1) -> float:
        """Fraction of visible (scene, command) pairs moved at least ``threshold`` metres along the command."""
        ok = self.visible
        return float((self.along() >= threshold)[ok].float().mean()) if bool(ok.any()) else float("nan")

    def error(self) -> float:
        """Mean distance (metres) between predicted and true displacement over visible pairs."""
        ok = self.visible
        return float((self.predicted - self.true).norm(dim=-1)[ok].mean()) if bool(ok.any()) else float("nan")

    def summary(self) -> str:
        """One line for logs and examples."""
        true_len = float(self.true.norm(dim=-1)[self.visible].mean()) if bool(self.visible.any()) else float("nan")
        return (f"action response over {int(self.visible.sum())} visible (scene, command) pairs: "
                f"{self.fraction_moved():.0%} of forecasts move the agent >= 0.1 m along the command; "
                f"mean along-command move {float(self.along()[self.visible].mean()):.2f} m (true {true_len:.2f} m), "
                f"mean displacement error {self.error():.2f} m")


@torch.no_grad()
def action_response(
    model: object,
    world: AgentToyWorld,
    seeds: Iterable[int],
    *,
    frame_skip: int = 1,
    commands: Tensor | None = None,
    num_samples: int = 4,
    steps: int = 2,
    seed: int = 0,
) -> ActionResponse:
    """Measure how one-step forecasts of an action-conditioned world model move the agent.

    For each scene ``seed`` the agent rests for the model's context frames, then each
    command is applied for one step (``frame_skip`` simulation steps) in the simulator
    and in the model (``num_samples`` forecasts, ``steps`` network evaluations each). The
    agent is located in the real context frame and in each decoded forecast the same way
    (its red pixels, back-projected to the floor), so the two displacements are measured
    alike.

    Args:
        model: an action-conditioned :class:`~featureflow.world.WorldModel` with an ``"rgb"`` probe.
        world: the :class:`AgentToyWorld` the model was trained on.
        seeds: scene seeds (use seeds outside the training range).
        frame_skip: simulation steps per action, as in training.
        commands: (m, 2) commands (default: the four unit commands ±x, ±y).
        num_samples: forecasts per command.
        steps: network evaluations per forecast.
        seed: noise seed.

    Example:
        >>> from featureflow.rl import pixel_world_model
        >>> r = action_response(pixel_world_model(4, width=16, depth=1, heads=2), AgentToyWorld(16), [5], steps=1)
        >>> r.predicted.shape, r.true.shape
        (torch.Size([1, 4, 2]), torch.Size([1, 4, 2]))
    """
    cmds = (UNIT_COMMANDS if commands is None else torch.as_tensor(commands, dtype=torch.float32)).float()
    if cmds.dim() != 2 or cmds.shape[1] != 2:
        raise ValueError(f"commands: expected shape (m, 2), got {tuple(cmds.shape)}")
    locate = SegmentationGoalCost((0.0, 0.0), world.camera, source="rgb")
    m, s = cmds.shape[0], num_samples
    g = torch.Generator().manual_seed(seed)
    n_ctx = int(model.max_context)  # type: ignore[attr-defined]
    pred, true, vis = [], [], []
    for sd in seeds:
        clip, state = resting_start(world, sd, n_ctx, frame_skip)
        true.append(torch.stack([(world.act(state, c, frame_skip).positions[0] - state.positions[0]).float() for c in cmds]))
        acts = cmds.repeat_interleave(s, 0).view(1, m * s, 1, 2)
        fc = model.forecast(clip.rgb.unsqueeze(0), 1, m * s, steps=steps, generator=g, actions=acts)  # type: ignore[attr-defined]
        xy, ok = locate.agent_position({"rgb": fc.decode("rgb")[0, :, 0]})  # (m*s, 2), (m*s,)
        xy0, ok0 = locate.agent_position({"rgb": clip.rgb[-1]})
        disp = (xy.float() - xy0.float()).view(m, s, 2)
        pred.append(disp.mean(1))
        vis.append(ok.view(m, s).all(1) & ok0)
    return ActionResponse(cmds, torch.stack(pred), torch.stack(true), torch.stack(vis))
