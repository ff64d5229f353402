"""Argument and output checks of `WorldModel.forecast`: clear errors instead of odd failures.

* counts (``horizon``, ``num_samples``, ``steps``) must be true integers (not ``2.0``,
  not ``True``) within limits, and the forecast must fit in memory;
* ``generator`` must be a ``torch.Generator`` and ``guidance`` a finite number;
* every component's output is checked once for NaN/Inf, naming the component;
* frames of another size than the model was trained at follow a ``resize`` policy.
"""

from __future__ import annotations

import math
import numbers
import operator
import warnings
from typing import Any

import torch
from torch import Tensor

from featureflow.data.clips import resize_frames
from featureflow.typing import typechecked

__all__ = [
    "MAX_HORIZON",
    "MAX_SAMPLES",
    "MAX_STEPS",
    "MAX_FORECAST_BYTES",
    "RESIZE_POLICIES",
    "ResizeWarning",
    "check_count",
    "check_generator",
    "check_guidance",
    "check_forecast_size",
    "check_output",
    "trained_size",
    "fit_frames",
    "refuse_action_model",
]

#: Largest ``horizon`` a forecast accepts.
MAX_HORIZON = 10_000
#: Largest ``num_samples`` a forecast accepts.
MAX_SAMPLES = 10_000
#: Largest ``steps`` (network evaluations per frame) a forecast accepts.
MAX_STEPS = 10_000
#: Largest forecast output (the float32 latents, b·s·k·h·w·C·4 bytes) a forecast allocates.
MAX_FORECAST_BYTES = 16 * 2**30
#: What `WorldModel.forecast` / `encode` do with frames of another size than the model's.
RESIZE_POLICIES = ("warn", "silent", "error", "none")


class ResizeWarning(UserWarning):
    """Frames were resized to the resolution the model was trained at."""


def check_count(name: str, value: Any, limit: int) -> int:
    """``value`` as an int in ``1..limit``; a float (even ``2.0``), a bool or anything else
    that is not an integer is a ``TypeError`` naming ``name``.

    Example:
        >>> check_count("horizon", 4, 10)
        4
        >>> check_count("horizon", 2.0, 10)
        Traceback (most recent call last):
        ...
        TypeError: horizon: expected a positive int, got float 2.0
    """
    if isinstance(value, bool) or isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected a positive int, got {type(value).__name__} {value!r}")
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{name}: expected a positive int, got {type(value).__name__} {value!r:.60}") from None
    if n < 1:
        raise ValueError(f"{name}: expected a positive int, got {n}")
    if n > limit:
        raise ValueError(f"{name}={n} is more than the limit of {limit:,}; forecast in several calls")
    return n


def check_generator(generator: Any) -> None:
    """``None`` or a ``torch.Generator``; anything else (an int seed, a NumPy generator) is a
    ``TypeError`` saying how to make one.

    Example:
        >>> check_generator(torch.Generator().manual_seed(0))
        >>> check_generator(0)
        Traceback (most recent call last):
        ...
        TypeError: generator: expected a torch.Generator or None, got int; to seed, pass torch.Generator().manual_seed(0)
    """
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}; "
                        "to seed, pass torch.Generator().manual_seed(0)")


def check_guidance(guidance: Any) -> float:
    """``guidance`` as a finite float; NaN, Inf, bools and non-numbers are refused.

    Example:
        >>> check_guidance(2)
        2.0
    """
    if isinstance(guidance, bool) or not isinstance(guidance, numbers.Real):
        raise TypeError(f"guidance: expected a finite number (1 = off), got {type(guidance).__name__} {guidance!r:.60}")
    value = float(guidance)
    if not math.isfinite(value):
        raise ValueError(f"guidance: expected a finite number (1 = off), got {value}")
    return value


