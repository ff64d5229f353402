"""`train_forecaster`: fit a Flow/Regression forecaster on latent clips with the generic loop.

Also the ``featureflow train-forecaster LATENTS OUT`` sub-command (see :func:`register`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from featureflow.training.fingerprint import data_fingerprint, model_fingerprint
from featureflow.training.loop import FitConfig, FitResult, fit
from featureflow.utils import load_safetensors

__all__ = ["train_forecaster", "forecaster_config", "FORECASTER_DEFAULTS", "frames_to_latents", "save_forecaster", "register"]


def _check_data(model: nn.Module, data: Any) -> None:
    if isinstance(data, Tensor):
        if data.dim() != 5 or not data.is_floating_point():
            raise ValueError(
                f"forecaster training data must be float latent clips (N, T, h, w, C), got "
                f"{str(data.dtype).replace('torch.', '')} tensor of shape {tuple(data.shape)}"
            )
        if data.shape[1] < 2:
            raise ValueError(f"clips need at least 2 frames (context + target), got T={data.shape[1]}")
        dim = getattr(model, "latent_dim", None)
        if dim is not None and data.shape[-1] != dim:
            raise ValueError(f"clips have C={data.shape[-1]} latent channels; the forecaster expects {dim}")


#: The forecaster stage's defaults (other fields: :class:`~featureflow.training.loop.FitConfig`'s).
FORECASTER_DEFAULTS: dict[str, Any] = {"steps": 1000, "batch_size": 8, "lr": 3e-4, "warmup": 100}


def forecaster_config(**overrides: Any) -> FitConfig:
    """The forecaster stage's :class:`FitConfig`: :data:`FORECASTER_DEFAULTS` updated by ``overrides``.

    Example:
        >>> forecaster_config(steps=5).lr
        0.0003
    """
    return FitConfig.from_dict({**FORECASTER_DEFAULTS, **overrides}, where="forecaster train")


def train_forecaster(
    model: nn.Module,
    data: Any,
    config: FitConfig | None = None,
    *,
    log_path: str | os.PathLike | None = None,
    ckpt_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    device: str | torch.device | None = None,
    stop_at: int | None = None,
    encode: Callable[[Any], Tensor] | None = None,
    desc: str | None = None,
    fingerprint: dict[str, Any] | None = None,
    **overrides: Any,
) -> FitResult:
    """Train a :class:`~featureflow.forecast.FlowForecaster` or ``RegressionForecaster``.

    A thin wrapper of :func:`featureflow.training.loop.fit` with the forecaster's loss:
    each micro-batch is a batch of latent clips (b, T, h, w, C); the model's ``loss``
    draws the context length, stride, noise and flow times from the run's generator,
    so a run is reproducible from ``seed`` and resumes exactly from a checkpoint.

    Args:
        model: a forecaster with ``loss(clip, generator=...)``.
        data: latent clips as a Tensor (N, T, h, w, C), a dataset of (T, h, w, C)
            clips, or an iterable of (b, T, h, w, C) batches; with ``encode``, anything
            ``encode`` turns into such a batch (e.g. fresh frames of a procedural world).
        config: optimisation settings (default :func:`forecaster_config`); keyword
            ``overrides`` (``steps=``, ``lr=``, ``ckpt_every=``, ``bf16=``, ...) replace fields.
        log_path: JSONL log (as in :func:`fit`).
        ckpt_dir: checkpoint folder (as in :func:`fit`).
        resume: continue from the latest checkpoint in ``ckpt_dir``.
        progress: show a progress bar.
        device: where to train (as in :func:`fit`).
        stop_at: stop after this optimizer step, as if killed (as in :func:`fit`).
        encode: optional map from a data batch to latent clips (b, T, h, w, C), run
            without gradients before every loss (see :func:`frames_to_latents`).
        desc: progress-bar label (default ``"flow"`` or ``"regression"`` by model type).
        fingerprint: what resuming must match (default: the model's type and config,
            and the data's shape and content hash).

    Returns:
        :class:`~featureflow.training.loop.FitResult` (losses per step, EMA, optimizer).
        Call ``result.ema.copy_to(model)`` to use the averaged weights.

    Example:
        >>> import torch
        >>> from featureflow.forecast import Denoiser, RegressionForecaster
        >>> fc = RegressionForecaster(Denoiser(latent_dim=4, width=16, depth=1, heads=2, max_context=2))
        >>> r = train_forecaster(fc, torch.randn(8, 3, 2, 2, 4), steps=2, batch_size=4, warmup=1,
        ...                      progress=False)
        >>> len(r.losses), r.step
        (2, 2)
    """
    if not callable(getattr(model, "loss", None)):
        raise TypeError(f"model must have a loss(clip, generator=...) method (a forecaster), got {type(model).__name__}")
    _check_data(model, data)
    cfg = config if config is not None else forecaster_config()
    if fingerprint is None:
        fingerprint = {"model": model_fingerprint(model), "data": data_fingerprint(data)}

    def loss_fn(m: nn.Module, batch: Any, generator: torch.Generator) -> Tensor:
        if encode is not None:
            with torch.no_grad():
                batch = encode(batch)
        return m.loss(batch, generator=generator)

    return fit(
        model, loss_fn, data, cfg, log_path=log_path, ckpt_dir=ckpt_dir, resume=resume, progress=progress,
        device=device, stop_at=stop_at, fingerprint=fingerprint,
        desc=desc or ("regression" if "Regression" in type(model).__name__ else "flow"), **overrides,
    )


def frames_to_latents(encoder: nn.Module, compressor: nn.Module, key: str = "rgb") -> Callable[[Any], Tensor]:
    """An ``encode`` for :func:`train_forecaster`: frames (b, T, 3, H, W) (or ``batch[key]``)
    → latent clips (b, T, h, w, C) through a frozen encoder and compressor (in eval mode).

    Example:
        >>> import torch
        >>> from featureflow.compressors import Identity
        >>> from featureflow.encoders import ToyEncoder
        >>> enc = frames_to_latents(ToyEncoder(image_size=16, patch_size=8, width=8, depth=1, heads=2, blocks=(0,)),
        ...                         Identity(8))
        >>> enc({"rgb": torch.rand(2, 3, 3, 16, 16)}).shape
        torch.Size([2, 3, 2, 2, 8])
    """
    from featureflow.encoders import encode_frames

    encoder.eval()
    compressor.eval()

    @torch.no_grad()
    def encode(batch: Any) -> Tensor:
        frames = batch[key] if isinstance(batch, dict) else batch
        return compressor.encode(encode_frames(encoder, frames.float()))

    return encode


def save_forecaster(model: nn.Module, out_dir: str | os.PathLike) -> Path:
    """Write ``forecaster.safetensors`` (state dict) and ``forecaster.json`` (component spec
    + versions) into ``out_dir``; rebuild with ``build_component`` + ``load_state_dict``.

    Example:
        >>> import json, tempfile
        >>> from featureflow.forecast import Denoiser, FlowForecaster
        >>> fc = FlowForecaster(Denoiser(latent_dim=4, width=16, depth=1, heads=2))
        >>> d = save_forecaster(fc, tempfile.mkdtemp())
        >>> json.loads((d / "forecaster.json").read_text())["type"]
        'FlowForecaster'
    """
    from featureflow.utils.component_io import save_component

    return save_component(model, out_dir, "forecaster")


def _run(args: argparse.Namespace) -> int:
    from featureflow.forecast import Denoiser, FlowForecaster, RegressionForecaster

    tensors = load_safetensors(args.latents)
    if "latents" not in tensors:
        raise ValueError(f"{args.latents} has no 'latents' tensor (expected (N, T, h, w, C)); found {sorted(tensors)}")
    latents = tensors["latents"].float()
    if latents.dim() != 5:
        raise ValueError(f"'latents' must have shape (N, T, h, w, C), got {tuple(latents.shape)}")
    torch.manual_seed(args.seed)
    den = Denoiser(arch=args.arch, latent_dim=int(latents.shape[-1]), width=args.width, depth=args.depth,
                   heads=args.heads, max_context=args.max_context,
                   grid=tuple(latents.shape[2:4]) if args.arch == "vfmf" else None)
    if args.objective == "flow":
        model: nn.Module = FlowForecaster(den, time_sampling=args.time_sampling, history_dropout=args.history_dropout,
                                          max_stride=args.max_stride)
    else:
        model = RegressionForecaster(den, max_stride=args.max_stride)
    out = Path(args.out)
    result = train_forecaster(
        model, latents, steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
        grad_accum=args.grad_accum, bf16=args.bf16, log_path=out / "train_log.jsonl", ckpt_dir=out / "checkpoints",
        ckpt_every=args.ckpt_every, resume=args.resume, progress=not args.no_progress, seed=args.seed,
    )
    if result.ema is not None:
        result.ema.copy_to(model)
    save_forecaster(model, out)
    print(f"trained {type(model).__name__} for {result.step} steps, final loss {result.losses[-1]:.4g}; "
          f"wrote {out / 'forecaster.safetensors'} (EMA weights)")
    return 0


def register(sub: "argparse._SubParsersAction") -> None:
    """Add ``featureflow train-forecaster LATENTS OUT [...]`` (LATENTS: .safetensors with 'latents')."""
    p = sub.add_parser("train-forecaster", help="train a flow or regression forecaster on latent clips")
    p.add_argument("latents", help=".safetensors file with a 'latents' tensor (N, T, h, w, C)")
    p.add_argument("out", help="output directory (forecaster.safetensors/.json, train_log.jsonl, checkpoints/)")
    p.add_argument("--objective", choices=("flow", "regression"), default="flow",
                   help="flow matching (samples futures) or deterministic regression (default: %(default)s)")
    p.add_argument("--arch", choices=("causal", "vfmf"), default="causal",
                   help="denoiser trunk: cached causal, or the released VFMF architecture (default: %(default)s)")
    p.add_argument("--width", type=int, default=256, help="transformer width (default: %(default)s)")
    p.add_argument("--depth", type=int, default=4, help="transformer layers (default: %(default)s)")
    p.add_argument("--heads", type=int, default=4, help="attention heads (default: %(default)s)")
    p.add_argument("--max-context", type=int, default=4, help="most context frames seen (default: %(default)s)")
    p.add_argument("--max-stride", type=int, default=4,
                   help="largest frame stride of a training window (default: %(default)s)")
    p.add_argument("--time-sampling", choices=("uniform", "logit_normal"), default="uniform",
                   help="distribution of the flow times in training (flow only; default: %(default)s)")
    p.add_argument("--history-dropout", type=float, default=0.0,
                   help="probability of dropping a clip's context, for guidance (flow only; default: %(default)s)")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per micro-batch (default: %(default)s)")
    p.add_argument("--lr", type=float, default=3e-4, help="peak AdamW learning rate (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=100,
                   help="linear warm-up length in optimizer steps (default: %(default)s)")
    p.add_argument("--grad-accum", type=int, default=1,
                   help="micro-batches per optimizer step (default: %(default)s)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    p.add_argument("--ckpt-every", type=int, default=None,
                   help="checkpoint every N optimizer steps (default: only at the end)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints if present")
    p.add_argument("--seed", type=int, default=0, help="seed of the run: weights, batches, noise (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run)
