"""How many CPU threads torch should use: a default that suits small, shared machines.

PyTorch's own default is one intra-op thread per physical core. For featureflow's small
models that is often much slower than fewer threads when other work is running on the
machine: on a busy 2-core CPU, ``featureflow demo`` took 45.7 s with the default and
6.7 s with one thread. The command line (``featureflow demo`` / ``forecast`` / ``train``
and the other sub-commands) therefore sets the thread count itself, from ``--threads``
or from :func:`default_threads`.
"""

from __future__ import annotations

import math
import os

import torch

from featureflow.typing import typechecked

__all__ = ["default_threads", "set_threads", "THREAD_ENV_VARS"]

#: Environment variables that already choose a thread count; when one is set, the
#: default leaves torch's setting alone.
THREAD_ENV_VARS: tuple[str, ...] = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _load_average() -> float:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):  # pragma: no cover - Windows
        return 0.0


def default_threads() -> int:
    """The thread count the command line uses when ``--threads`` is not given.

    * ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` is set: torch's current setting (the
      user has chosen already).
    * 2 CPUs or fewer: 1 (the second core is better left to everything else).
    * Otherwise: the CPUs left idle by the 1-minute load average (CPUs available to
      this process minus the load, rounded down), at least 1 and at most torch's
      default (the number of physical cores).

    Example:
        >>> 1 <= default_threads() <= max(1, os.cpu_count() or 1)
        True
    """
    if any(os.environ.get(var, "").strip() for var in THREAD_ENV_VARS):
        return torch.get_num_threads()
    cpus = _available_cpus()
    if cpus <= 2:
        return 1
    idle = math.floor(cpus - _load_average())
    return max(1, min(idle, torch.get_num_threads()))


@typechecked
def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count to ``threads`` (``None``: :func:`default_threads`).

    Args:
        threads: a positive number of threads, or ``None`` for the default.

    Returns:
        The thread count now in effect (``torch.get_num_threads()``).

    Raises:
        ValueError: ``threads`` is not a positive integer.

    Example:
        >>> before = torch.get_num_threads()
        >>> set_threads(1)
        1
        >>> _ = set_threads(before)
    """
    if threads is None:
        threads = default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer (or None for the default), got {threads!r}")
    torch.set_num_threads(threads)
    return torch.get_num_threads()
