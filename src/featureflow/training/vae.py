"""Stage 2 of training: fit a :class:`~featureflow.compressors.FeatureVAE` on cached features.

``train_vae`` (1) fits the per-channel feature statistics, (2) maximises the ELBO on
standardised features through the one training engine (:func:`~featureflow.training.loop.fit`:
AdamW, tqdm bar, JSONL log, checkpoints, torchrun), and (3) fits the
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
from torch import nn

from featureflow.compressors import FeatureVAE, as_feature_tensor, fit_statistics
from featureflow.training.fingerprint import data_fingerprint, model_fingerprint
from featureflow.training.loop import FitConfig, fit
from featureflow.typing import FrameFeatures, Tensor, typechecked
from featureflow.utils import load_safetensors

__all__ = ["train_vae", "VAEObjective", "VAETrainResult", "fit_compressor_statistics", "save_compressor", "register"]

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


class _FrameBatches:
    """Re-iterable batches of ``batch_size`` frames cut from an iterable of feature tensors (deterministic)."""

    def __init__(self, items: Iterable[Any], batch_size: int) -> None:
        self.items, self.batch_size = items, batch_size

    def __iter__(self) -> Iterator[Tensor]:
        return _stream_batches(self.items, self.batch_size)


class VAEObjective(nn.Module):
    """The ELBO of a :class:`FeatureVAE` as the one-engine ``loss(batch, generator)``.

    ``loss`` returns ``(mean_batch(Σ (x̂ - x)² + kl_weight · Σ KL), {"mse": per element,
    "kl": per example})`` with a reparameterised posterior sample drawn from
    ``generator`` (a CPU generator; on another device a device generator is seeded from it).

    Example:
        >>> vae = FeatureVAE(feature_dim=8, latent_dim=2, dim=8, depth=1)
        >>> loss, info = VAEObjective(vae).loss(torch.randn(2, 2, 2, 8), torch.Generator().manual_seed(0))
        >>> loss.dim(), sorted(info)
        (0, ['kl', 'mse'])
    """

    def __init__(self, vae: FeatureVAE, kl_weight: float | None = None) -> None:
        super().__init__()
        self.vae = vae
        self.kl_weight = kl_weight

    @typechecked
    def loss(self, batch: FrameFeatures, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """The loss of a batch of features (b, h, w, D) and its float metrics."""
        ref = self.vae.feature_norm.mean
        x = batch.to(device=ref.device, dtype=ref.dtype)
        if x.device.type != "cpu":
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            generator = torch.Generator(device=x.device).manual_seed(seed)
        out = self.vae(x, sample=True, generator=generator, kl_weight=self.kl_weight)
        return out.loss, {"mse": float(out.mse.detach().mean()) / x[0].numel(), "kl": float(out.kl.detach().mean())}


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
    ckpt_dir: str | os.PathLike | None = None,
    ckpt_every: int | None = None,
    resume: bool = False,
    config: FitConfig | None = None,
) -> VAETrainResult:
    """Train ``vae`` in place by maximising the ELBO on standardised features.

    A thin wrapper of :func:`featureflow.training.loop.fit` with :class:`VAEObjective`
    (constant learning rate, no EMA unless ``config`` says otherwise), so it
    checkpoints, resumes exactly and runs under ``torchrun`` like every stage. Loss per
    step: ``mean_batch(Σ (x̂ - x)² + kl_weight · Σ KL)`` with a reparameterised
    posterior sample (sums over h, w, channels), exactly the released objective.
    Batches are random permutations of a tensor, or consecutive frames of an iterable
    (re-iterated every epoch, so pass a list or dataset, not a generator).

    Args:
        vae: the model (trained in place; moved to ``device`` if given).
        features: ``(*batch, h, w, D)`` tensor, or an iterable of such tensors or of
            dicts with a ``"features"`` tensor (e.g. ``FeatureShards``).
        steps: optimiser steps.
        batch_size: frames per step (per process under torchrun).
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
        ckpt_dir: checkpoint folder (None = no checkpoints).
        ckpt_every: checkpoint every this many steps (None = only at the end).
        resume: continue from the latest checkpoint in ``ckpt_dir``.
        config: a full :class:`FitConfig` instead of the settings above.

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
    if fit_feature_stats:
        fit_statistics(vae, features, fit_features=True, fit_latents=False, batch_size=max(batch_size, 64),
                       progress=False)
    if isinstance(features, Tensor):
        if features.ndim < 3:
            raise ValueError(f"train_vae: expected features (*batch, h, w, D), got shape {tuple(features.shape)}")
        data: Any = features.reshape(-1, *features.shape[-3:])
    else:
        data = _FrameBatches(features, batch_size)
    cfg = config or FitConfig(steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                              clip_grad=grad_clip, ema_decay=None, min_lr_ratio=1.0, seed=seed,
                              log_every=log_every, ckpt_every=ckpt_every)
    objective = VAEObjective(vae, kl_weight)
    fingerprint = {"model": model_fingerprint(vae), "kl_weight": kl_weight,
                   "data": data_fingerprint(data if isinstance(data, Tensor) else features)}
    fitted = fit(objective, None, data, cfg, log_path=log_path, ckpt_dir=ckpt_dir, resume=resume,
                 progress=progress, device=vae.feature_norm.mean.device, desc="train VAE", fingerprint=fingerprint)
    vae.eval()
    if fit_latent_stats:
        fit_statistics(vae, features, fit_features=False, fit_latents=True, batch_size=max(batch_size, 64))
    history = [{k: r[k] for k in ("step", "loss", "mse", "kl", "lr") if k in r} for r in fitted.history]
    return VAETrainResult(losses=list(fitted.losses), history=history)


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
