"""The other fast paths: ``torch.compile`` of the denoiser step and bf16 autocast for sampling.

Both are off by default. ``torch.compile`` is switched on per call site with
:func:`compile_step` (or for every call site by ``FEATUREFLOW_COMPILE=1``);
:func:`graph_breaks` counts what Dynamo could not capture. :func:`sampling_autocast`
runs the network in bfloat16 on CPU or GPU (the solver state stays float32).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

import torch

__all__ = ["COMPILE_ENV_VAR", "compile_step", "CompileReport", "graph_breaks", "sampling_autocast"]

#: Environment variable that turns :func:`compile_step` on when ``enabled=None``.
COMPILE_ENV_VAR = "FEATUREFLOW_COMPILE"

F = TypeVar("F", bound=Callable[..., Any])


def _env_enabled() -> bool:
    value = os.environ.get(COMPILE_ENV_VAR, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"environment variable {COMPILE_ENV_VAR} must be 0/1 (or true/false), got {value!r}")


def compile_step(
    fn: F,
    *,
    enabled: bool | None = None,
    mode: str | None = None,
    fullgraph: bool = False,
    dynamic: bool | None = None,
    backend: str = "inductor",
) -> F:
    """``torch.compile(fn)`` if enabled, else ``fn`` unchanged (the default).

    Args:
        fn: a function or module, e.g. ``denoiser.step`` or ``denoiser.trunk.step``.
        enabled: ``True``/``False``; ``None`` reads ``FEATUREFLOW_COMPILE`` (off if unset).
        mode: passed to :func:`torch.compile` (e.g. ``"max-autotune"``).
        fullgraph: passed to :func:`torch.compile` (``True``: fail on any graph break).
        dynamic: passed to :func:`torch.compile`.
        backend: passed to :func:`torch.compile`.

    Returns:
        The compiled callable (compilation itself happens on the first call), or ``fn``.

    Example:
        >>> import torch
        >>> f = lambda x: x * 2
        >>> compile_step(f) is f   # off by default
        True
    """
    on = _env_enabled() if enabled is None else bool(enabled)
    if not on:
        return fn
    return torch.compile(fn, mode=mode, fullgraph=fullgraph, dynamic=dynamic, backend=backend)  # type: ignore[return-value]


@dataclass
class CompileReport:
    """What :func:`graph_breaks` found: graphs captured, breaks between them and why.

    Example:
        >>> CompileReport(1, 0).graph_break_count
        0
    """

    graph_count: int
    graph_break_count: int
    break_reasons: list[str] = field(default_factory=list)


def graph_breaks(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> CompileReport:
    """Trace ``fn(*args, **kwargs)`` with ``torch._dynamo.explain`` and count graph breaks.

    Example:
        >>> import torch
        >>> graph_breaks(lambda x: torch.sin(x) + 1, torch.zeros(3)).graph_break_count
        0
    """
    import torch._dynamo

    torch._dynamo.reset()
    out = torch._dynamo.explain(fn)(*args, **kwargs)
    reasons = []
    for r in out.break_reasons:
        where = ""
        if getattr(r, "user_stack", None):
            frame = r.user_stack[-1]
            where = f" at {os.path.basename(frame.filename)}:{frame.lineno}"
        reasons.append(f"{r.reason.strip().splitlines()[0]}{where}")
    return CompileReport(int(out.graph_count), int(out.graph_break_count), reasons)


@contextlib.contextmanager
def sampling_autocast(device_type: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16, enabled: bool = True) -> Iterator[None]:
    """Autocast for sampling: matmuls/attention in ``dtype`` (bf16), the rest as autocast decides.

    Wrap the network call (``denoiser.step``), not the solver: the solver's state and
    updates stay float32, which keeps the bf16 error from accumulating over steps.

    Example:
        >>> import torch
        >>> with sampling_autocast("cpu"):
        ...     torch.nn.Linear(4, 4)(torch.zeros(1, 4)).dtype
        torch.bfloat16
    """
    kind = device_type.type if isinstance(device_type, torch.device) else str(device_type)
    with torch.autocast(kind, dtype=dtype, enabled=enabled):
        yield
