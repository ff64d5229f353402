"""Stage 2 of training: fit a :class:`~featureflow.compressors.FeatureVAE` on cached features.

``train_vae`` (1) fits the per-channel feature statistics, (2) maximises the ELBO on
standardised features with AdamW, with a tqdm bar and a JSONL log, and (3) fits the
per-channel latent statistics of the posterior means, so the trained VAE is ready to
produce standardised latents for a forecaster.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from featureflow.compressors import FeatureVAE, as_feature_tensor, fit_statistics
from featureflow.typing import Tensor
from featureflow.utils import JSONLLogger, load_safetensors, progress_bar, save_json, save_safetensors
from featureflow.version import FORMAT_VERSION, __version__

__all__ = ["train_vae", "VAETrainResult", "fit_compressor_statistics", "save_compressor", "register"]

#: Fit a compressor's feature/latent statistics from features (re-exported helper).
fit_compressor_statistics = fit_statistics


@dataclass
class VAETrainResult:
    """What :func:`train_vae` returns.

    Attributes:
        losses: the training loss (``-ELBO`` per example, batch mean) at every step.
        history: the logged records (step, loss, mse per element, kl per example, lr).
    """

    losses: list[float] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else math.nan


def _tensor_batches(x: Tensor, batch_size: int, gen: torch.Generator) -> Iterator[Tensor]:
    while True:  # epochs of random permutations
        for idx in torch.randperm(x.shape[0], generator=gen).split(batch_size):
            yield x[idx]


def _stream_batches(items: Iterable[Any], batch_size: int) -> Iterator[Tensor]:
    one_shot = iter(items) is items
    buffer: list[Tensor] = []
    have = 0
    while True:
        seen = 0
        for item in items:
            t = as_feature_tensor(item)
            frames = t.reshape(-1, *t.shape[-3:])
            seen += frames.shape[0]
            buffer.append(frames)
            have += frames.shape[0]
            while have >= batch_size:
                cat = torch.cat(buffer)
                yield cat[:batch_size]
                buffer, have = [cat[batch_size:]], cat.shape[0] - batch_size
        if seen == 0:
            raise ValueError(
                "train_vae: the features iterable yielded no frames"
                + (" (a one-shot iterator is exhausted after one pass; pass a list or dataset)" if one_shot else "")
            )


def train_vae(
    vae: FeatureVAE,
    features: Tensor | Iterable[Any],
    *,
    steps: int = 1000,
    batch_size: int = 32,
    lr: float = 1e-4,
    kl_weight: float | None = None,
    weight_decay: float = 0.0,
    grad_clip: float | None = 1.0,
    fit_feature_stats: bool = True,
    fit_latent_stats: bool = True,
    seed: int = 0,
    progress: bool = True,
    log_path: str | os.PathLike | None = None,
    log_every: int = 1,
    device: str | torch.device | None = None,
) -> VAETrainResult:
    """Train ``vae`` in place by maximising the ELBO on standardised features.

    Loss per step: ``mean_batch(Σ (x̂ - x)² + kl_weight · Σ KL)`` with a
    reparameterised posterior sample (sums over h, w, channels), exactly the released
    objective. Batches are random permutations of a tensor, or consecutive frames of an
    iterable (re-iterated every epoch, so pass a list or dataset, not a generator).

    Args:
        vae: the model (trained in place; moved to ``device`` if given).
        features: ``(*batch, h, w, D)`` tensor, or an iterable of such tensors or of
            dicts with a ``"features"`` tensor (e.g. ``FeatureShards``).
        steps: optimiser steps.
        batch_size: frames per step.
        lr: AdamW learning rate.
        kl_weight: overrides ``vae.kl_weight``.
        weight_decay: AdamW weight decay.
        grad_clip: max gradient norm (``None`` = no clipping).
        fit_feature_stats: fit the feature statistics first (else keep the current ones).
        fit_latent_stats: fit the latent statistics after training.
        seed: seeds batch order and posterior sampling.
        progress: show a tqdm bar.
        log_path: JSONL file for per-step records (``None`` = no log).
        log_every: log every n-th step (the last step is always logged).
        device: where to train (default: where ``vae`` is).

    Returns:
        :class:`VAETrainResult` with the loss curve.

    Example:
        >>> import torch
        >>> from featureflow.compressors import FeatureVAE
        >>> vae = FeatureVAE(feature_dim=8, latent_dim=2, dim=8, depth=1)
        >>> res = train_vae(vae, torch.randn(16, 2, 2, 8), steps=3, batch_size=4, progress=False)
        >>> len(res.losses)
        3
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"train_vae: steps and batch_size must be >= 1, got steps={steps}, batch_size={batch_size}")
    if not isinstance(vae, FeatureVAE):
        raise TypeError(f"train_vae: expected a FeatureVAE, got {type(vae).__name__}")
    if not isinstance(features, Tensor) and iter(features) is features:
        raise ValueError(
            "train_vae: features must be a tensor or a re-iterable (list, dataset); a one-shot "
            "iterator cannot be read for statistics, several epochs and latent statistics"
        )
    if device is not None:
        vae.to(device)
    dev = vae.feature_norm.mean.device
    dtype = vae.feature_norm.mean.dtype
    if fit_feature_stats:
        fit_statistics(vae, features, fit_features=True, fit_latents=False, batch_size=max(batch_size, 64),
                       progress=False)
    gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=dev).manual_seed(seed + 1)
    if isinstance(features, Tensor):
        if features.ndim < 3:
            raise ValueError(f"train_vae: expected features (*batch, h, w, D), got shape {tuple(features.shape)}")
        batches = _tensor_batches(features.reshape(-1, *features.shape[-3:]), batch_size, gen)
    else:
        batches = _stream_batches(features, batch_size)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=weight_decay)
    result = VAETrainResult()
    vae.train()
    with JSONLLogger(log_path) as log:
        bar = progress_bar(range(steps), progress=progress, desc="train VAE")
        for step in bar:
            x = next(batches).to(device=dev, dtype=dtype)
            out = vae(x, sample=True, generator=noise_gen, kl_weight=kl_weight)
            loss = out.loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(vae.parameters(), grad_clip)
            opt.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"train_vae: loss became {value} at step {step}; try a lower lr")
            result.losses.append(value)
            if step % log_every == 0 or step == steps - 1:
                record = {
                    "step": step,
                    "loss": value,
                    "mse": float(out.mse.detach().mean()) / x[0].numel(),
                    "kl": float(out.kl.detach().mean()),
                    "lr": lr,
                }
                result.history.append(record)
                log.log(**record)
            bar.set_postfix(loss=f"{value:.4g}")
    vae.eval()
    if fit_latent_stats:
        fit_statistics(vae, features, fit_features=False, fit_latents=True, batch_size=max(batch_size, 64))
    return result


