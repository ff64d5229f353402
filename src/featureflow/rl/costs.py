"""Cost functions on predicted trajectories, for :class:`~featureflow.rl.CEMPlanner`.

All costs map predictions with leading axes (N candidates, K samples, H steps) to an
(N, K) tensor (lower is better), summing a per-step cost with ``weights`` over the
horizon (default: every step counts, the last one ``final_weight`` times).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from featureflow.data.camera import PinholeCamera
from featureflow.rl.agent_world import AGENT_COLOUR
from featureflow.typing import Float, typechecked

__all__ = [
    "AgentDistanceCost",
    "LatentGoalCost",
    "SegmentationGoalCost",
    "agent_mask_from_rgb",
    "horizon_weights",
    "mask_centroid",
    "pixels_to_floor",
]


def horizon_weights(horizon: int, final_weight: float = 1.0) -> Tensor:
    """Per-step weights (H,): ones, with ``final_weight`` on the last step.

    Example:
        >>> horizon_weights(3, 2.0).tolist()
        [1.0, 1.0, 2.0]
    """
    w = torch.ones(horizon)
    w[-1] = final_weight
    return w


def _reduce(per_step: Tensor, final_weight: float) -> Tensor:
    return (per_step * horizon_weights(per_step.shape[-1], final_weight).to(per_step)).sum(-1)


@typechecked
def mask_centroid(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Pixel centroid (u, v) (column, row; pixel centres at +0.5) of boolean masks.

    Returns:
        ``(centroid (*batch, 2), visible (*batch,) bool)``; the centroid of an empty mask
        is the image centre.

    Example:
        >>> m = torch.zeros(4, 4, dtype=torch.bool); m[1, 2] = True
        >>> c, ok = mask_centroid(m)
        >>> c.tolist(), bool(ok)
        ([2.5, 1.5], True)
    """
    if mask.dim() < 2:
        raise ValueError(f"mask: expected (*batch, H, W), got shape {tuple(mask.shape)}")
    h, w = mask.shape[-2:]
    m = mask.float()
    area = m.sum((-1, -2))
    u = torch.arange(w, dtype=torch.float32, device=mask.device) + 0.5
    v = torch.arange(h, dtype=torch.float32, device=mask.device) + 0.5
    cu = (m.sum(-2) * u).sum(-1) / area.clamp(min=1)
    cv = (m.sum(-1) * v).sum(-1) / area.clamp(min=1)
    visible = area > 0
    cu = torch.where(visible, cu, torch.full_like(cu, w / 2))
    cv = torch.where(visible, cv, torch.full_like(cv, h / 2))
    return torch.stack([cu, cv], -1), visible


@typechecked
def pixels_to_floor(camera: PinholeCamera, uv: Float[Tensor, "*batch 2"], height: float | int = 0.0) -> Float[Tensor, "*batch 2"]:
    """Back-project pixel coordinates (u, v) onto the horizontal plane z = ``height``.

    Example:
        >>> cam = PinholeCamera.look_at(64, 4.8, 60.0, 42.0)
        >>> pixels_to_floor(cam, torch.tensor([32.0, 32.0])).abs().max().item() < 1e-6
        True
    """
    f, cx, cy = (float(camera.intrinsics[0, 0]), float(camera.intrinsics[0, 2]), float(camera.intrinsics[1, 2]))
    xc, yc = (uv[..., 0].double() - cx) / f, (uv[..., 1].double() - cy) / f
    right, down, forward = camera.rotation
    d = xc[..., None] * right + yc[..., None] * down + forward  # (*, 3) world ray directions
    o = camera.position
    t = (height - o[2]) / d[..., 2]
    return (o[:2] + t[..., None] * d[..., :2]).to(uv.dtype)


@typechecked
def agent_mask_from_rgb(
    rgb: Float[Tensor, "*batch 3 H W"], colour: tuple[float, float, float] = AGENT_COLOUR, tolerance: float = 0.35
) -> Tensor:
    """Pixels whose chromaticity is close to the agent's (red); robust to shading.

    Compares colours after dividing by their brightest channel, so lit and shaded sides
    of the agent both match. Returns a bool mask (*batch, H, W).

    Example:
        >>> img = torch.zeros(3, 2, 2); img[:, 0, 0] = torch.tensor([0.5, 0.06, 0.05])
        >>> agent_mask_from_rgb(img).tolist()
        [[True, False], [False, False]]
    """
    c = torch.tensor(colour, dtype=rgb.dtype, device=rgb.device)
    c = c / c.max()
    peak = rgb.max(-3, keepdim=True).values
    chroma = rgb / peak.clamp(min=1e-3)
    shape = [1] * rgb.dim()
    shape[-3] = 3
    dist = (chroma - c.view(shape)).abs().amax(-3)
    return (dist < tolerance) & (peak.squeeze(-3) > 0.15)


