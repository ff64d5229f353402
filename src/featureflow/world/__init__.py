"""The composed world model: `WorldModel`, its `Forecast`, and saving/loading."""

from featureflow.world.checks import ResizeWarning
from featureflow.world.forecast_result import MODALITIES, Forecast
from featureflow.world.model import WorldModel, prepare_frames
from featureflow.world.recipe import SamplingRecipe, recipe_rollout
from featureflow.world.serialization import bundled_models, load_world_model, save_world_model

__all__ = [
    "WorldModel",
    "Forecast",
    "MODALITIES",
    "ResizeWarning",
    "SamplingRecipe",
    "recipe_rollout",
    "prepare_frames",
    "bundled_models",
    "load_world_model",
    "save_world_model",
]
