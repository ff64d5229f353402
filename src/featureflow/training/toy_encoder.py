"""Train a `ToyEncoder` so that its features are linearly decodable on ToyWorld.

Objective: the encoder is trained jointly with `PixelLinearHeads`, one linear map per
patch whose ``p * p * c`` outputs are rearranged into the patch's pixels (a "linear +
pixel-shuffle" probe, so every decoded pixel is a linear function of its patch's
features). The heads predict, per pixel:

* segmentation logits over the world's classes: cross-entropy, classes weighted by
  inverse square-root frequency (objects are small; mIoU weighs classes equally);
* log depth: L1 against ``log(depth)``;
* surface normals: ``1 - cos`` between the normalised prediction and the target;
* RGB: L1 reconstruction (weight ``rgb_weight``); it keeps appearance (colour,
  shading, shadows) in the features, which forecasting and the RGB probe need.

Training data is a pool of ``num_clips`` clips of ``clip_length`` frames
(``stride`` simulation steps apart) rendered from the world's train seeds, and
re-rendered from new random train worlds every ``refresh_every`` steps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featureflow.training.fingerprint import model_fingerprint
from featureflow.training.loop import FitConfig, fit
from featureflow.typing import FrameFeatures, typechecked

__all__ = ["PixelLinearHeads", "ToyEncoderObjective", "ToyEncoderTrainResult", "pixel_losses", "render_pool",
           "train_toy_encoder"]


class PixelLinearHeads(nn.Module):
    """Linear per-patch heads for segmentation, log depth, normals and RGB, at pixel level.

    ``features (b, h, w, D)`` → a dict of ``segmentation (b, K, h*p, w*p)`` logits,
    ``depth (b, h*p, w*p)`` metres (``exp`` of the linear log-depth), ``normals
    (b, 3, h*p, w*p)`` unit vectors and ``rgb (b, 3, h*p, w*p)`` (unclamped).

    Example:
        >>> import torch
        >>> heads = PixelLinearHeads(feature_dim=8, patch_size=4, num_classes=5)
        >>> out = heads(torch.randn(2, 3, 3, 8))
        >>> tuple(out["segmentation"].shape), tuple(out["normals"].shape)
        ((2, 5, 12, 12), (2, 3, 12, 12))
    """

    def __init__(self, feature_dim: int, patch_size: int, num_classes: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.num_classes = num_classes
        self.channels = num_classes + 1 + 3 + 3
        self.linear = nn.Linear(feature_dim, self.channels * patch_size * patch_size)

    @typechecked
    def forward(self, features: FrameFeatures) -> dict[str, Tensor]:
        """Decode every task; see the class docstring for shapes."""
        x = self.linear(features).permute(0, 3, 1, 2)  # (b, c*p*p, h, w)
        x = F.pixel_shuffle(x, self.patch_size)  # (b, c, H, W)
        k = self.num_classes
        return {
            "segmentation": x[:, :k],
            "log_depth": x[:, k],
            "depth": x[:, k].exp(),
            "normals": F.normalize(x[:, k + 1 : k + 4], dim=1, eps=1e-6),
            "raw_normals": x[:, k + 1 : k + 4],
            "rgb": x[:, k + 4 : k + 7],
        }


@dataclass
class ToyEncoderTrainResult:
    """What `train_toy_encoder` returns: the trained encoder and heads, and the loss history."""

    encoder: nn.Module
    heads: PixelLinearHeads
    history: list[dict[str, float]] = field(default_factory=list)


def render_pool(world: Any, num_clips: int, clip_length: int, stride: int, seed: int = 0,
                split: str = "train", generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Render clips into flat frame tensors ``rgb, depth, normals, segmentation`` (n = clips × length).

    Seeds come from ``world.split_seeds(split)`` when the world has it (ToyWorld does),
    offset by ``seed * num_clips`` (modulo the split's size); otherwise ``seed * num_clips + i``. With a
    ``generator``, ``num_clips`` seeds are instead drawn at random from the split.

    Example:
        >>> from featureflow.data import ToyWorld
        >>> pool = render_pool(ToyWorld(resolution=16), num_clips=2, clip_length=3, stride=2)
        >>> tuple(pool["rgb"].shape), tuple(pool["segmentation"].shape)
        ((6, 3, 16, 16), (6, 16, 16))
    """
    seeds = world.split_seeds(split) if hasattr(world, "split_seeds") else range(0, 2**31 - 1)
    if generator is not None:
        picks = torch.randint(0, len(seeds), (num_clips,), generator=generator).tolist()
    else:
        if num_clips > len(seeds):
            raise ValueError(f"num_clips={num_clips} runs past the {split!r} seed range ({len(seeds)} seeds)")
        first = (seed * num_clips) % (len(seeds) - num_clips + 1)  # large seeds wrap around the split
        picks = list(range(first, first + num_clips))
    keys = ("rgb", "depth", "normals", "segmentation")
    parts: dict[str, list[Tensor]] = {k: [] for k in keys}
    for i in range(num_clips):
        clip = world.clip(seeds[picks[i]], clip_length, stride=stride)
        for k in keys:
            parts[k].append(getattr(clip, k))
    pool = {k: torch.cat(v) for k, v in parts.items()}
    pool["segmentation"] = pool["segmentation"].long()
    return pool


