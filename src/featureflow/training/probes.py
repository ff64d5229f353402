"""Train a probe head on (features, target) pairs through the one training engine (`fit`)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from featureflow.training.data import ReadyBatches
from featureflow.training.fingerprint import model_fingerprint
from featureflow.training.loop import FitConfig, fit

__all__ = ["ProbeTrainResult", "ProbeObjective", "train_probe"]


@dataclass
class ProbeTrainResult:
    """What :func:`train_probe` did: the loss of every step and the steps actually run."""

    losses: list[float] = field(default_factory=list)
    steps: int = 0
    #: True when ``data`` ran dry (a one-shot iterator) before ``steps`` were done.
    exhausted: bool = False

    @property
    def final_loss(self) -> float:
        """Mean loss over the last (up to) 10 steps; NaN if no step ran."""
        tail = self.losses[-10:]
        return sum(tail) / len(tail) if tail else math.nan


class ProbeObjective(nn.Module):
    """A task head's ``loss(features, target)`` as the one-engine ``loss(batch, generator)``.

    A batch is ``(features, target)`` or ``{"features": ..., "target": ...}``.

    Example:
        >>> import torch
        >>> from featureflow.probes import LinearHead, RGBHead
        >>> obj = ProbeObjective(RGBHead(LinearHead(8, 3)))
        >>> obj.loss((torch.randn(1, 2, 2, 8), torch.rand(1, 3, 4, 4)), torch.Generator()).dim()
        0
    """

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        if not callable(getattr(head, "loss", None)):
            raise TypeError(
                f"train_probe needs a task head with a loss(features, target) method "
                f"(SegmentationHead, DepthHead, NormalsHead, RGBHead); got {type(head).__name__}"
            )
        self.head = head

    def loss(self, batch: Any, generator: torch.Generator) -> torch.Tensor:
        """The head's loss on one batch."""
        features, target = _unpack(batch)
        device = next(self.head.parameters()).device
        return self.head.loss(features.to(device), target.to(device))


def train_probe(
    head: nn.Module,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    steps: int,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    grad_clip: float | None = 1.0,
    progress: bool = True,
    log_path: str | os.PathLike | None = None,
    seed: int | None = 0,
    device: str | torch.device | None = None,
    ckpt_dir: str | os.PathLike | None = None,
    ckpt_every: int | None = None,
    resume: bool = False,
) -> ProbeTrainResult:
    """Fit ``head`` (a task head with ``loss(features, target)``) for ``steps`` steps.

    A thin wrapper of :func:`featureflow.training.loop.fit` with :class:`ProbeObjective`
    (constant learning rate, no EMA). ``data`` yields ``(features (b, h, w, D), target)``
    batches, the target in the task head's format (segmentation (b, H, W) int64, depth
    (b, H, W), normals / rgb (b, 3, H, W)). A re-iterable ``data`` (list, DataLoader) is
    cycled until ``steps`` are done; a one-shot iterator that runs dry ends training
    early (``result.exhausted``). One step = one batch = one AdamW update (gradient
    norm clipped to ``grad_clip``). Every step is logged to ``log_path`` as JSONL
    (``step``, ``loss``, ``lr``, ``task``). ``seed`` seeds torch's RNG (dropout) inside a
    forked RNG state, so the caller's global RNG is untouched (``None``: a seed drawn
    from the global RNG). The head is left in eval mode.

    Example:
        >>> import torch
        >>> from featureflow.probes import LinearHead, RGBHead
        >>> head = RGBHead(LinearHead(8, 3))
        >>> batch = (torch.randn(4, 2, 2, 8), torch.rand(4, 3, 4, 4))
        >>> result = train_probe(head, [batch], steps=5, lr=1e-2, progress=False)
        >>> result.steps, len(result.losses)
        (5, 5)
    """
    if steps < 1:
        raise ValueError(f"train_probe: steps must be >= 1, got {steps}")
    if not lr > 0:
        raise ValueError(f"train_probe: lr must be > 0, got {lr}")
    objective = ProbeObjective(head)
    if device is not None:
        head.to(device)
    if not any(p.requires_grad for p in head.parameters()):
        raise ValueError("train_probe: the head has no trainable parameters")
    task = getattr(head, "task", type(head).__name__)
    with torch.random.fork_rng(devices=[]):
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)))
        cfg = FitConfig(steps=steps, batch_size=1, lr=lr, weight_decay=weight_decay, clip_grad=grad_clip,
                        ema_decay=None, min_lr_ratio=1.0, seed=seed, ckpt_every=ckpt_every)
        try:
            batches = data if iter(data) is data else ReadyBatches(data)  # one-shot iterators stay one-shot
            fitted = fit(objective, None, batches, cfg, log_path=log_path, ckpt_dir=ckpt_dir, resume=resume,
                         progress=progress, desc=f"probe[{task}]", log_fields={"task": task},
                         fingerprint={"model": model_fingerprint(head)})
        except ValueError as err:
            if "yielded no batches" in str(err):
                raise ValueError("train_probe: data yielded no batches") from None
            raise
        finally:
            head.eval()
    return ProbeTrainResult(losses=list(fitted.losses), steps=fitted.step, exhausted=fitted.exhausted)


def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, dict) and "features" in batch and "target" in batch:
        return batch["features"], batch["target"]
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise TypeError(
        "train_probe: each batch must be (features, target) or {'features': ..., 'target': ...}; "
        f"got {type(batch).__name__}"
    )
