"""Component configs: every saveable module records the JSON-able arguments that rebuild it."""

from __future__ import annotations

import functools
import importlib
import inspect
import json
from typing import Any, Callable, TypeVar

__all__ = [
    "COMPONENTS",
    "BUILTIN_COMPONENTS",
    "COMPONENT_PACKAGES",
    "Configurable",
    "register_component",
    "find_component",
    "build_component",
    "record_config",
    "int_list",
]

#: name -> class, for every component registered so far (its module has been imported).
COMPONENTS: dict[str, type] = {}

#: type name -> the module that defines (and registers) it, for the components featureflow
#: ships. A saved model names its parts by type only; ``find_component`` imports the module
#: the first time a type is asked for, so nothing has to be imported in advance (``import
#: featureflow`` is lazy). ``tests/utils/test_component_table.py`` keeps this table complete.
BUILTIN_COMPONENTS: dict[str, str] = {
    # encoders
    "DINOv2Encoder": "featureflow.encoders.dinov2",
    "ModuleEncoder": "featureflow.encoders.module",
    "PixelPatchEncoder": "featureflow.encoders.pixels",
    "ToyEncoder": "featureflow.encoders.toy",
    # compressors
    "FeatureVAE": "featureflow.compressors.vae",
    "Identity": "featureflow.compressors.identity",
    "PCA": "featureflow.compressors.pca",
    # forecasters and the denoiser
    "CopyLastForecaster": "featureflow.forecast.baselines",
    "Denoiser": "featureflow.forecast.denoiser",
    "FlowForecaster": "featureflow.forecast.flow",
    "MeanFlowForecaster": "featureflow.forecast.meanflow",
    "RegressionForecaster": "featureflow.forecast.regression",
    # probe heads
    "ConvDecoderHead": "featureflow.probes.conv_decoder",
    "DPTHead": "featureflow.probes.dpt",
    "DepthHead": "featureflow.probes.depth",
    "LinearHead": "featureflow.probes.linear",
    "NormalsHead": "featureflow.probes.normals",
    "PixelPatchRGBHead": "featureflow.probes.rgb",
    "RGBHead": "featureflow.probes.rgb",
    "SegmentationHead": "featureflow.probes.segmentation",
}

#: The subpackages that hold saveable components; imported one by one, as a last resort,
#: when a type is neither registered nor in ``BUILTIN_COMPONENTS``.
COMPONENT_PACKAGES: tuple[str, ...] = (
    "featureflow.encoders",
    "featureflow.compressors",
    "featureflow.forecast",
    "featureflow.probes",
)

T = TypeVar("T", bound=type)
Init = TypeVar("Init", bound=Callable[..., None])


def register_component(cls: T) -> T:
    """Class decorator: make ``cls`` loadable by name from a saved config.

    Example:
        >>> @register_component
        ... class Foo(Configurable):
        ...     def __init__(self, n: int = 1):
        ...         self.config = {"n": n}
        >>> build_component({"type": "Foo", "config": {"n": 3}}).config
        {'n': 3}
    """
    name = cls.__name__
    if name in COMPONENTS and COMPONENTS[name] is not cls:
        raise ValueError(f"component name {name!r} registered twice")
    COMPONENTS[name] = cls
    return cls


class Configurable:
    """Mixin for components: ``self.config`` is a JSON-serialisable dict of constructor args.

    ``from_config(config)`` rebuilds an (untrained) instance; weights come from a state dict.
    """

    config: dict[str, Any]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        return cls(**config)

    def describe(self) -> dict[str, Any]:
        """``{"type": class name, "config": config}``, checked to be JSON-serialisable."""
        try:
            json.dumps(self.config)
        except TypeError as err:
            raise TypeError(f"{type(self).__name__}.config is not JSON-serialisable: {err}") from None
        return {"type": type(self).__name__, "config": dict(self.config)}


