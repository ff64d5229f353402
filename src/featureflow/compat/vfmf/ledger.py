"""`KeyLedger`: strict accounting of a released state dict's keys (every key used exactly once)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor

__all__ = ["KeyLedger", "LeftoverKeysError", "format_keys"]


class LeftoverKeysError(ValueError):
    """A released file holds keys that the conversion did not use, or lacks keys it needs."""


def format_keys(keys: Iterable[str], limit: int = 8) -> str:
    """``'a', 'b', ... (+N more)`` for error messages.

    Example:
        >>> format_keys(["x", "y", "z"], limit=2)
        "'x', 'y' (+1 more)"
    """
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


class KeyLedger:
    """A read-only view of a state dict that records which keys were taken.

    Conversion code takes keys (one by one or by prefix); :meth:`check_consumed` then
    fails if any key was never taken, so nothing in a released file is silently dropped.

    Args:
        state_dict: the released tensors.
        source: a description for error messages (e.g. the file name and entry).

    Example:
        >>> import torch
        >>> led = KeyLedger({"a.x": torch.zeros(1), "a.y": torch.ones(1), "b": torch.ones(2)}, "demo")
        >>> sorted(led.take_prefix("a."))
        ['x', 'y']
        >>> led.leftover()
        ['b']
        >>> _ = led.take("b"); led.check_consumed()
    """

    def __init__(self, state_dict: Mapping[str, Tensor], source: str) -> None:
        self._state = dict(state_dict)
        self._taken: set[str] = set()
        self.source = source

    def __contains__(self, key: str) -> bool:
        return key in self._state

    def keys(self) -> list[str]:
        """All keys, taken or not."""
        return list(self._state)

    def has_prefix(self, prefix: str) -> bool:
        """Whether any key starts with ``prefix``."""
        return any(k.startswith(prefix) for k in self._state)

    def take(self, key: str) -> Tensor:
        """Return ``state[key]`` and mark it used; a clear error if it is missing."""
        if key not in self._state:
            raise LeftoverKeysError(f"{self.source}: required key {key!r} is missing")
        self._taken.add(key)
        return self._state[key]

    def take_prefix(self, prefix: str, *, required: bool = True) -> dict[str, Tensor]:
        """All keys starting with ``prefix``, with the prefix removed, marked used."""
        out = {k[len(prefix):]: v for k, v in self._state.items() if k.startswith(prefix)}
        if required and not out:
            raise LeftoverKeysError(f"{self.source}: no keys start with {prefix!r}")
        self._taken.update(prefix + k for k in out)
        return out

    def leftover(self) -> list[str]:
        """Keys never taken, sorted."""
        return sorted(set(self._state) - self._taken)

    def check_consumed(self) -> None:
        """Raise :class:`LeftoverKeysError` listing every key that was not used."""
        left = self.leftover()
        if left:
            raise LeftoverKeysError(
                f"{self.source}: {len(left)} released key(s) were not used by the conversion: "
                f"{format_keys(left)}. The file does not match the released VFMF layout "
                "(a different model version?); nothing was written."
            )
