"""The released VFMF sampling recipe and a rollout that follows it step by step.

The released rollout (``sample_autoregressive`` in gboduljak/vfmf) keeps the context in
*feature* space: before every forecast frame it re-encodes the whole window of features
(up to 4 frames) with the VAE, drawing a posterior **sample** (its ``encode_features``
uses ``deterministic=False``), integrates the flow with Euler on ``linspace(0, 1, 10)``
(9 network evaluations), decodes the new latent back to features and appends those
features to the window. :func:`released_rollout` does exactly that with featureflow
components; :class:`ReleasedRecipe` records the choices in a converted model's
``config.json`` (key ``"vfmf_recipe"``).
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from featureflow.typing import Features, check_finite, typechecked

__all__ = ["ReleasedRecipe", "RECIPE_KEY", "read_recipe", "released_rollout", "forecast_released"]

#: Key of the recipe in a converted model's ``config.json``.
RECIPE_KEY = "vfmf_recipe"
_POSTERIOR = ("sample", "mean")


@dataclass(frozen=True)
class ReleasedRecipe:
    """How the paper's code samples a forecast.

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
    steps: int = 9
    max_context: int = 4
    reencode: bool = True
    context_posterior: str = "sample"

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"ReleasedRecipe.steps must be a positive int, got {self.steps!r}")
        if not isinstance(self.max_context, int) or self.max_context < 1:
            raise ValueError(f"ReleasedRecipe.max_context must be a positive int, got {self.max_context!r}")
        if self.context_posterior not in _POSTERIOR:
            raise ValueError(
                f"ReleasedRecipe.context_posterior must be one of {_POSTERIOR}, got {self.context_posterior!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ReleasedRecipe":
        """Inverse of :meth:`to_dict` (unknown keys are an error)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ReleasedRecipe field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


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


def _encode(compressor: nn.Module, features: Tensor, posterior: str, generator: torch.Generator | None) -> Tensor:
    """Features -> standardised latents, with a posterior sample when asked and supported."""
    if posterior == "sample":
        params = inspect.signature(compressor.encode).parameters
        if "sample" in params:
            return compressor.encode(features, sample=True, generator=generator)
    return compressor.encode(features)


@typechecked
@torch.no_grad()
def released_rollout(
    forecaster: nn.Module,
    compressor: nn.Module,
    features: Features,
    horizon: int,
    num_samples: int = 1,
    recipe: ReleasedRecipe | None = None,
    solver: str | None = None,
    steps: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Any:
    """Roll out ``horizon`` frames as the released code does, from context *features*.

    For each frame: the feature window (last ``recipe.max_context`` frames) is encoded
    to latents (a posterior sample by default), one frame is sampled with the recipe's
    solver, decoded to features and appended to the window. Each of the
    ``num_samples`` futures keeps its own window. With ``recipe.reencode=False`` the
    context is encoded once and the rollout stays in latent space
    (``forecaster.rollout``).

    Args:
        forecaster: a flow forecaster (``rollout(context, horizon, num_samples, solver,
            steps, generator)``), e.g. :class:`featureflow.forecast.FlowForecaster`.
        compressor: features ⇄ latents (``encode``, ``decode``), e.g. ``FeatureVAE``.
        features: (b, t, h, w, D) context features in the encoder's scale.
        horizon: forecast frames k.
        num_samples: futures s per clip.
        recipe: the sampling recipe (default :class:`ReleasedRecipe`).
        solver: override the recipe's solver (e.g. ``"heun"``).
        steps: override the recipe's network evaluations per frame.
        generator: source of all noise (flow noise and posterior samples).
        progress: progress bar over the horizon.

    Returns:
        :class:`featureflow.forecast.Rollout` with latents (b, s, k, h, w, C).

    Example:
        >>> import torch
        >>> from featureflow.compressors import FeatureVAE
        >>> from featureflow.forecast import Denoiser, FlowForecaster
        >>> den = Denoiser("vfmf", latent_dim=2, width=12, depth=1, heads=2, grid=(2, 2), max_context=2)
        >>> fc, vae = FlowForecaster(den), FeatureVAE(feature_dim=6, latent_dim=2, dim=8, depth=1)
        >>> r = released_rollout(fc, vae, torch.randn(1, 3, 2, 2, 6), horizon=2, num_samples=2,
        ...                      recipe=ReleasedRecipe(max_context=2, steps=2))
        >>> r.latents.shape, r.nfe
        (torch.Size([1, 2, 2, 2, 2, 2]), 2)
    """
    from featureflow.forecast import Rollout
    from featureflow.utils import progress_bar

    recipe = recipe or ReleasedRecipe()
    if not isinstance(horizon, int) or horizon < 1 or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"horizon and num_samples must be positive ints, got {horizon!r} and {num_samples!r}")
    solver = solver or recipe.solver
    if steps is None and solver == recipe.solver:
        steps = recipe.steps
    check_finite("features", features)
    window = features[:, -recipe.max_context :]
    if not recipe.reencode:
        context = _encode(compressor, window, recipe.context_posterior, generator)
        return forecaster.rollout(context, horizon, num_samples, solver=solver, steps=steps, generator=generator,
                                  progress=progress)
    b = window.shape[0]
    window = window.repeat_interleave(num_samples, dim=0)  # (b*s, t, h, w, D), one window per future
    frames: list[Tensor] = []
    nfes: list[int] = []
    for _ in progress_bar(range(horizon), progress=progress, desc="released rollout", total=horizon):
        context = _encode(compressor, window, recipe.context_posterior, generator)
        step = forecaster.rollout(context, 1, 1, solver=solver, steps=steps, generator=generator)
        latent = step.latents[:, 0, 0]
        frames.append(latent)
        nfes.append(int(step.nfe))
        new = compressor.decode(latent)
        window = torch.cat([window, new[:, None]], dim=1)[:, -recipe.max_context :]
    latents = torch.stack(frames, dim=1)  # (b*s, k, h, w, C)
    return Rollout(latents.reshape(b, num_samples, *latents.shape[1:]), tuple(nfes))


@torch.no_grad()
def forecast_released(
    model: nn.Module,
    frames: Tensor,
    horizon: int = 1,
    num_samples: int = 1,
    recipe: ReleasedRecipe | None = None,
    solver: str | None = None,
    steps: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Any:
    """``WorldModel.forecast`` with the released recipe (features re-encoded per frame).

    Args:
        model: a :class:`featureflow.world.WorldModel` (e.g. from :func:`convert_vfmf`).
        frames: (b, t, 3, H, W) context clip, float in [0, 1] or uint8.
        horizon: forecast frames k.
        num_samples: futures s per clip.
        solver: override the recipe's solver.
        steps: override the recipe's network evaluations per frame.
        generator: source of all noise.
        progress: progress bar over the horizon.
        recipe: defaults to ``model.vfmf_recipe`` when present, else :class:`ReleasedRecipe`.

    Returns:
        A :class:`featureflow.world.Forecast` (``latents``, ``features``, ``decode(...)``, ``nfe``).
    """
    from featureflow.encoders import encode_frames
    from featureflow.world import Forecast, prepare_frames

    recipe = recipe or getattr(model, "vfmf_recipe", None) or ReleasedRecipe()
    frames = prepare_frames(frames)
    H, W = frames.shape[-2:]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    feats = encode_frames(model.encoder, frames[:, -recipe.max_context :].to(device))
    roll = released_rollout(model.forecaster, model.compressor, feats, horizon, num_samples, recipe, solver, steps,
                            generator, progress)
    return Forecast(latents=roll.latents.float(), nfe=int(roll.nfe), image_size=(int(H), int(W)), model=model)
