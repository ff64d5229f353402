"""Exponential moving average of a model's weights (and floating-point buffers)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["EMA"]


class EMA:
    """Shadow copy ``e <- decay * e + (1 - decay) * w`` of every floating state-dict entry.

    Non-floating buffers (counters, indices) are copied as they are. The shadow lives on
    the model's device; ``copy_to`` loads it into a model for evaluation or saving.

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(1, 1, bias=False)
        >>> _ = m.weight.data.fill_(0.0)
        >>> ema = EMA(m, decay=0.5)
        >>> _ = m.weight.data.fill_(1.0)
        >>> ema.update(m)
        >>> ema.state_dict()["weight"].item()
        0.5
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow: dict[str, Tensor] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow towards ``model``'s current weights."""
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.lerp_(v.detach().to(s.dtype), 1.0 - self.decay)
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
