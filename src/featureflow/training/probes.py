"""Train a probe head on (features, target) pairs: AdamW, tqdm bar, JSONL log."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from featureflow.utils import JSONLLogger, progress_bar

__all__ = ["ProbeTrainResult", "train_probe"]


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
) -> ProbeTrainResult:
    """Fit ``head`` (a task head with ``loss(features, target)``) for ``steps`` steps.

    ``data`` yields ``(features (b, h, w, D), target)`` batches, the target in the task
    head's format (segmentation (b, H, W) int64, depth (b, H, W), normals / rgb
    (b, 3, H, W)). A re-iterable ``data`` (list, DataLoader) is cycled until ``steps``
    are done; a one-shot iterator that runs dry ends training early
    (``result.exhausted``). One step = one batch = one AdamW update (gradient norm
    clipped to ``grad_clip``). Every step is logged to ``log_path`` as JSONL
    (``step``, ``loss``, ``lr``, ``task``). ``seed`` seeds torch's RNG (dropout) inside a
    forked RNG state, so the caller's global RNG is untouched. The head is left in
    eval mode.

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
    if not callable(getattr(head, "loss", None)):
        raise TypeError(
            f"train_probe needs a task head with a loss(features, target) method "
            f"(SegmentationHead, DepthHead, NormalsHead, RGBHead); got {type(head).__name__}"
        )
    if device is not None:
        head.to(device)
    params = [p for p in head.parameters() if p.requires_grad]
    if not params:
        raise ValueError("train_probe: the head has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    result = ProbeTrainResult()
    task = getattr(head, "task", type(head).__name__)
    with torch.random.fork_rng(devices=[]), JSONLLogger(log_path) as log:
        if seed is not None:
            torch.manual_seed(seed)
        head.train()
        bar = progress_bar(total=steps, progress=progress, desc=f"probe[{task}]")
        try:
            _run(head, data, optimizer, params, steps, grad_clip, bar, log, result, lr, task)
        finally:
            bar.close()
            head.eval()
    return result


def _run(
    head: nn.Module,
    data: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    steps: int,
    grad_clip: float | None,
    bar: Any,
    log: JSONLLogger,
    result: ProbeTrainResult,
    lr: float,
    task: str,
) -> None:
    device = params[0].device
    while result.steps < steps:
        seen = 0
        for batch in data:
            seen += 1
            features, target = _unpack(batch)
            loss = head.loss(features.to(device), target.to(device))
            if not bool(torch.isfinite(loss)):
                raise FloatingPointError(f"train_probe: loss became {loss.item()} at step {result.steps + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            result.steps += 1
            value = float(loss.detach())
            result.losses.append(value)
            log.log(step=result.steps, loss=value, lr=lr, task=task)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
            if result.steps >= steps:
                return
        if seen == 0:
            if result.steps == 0:
                raise ValueError("train_probe: data yielded no batches")
            result.exhausted = True
            return


def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, dict) and "features" in batch and "target" in batch:
        return batch["features"], batch["target"]
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise TypeError(
        "train_probe: each batch must be (features, target) or {'features': ..., 'target': ...}; "
        f"got {type(batch).__name__}"
    )
