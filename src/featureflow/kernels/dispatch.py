"""Choosing between the fused Triton kernels and their PyTorch references.

Three modes:

* ``"auto"`` (default): a kernel runs only when Triton is importable and every input
  tensor is on a CUDA device, and not while ``torch.compile`` is tracing (the compiler
  fuses the reference itself). Otherwise the PyTorch reference runs.
* ``"torch"``: always the PyTorch reference.
* ``"triton"``: always the Triton kernel. Raises :class:`KernelUnavailableError` if
  Triton is not importable, or if the inputs are CPU tensors and Triton's interpreter is
  off (``TRITON_INTERPRET=1`` runs kernels on CPU tensors, slowly: for tests only).

The mode comes from, in order: the innermost :func:`use` context, the last
:func:`set_mode` call, the environment variable ``FEATUREFLOW_KERNELS``
(``auto``/``torch``/``triton``), else ``"auto"``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from typing import Iterator

import torch
from torch import Tensor

__all__ = [
    "ENV_VAR",
    "MODES",
    "KernelUnavailableError",
    "get_mode",
    "set_mode",
    "use",
    "triton_available",
    "interpreter_enabled",
    "use_triton",
]

#: The environment variable that selects the default mode.
ENV_VAR = "FEATUREFLOW_KERNELS"
#: The accepted modes.
MODES = ("auto", "torch", "triton")
_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_state = threading.local()
_global_mode: list[str | None] = [None]


class KernelUnavailableError(RuntimeError):
    """The Triton path was forced but cannot run here (no Triton, or CPU tensors without the interpreter)."""


def _check_mode(mode: str, source: str) -> str:
    if mode not in MODES:
        raise ValueError(f"{source}: kernel mode must be one of {MODES}, got {mode!r}")
    return mode


def get_mode() -> str:
    """The mode in effect now: ``"auto"``, ``"torch"`` or ``"triton"``.

    Example:
        >>> with use("torch"):
        ...     get_mode()
        'torch'
    """
    stack = getattr(_state, "stack", None)
    if stack:
        return stack[-1]
    if _global_mode[0] is not None:
        return _global_mode[0]
    env = os.environ.get(ENV_VAR, "").strip().lower()
    if env:
        return _check_mode(env, f"environment variable {ENV_VAR}")
    return "auto"


def set_mode(mode: str | None) -> None:
    """Set the process-wide mode; ``None`` goes back to ``FEATUREFLOW_KERNELS`` / ``"auto"``.

    Example:
        >>> set_mode("torch"); get_mode()
        'torch'
        >>> set_mode(None)
    """
    _global_mode[0] = None if mode is None else _check_mode(mode, "set_mode")


@contextlib.contextmanager
def use(mode: str) -> Iterator[str]:
    """Context manager selecting the kernel path inside a ``with`` block (thread-local).

    With ``"triton"``, fails immediately (:class:`KernelUnavailableError`) if Triton is
    not importable.

    Example:
        >>> import torch
        >>> from featureflow.kernels import axpy
        >>> with use("torch"):
        ...     axpy(torch.zeros(2), torch.ones(2), 0.5).sum().item()
        1.0
    """
    _check_mode(mode, "use")
    if mode == "triton" and not triton_available():
        raise KernelUnavailableError(
            "featureflow.kernels.use('triton'): Triton is not importable; install the extra "
            "`pip install featureflow[triton]` or use 'auto'/'torch'"
        )
    stack = getattr(_state, "stack", None)
    if stack is None:
        stack = _state.stack = []
    stack.append(mode)
    try:
        yield mode
    finally:
        stack.pop()


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """True if ``import triton`` works (the result is cached).

    Example:
        >>> isinstance(triton_available(), bool)
        True
    """
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install raising something else
        return False
    return True


def _interpreter_state() -> str:
    """``"on"``, ``"off"``, or ``"late"`` (the variable is set but Triton was imported before it was)."""
    if not triton_available():
        return "off"
    try:
        from triton import knobs

        on = bool(knobs.runtime.interpret)
    except (ImportError, AttributeError):  # Triton < 3.4 reads the variable directly
        on = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")
    if not on:
        return "off"
    # Triton's own library functions (tl.sum, ...) are interpreted only if the variable was
    # set when triton.language was first imported.
    import triton.language as tl

    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover
        return "on"
    return "on" if isinstance(getattr(tl, "sum", None), InterpretedFunction) else "late"


def interpreter_enabled() -> bool:
    """True if Triton's interpreter is on (``TRITON_INTERPRET=1``): kernels run on CPU tensors.

    The variable must be set before Triton is first imported in the process.

    Example:
        >>> isinstance(interpreter_enabled(), bool)
        True
    """
    return _interpreter_state() == "on"


def _compiling() -> bool:
    try:
        return bool(torch.compiler.is_compiling())
    except Exception:  # pragma: no cover - very old torch
        return False


def use_triton(name: str, *tensors: Tensor, supported: str | None = None) -> bool:
    """Decide whether the kernel ``name`` runs on ``tensors`` under the current mode.

    Args:
        name: the public function's name (for error messages).
        tensors: the input tensors.
        supported: ``None`` if the kernel supports these inputs, else the reason it does
            not (e.g. broadcast shapes); ``"auto"`` then falls back to the reference and
            ``"triton"`` raises ``ValueError`` with that reason.

    Returns:
        True to run the Triton kernel, False to run the PyTorch reference.

    Example:
        >>> import torch
        >>> use_triton("axpy", torch.zeros(2))   # CPU tensors: the reference
        False
    """
    mode = get_mode()
    if mode == "torch":
        return False
    if mode == "auto":
        # device check first: on CPU tensors, Triton is never even imported
        if supported is not None or not all(t.is_cuda and t.dtype in _SUPPORTED_DTYPES for t in tensors):
            return False
        return not _compiling() and triton_available()
    # forced triton
    if not triton_available():
        raise KernelUnavailableError(
            f"featureflow.kernels.{name}: the Triton path is forced (mode 'triton', from use()/set_mode() or "
            f"{ENV_VAR}) but Triton is not importable; install `featureflow[triton]` or use mode 'auto'/'torch'"
        )
    if supported is not None:
        raise ValueError(f"featureflow.kernels.{name}: the Triton kernel does not support these inputs: {supported}")
    bad = [t.dtype for t in tensors if t.dtype not in _SUPPORTED_DTYPES]
    if bad:
        raise ValueError(f"featureflow.kernels.{name}: Triton kernels take float32/float16/bfloat16 tensors, got {bad[0]}")
    devices = {t.device.type for t in tensors}
    if devices == {"cuda"}:
        return True
    if devices == {"cpu"}:
        state = _interpreter_state()
        if state == "on":
            return True
        if state == "late":
            raise KernelUnavailableError(
                f"featureflow.kernels.{name}: TRITON_INTERPRET=1 is set, but Triton was imported before it was set, "
                "so its interpreter is inactive in this process; set the variable before the first `import triton`"
            )
    raise KernelUnavailableError(
        f"featureflow.kernels.{name}: the Triton path is forced but the inputs are on {sorted(devices)}; Triton "
        "kernels need CUDA tensors (or, for testing on CPU tensors, TRITON_INTERPRET=1 set before Triton is "
        "first imported). Use mode 'auto' to fall back to PyTorch."
    )
