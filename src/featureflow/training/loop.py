"""`fit`: the generic training loop shared by every stage (forecaster, VAE, probes, ...).

AdamW, cosine schedule with warmup in optimizer steps, gradient accumulation, gradient
clipping, EMA, optional bf16 autocast, a tqdm bar, JSONL metrics and atomic checkpoints
with exact resume (model, EMA, optimizer, data position and every RNG restored).
"""

from __future__ import annotations

import json
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from featureflow.training.checkpoint import load_checkpoint, save_checkpoint
from featureflow.training import distributed as ddp
from featureflow.training.data import BatchStream, is_indexable, to_device
from featureflow.training.ema import EMA
from featureflow.training.schedule import cosine_with_warmup
from featureflow.utils import JSONLLogger, atomic_write, progress_bar

__all__ = ["fit", "FitResult", "LossFn"]

#: ``loss_fn(model, batch, generator) -> loss`` or ``(loss, {name: float metric})``.
LossFn = Callable[[nn.Module, Any, torch.Generator], Any]

# Settings that must match on resume, or the run would not continue the same curve.
_RESUME_KEYS = ("steps", "batch_size", "grad_accum", "seed", "lr", "warmup", "min_lr_ratio", "ema_decay")


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        losses: mean training loss of every optimizer step so far (including steps
            taken before a resume), in order.
        step: optimizer steps taken.
        ema: the weight average (``None`` if ``ema_decay`` was None); use
            ``result.ema.copy_to(model)`` to evaluate or save the averaged weights.
        optimizer: the AdamW optimizer.
    """

    losses: list[float]
    step: int
    ema: EMA | None
    optimizer: torch.optim.Optimizer


def _truncate_log(path: Path, step: int) -> None:
    """Drop JSONL records past ``step`` (written after the checkpoint we resume from)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:  # a line cut by the crash
            continue
    with atomic_write(path) as tmp:
        tmp.write_text("".join(k + "\n" for k in keep))


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    *,
    steps: int,
    batch_size: int = 8,
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    warmup: int = 0,
    min_lr_ratio: float = 0.0,
    grad_accum: int = 1,
    ema_decay: float | None = 0.999,
    clip_grad: float | None = 1.0,
    bf16: bool = False,
    log_path: str | os.PathLike | None = None,
    ckpt_dir: str | os.PathLike | None = None,
    ckpt_every: int | None = None,
    resume: bool = False,
    progress: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
    stop_at: int | None = None,
    desc: str = "train",
) -> FitResult:
    """Train ``model`` by minimising ``loss_fn`` over batches of ``data``.

    One optimizer step consumes ``grad_accum`` micro-batches of ``batch_size``; each
    micro-batch loss is scaled by ``1 / grad_accum`` before ``backward``, so the update
    equals one step on a ``grad_accum * batch_size`` batch. ``steps``, ``warmup`` and
    ``ckpt_every`` count optimizer steps. A fresh run seeds the global torch RNG with
    ``seed``; the loss function gets its own CPU ``torch.Generator`` (checkpointed).

    Args:
        model: the module to train (moved to ``device``).
        loss_fn: ``loss_fn(model, batch, generator)`` returning a scalar loss, or
            ``(loss, metrics)`` with extra float metrics to log.
        data: a Tensor (examples on dim 0), a map-style dataset, or an iterable of
            ready batches (see :class:`~featureflow.training.data.BatchStream`).
        steps: total optimizer steps (the cosine schedule's length).
        batch_size: examples per micro-batch.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup: linear warmup length in optimizer steps.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        grad_accum: micro-batches per optimizer step.
        ema_decay: EMA decay per optimizer step (None = no EMA).
        clip_grad: max global gradient norm (None = no clipping).
        bf16: run the forward pass under bfloat16 autocast.
        log_path: JSONL file, one record per step (``step``, ``loss``, ``lr``, ...).
        ckpt_dir: checkpoint folder (None = no checkpoints).
        ckpt_every: checkpoint every this many steps (None = only at the end).
        resume: continue from the latest checkpoint in ``ckpt_dir`` if there is one.
        progress: show a progress bar.
        seed: seed of the data order, the loss generator and the global RNG.
        device: where to train (default: the model's device).
        stop_at: stop after this optimizer step (checkpointing it), as if killed; the
            schedule still spans ``steps``. Used to test and to split long runs.
        desc: progress bar label.

    Returns:
        A :class:`FitResult`.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1)
        >>> x = torch.randn(64, 2); data = torch.cat([x, x.sum(1, keepdim=True)], 1)
        >>> def loss_fn(m, batch, g):
        ...     return torch.nn.functional.mse_loss(m(batch[:, :2]), batch[:, 2:])
        >>> r = fit(model, loss_fn, data, steps=60, batch_size=16, lr=0.05, progress=False)
        >>> r.losses[-1] < r.losses[0]
        True
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int (optimizer steps), got {steps!r}")
    if not isinstance(grad_accum, int) or grad_accum < 1:
        raise ValueError(f"grad_accum must be a positive int, got {grad_accum!r}")
    if resume and ckpt_dir is None:
        raise ValueError("resume=True needs a ckpt_dir to resume from")
    if ckpt_every is not None and ckpt_every < 1:
        raise ValueError(f"ckpt_every must be >= 1 optimizer steps, got {ckpt_every}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    dist_info = ddp.setup(device)
    if dist_info.distributed and device is None:
        device = dist_info.device
    device = torch.device(device) if device is not None else params[0].device
    model.to(device)
    model.train()
    settings = {
        "steps": steps, "batch_size": batch_size, "grad_accum": grad_accum, "seed": seed, "lr": lr,
        "warmup": warmup, "min_lr_ratio": min_lr_ratio, "ema_decay": ema_decay,
    }
    # Under torchrun every rank draws the same global batch of batch_size * world_size
    # examples and trains on its own slice; gradients are averaged across ranks.
    stream = BatchStream(data, batch_size * dist_info.world_size if is_indexable(data) else batch_size, seed)
    optimizer = torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    ema = EMA(model, ema_decay) if ema_decay is not None else None
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    start = 0

    ckpt = load_checkpoint(ckpt_dir, restore_global_rng=True) if resume and ckpt_dir is not None else None
    if ckpt is not None:
        saved = ckpt.state.get("settings", {})
        diff = {k: (saved.get(k), settings[k]) for k in _RESUME_KEYS if k in saved and saved[k] != settings[k]}
        if diff:
            raise ValueError(f"cannot resume from {ckpt_dir}: settings differ from the checkpoint's (saved, now): {diff}")
        model.load_state_dict(ckpt.model)
        if ckpt.optimizer is not None:
            optimizer.load_state_dict(ckpt.optimizer)
        if ema is not None and ckpt.ema is not None:
            ema.load_state_dict({k: v.to(device) for k, v in ckpt.ema.items()})
            ema.num_updates = int(ckpt.state.get("ema_updates", ckpt.step))
        gen.set_state(ckpt.rng["loss_generator"])
        losses = list(ckpt.state.get("losses", []))
        start = ckpt.step
        if log_path is not None:
            _truncate_log(Path(log_path), start)
    else:
        torch.manual_seed(seed)
    ddp.broadcast_module(model)  # identical starting weights on every rank
    if not dist_info.is_main:
        log_path, progress = None, False

    def checkpoint(step: int) -> None:
        if ckpt_dir is None or not dist_info.is_main:
            ddp.barrier()
            return
        save_checkpoint(
            ckpt_dir, step, model=model.state_dict(), optimizer=optimizer.state_dict(),
            ema=ema.state_dict() if ema is not None else None, rng={"loss_generator": gen.get_state()},
            state={"settings": settings, "losses": losses,
                   "ema_updates": ema.num_updates if ema is not None else 0},
        )
        ddp.barrier()

    end = steps if stop_at is None else max(start, min(steps, stop_at))
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    )
    logger = JSONLLogger(log_path)
    bar = progress_bar(total=steps, initial=start, progress=progress, desc=desc)
    try:
        for step in range(start, end):
            lr_now = lr * cosine_with_warmup(step, total_steps=steps, warmup=warmup, min_ratio=min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr_now
            optimizer.zero_grad(set_to_none=True)
            total = torch.zeros((), device=device)
            extra: dict[str, float] = {}
            for micro in range(grad_accum):
                batch = to_device(ddp.shard_batch(stream.batch(step * grad_accum + micro), dist_info), device)
                with autocast:
                    out = loss_fn(model, batch, gen)
                loss, info = out if isinstance(out, tuple) else (out, {})
                if not isinstance(loss, Tensor) or loss.dim() != 0:
                    raise TypeError(f"loss_fn must return a scalar tensor (or (loss, metrics)), got {out!r:.100}")
                (loss.float() / grad_accum).backward()
                total += loss.detach().float()
                for k, v in info.items():
                    extra[k] = extra.get(k, 0.0) + float(v) / grad_accum
            ddp.average_gradients(params)
            total = ddp.all_reduce_mean(total)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_grad) if clip_grad is not None else None
            optimizer.step()
            if ema is not None:
                ema.update(model)
            value = float(total) / grad_accum
            if not math.isfinite(value):
                raise FloatingPointError(f"training loss became {value} at optimizer step {step + 1}")
            losses.append(value)
            record = {"step": step + 1, "loss": value, "lr": lr_now, **extra}
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm)
            logger.log(**record)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
            if ckpt_every is not None and (step + 1) % ckpt_every == 0 and step + 1 != end:
                checkpoint(step + 1)
        if end > start or ckpt is None:
            checkpoint(end)
    finally:
        bar.close()
        logger.close()
    return FitResult(losses=losses, step=end, ema=ema, optimizer=optimizer)

