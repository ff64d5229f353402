"""Exponential moving average of a model's weights (and floating-point buffers)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["EMA"]


class EMA:
    """Shadow copy ``e <- d * e + (1 - d) * w`` of every floating state-dict entry.

    With ``warmup=True`` (the default) the decay of update ``n`` (0-based) is
    ``d = min(decay, (1 + n) / (10 + n))``: the first updates nearly copy the weights, so
    the average never keeps a large share of the random initialisation (with a fixed
    0.999, 1000 steps would leave 37 % of it, which shrinks zero-initialised layers).
    ``warmup=False`` uses ``decay`` from the first update.

    Non-floating buffers (counters, indices) are copied as they are. The shadow lives on
    the model's device; ``copy_to`` loads it into a model for evaluation or saving.

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(1, 1, bias=False)
        >>> _ = m.weight.data.fill_(0.0)
        >>> ema = EMA(m, decay=0.5, warmup=False)
        >>> _ = m.weight.data.fill_(1.0)
        >>> ema.update(m)
        >>> ema.state_dict()["weight"].item()
        0.5
        >>> ema = EMA(m, decay=0.999)  # warm-up: the first update takes 90 % of the weights
        >>> _ = m.weight.data.fill_(2.0)
        >>> ema.update(m)
        >>> round(ema.state_dict()["weight"].item(), 3)
        1.9
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.shadow: dict[str, Tensor] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        """The decay the next :meth:`update` applies."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow towards ``model``'s current weights."""
        d = self.current_decay()
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.lerp_(v.detach().to(s.dtype), 1.0 - d)
            else:
                s.copy_(v)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Tensor]:
        """The shadow weights (live tensors; clone before modifying)."""
        return self.shadow

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Replace the shadow by ``state`` (same keys and shapes)."""
        missing = set(self.shadow) ^ set(state)
        if missing:
            raise KeyError(f"EMA state keys differ from the model's: {sorted(missing)[:5]}")
        for k, v in state.items():
            if v.shape != self.shadow[k].shape:
                raise ValueError(f"EMA entry {k!r}: expected shape {tuple(self.shadow[k].shape)}, got {tuple(v.shape)}")
            self.shadow[k].copy_(v)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model``."""
        model.load_state_dict(self.shadow)
