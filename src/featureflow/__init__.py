"""featureflow: stochastic world modelling in vision-foundation-model feature space.

Frames are encoded by a frozen VFM (DINOv2) into patch features, compressed into a
compact latent, forecast by a flow-matching transformer and decoded by probe heads into
segmentation, depth, normals and RGB. See DESIGN.md and https://arxiv.org/abs/2512.11225.

``import featureflow`` is cheap: the subpackages and the re-exported names are imported
on first use (PEP 562), and a saved model finds its components by type name
(``featureflow.utils.find_component``), so nothing has to be imported in advance.

Example:
    >>> import featureflow as ff
    >>> world = ff.data.ToyWorld(resolution=32)
    >>> clip = world.clip(seed=0, length=2)
    >>> tuple(clip.rgb.shape)
    (2, 3, 32, 32)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from featureflow.version import FORMAT_VERSION, __version__

if TYPE_CHECKING:  # what static type checkers and IDEs see; at run time these load lazily
    from featureflow import (
        compat,
        compressors,
        data,
        encoders,
        forecast,
        kernels,
        metrics,
        probes,
        rl,
        solvers,
        training,
        typing,
        utils,
        viz,
        world,
    )
    from featureflow.typing import ShapeError
    from featureflow.world import Forecast, SamplingRecipe, WorldModel

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

#: re-exported name -> the module it comes from, imported on first access.
_LAZY_NAMES: dict[str, str] = {
    "ShapeError": "featureflow.typing",
    "WorldModel": "featureflow.world",
    "Forecast": "featureflow.world",
    "SamplingRecipe": "featureflow.world",
}

#: subpackages reachable as ``featureflow.<name>`` without importing them first (``rl``
#: too, though it stays out of ``__all__``: it needs the optional ``gym`` extra).
_LAZY_SUBPACKAGES: frozenset[str] = frozenset(
    name for name in __all__ if name not in _LAZY_NAMES and not name.isupper() and not name.startswith("__")
) | {"rl"}


def __getattr__(name: str) -> Any:
    """Import a subpackage or a re-exported name on first access (PEP 562).

    Args:
        name: The attribute asked for, e.g. ``"WorldModel"`` or ``"forecast"``.

    Returns:
        The subpackage or the object; it is cached in the module's namespace.

    Raises:
        AttributeError: ``name`` is neither a subpackage nor a re-exported name.

    Example:
        >>> import featureflow
        >>> featureflow.SamplingRecipe.__name__
        'SamplingRecipe'
    """
    if name in _LAZY_SUBPACKAGES:
        value: Any = importlib.import_module(f"{__name__}.{name}")
    elif name in _LAZY_NAMES:
        value = getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    else:
        raise AttributeError(
            f"module {__name__!r} has no attribute {name!r}; expected one of {sorted(__all__)} or 'rl'"
        )
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazily imported ones included (as before, when all were eager).

    Example:
        >>> import featureflow
        >>> {"WorldModel", "forecast"} <= set(dir(featureflow))
        True
    """
    return sorted(set(globals()) | set(__all__))