class AgentDistanceCost:
    """Distance of the agent (object 0) to a goal, from predicted object positions.

    Use it with models that predict states (e.g. :class:`~featureflow.rl.SimulatorModel`).

    Args:
        goal: (2,) goal position on the floor, metres.
        final_weight: weight of the last step of the horizon (other steps weigh 1).

    Example:
        >>> cost = AgentDistanceCost(torch.tensor([1.0, 0.0]))
        >>> positions = torch.zeros(2, 3, 4, 2, 2)          # (N, K, H, m, 2)
        >>> cost({"positions": positions}, None).shape
        torch.Size([2, 3])
    """

    def __init__(self, goal: Any, final_weight: float = 1.0) -> None:
        self.goal = torch.as_tensor(goal, dtype=torch.float64).reshape(2)
        self.final_weight = float(final_weight)

    def __call__(self, predictions: Mapping[str, Tensor], actions: Tensor | None) -> Tensor:
        pos = predictions["positions"]
        if pos.dim() != 5 or pos.shape[-1] != 2:
            raise ValueError(f"positions: expected (N, K, H, m, 2), got {tuple(pos.shape)}")
        d = (pos[..., 0, :].double() - self.goal.to(pos.device)).norm(dim=-1)
        return _reduce(d, self.final_weight).float()


class SegmentationGoalCost:
    """Distance of the agent to a goal, measured on predicted images.

    The agent's pixels are found in predicted ``instances`` (id ``agent_id``), in a
    predicted ``mask``, or from predicted ``rgb`` by colour (:func:`agent_mask_from_rgb`);
    their centroid is back-projected onto the plane z = ``height`` (about the height of
    the agent's centre) to get a floor position. Steps where the agent is not visible
    cost ``missing_cost``.

    Args:
        goal: (2,) goal position, metres.
        camera: the camera the images were rendered/predicted for.
        source: ``"instances"``, ``"mask"`` or ``"rgb"``: which prediction to read.
        agent_id: instance id of the agent (1 in ToyWorld with an agent).
        height: plane height for the back-projection, metres.
        missing_cost: per-step cost when no agent pixel is predicted.
        final_weight: weight of the last step of the horizon.

    Example:
        >>> from featureflow.rl import AgentToyWorld
        >>> w = AgentToyWorld(resolution=32)
        >>> clip = w.clip(seed=0, length=2)
        >>> cost = SegmentationGoalCost(clip.positions[-1, 0], w.camera, height=0.2)
        >>> inst = clip.instances[-1].expand(1, 1, 1, 32, 32)       # (N, K, H, H_img, W_img)
        >>> bool(cost({"instances": inst}, None)[0, 0] < 0.15)
        True
    """

    def __init__(
        self,
        goal: Any,
        camera: PinholeCamera,
        source: str = "instances",
        agent_id: int = 1,
        height: float = 0.2,
        missing_cost: float = 3.0,
        final_weight: float = 1.0,
    ) -> None:
        if source not in ("instances", "mask", "rgb"):
            raise ValueError(f"source must be 'instances', 'mask' or 'rgb', got {source!r}")
        self.goal = torch.as_tensor(goal, dtype=torch.float64).reshape(2)
        self.camera, self.source, self.agent_id = camera, source, int(agent_id)
        self.height, self.missing_cost, self.final_weight = float(height), float(missing_cost), float(final_weight)

    def agent_position(self, predictions: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Floor positions (..., 2) of the agent in the predicted images and their visibility."""
        if self.source not in predictions:
            raise KeyError(f"predictions have no {self.source!r}; got keys {sorted(predictions)}")
        x = predictions[self.source]
        if self.source == "instances":
            mask = x == self.agent_id
        elif self.source == "mask":
            mask = x.bool()
        else:
            mask = agent_mask_from_rgb(x.float())
        uv, visible = mask_centroid(mask)
        return pixels_to_floor(self.camera, uv, self.height), visible

    def __call__(self, predictions: Mapping[str, Tensor], actions: Tensor | None) -> Tensor:
        xy, visible = self.agent_position(predictions)
        if xy.dim() != 4:
            raise ValueError(f"expected predictions with leading axes (N, K, H), got positions of shape {tuple(xy.shape)}")
        d = (xy.double() - self.goal.to(xy.device)).norm(dim=-1)
        d = torch.where(visible, d, torch.full_like(d, self.missing_cost))
        return _reduce(d, self.final_weight).float()


class LatentGoalCost:
    """Mean squared distance of predicted latents to the latents of a goal image.

    Args:
        goal_latent: (h, w, C) latent of the goal frame (e.g. ``world_model.encode(goal)[0, -1]``).
        final_weight: weight of the last step of the horizon.

    Example:
        >>> cost = LatentGoalCost(torch.zeros(2, 2, 4))
        >>> cost({"latents": torch.ones(3, 2, 5, 2, 2, 4)}, None)[0].tolist()
        [5.0, 5.0]
    """

    def __init__(self, goal_latent: Tensor, final_weight: float = 1.0) -> None:
        if goal_latent.dim() != 3:
            raise ValueError(f"goal_latent: expected (h, w, C), got shape {tuple(goal_latent.shape)}")
        self.goal = goal_latent.detach()
        self.final_weight = float(final_weight)

    def __call__(self, predictions: Mapping[str, Tensor] | Tensor, actions: Tensor | None) -> Tensor:
        lat = predictions["latents"] if isinstance(predictions, Mapping) else predictions
        if lat.dim() != 6 or tuple(lat.shape[-3:]) != tuple(self.goal.shape):
            raise ValueError(f"latents: expected (N, K, H, {', '.join(map(str, self.goal.shape))}), got {tuple(lat.shape)}")
        per_step = ((lat - self.goal.to(lat)) ** 2).mean((-1, -2, -3))
        return _reduce(per_step, self.final_weight)
