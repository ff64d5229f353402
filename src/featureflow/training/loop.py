"""`fit`: the one training loop every stage runs through (encoder, compressor, forecasters, probes, ...).

AdamW, cosine schedule with warmup in optimizer steps, gradient accumulation, gradient
clipping, EMA with warm-up, bf16/fp16 autocast, a tqdm bar, JSONL metrics and atomic
checkpoints with exact resume (model, EMA, optimizer, data position and every RNG
restored). Under ``torchrun`` the model runs under DistributedDataParallel (or FSDP2),
each rank trains on its slice of the global batch, and only rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from featureflow.training import distributed as ddp
from featureflow.training.checkpoint import load_checkpoint, save_checkpoint
from featureflow.training.fit_config import RESUME_KEYS, PRECISIONS, FitConfig, fingerprint_diff
from featureflow.training.data import BatchStream, DataExhausted, is_indexable, to_device
from featureflow.training.ema import EMA
from featureflow.training.schedule import cosine_with_warmup
from featureflow.utils import JSONLLogger, atomic_write, progress_bar

__all__ = ["fit", "FitConfig", "FitResult", "LossFn", "PRECISIONS", "fingerprint_diff"]

#: ``loss_fn(model, batch, generator) -> loss`` or ``(loss, {name: float metric})``.
LossFn = Callable[[nn.Module, Any, torch.Generator], Any]

@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        losses: mean training loss of every optimizer step so far (including steps
            taken before a resume), in order.
        step: optimizer steps taken.
        ema: the weight average (``None`` without EMA); ``result.ema.copy_to(model)``
            loads the averaged weights.
        optimizer: the AdamW optimizer.
        history: the record of every optimizer step of this call (``step``, ``loss``,
            ``lr``, the loss's metrics, ``grad_norm``), logged or not.
        exhausted: True when a one-shot iterator of batches ran dry before ``steps``.
    """

    losses: list[float]
    step: int
    ema: EMA | None
    optimizer: torch.optim.Optimizer
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    exhausted: bool = False


