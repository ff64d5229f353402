"""Component configs: every saveable module records the JSON-able arguments that rebuild it."""

from __future__ import annotations

import json
from typing import Any, Callable, TypeVar

__all__ = ["COMPONENTS", "Configurable", "register_component", "build_component"]

#: name -> class, for every component that can be saved into a WorldModel directory.
COMPONENTS: dict[str, type] = {}

T = TypeVar("T", bound=type)


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


def build_component(spec: dict[str, Any]) -> Any:
    """Rebuild a component from ``{"type": name, "config": {...}}``."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"expected a component spec {{'type': ..., 'config': {{...}}}}, got {spec!r:.200}")
    name = spec["type"]
    if name not in COMPONENTS:
        raise ValueError(
            f"unknown component type {name!r}; known: {sorted(COMPONENTS)}. "
            "Was the model saved by a newer featureflow?"
        )
    cls: Callable[..., Any] = COMPONENTS[name]
    return cls.from_config(spec.get("config", {}))  # type: ignore[attr-defined]
