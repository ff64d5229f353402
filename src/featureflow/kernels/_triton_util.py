"""Lazy ``triton.jit``: kernels are compiled (or interpreted) for the mode in effect at call time.

``triton.jit`` decides at decoration time whether a kernel is interpreted
(``TRITON_INTERPRET=1``). Decorating on first use, once per mode, lets a test switch the
interpreter on after ``featureflow`` was imported. This module imports Triton; it is
only imported once the dispatcher has chosen the Triton path.
"""

from __future__ import annotations

from typing import Any, Callable

try:
    import triton
except ImportError:  # pragma: no cover - the dispatcher never selects this module without Triton
    triton = None

from featureflow.kernels.dispatch import interpreter_enabled

__all__ = ["jit", "block_rows"]

_CACHE: dict[tuple[Callable[..., Any], bool], Any] = {}


def jit(fn: Callable[..., Any]) -> Any:
    """``triton.jit(fn)`` for the current interpreter setting (cached)."""
    key = (fn, interpreter_enabled())
    kernel = _CACHE.get(key)
    if kernel is None:
        kernel = _CACHE[key] = triton.jit(fn)
    return kernel


def block_rows(width: int) -> tuple[int, int]:
    """(rows per program, padded row width) for row-wise kernels: about 4096 elements a program."""
    block_d = triton.next_power_of_2(max(int(width), 1))
    return max(1, min(64, 4096 // block_d)), block_d