def pixel_losses(out: dict[str, Tensor], batch: dict[str, Tensor], class_weights: Tensor | None = None,
                 rgb_weight: float = 1.0) -> dict[str, Tensor]:
    """The training losses of `PixelLinearHeads` outputs against a batch of ToyWorld frames.

    Returns ``{"loss": total, "segmentation", "depth", "normals", "rgb"}`` (0-d tensors);
    see the module docstring for each term.

    Example:
        >>> import torch
        >>> heads = PixelLinearHeads(feature_dim=4, patch_size=2, num_classes=3)
        >>> batch = {"segmentation": torch.zeros(1, 4, 4, dtype=torch.long), "depth": torch.ones(1, 4, 4),
        ...          "normals": torch.tensor([0.0, 0.0, -1.0]).view(1, 3, 1, 1).expand(1, 3, 4, 4),
        ...          "rgb": torch.zeros(1, 3, 4, 4)}
        >>> sorted(pixel_losses(heads(torch.randn(1, 2, 2, 4)), batch))
        ['depth', 'loss', 'normals', 'rgb', 'segmentation']
    """
    seg = F.cross_entropy(out["segmentation"], batch["segmentation"], weight=class_weights)
    depth = (out["log_depth"] - batch["depth"].clamp_min(1e-3).log()).abs().mean()
    cos = F.cosine_similarity(out["raw_normals"], batch["normals"], dim=1, eps=1e-6)
    normals = (1.0 - cos).mean()
    rgb = (out["rgb"] - batch["rgb"]).abs().mean()
    total = seg + depth + normals + rgb_weight * rgb
    return {"loss": total, "segmentation": seg, "depth": depth, "normals": normals, "rgb": rgb}


class _PoolBatches:
    """Batches of frames from a rendered pool, re-rendered from new random train worlds every
    ``refresh_every`` batches; iterating again replays the same sequence (exact resume)."""

    def __init__(self, world: Any, num_clips: int, clip_length: int, stride: int, seed: int, batch_size: int,
                 refresh_every: int | None, first_pool: dict[str, Tensor]) -> None:
        self.world, self.num_clips, self.clip_length, self.stride = world, num_clips, clip_length, stride
        self.seed, self.batch_size, self.refresh_every = seed, batch_size, refresh_every
        self.first_pool = first_pool

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        gen = torch.Generator().manual_seed(self.seed)
        pool = self.first_pool
        n = pool["rgb"].shape[0]
        order, cursor, step = torch.randperm(n, generator=gen), 0, 0
        while True:
            if self.refresh_every and step and step % self.refresh_every == 0:
                pool = render_pool(self.world, self.num_clips, self.clip_length, self.stride, generator=gen)
                order, cursor = torch.randperm(n, generator=gen), 0
            if cursor + self.batch_size > n:
                order, cursor = torch.randperm(n, generator=gen), 0
            idx = order[cursor : cursor + self.batch_size]
            cursor += self.batch_size
            step += 1
            yield {k: v[idx] for k, v in pool.items()}


