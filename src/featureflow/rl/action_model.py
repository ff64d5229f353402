"""Action-conditioned world models for planning.

An action-conditioned world model is an ordinary :class:`~featureflow.world.WorldModel`
whose forecaster's denoiser was built with ``cond_dim`` = action size (see
:class:`~featureflow.forecast.FlowForecaster`): ``wm.forecast(frames, k, s, actions=...)``.
:func:`pixel_world_model` builds the small one used on ToyWorld-with-agent (and bundled as
``"toyworld-agent"``), and :class:`LatentPlanningModel` turns any such model into the
``dynamics`` callable of :class:`~featureflow.rl.CEMPlanner`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from featureflow.compressors import Identity
from featureflow.encoders import PixelPatchEncoder
from featureflow.forecast import Denoiser, FlowForecaster
from featureflow.probes import PixelPatchRGBHead
from featureflow.solvers import DEFAULT_SOLVER, ODESolver
from featureflow.world import WorldModel

__all__ = ["LatentPlanningModel", "pixel_world_model"]


def pixel_world_model(
    patch_size: int = 4,
    action_dim: int = 2,
    *,
    width: int = 96,
    depth: int = 3,
    heads: int = 4,
    max_context: int = 2,
    residual: bool = True,
) -> WorldModel:
    """An untrained action-conditioned :class:`~featureflow.world.WorldModel` on pixel patches.

    :class:`~featureflow.encoders.PixelPatchEncoder` features, an
    :class:`~featureflow.compressors.Identity` compressor (set its feature statistics
    before training), a residual :class:`~featureflow.forecast.FlowForecaster` whose
    causal denoiser takes the action as ``cond``, and the exact
    :class:`~featureflow.probes.PixelPatchRGBHead` as its ``"rgb"`` probe.

    Example:
        >>> wm = pixel_world_model(2, width=16, depth=1, heads=2)
        >>> wm.action_dim, wm.encode(torch.rand(1, 2, 3, 8, 8)).shape
        (2, torch.Size([1, 2, 4, 4, 12]))
        >>> wm.forecast(torch.rand(1, 2, 3, 8, 8), 3, 2, steps=1, actions=torch.zeros(1, 3, 2)).decode("rgb").shape
        torch.Size([1, 2, 3, 3, 8, 8])
    """
    encoder = PixelPatchEncoder(patch_size)
    den = Denoiser(latent_dim=encoder.feature_dim, width=width, depth=depth, heads=heads, max_context=max_context,
                   cond_dim=action_dim)
    forecaster = FlowForecaster(den, max_stride=1, residual=residual)
    return WorldModel(encoder, Identity(encoder.feature_dim), forecaster, {"rgb": PixelPatchRGBHead(patch_size)})


class LatentPlanningModel:
    """An action-conditioned :class:`~featureflow.world.WorldModel` as the ``dynamics`` of
    :class:`~featureflow.rl.CEMPlanner`.

    :meth:`set_context` encodes the recent frames once; a call with candidate actions
    (N, H, A) and K returns ``{"latents": (N, K, H, h, w, C)}`` plus, for each name in
    ``decode``, the probe's output (e.g. ``"rgb"`` (N, K, H, 3, H_img, W_img)). The context
    is prefilled once and its cache expanded to all N·K futures, which run as one batch
    per network evaluation.

    Args:
        model: an action-conditioned world model (``model.action_dim`` set).
        decode: probe modalities to decode the predicted latents into (e.g. ``("rgb",)``).
        solver: ODE solver name; ``steps``: network evaluations per predicted frame.
        generator: noise source.

    Example:
        >>> from featureflow.rl import pixel_world_model
        >>> pm = LatentPlanningModel(pixel_world_model(2, width=16, depth=1, heads=2))
        >>> pm.set_context(torch.rand(2, 3, 8, 8))
        >>> pm(torch.zeros(5, 3, 2), 2)["rgb"].shape
        torch.Size([5, 2, 3, 3, 8, 8])
    """

    def __init__(self, model: WorldModel, decode: tuple[str, ...] | list[str] = ("rgb",),
                 solver: str | ODESolver = DEFAULT_SOLVER,
                 steps: int | None = 2, generator: torch.Generator | None = None) -> None:
        if getattr(model, "action_dim", None) is None:
            raise ValueError("LatentPlanningModel needs an action-conditioned world model (its forecaster's denoiser has cond_dim)")
        missing = [m for m in decode if m not in model.probes]
        if missing:
            raise ValueError(f"cannot decode {missing}: the model has probes {sorted(model.probes)}")
        self.model, self.decode, self.solver, self.steps, self.generator = model, tuple(decode), solver, steps, generator
        self.context: Tensor | None = None
        self.image_size: tuple[int, int] | None = None

    def set_context(self, frames: Tensor) -> None:
        """Recent frames (t, 3, H, W) (float in [0, 1] or uint8); the last ``max_context`` are used."""
        if frames.dim() != 4:
            raise ValueError(f"frames: expected (t, 3, H, W), got shape {tuple(frames.shape)}")
        self.context = self.model.encode(frames[-self.model.max_context :].unsqueeze(0))
        self.image_size = (int(frames.shape[-2]), int(frames.shape[-1]))

    @torch.no_grad()
    def __call__(self, actions: Tensor, num_samples: int) -> dict[str, Tensor]:
        if self.context is None:
            raise RuntimeError("call set_context(frames) before predicting")
        if actions.dim() != 3 or actions.shape[-1] != self.model.action_dim:
            raise ValueError(f"actions: expected (N, H, {self.model.action_dim}), got shape {tuple(actions.shape)}")
        n, horizon = actions.shape[:2]
        per_row = actions.float().repeat_interleave(num_samples, 0).unsqueeze(0)  # (1, N*K, H, A)
        roll = self.model.forecaster.rollout(self.context, horizon, n * num_samples, self.solver, self.steps,
                                             self.generator, actions=per_row)
        lat = roll.latents[0].reshape(n, num_samples, *roll.latents.shape[2:])
        out = {"latents": lat}
        for name in self.decode:
            out[name] = self.model.decode_latents(lat, name, self.image_size)
        return out
