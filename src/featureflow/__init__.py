"""featureflow: stochastic world modelling in vision-foundation-model feature space.

Frames are encoded by a frozen VFM (DINOv2) into patch features, compressed into a
compact latent, forecast by a flow-matching transformer and decoded by probe heads into
segmentation, depth, normals and RGB. See DESIGN.md and https://arxiv.org/abs/2512.11225.

Example:
    >>> import featureflow as ff
    >>> world = ff.data.ToyWorld(resolution=32)
    >>> clip = world.clip(seed=0, length=2)
    >>> tuple(clip.rgb.shape)
    (2, 3, 32, 32)
"""

from featureflow import (
    compat,
    compressors,
    data,
    encoders,
    forecast,
    kernels,
    metrics,
    probes,
    solvers,
    training,
    typing,
    utils,
    viz,
    world,
)
from featureflow.typing import ShapeError
from featureflow.world import Forecast, SamplingRecipe, WorldModel
from featureflow.version import FORMAT_VERSION, __version__

__all__ = [
    "__version__",
    "FORMAT_VERSION",
    "ShapeError",
    "WorldModel",
    "Forecast",
    "SamplingRecipe",
    "compat",
    "compressors",
    "data",
    "encoders",
    "forecast",
    "kernels",
    "metrics",
    "probes",
    "solvers",
    "training",
    "typing",
    "utils",
    "viz",
    "world",
]
