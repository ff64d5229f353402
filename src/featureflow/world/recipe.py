"""`SamplingRecipe`: how `WorldModel.forecast` samples, as data, and the rollout that follows it.

A recipe names the solver and its network evaluations per frame, the context window,
and whether the context is kept in *feature* space and re-encoded by the compressor
before every forecast frame (``reencode=True``, the paper's released rollout) or
encoded once with the rollout staying in latent space. A model that carries a recipe
(:attr:`WorldModel.recipe`, saved in ``config.json``) follows it whenever
``forecast`` is called without a solver. The paper's released recipe is
`featureflow.compat.vfmf.ReleasedRecipe`, one set of values of this class.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from featureflow.forecast import Rollout
from featureflow.forecast.rollout import check_rollout_size
from featureflow.solvers import DEFAULT_SOLVER
from featureflow.typing import Features, check_finite, typechecked
from featureflow.utils import progress_bar

__all__ = ["SamplingRecipe", "recipe_rollout", "POSTERIORS", "RECIPE_KEY"]

#: Key of a model's recipe in its ``config.json`` (named when only converted paper
#: checkpoints carried one; the saved format keeps it).
RECIPE_KEY = "vfmf_recipe"

#: How a recipe encodes its context window: a posterior sample or the posterior mean.
POSTERIORS = ("sample", "mean")


@dataclass(frozen=True, eq=False)
class SamplingRecipe:
    """How a forecast is sampled.

    Attributes:
        solver: ODE solver name (default `featureflow.solvers.DEFAULT_SOLVER`).
        steps: network evaluations per forecast frame (None: the solver's default,
            `featureflow.solvers.DEFAULT_STEPS` for fixed-step solvers).
        max_context: frames in the sliding context window (None: the forecaster's).
        reencode: keep the window in feature space and re-encode it with the compressor
            before every frame; ``False`` encodes the context once and rolls out in
            latent space.
        context_posterior: how the window is encoded: ``"sample"`` (a posterior sample,
            for compressors whose ``encode`` takes ``sample=``) or ``"mean"``.

    Recipes compare equal when their fields are equal, whatever their class, so a
    recipe read back from ``config.json`` equals the one that was saved.

    Example:
        >>> r = SamplingRecipe(steps=4)
        >>> r.solver, r.steps, r.reencode
        ('euler', 4, False)
        >>> SamplingRecipe.from_dict(r.to_dict()) == r
        True
    """

    solver: str = DEFAULT_SOLVER
    steps: int | None = None
    max_context: int | None = None
    reencode: bool = False
    context_posterior: str = "mean"

    def __post_init__(self) -> None:
        if not isinstance(self.solver, str) or not self.solver:
            raise ValueError(f"{type(self).__name__}.solver must be a solver name, got {self.solver!r}")
        for name in ("steps", "max_context"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{type(self).__name__}.{name} must be a positive int (or None), got {value!r}")
        if self.context_posterior not in POSTERIORS:
            raise ValueError(
                f"{type(self).__name__}.context_posterior must be one of {POSTERIORS}, got {self.context_posterior!r}"
            )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SamplingRecipe):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(self.to_dict().items()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (every field)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SamplingRecipe":
        """Inverse of :meth:`to_dict`; missing fields take this class's defaults, unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def solver_and_steps(self, solver: str | None, steps: int | None) -> tuple[str, int | None]:
        """The solver and step count a forecast uses: the caller's, else the recipe's.

        The recipe's ``steps`` belong to its solver: a caller who names another solver
        without ``steps`` gets that solver's default.

        Example:
            >>> r = SamplingRecipe(steps=9)
            >>> r.solver_and_steps(None, None), r.solver_and_steps("heun", None), r.solver_and_steps(None, 3)
            (('euler', 9), ('heun', None), ('euler', 3))
        """
        solver = solver or self.solver
        if steps is None and solver == self.solver:
            steps = self.steps
        return solver, steps


def _encode(compressor: nn.Module, features: Tensor, posterior: str, generator: torch.Generator | None) -> Tensor:
    """Features → latents, with a posterior sample when asked for and the compressor supports it."""
    if posterior == "sample" and "sample" in inspect.signature(compressor.encode).parameters:
        return compressor.encode(features, sample=True, generator=generator)
    return compressor.encode(features)


@torch.no_grad()
@typechecked
def recipe_rollout(
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
    """Roll out ``horizon`` frames from context *features* as ``recipe`` says.

    With ``recipe.reencode``, for each frame: the feature window (the last
    ``max_context`` frames) is encoded to latents, one frame is sampled with the
    recipe's solver, decoded to features and appended to the window; each of the
    ``num_samples`` futures keeps its own window. Otherwise the context is encoded once
    and the forecaster's own rollout runs in latent space.

    Args:
        forecaster: a forecaster with ``rollout(context, horizon, num_samples, solver=,
            steps=, generator=, progress=)`` and ``max_context``.
        compressor: features ⇄ latents (``encode``, ``decode``).
        features: (b, t, h, w, D) context features in the encoder's scale.
        horizon: forecast frames k.
        num_samples: futures s per clip.
        recipe: the sampling recipe (default :class:`SamplingRecipe`).
        solver: override the recipe's solver (e.g. ``"heun"``).
        steps: override the recipe's network evaluations per frame.
        generator: source of all noise (flow noise and posterior samples).
        progress: progress bar over the horizon.

    Returns:
        `featureflow.forecast.Rollout` with latents (b, s, k, h, w, C).

    Example:
        >>> from featureflow.compressors import FeatureVAE
        >>> from featureflow.forecast import Denoiser, FlowForecaster
        >>> fc = FlowForecaster(Denoiser(latent_dim=2, width=16, depth=1, heads=2, max_context=2))
        >>> vae = FeatureVAE(feature_dim=6, latent_dim=2, dim=8, depth=1)
        >>> r = recipe_rollout(fc, vae, torch.randn(1, 3, 2, 2, 6), horizon=2, num_samples=2,
        ...                    recipe=SamplingRecipe(steps=2, reencode=True))
        >>> r.latents.shape, r.nfe
        (torch.Size([1, 2, 2, 2, 2, 2]), 2)
    """
    recipe = recipe or SamplingRecipe()
    check_rollout_size(horizon, num_samples)
    solver, steps = recipe.solver_and_steps(solver, steps)
    check_finite("features", features)
    max_context = recipe.max_context or int(forecaster.max_context)
    window = features[:, -max_context:]
    if not recipe.reencode:
        context = _encode(compressor, window, recipe.context_posterior, generator)
        return forecaster.rollout(context, horizon, num_samples, solver=solver, steps=steps, generator=generator,
                                  progress=progress)
    b = window.shape[0]
    window = window.repeat_interleave(num_samples, dim=0)  # (b*s, t, h, w, D), one window per future
    frames: list[Tensor] = []
    nfes: list[int] = []
    for _ in progress_bar(range(horizon), progress=progress, desc="re-encoding rollout", total=horizon):
        context = _encode(compressor, window, recipe.context_posterior, generator)
        step = forecaster.rollout(context, 1, 1, solver=solver, steps=steps, generator=generator)
        latent = step.latents[:, 0, 0]
        frames.append(latent)
        nfes.append(int(step.nfe))
        window = torch.cat([window, compressor.decode(latent)[:, None]], dim=1)[:, -max_context:]
    latents = torch.stack(frames, dim=1)  # (b*s, k, h, w, C)
    return Rollout(latents.reshape(b, num_samples, *latents.shape[1:]), tuple(nfes))