def find_component(name: str) -> type:
    """The registered class called ``name``, importing the module that defines it if need be.

    Looked up in order: the classes registered so far (``COMPONENTS``); the module that
    ``BUILTIN_COMPONENTS`` names for it; then every subpackage in ``COMPONENT_PACKAGES``.
    A component defined outside featureflow is found once its module has been imported.

    Args:
        name: A component type, as saved under ``"type"`` in a config.

    Returns:
        The class, registered with ``@register_component``.

    Raises:
        ValueError: No registered component has that name, even after the imports.

    Example:
        >>> find_component("PCA").__module__
        'featureflow.compressors.pca'
    """
    if name in COMPONENTS:
        return COMPONENTS[name]
    module = BUILTIN_COMPONENTS.get(name)
    if module is not None:
        importlib.import_module(module)
    for package in COMPONENT_PACKAGES:
        if name in COMPONENTS:
            break
        importlib.import_module(package)
    if name not in COMPONENTS:
        raise ValueError(
            f"unknown component type {name!r}; expected one of {sorted(COMPONENTS)} "
            "(a component defined outside featureflow must be imported before loading). "
            "Was the model saved by a newer featureflow?"
        )
    return COMPONENTS[name]


def build_component(spec: dict[str, Any]) -> Any:
    """Rebuild a component from ``{"type": name, "config": {...}}``.

    The class is found by ``find_component``, so its module need not be imported first.

    Args:
        spec: ``{"type": class name, "config": constructor arguments}`` as written by
            ``Configurable.describe``.

    Returns:
        A new, untrained instance; its weights come from a state dict.

    Raises:
        ValueError: ``spec`` is not a component spec, or its type is unknown.

    Example:
        >>> build_component({"type": "Identity", "config": {"feature_dim": 4}}).latent_dim
        4
    """
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"expected a component spec {{'type': ..., 'config': {{...}}}}, got {spec!r:.200}")
    cls: Callable[..., Any] = find_component(spec["type"])
    return cls.from_config(spec.get("config", {}))  # type: ignore[attr-defined]


def int_list(value: Any) -> list[int] | None:
    """A JSON form of an optional sequence of ints (``None`` stays ``None``).

    Example:
        >>> int_list((2, 3)), int_list(None)
        ([2, 3], None)
    """
    return None if value is None else [int(v) for v in value]


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def record_config(init: Init | None = None, *, attrs: tuple[str, ...] = (), **convert: Callable[[Any], Any]) -> Any:
    """Decorator of a component's ``__init__``: record its arguments in ``self.config`` once.

    Before the body runs, every argument of the call (defaults filled in, ``self`` left
    out) is stored in ``self.config`` (tuples as lists), so the body and subclasses can
    read it and add keys that are only recorded when switched on. ``convert`` maps an
    argument name to a function that gives its recorded form (e.g. ``float`` so that
    ``4`` and ``4.0`` save alike); ``attrs`` names class attributes recorded too (e.g.
    the architecture a factory dispatched on). ``**kwargs`` arguments are recorded flat.

    Example:
        >>> class Head(Configurable):
        ...     @record_config(scale=float)
        ...     def __init__(self, dim: int, scale: float = 1, sizes: tuple[int, ...] = (1, 2)):
        ...         self.dim = dim
        >>> Head(3).config
        {'dim': 3, 'scale': 1.0, 'sizes': [1, 2]}
        >>> Head.from_config(Head(3, 2).config).config == Head(3, 2).config
        True
    """

    def wrap(fn: Init) -> Init:
        signature = inspect.signature(fn)
        unknown = sorted(set(convert) - set(signature.parameters))
        if unknown:
            raise TypeError(f"record_config: {fn.__qualname__} has no argument(s) {unknown} to convert")

        @functools.wraps(fn)
        def recorded(self: Any, *args: Any, **kwargs: Any) -> None:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            config: dict[str, Any] = {name: getattr(self, name) for name in attrs}
            for name, value in list(bound.arguments.items())[1:]:
                kind = signature.parameters[name].kind
                if kind is inspect.Parameter.VAR_KEYWORD:
                    config.update({k: _jsonable(v) for k, v in value.items()})
                elif kind is not inspect.Parameter.VAR_POSITIONAL:
                    config[name] = convert[name](value) if name in convert else _jsonable(value)
            self.config = config
            fn(self, *args, **kwargs)

        return recorded  # type: ignore[return-value]

    return wrap(init) if init is not None else wrap
