"""The released VFMF sampling recipe: one `SamplingRecipe` that `WorldModel.forecast` follows.

The released rollout (``sample_autoregressive`` in gboduljak/vfmf) keeps the context in
*feature* space: before every forecast frame it re-encodes the whole window of features
(up to 4 frames) with the VAE, drawing a posterior **sample** (its ``encode_features``
uses ``deterministic=False``), integrates the flow with Euler on ``linspace(0, 1, 10)``
(9 network evaluations), decodes the new latent back to features and appends those
features to the window. That is `featureflow.world.SamplingRecipe` with
``reencode=True`` and ``context_posterior="sample"``: :class:`ReleasedRecipe` holds those
values, and the ordinary `WorldModel.forecast` samples with it (a converted model
carries it in ``config.json``, key ``"vfmf_recipe"``). :func:`released_rollout` and
:func:`forecast_released` are the names this module had before the recipe became data.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from featureflow.forecast import Rollout
from featureflow.typing import Features
from featureflow.world import Forecast, WorldModel
from featureflow.world.recipe import RECIPE_KEY, SamplingRecipe, recipe_rollout

__all__ = ["ReleasedRecipe", "RECIPE_KEY", "read_recipe", "released_rollout", "forecast_released"]


@dataclass(frozen=True, eq=False)
class ReleasedRecipe(SamplingRecipe):
    """How the paper's code samples a forecast (a `SamplingRecipe` with the released values).

    Attributes:
        solver: ODE solver name (``"euler"`` released).
        steps: network evaluations per forecast frame (9 released: Euler on 10 grid points).
        max_context: frames in the sliding context window (4 released).
        reencode: keep the window in feature space and re-encode it before every
            frame (released); ``False`` rolls out purely in latent space.
        context_posterior: how the window is re-encoded: ``"sample"`` (a VAE posterior
            sample, as released) or ``"mean"`` (deterministic).

    Example:
        >>> r = ReleasedRecipe()
        >>> r.solver, r.steps, r.max_context, r.reencode
        ('euler', 9, 4, True)
        >>> ReleasedRecipe.from_dict(r.to_dict()) == r
        True
    """

    solver: str = "euler"
    steps: int | None = 9
    max_context: int | None = 4
    reencode: bool = True
    context_posterior: str = "sample"


def read_recipe(directory: str | os.PathLike) -> ReleasedRecipe | None:
    """The recipe stored in a converted model directory's ``config.json`` (None if absent).

    Example:
        >>> import tempfile, pathlib, json
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "config.json").write_text(json.dumps({"vfmf_recipe": {"steps": 4}}))
        >>> read_recipe(d).steps
        4
    """
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; expected a featureflow model directory")
    data = json.loads(path.read_text())
    spec = data.get(RECIPE_KEY)
    return None if spec is None else ReleasedRecipe.from_dict(spec)


def released_rollout(
    forecaster: nn.Module,
    compressor: nn.Module,
    features: Features,
    horizon: int,
    num_samples: int = 1,
    recipe: SamplingRecipe | None = None,
    solver: str | None = None,
    steps: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Rollout:
    """`featureflow.world.recipe_rollout` with :class:`ReleasedRecipe` as the default recipe.

    The arguments are those of `featureflow.world.recipe_rollout` (``features``: context
    features (b, t, h, w, D); ``solver``/``steps`` override the recipe's); returns a
    `featureflow.forecast.Rollout` with latents (b, s, k, h, w, C).

    Example:
        >>> from featureflow.compressors import FeatureVAE
        >>> from featureflow.forecast import Denoiser, FlowForecaster
        >>> den = Denoiser("vfmf", latent_dim=2, width=12, depth=1, heads=2, grid=(2, 2), max_context=2)
        >>> fc, vae = FlowForecaster(den), FeatureVAE(feature_dim=6, latent_dim=2, dim=8, depth=1)
        >>> r = released_rollout(fc, vae, torch.randn(1, 3, 2, 2, 6), horizon=2, num_samples=2,
        ...                      recipe=ReleasedRecipe(max_context=2, steps=2))
        >>> r.latents.shape, r.nfe
        (torch.Size([1, 2, 2, 2, 2, 2]), 2)
    """
    return recipe_rollout(forecaster, compressor, features, horizon, num_samples, recipe or ReleasedRecipe(), solver,
                          steps, generator, progress)


def forecast_released(
    model: WorldModel,
    frames: Tensor,
    horizon: int = 1,
    num_samples: int = 1,
    recipe: SamplingRecipe | None = None,
    solver: str | None = None,
    steps: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Forecast:
    """``model.forecast(..., recipe=...)`` with the model's recipe, else :class:`ReleasedRecipe`.

    Frames are used at the size given (``resize="none"``), as the released code does.

    Args:
        model: a `featureflow.world.WorldModel` (e.g. from :func:`convert_vfmf`).
        frames: (b, t, 3, H, W) context clip, float in [0, 1] or uint8.
        horizon: forecast frames k.
        num_samples: futures s per clip.
        recipe: defaults to ``model.recipe`` when present, else :class:`ReleasedRecipe`.
        solver: override the recipe's solver.
        steps: override the recipe's network evaluations per frame.
        generator: source of all noise.
        progress: progress bar over the horizon.

    Returns:
        A `featureflow.world.Forecast` (``latents``, ``features``, ``decode(...)``, ``nfe``).

    Example:
        >>> fc = forecast_released(model, frames, horizon=4, num_samples=8)  # doctest: +SKIP
    """
    recipe = recipe or getattr(model, "recipe", None) or ReleasedRecipe()
    return model.forecast(frames, horizon, num_samples, solver=solver, steps=steps, generator=generator,
                          recipe=recipe, progress=progress, resize="none")