class ToyEncoderObjective(nn.Module):
    """The encoder + `PixelLinearHeads` objective as the one-engine ``loss(batch, generator)``.

    ``loss`` returns ``(total, {"segmentation", "depth", "normals", "rgb"})`` (see
    `pixel_losses`) for a batch of ToyWorld frames (dict of ``rgb``, ``depth``,
    ``normals``, ``segmentation``).

    Example:
        >>> from featureflow.encoders import ToyEncoder
        >>> enc = ToyEncoder(image_size=16, patch_size=8, width=16, depth=1, heads=2, blocks=(0,))
        >>> obj = ToyEncoderObjective(enc, PixelLinearHeads(16, 8, 5))
        >>> batch = {"rgb": torch.rand(1, 3, 16, 16), "depth": torch.ones(1, 16, 16),
        ...          "normals": torch.tensor([0.0, 0.0, -1.0]).view(1, 3, 1, 1).expand(1, 3, 16, 16),
        ...          "segmentation": torch.zeros(1, 16, 16, dtype=torch.long)}
        >>> sorted(obj.loss(batch, torch.Generator())[1])
        ['depth', 'normals', 'rgb', 'segmentation']
    """

    def __init__(self, encoder: nn.Module, heads: PixelLinearHeads, class_weights: Tensor | None = None,
                 rgb_weight: float = 1.0) -> None:
        super().__init__()
        self.encoder, self.heads, self.rgb_weight = encoder, heads, float(rgb_weight)
        self.register_buffer("class_weights", class_weights if class_weights is not None else torch.ones(heads.num_classes))

    def loss(self, batch: dict[str, Tensor], generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """The total loss of a batch and its terms (floats)."""
        losses = pixel_losses(self.heads(self.encoder(batch["rgb"])), batch, self.class_weights, self.rgb_weight)
        return losses["loss"], {k: float(v.detach()) for k, v in losses.items() if k != "loss"}


def train_toy_encoder(
    encoder: nn.Module,
    world: Any,
    *,
    steps: int = 3000,
    batch_size: int = 32,
    lr: float = 1e-3,
    progress: bool = True,
    log_path: str | os.PathLike | None = None,
    seed: int = 0,
    num_clips: int = 128,
    clip_length: int = 4,
    stride: int = 5,
    refresh_every: int | None = 60,
    rgb_weight: float = 1.0,
    weight_decay: float = 0.05,
    warmup: int = 100,
    log_every: int = 10,
    ckpt_dir: str | os.PathLike | None = None,
    ckpt_every: int | None = None,
    resume: bool = False,
) -> ToyEncoderTrainResult:
    """Train ``encoder`` (e.g. a `ToyEncoder`) with linear pixel heads on ToyWorld frames.

    A thin wrapper of :func:`featureflow.training.loop.fit` with
    :class:`ToyEncoderObjective` (see the module docstring for the objective): AdamW
    with linear warm-up and cosine decay, checkpoints and exact resume, torchrun. The
    encoder is left in eval mode on return.

    Args:
        encoder: a trainable `featureflow.encoders.Encoder` module (``patch_size``,
            ``feature_dim``), e.g. ``ToyEncoder()``.
        world: a ToyWorld (anything with ``clip(seed, length, stride)`` returning
            ``rgb, depth, normals, segmentation``; ``CLASSES`` gives the class count).
        steps: optimiser steps.
        batch_size: frames per step (the global batch under torchrun).
        lr: peak learning rate.
        progress: show a progress bar.
        log_path: JSONL file receiving ``{step, loss, segmentation, depth, normals,
            rgb, lr}`` every ``log_every`` steps (``None``: no log); steps count from 1.
        seed: seeds the initialisation of the heads, the batch order and which train
            clips are rendered.
        num_clips: clips rendered for the training pool.
        clip_length: frames per clip.
        stride: simulation steps between the frames of a clip.
        refresh_every: render a new pool (new random train worlds) every this many
            steps; ``None`` keeps the first pool. Fresh worlds stop the encoder from
            memorising the training scenes (object shape/colour pairs), which otherwise
            costs a lot of validation mIoU.
        rgb_weight: weight of the RGB reconstruction term.
        weight_decay: AdamW weight decay.
        warmup: linear warm-up steps.
        log_every: steps between log records.
        ckpt_dir: checkpoint folder (None = no checkpoints).
        ckpt_every: checkpoint every this many steps (None = only at the end).
        resume: continue from the latest checkpoint in ``ckpt_dir``.

    Returns:
        `ToyEncoderTrainResult` with the encoder, the trained heads and the history.

    Example:
        >>> from featureflow.data import ToyWorld
        >>> from featureflow.encoders import ToyEncoder
        >>> enc = ToyEncoder(image_size=16, patch_size=8, width=16, depth=1, heads=2, blocks=(0,))
        >>> res = train_toy_encoder(enc, ToyWorld(resolution=16), steps=2, batch_size=2,
        ...                         num_clips=1, clip_length=2, progress=False)
        >>> len(res.history), sorted(res.heads(enc(ToyWorld(resolution=16).clip(0, 1).rgb)))[0]
        (2, 'depth')
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got steps={steps}, batch_size={batch_size}")
    for name in ("patch_size", "feature_dim"):
        if not hasattr(encoder, name):
            raise TypeError(f"train_toy_encoder expects an Encoder module with {name}; got {type(encoder).__name__}")
    if not any(p.requires_grad for p in encoder.parameters()):
        raise ValueError("the encoder has no trainable parameters (frozen?); train_toy_encoder trains the encoder")
    num_classes = len(getattr(world, "CLASSES", ())) or 5
    pool = render_pool(world, num_clips, clip_length, stride, seed=seed)
    counts = torch.bincount(pool["segmentation"].flatten(), minlength=num_classes).double()
    class_weights = counts.clamp_min(1).rsqrt()
    class_weights[counts == 0] = class_weights[counts > 0].max()  # a class unseen in the first pool
    class_weights = (class_weights / (class_weights * counts).sum() * counts.sum()).float()

    device = next(encoder.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        heads = PixelLinearHeads(int(encoder.feature_dim), int(encoder.patch_size), num_classes).to(device)
    objective = ToyEncoderObjective(encoder, heads, class_weights.to(device), rgb_weight)
    data = _PoolBatches(world, num_clips, clip_length, stride, seed, batch_size, refresh_every, pool)
    cfg = FitConfig(steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup=warmup,
                    ema_decay=None, clip_grad=1.0, seed=seed, log_every=log_every, ckpt_every=ckpt_every)
    fingerprint = {"model": model_fingerprint(encoder), "world": type(world).__name__,
                   "data": {"num_clips": num_clips, "clip_length": clip_length, "stride": stride,
                            "refresh_every": refresh_every, "rgb_weight": rgb_weight}}
    try:
        fitted = fit(objective, None, data, cfg, log_path=log_path, ckpt_dir=ckpt_dir, resume=resume,
                     progress=progress, device=device, desc="train toy encoder", fingerprint=fingerprint)
    finally:
        encoder.eval()
        heads.eval()
    history = [{k: v for k, v in r.items() if k in ("loss", "segmentation", "depth", "normals", "rgb")}
               for r in fitted.history]
    return ToyEncoderTrainResult(encoder=encoder, heads=heads, history=history)