# --------------------------------------------------------------------------- CLI
def _load_features(path: Path) -> Tensor | Iterable[Any]:
    if path.is_dir():
        from featureflow.training.features import FeatureShards

        return FeatureShards(path)
    if path.suffix == ".safetensors":
        tensors = load_safetensors(path)
        if "features" not in tensors:
            raise ValueError(f"{path} has no 'features' tensor (keys: {sorted(tensors)})")
        return tensors["features"]
    raise ValueError(f"{path}: expected a feature-cache directory (index.json) or a .safetensors file with 'features'")


def save_compressor(compressor: Any, out_dir: str | os.PathLike) -> Path:
    """Write ``compressor.safetensors`` (state dict) and ``compressor.json`` (component
    spec + versions) into ``out_dir``; rebuild with ``build_component`` + ``load_state_dict``.

    Example:
        >>> import tempfile, json, pathlib
        >>> from featureflow.compressors import Identity
        >>> d = save_compressor(Identity(4), tempfile.mkdtemp())
        >>> json.loads((d / "compressor.json").read_text())["type"]
        'Identity'
    """
    from featureflow.utils.component_io import save_component

    return save_component(compressor, out_dir, "compressor")


def _run(args: argparse.Namespace) -> int:
    features = _load_features(Path(args.features))
    first = features if isinstance(features, Tensor) else as_feature_tensor(next(iter(features)))
    vae = FeatureVAE(feature_dim=int(first.shape[-1]), latent_dim=args.latent_dim, dim=args.dim,
                     depth=args.depth, kl_weight=args.kl_weight)
    out = Path(args.out)
    result = train_vae(vae, features, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       progress=not args.no_progress, log_path=out / "train_log.jsonl")
    save_compressor(vae, out)
    print(f"trained FeatureVAE ({vae.feature_dim} -> {vae.latent_dim}), final loss {result.final_loss:.4g}; "
          f"wrote {out / 'compressor.safetensors'}")
    return 0


def register(sub: "argparse._SubParsersAction") -> None:
    """Add the ``train-vae`` sub-command: ``featureflow train-vae FEATURES OUT [...]``."""
    p = sub.add_parser("train-vae", help="train a FeatureVAE on cached features")
    p.add_argument("features", help="feature-cache directory (extract_features) or .safetensors with 'features'")
    p.add_argument("out", help="output directory (compressor.safetensors, compressor.json, train_log.jsonl)")
    p.add_argument("--latent-dim", type=int, default=16, help="latent channels per patch (default: %(default)s)")
    p.add_argument("--dim", type=int, default=768, help="ConvNeXt width")
    p.add_argument("--depth", type=int, default=18, help="ConvNeXt blocks in encoder and decoder")
    p.add_argument("--kl-weight", type=float, default=0.01, help="weight of the KL term (default: %(default)s)")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="feature maps per batch (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the run: weights and batches (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run)
