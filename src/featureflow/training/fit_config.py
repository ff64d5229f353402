"""`FitConfig`: the optimisation settings of one `fit` run, and how two run fingerprints differ."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from featureflow.training import distributed as ddp

__all__ = ["FitConfig", "PRECISIONS", "RESUME_KEYS", "fingerprint_diff"]

#: Autocast precisions of :class:`FitConfig` (``fp16`` needs CUDA).
PRECISIONS = ("fp32", "bf16", "fp16")

#: FitConfig fields that must match on resume, or the run would not continue the same curve.
RESUME_KEYS = ("steps", "batch_size", "grad_accum", "seed", "lr", "warmup", "min_lr_ratio", "ema_decay",
                "ema_warmup", "weight_decay", "betas", "precision", "strategy")


@dataclass
class FitConfig:
    """The optimisation settings of one :func:`fit` run (a stage's ``"train"`` JSON section).

    ``steps``, ``warmup`` and ``ckpt_every`` count optimizer steps; one optimizer step
    consumes ``grad_accum`` micro-batches of ``batch_size`` examples per process.

    Attributes:
        steps: total optimizer steps (the cosine schedule's length).
        batch_size: examples per micro-batch and process.
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup: linear warm-up length in optimizer steps.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        grad_accum: micro-batches per optimizer step.
        ema_decay: EMA decay per optimizer step (None = no EMA).
        ema_warmup: EMA decay ``min(decay, (1+n)/(10+n))`` over the first updates.
        clip_grad: max global gradient norm (None = no clipping).
        precision: ``"fp32"``, ``"bf16"`` (autocast) or ``"fp16"`` (autocast + loss scaling, CUDA only).
        ckpt_every: checkpoint every this many optimizer steps (None = only at the end).
        seed: seed of the data order, the loss generator and the global RNG.
        strategy: ``"ddp"`` or ``"fsdp"`` under torchrun (ignored in one process).
        log_every: write a JSONL record every this many optimizer steps (and the last).
        find_unused_parameters: DDP looks for parameters without a gradient every step
            (safe for any model; ``False`` is faster when every parameter gets one).

    Example:
        >>> cfg = FitConfig.from_dict({"steps": 10, "lr": 1e-3})
        >>> cfg.steps, cfg.to_dict()["lr"]
        (10, 0.001)
    """

    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup: int = 0
    min_lr_ratio: float = 0.0
    grad_accum: int = 1
    ema_decay: float | None = 0.999
    ema_warmup: bool = True
    clip_grad: float | None = 1.0
    precision: str = "fp32"
    ckpt_every: int | None = None
    seed: int = 0
    strategy: str = "ddp"
    log_every: int = 1
    find_unused_parameters: bool = True

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        for name in ("steps", "batch_size", "grad_accum", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup must be an int >= 0 (optimizer steps), got {self.warmup!r}")
        if self.ckpt_every is not None and (not isinstance(self.ckpt_every, int) or self.ckpt_every < 1):
            raise ValueError(f"ckpt_every must be None or an int >= 1 optimizer steps, got {self.ckpt_every!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.strategy not in ddp.STRATEGIES:
            raise ValueError(f"strategy must be one of {ddp.STRATEGIES}, got {self.strategy!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, where: str = "train") -> "FitConfig":
        """Build from a JSON section; ``bf16: true`` is accepted for ``precision: "bf16"``.

        Raises:
            ValueError: a key that is not a field (the message lists the valid ones).
        """
        values = dict(values)
        if "bf16" in values:
            values.setdefault("precision", "bf16" if values.pop("bf16") else "fp32")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{where}: unknown training setting(s) {unknown}; expected some of {sorted(names)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (``betas`` as a list)."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out


def fingerprint_diff(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """The keys (dotted paths) where two JSON fingerprints differ, as ``key: saved -> now``.

    Example:
        >>> fingerprint_diff({"model": {"width": 16}}, {"model": {"width": 32}})
        ['model.width: 16 -> 32']
    """
    out = []
    for key in sorted(set(saved) | set(now), key=str):
        a, b = saved.get(key, "<absent>"), now.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += fingerprint_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out
