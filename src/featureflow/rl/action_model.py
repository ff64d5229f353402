"""`ActionWorldModel`: encoder + compressor + action-conditioned forecaster, for planning.

The thinnest action-aware counterpart of :class:`~featureflow.world.WorldModel`:
``encode(frames) -> latents``, ``rollout(context, actions, num_samples) -> latents``,
``decode_rgb(latents)`` when the encoder can invert its features (as
:class:`PixelPatchEncoder` can). :class:`LatentPlanningModel` turns it into the
``dynamics`` callable of :class:`~featureflow.rl.CEMPlanner`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from featureflow.rl.action_flow import ActionFlowForecaster
from featureflow.typing import Float, typechecked
from featureflow.utils import Configurable, build_component, load_safetensors, register_component, save_json, save_safetensors

__all__ = ["ActionWorldModel", "LatentPlanningModel", "PixelPatchEncoder"]


@register_component
class PixelPatchEncoder(nn.Module, Configurable):
    """A parameter-free encoder: the raw pixels of each ``patch_size`` patch as its feature.

    Features (b, h, w, 3·p²) are exactly invertible (:meth:`decode`), so forecasts can be
    viewed as images and scored by colour without a trained probe.

    Example:
        >>> enc = PixelPatchEncoder(patch_size=4)
        >>> x = torch.rand(2, 3, 8, 8)
        >>> enc(x).shape, bool(torch.equal(enc.decode(enc(x)), x))
        (torch.Size([2, 2, 2, 48]), True)
    """

    def __init__(self, patch_size: int = 4) -> None:
        super().__init__()
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
        self.patch_size = patch_size
        self.feature_dim = 3 * patch_size**2
        self.config: dict[str, Any] = {"patch_size": patch_size}

    @typechecked
    def forward(self, images: Float[Tensor, "b 3 H W"]) -> Float[Tensor, "b h w D"]:
        b, _, hh, ww = images.shape
        p = self.patch_size
        if hh % p or ww % p:
            raise ValueError(f"image size ({hh}, {ww}) must be divisible by patch_size={p}")
        x = images.reshape(b, 3, hh // p, p, ww // p, p)
        return x.permute(0, 2, 4, 1, 3, 5).reshape(b, hh // p, ww // p, self.feature_dim)

    def decode(self, features: Tensor) -> Tensor:
        """Features (*batch, h, w, 3·p²) → images (*batch, 3, h·p, w·p)."""
        p, lead = self.patch_size, features.shape[:-3]
        h, w = features.shape[-3:-1]
        x = features.reshape(-1, h, w, 3, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(*lead, 3, h * p, w * p)


class ActionWorldModel(nn.Module):
    """Frames → latents → action-conditioned forecasts → (optionally) images.

    Args:
        encoder: an encoder module (images (b, 3, H, W) → features (b, h, w, D)).
        compressor: a compressor (``encode``/``decode`` between features and latents).
        forecaster: an :class:`~featureflow.rl.ActionFlowForecaster`.

    Example:
        >>> from featureflow.compressors import Identity
        >>> from featureflow.forecast import Denoiser
        >>> den = Denoiser(latent_dim=12, width=16, depth=1, heads=2, max_context=2, cond_dim=2)
        >>> wm = ActionWorldModel(PixelPatchEncoder(2), Identity(12), ActionFlowForecaster(den))
        >>> z = wm.encode(torch.rand(1, 2, 3, 8, 8))
        >>> lat = wm.rollout(z, torch.zeros(1, 3, 2, 2), num_samples=2, steps=1)
        >>> z.shape, lat.shape, wm.decode_rgb(lat).shape
        (torch.Size([1, 2, 4, 4, 12]), torch.Size([1, 3, 2, 2, 4, 4, 12]), torch.Size([1, 3, 2, 2, 3, 8, 8]))
    """

    def __init__(self, encoder: nn.Module, compressor: nn.Module, forecaster: ActionFlowForecaster) -> None:
        super().__init__()
        self.encoder, self.compressor, self.forecaster = encoder, compressor, forecaster
        self.eval()

    @property
    def action_dim(self) -> int:
        return self.forecaster.action_dim

    @property
    def max_context(self) -> int:
        return self.forecaster.max_context

    @torch.no_grad()
    def encode(self, frames: Tensor) -> Tensor:
        """Frames (b, t, 3, H, W) float in [0, 1] or uint8 → latents (b, t, h, w, C)."""
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"frames: expected (b, t, 3, H, W), got shape {tuple(frames.shape)}")
        if frames.dtype == torch.uint8:
            frames = frames.float() / 255
        b, t = frames.shape[:2]
        feats = self.encoder(frames.reshape(b * t, *frames.shape[2:]).float())
        lat = self.compressor.encode(feats)
        return lat.reshape(b, t, *lat.shape[1:])

    @torch.no_grad()
    def rollout(self, context: Tensor, actions: Tensor, num_samples: int = 1, solver: Any = "euler",
                steps: int | None = 2, generator: torch.Generator | None = None) -> Tensor:
        """Latents (b, n, s, k, h, w, C) of ``s`` futures under ``n`` action sequences (b, n, k, A)."""
        return self.forecaster.rollout(context, actions, num_samples, solver, steps, generator).latents

    @torch.no_grad()
    def decode_rgb(self, latents: Tensor) -> Tensor:
        """Latents (*, h, w, C) → images (*, 3, H, W) in [0, 1]; needs an invertible encoder."""
        if not callable(getattr(self.encoder, "decode", None)):
            raise TypeError(f"{type(self.encoder).__name__} cannot decode features to images (no decode method)")
        return self.encoder.decode(self.compressor.decode(latents)).clamp(0, 1)

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors`` (no pickle)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        config = {name: getattr(self, name).describe() for name in ("encoder", "compressor", "forecaster")}
        save_safetensors({k: v.contiguous() for k, v in self.state_dict().items()}, d / "model.safetensors")
        save_json(config, d / "config.json")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "ActionWorldModel":
        """Load a model written by :meth:`save_pretrained`."""
        d = Path(directory)
        if not (d / "config.json").is_file():
            raise FileNotFoundError(f"{d} has no config.json (expected a directory written by save_pretrained)")
        config = json.loads((d / "config.json").read_text())
        model = cls(*(build_component(config[k]) for k in ("encoder", "compressor", "forecaster")))
        model.load_state_dict(load_safetensors(d / "model.safetensors"))
        return model.eval()


class LatentPlanningModel:
    """An :class:`ActionWorldModel` as the ``dynamics`` of :class:`~featureflow.rl.CEMPlanner`.

    :meth:`set_context` takes the recent frames; a call with candidate actions
    (N, H, A) and K returns ``{"latents": (N, K, H, h, w, C)}`` plus ``"rgb"``
    (N, K, H, 3, H_img, W_img) with ``decode_rgb=True``. All N·K futures run as one
    batch per network evaluation.

    Example:
        >>> from featureflow.compressors import Identity
        >>> from featureflow.forecast import Denoiser
        >>> den = Denoiser(latent_dim=12, width=16, depth=1, heads=2, max_context=2, cond_dim=2)
        >>> pm = LatentPlanningModel(ActionWorldModel(PixelPatchEncoder(2), Identity(12), ActionFlowForecaster(den)))
        >>> pm.set_context(torch.rand(2, 3, 8, 8))
        >>> pm(torch.zeros(5, 3, 2), 2)["rgb"].shape
        torch.Size([5, 2, 3, 3, 8, 8])
    """

    def __init__(self, model: ActionWorldModel, decode_rgb: bool = True, solver: Any = "euler", steps: int | None = 2,
                 generator: torch.Generator | None = None) -> None:
        self.model, self.decode, self.solver, self.steps, self.generator = model, decode_rgb, solver, steps, generator
        self.context: Tensor | None = None

    def set_context(self, frames: Tensor) -> None:
        """Recent frames (t, 3, H, W) (float in [0, 1] or uint8); the last ``max_context`` are used."""
        if frames.dim() != 4:
            raise ValueError(f"frames: expected (t, 3, H, W), got shape {tuple(frames.shape)}")
        self.context = self.model.encode(frames[-self.model.max_context :].unsqueeze(0))

    def __call__(self, actions: Tensor, num_samples: int) -> dict[str, Tensor]:
        if self.context is None:
            raise RuntimeError("call set_context(frames) before predicting")
        lat = self.model.rollout(self.context, actions.unsqueeze(0).float(), num_samples, self.solver, self.steps, self.generator)[0]
        out = {"latents": lat}
        if self.decode:
            out["rgb"] = self.model.decode_rgb(lat)
        return out