def check_forecast_size(batch: int, num_samples: int, horizon: int, frame_numel: int,
                        limit: int | None = None) -> None:
    """Refuse a forecast whose float32 latents (b·s·k frames of ``frame_numel`` values)
    would exceed ``limit`` bytes (default `MAX_FORECAST_BYTES`).

    Example:
        >>> check_forecast_size(1, 8, 4, 8 * 8 * 16)
        >>> check_forecast_size(1, 10_000, 10_000, 8 * 8 * 16)
        Traceback (most recent call last):
        ...
        ValueError: this forecast would hold 381.5 GiB of latents (b=1 x num_samples=10000 x horizon=10000 frames of 1024 values), more than the limit of 16.0 GiB; ask for fewer samples or a shorter horizon, or forecast in several calls
    """
    limit = MAX_FORECAST_BYTES if limit is None else limit
    need = batch * num_samples * horizon * frame_numel * 4
    if need > limit:
        raise ValueError(
            f"this forecast would hold {need / 2**30:.1f} GiB of latents (b={batch} x num_samples={num_samples} x "
            f"horizon={horizon} frames of {frame_numel} values), more than the limit of {limit / 2**30:.1f} GiB; "
            "ask for fewer samples or a shorter horizon, or forecast in several calls"
        )


@typechecked
def check_output(component: str, x: Tensor) -> Tensor:
    """Raise ``ValueError`` naming ``component`` if its output ``x`` has NaN or Inf values
    (one ``isfinite().all()`` when it has none).

    Example:
        >>> check_output("encoder", torch.tensor([float("nan"), 1.0]))
        Traceback (most recent call last):
        ...
        ValueError: encoder produced non-finite values (1 of 2 are NaN or Inf) from finite input; check its weights (a corrupted file? load with verify=True) or its settings
    """
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{component} produced non-finite values ({bad} of {x.numel()} are NaN or Inf) from finite "
                         "input; check its weights (a corrupted file? load with verify=True) or its settings")
    return x


def trained_size(metadata: dict[str, Any]) -> tuple[int, int] | None:
    """The frame size (H, W) a model was trained at, from its metadata (``image_size``,
    ``data.resolution`` or ``resolution``), or None when it does not say.

    Example:
        >>> trained_size({"data": {"resolution": 64}}), trained_size({})
        ((64, 64), None)
    """
    for value in (metadata.get("image_size"), (metadata.get("data") or {}).get("resolution"), metadata.get("resolution")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, value
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
            return int(value[0]), int(value[1])
    return None


def fit_frames(frames: Tensor, size: tuple[int, int] | None, policy: str) -> Tensor:
    """Frames (b, t, 3, H, W) at the model's training ``size`` according to ``policy``.

    ``"warn"`` resizes (bilinear, antialiased) and warns once per size with a
    `ResizeWarning`; ``"silent"`` resizes quietly; ``"error"`` raises ``ValueError``;
    ``"none"`` passes the frames on as they are (the encoder then adapts, e.g. by
    interpolating its position embeddings, which is usually worse). Frames already at
    ``size``, or a model that records no training size, are returned unchanged.

    Example:
        >>> fit_frames(torch.rand(1, 2, 3, 30, 40), (16, 16), "silent").shape
        torch.Size([1, 2, 3, 16, 16])
    """
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"resize: expected one of {RESIZE_POLICIES}, got {policy!r}")
    H, W = int(frames.shape[-2]), int(frames.shape[-1])
    if size is None or (H, W) == tuple(size) or policy == "none":
        return frames
    what = f"frames are {W}x{H} (W x H) but the model was trained on {size[1]}x{size[0]}"
    if policy == "error":
        raise ValueError(f"{what}; resize them first, or pass resize='warn' or 'silent' to resize them to "
                         f"{size[1]}x{size[0]}, or resize='none' to encode them as they are")
    if policy == "warn":
        warnings.warn(f"{what}: resizing them to {size[1]}x{size[0]} (pass resize='silent' to do this quietly, "
                      "'error' to refuse, or 'none' to encode them as they are)", ResizeWarning, stacklevel=4)
    b, t = frames.shape[:2]
    flat = resize_frames(frames.reshape(b * t, *frames.shape[2:]).float(), (int(size[0]), int(size[1])))
    return flat.reshape(b, t, *flat.shape[1:]).to(frames.dtype)


def refuse_action_model(wm: Any, name: str) -> None:
    """The action-free commands (``forecast``, ``demo``) cannot drive an action-conditioned
    model: say so up front, naming what to use instead.

    Example:
        >>> class Free:
        ...     action_dim = None
        >>> refuse_action_model(Free(), "toyworld")
    """
    if wm.action_dim is not None:
        raise ValueError(f"{name!r} is action-conditioned (it forecasts given actions): use WorldModel.forecast(frames, "
                         "horizon, actions=...) or examples/mpc_toyworld.py instead")