class _LossModule(nn.Module):
    """``forward(batch, generator) = loss_fn(model, batch, generator)``: what DDP/FSDP wrap,
    so the gradient hooks see every forward, whatever method the loss calls."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any, generator: torch.Generator) -> Any:
        return self.loss_fn(self.model, batch, generator)


def _method_loss(model: nn.Module, batch: Any, generator: torch.Generator) -> Any:
    return model.loss(batch, generator=generator)


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


def _rank_seed(seed: int, rank: int) -> int:
    """Rank 0 keeps ``seed`` (a one-process run's stream); other ranks get their own streams."""
    return seed if rank == 0 else (seed * 1_000_003 + 7919 * rank) % (2**63 - 1)


def _optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    state = optimizer.state_dict()
    state["state"] = {i: ddp.full_state_dict(s) for i, s in state["state"].items()}
    return state


def _shard_like(full: dict[str, Tensor], like: dict[str, Tensor]) -> dict[str, Tensor]:
    """``full`` tensors cut into the DTensor layout of ``like`` (plain tensors pass)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    out = {}
    for k, v in full.items():
        ref = like.get(k)
        if isinstance(ref, DTensor) and tuple(v.shape) == tuple(ref.shape):
            v = distribute_tensor(v.to(ref.device_mesh.device_type), ref.device_mesh, ref.placements)
        out[k] = v
    return out


def fit(
    model: nn.Module,
    loss_fn: LossFn | None,
    data: Any,
    config: FitConfig | None = None,
    *,
    log_path: str | os.PathLike | None = None,
    ckpt_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    device: str | torch.device | None = None,
    stop_at: int | None = None,
    desc: str = "train",
    fingerprint: dict[str, Any] | None = None,
    log_fields: dict[str, Any] | None = None,
    **overrides: Any,
) -> FitResult:
    """Train ``model`` by minimising ``loss_fn`` over batches of ``data``.

    One optimizer step consumes ``grad_accum`` micro-batches; each micro-batch loss is
    scaled by ``1 / grad_accum`` before ``backward``, so the update equals one step on a
    ``grad_accum * batch_size`` batch. A fresh run seeds the global torch RNG with
    ``seed``; the loss gets its own CPU ``torch.Generator`` (checkpointed).

    Under ``torchrun`` every rank draws the same global batch of ``batch_size *
    world_size`` examples (indexable data) and trains on its slice; the model runs
    under DistributedDataParallel (``strategy="ddp"``) or FSDP2 (``"fsdp"``), rank 0's
    initial weights are used everywhere, and rank 0 alone writes the log and the
    checkpoints. Rank 0's loss generator is seeded as in one process, the others get
    their own streams.

    Args:
        model: the module to train (moved to ``device``).
        loss_fn: ``loss_fn(model, batch, generator)`` returning a scalar loss, or
            ``(loss, metrics)`` with extra float metrics to log; ``None`` calls
            ``model.loss(batch, generator=generator)``.
        data: a Tensor (examples on dim 0), a map-style dataset, or an iterable of
            ready batches (see :class:`~featureflow.training.data.BatchStream`).
        config: the optimisation settings (:class:`FitConfig`); keyword ``overrides``
            (``steps=...``, ``lr=...``, ``bf16=True``, ...) replace its fields.
        log_path: JSONL file, one record per step (``step``, ``loss``, ``lr``, ...).
        ckpt_dir: checkpoint folder (None = no checkpoints).
        resume: continue from the latest checkpoint in ``ckpt_dir`` if there is one.
        progress: show a progress bar.
        device: where to train (default: the model's device; under torchrun this
            rank's GPU, else the CPU).
        stop_at: stop after this optimizer step (checkpointing it), as if killed; the
            schedule still spans ``steps``.
        desc: progress bar label.
        fingerprint: JSON description of what is trained (model type and architecture,
            objective, data, ...); stored in checkpoints, and resuming with a different
            one fails naming each difference.
        log_fields: constant fields added to every JSONL record (e.g. ``{"task": "depth"}``).

    Returns:
        A :class:`FitResult`.

    Raises:
        ValueError: bad settings, or a resume whose settings or fingerprint differ
            from the checkpoint's.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1)
        >>> x = torch.randn(64, 2); data = torch.cat([x, x.sum(1, keepdim=True)], 1)
        >>> def loss_fn(m, batch, g):
        ...     return torch.nn.functional.mse_loss(m(batch[:, :2]), batch[:, 2:])
        >>> r = fit(model, loss_fn, data, FitConfig(steps=60, batch_size=16, lr=0.05), progress=False)
        >>> r.losses[-1] < r.losses[0]
        True
    """
    if "bf16" in overrides:
        overrides["precision"] = "bf16" if overrides.pop("bf16") else overrides.get("precision", "fp32")
    names = {f.name for f in dataclasses.fields(FitConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"fit() got unknown setting(s) {unknown}; FitConfig fields are {sorted(names)}")
    cfg = dataclasses.replace(config or FitConfig(), **overrides)
    if resume and ckpt_dir is None:
        raise ValueError("resume=True needs a ckpt_dir to resume from")
    loss_fn = loss_fn or _method_loss
    if loss_fn is _method_loss and not callable(getattr(model, "loss", None)):
        raise TypeError(f"loss_fn=None needs a model with loss(batch, generator=...); {type(model).__name__} has none")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    info = ddp.setup(device)
    device = torch.device(device) if device is not None else (info.device if info.distributed else params[0].device)
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision='fp16' needs CUDA (loss scaling); on {device.type} use 'bf16' or 'fp32'")
    model.to(device)
    model.train()
    settings = {k: v for k, v in cfg.to_dict().items() if k in RESUME_KEYS}
    settings["world_size"] = info.world_size
    stream = BatchStream(data, cfg.batch_size * info.world_size if is_indexable(data) else cfg.batch_size, cfg.seed)
    gen = torch.Generator().manual_seed(_rank_seed(cfg.seed, info.rank))
    losses: list[float] = []
    start = 0

    ckpt = load_checkpoint(ckpt_dir, restore_global_rng=True) if resume and ckpt_dir is not None else None
    if ckpt is not None:
        saved = ckpt.state.get("settings", {})
        diff = {k: (saved.get(k), settings[k]) for k in settings if k in saved and saved[k] != settings[k]}
        if diff:
            raise ValueError(f"cannot resume from {ckpt_dir}: settings differ from the checkpoint's (saved, now): {diff}; "
                             "use the checkpoint's settings or a fresh checkpoint directory")
        if fingerprint is not None and "fingerprint" in ckpt.state:
            changed = fingerprint_diff(ckpt.state["fingerprint"], json.loads(json.dumps(fingerprint)))
            if changed:
                raise ValueError(f"cannot resume from {ckpt_dir}: it trained something else; differences "
                                 f"(checkpoint -> now): {'; '.join(changed)}. Use a fresh checkpoint directory "
                                 "or the checkpoint's configuration")
        own = model.state_dict()
        mismatch = [k for k in own if k in ckpt.model and tuple(own[k].shape) != tuple(ckpt.model[k].shape)]
        missing = sorted(set(own) ^ set(ckpt.model))
        if mismatch or missing:
            detail = [f"{k}: checkpoint {tuple(ckpt.model[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatch[:5]]
            raise ValueError(f"cannot resume from {ckpt_dir}: the model's architecture differs from the checkpoint's "
                             f"({'; '.join(detail) or f'parameters present in only one: {missing[:5]}'})")
        model.load_state_dict(ckpt.model)
        key = "loss_generator" if info.rank == 0 else f"loss_generator.{info.rank}"
        gen.set_state(ckpt.rng[key])
        losses = list(ckpt.state.get("losses", []))
        start = ckpt.step
        if log_path is not None and info.is_main:
            _truncate_log(Path(log_path), start)
    else:
        torch.manual_seed(cfg.seed)
        if resume and log_path is not None and info.is_main:
            _truncate_log(Path(log_path), 0)  # no checkpoint to continue: records of a killed attempt go
    # DDP broadcasts rank 0's weights at construction
    wrapped = ddp.wrap(_LossModule(model, loss_fn), info, cfg.strategy, find_unused_parameters=cfg.find_unused_parameters)
    params = [p for p in model.parameters() if p.requires_grad]  # FSDP replaces them by sharded ones
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    ema = EMA(model, cfg.ema_decay, warmup=cfg.ema_warmup) if cfg.ema_decay is not None else None
    if ckpt is not None:
        if ckpt.optimizer is not None:
            opt_state = ckpt.optimizer
            if cfg.strategy == "fsdp" and info.distributed:
                opt_state["state"] = {i: _shard_like(st, {n: params[i] for n in st}) for i, st in opt_state["state"].items()}
            optimizer.load_state_dict(opt_state)
        if ema is not None and ckpt.ema is not None:
            ema.load_state_dict(_shard_like({k: v.to(device) for k, v in ckpt.ema.items()}, ema.shadow))
            ema.num_updates = int(ckpt.state.get("ema_updates", ckpt.step))
    scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
    if not info.is_main:
        log_path, progress = None, False

    def checkpoint(step: int) -> None:
        if ckpt_dir is None:
            return
        model_state = ddp.full_state_dict(model.state_dict())
        ema_state = ddp.full_state_dict(ema.state_dict()) if ema is not None else None
        opt_state = _optimizer_state(optimizer)
        gens = ddp.all_gather_object(gen.get_state())
        if info.is_main:
            rng = {"loss_generator": gens[0], **{f"loss_generator.{r}": g for r, g in enumerate(gens) if r}}
            state = {"settings": settings, "losses": losses, "ema_updates": ema.num_updates if ema is not None else 0}
            if fingerprint is not None:
                state["fingerprint"] = fingerprint
            save_checkpoint(ckpt_dir, step, model=model_state, optimizer=opt_state, ema=ema_state, rng=rng, state=state)
        ddp.barrier(f"checkpoint of step {step}")

    end = cfg.steps if stop_at is None else max(start, min(cfg.steps, stop_at))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    autocast = (lambda: torch.autocast(device_type=device.type, dtype=dtype)) if dtype else nullcontext
    logger = JSONLLogger(log_path)
    bar = progress_bar(total=cfg.steps, initial=start, progress=progress, desc=desc)
    history: list[dict[str, Any]] = []
    exhausted = False
    try:
        for step in range(start, end):
            lr_now = cfg.lr * cosine_with_warmup(step, total_steps=cfg.steps, warmup=cfg.warmup,
                                                 min_ratio=cfg.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr_now
            optimizer.zero_grad(set_to_none=True)
            total = torch.zeros((), device=device)
            extra: dict[str, float] = {}
            for micro in range(cfg.grad_accum):
                try:
                    raw = stream.batch(step * cfg.grad_accum + micro)
                except DataExhausted:
                    exhausted = True
                    break
                batch = to_device(ddp.shard_batch(raw, info), device)
                last = micro == cfg.grad_accum - 1
                sync = wrapped.no_sync() if isinstance(wrapped, nn.parallel.DistributedDataParallel) and not last \
                    else nullcontext()
                with sync, ddp.collective_errors(f"optimizer step {step + 1}"):
                    with autocast():
                        out = wrapped(batch, gen)
                    loss, info_ = out if isinstance(out, tuple) else (out, {})
                    if not isinstance(loss, Tensor) or loss.dim() != 0:
                        raise TypeError(f"loss_fn must return a scalar tensor (or (loss, metrics)), got {out!r:.100}")
                    scaled = loss.float() / cfg.grad_accum
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                total += loss.detach().float()
                for k, v in info_.items():
                    extra[k] = extra.get(k, 0.0) + float(v) / cfg.grad_accum
            if exhausted:  # a partial step is dropped; the run ends after the last full one
                optimizer.zero_grad(set_to_none=True)
                end = step
                break
            total = ddp.all_reduce_mean(total)
            if scaler is not None:
                scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad) if cfg.clip_grad is not None else None
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            if ema is not None:
                ema.update(model)
            value = float(total) / cfg.grad_accum
            if not math.isfinite(value):
                raise FloatingPointError(f"{desc}: training loss became {value} at optimizer step {step + 1}; "
                                         "try a lower lr")
            losses.append(value)
            record = {"step": step + 1, "loss": value, "lr": lr_now, **extra, **(log_fields or {})}
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
            history.append(record)
            if (step + 1) % cfg.log_every == 0 or step + 1 == end:
                logger.log(**record)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
            if cfg.ckpt_every is not None and (step + 1) % cfg.ckpt_every == 0 and step + 1 != end:
                checkpoint(step + 1)
        if end > start or ckpt is None:
            checkpoint(end)
    finally:
        bar.close()
        logger.close()
    return FitResult(losses=losses, step=end, ema=ema, optimizer=optimizer, history=history, exhausted=exhausted)
