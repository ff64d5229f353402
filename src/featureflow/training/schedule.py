"""Learning-rate schedules as pure functions of the optimizer step (nothing to checkpoint)."""

from __future__ import annotations

import math

__all__ = ["cosine_with_warmup"]


def cosine_with_warmup(step: int, *, total_steps: int, warmup: int = 0, min_ratio: float = 0.0) -> float:
    """LR multiplier for optimizer step ``step`` (0-based): linear warmup, then cosine decay.

    Steps count optimizer updates, not micro-batches. During warmup the multiplier is
    ``(step + 1) / warmup`` (so the first update already moves); afterwards it decays
    from 1 to ``min_ratio`` along half a cosine, reaching ``min_ratio`` at the last step.

    Example:
        >>> tuple(round(cosine_with_warmup(s, total_steps=6, warmup=2), 3) for s in range(6))
        (0.5, 1.0, 1.0, 0.75, 0.25, 0.0)
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0 optimizer steps, got {warmup}")
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"min_ratio must be in [0, 1], got {min_ratio}")
    if step < warmup:
        return (step + 1) / warmup
    decay_steps = total_steps - warmup - 1
    if decay_steps <= 0:
        return 1.0
    progress = min(1.0, (step - warmup) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
