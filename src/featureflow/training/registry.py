"""Stage trainers found by component type: how ``featureflow train`` trains an encoder or a compressor.

The pipeline builds the component named by the config's ``"type"`` and asks this
registry how to train it, instead of switching on type strings. A trainer is
``trainer(component, data, train, ctx)``: it trains ``component`` in place on ``data``
(for an encoder: the stage context's world/clips; for a compressor: cached features
(N, h, w, D)) with the JSON ``train`` section, and may use ``ctx`` (seed, log path,
checkpoint folder, progress flag, distributed info).

Built in: encoder ``ToyEncoder`` (pixel-head objective on ToyWorld), compressors
``FeatureVAE`` (ELBO), ``PCA`` (streaming fit) and ``Identity`` (statistics only). An
encoder without a ``train`` section is used frozen (e.g. ``DINOv2Encoder``).

Example:
    >>> from featureflow.training.registry import trainer_for, trainable_types
    >>> trainer_for("compressor", "PCA") is not None, "ToyEncoder" in trainable_types("encoder")
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from featureflow.training import distributed as ddp

__all__ = ["StageContext", "Trainer", "KINDS", "register_trainer", "trainer_for", "trainable_types"]

#: Component kinds with trainers in this registry.
KINDS = ("encoder", "compressor")


@dataclass
class StageContext:
    """What a stage trainer may use besides the component, its data and its ``train`` section.

    Attributes:
        config: the whole pipeline config.
        seed: the stage's seed (derived from the config's seed and the stage name).
        log_path: the stage's JSONL log.
        ckpt_dir: the stage's checkpoint folder.
        progress: show progress bars.
        info: this process's place in a ``torchrun`` world.
        ckpt_every: checkpoint interval (optimizer steps) when the ``train`` section sets none.
        device: where to train (this rank's GPU when CUDA is present, else the CPU).
    """

    config: dict[str, Any]
    seed: int
    log_path: Path
    ckpt_dir: Path
    progress: bool = True
    info: ddp.DistInfo = ddp.DistInfo()
    ckpt_every: int | None = None
    device: torch.device = torch.device("cpu")


#: ``trainer(component, data, train_section, ctx)``: train ``component`` in place.
Trainer = Callable[[nn.Module, Any, dict[str, Any], StageContext], None]

_TRAINERS: dict[tuple[str, str], Trainer] = {}


def register_trainer(kind: str, type_name: str) -> Callable[[Trainer], Trainer]:
    """Decorator: ``trainer`` trains components of ``kind`` (``"encoder"``/``"compressor"``) named ``type_name``.

    Example:
        >>> @register_trainer("compressor", "MyCompressor")
        ... def train_mine(comp, features, train, ctx):
        ...     pass
        >>> trainer_for("compressor", "MyCompressor") is train_mine
        True
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def deco(fn: Trainer) -> Trainer:
        _TRAINERS[(kind, type_name)] = fn
        return fn

    return deco


def trainer_for(kind: str, type_name: str) -> Trainer | None:
    """The trainer registered for ``(kind, type_name)``, or ``None``.

    Example:
        >>> trainer_for("encoder", "DINOv2Encoder") is None  # used frozen
        True
    """
    return _TRAINERS.get((kind, type_name))


def trainable_types(kind: str) -> list[str]:
    """The component types of ``kind`` that have a trainer.

    Example:
        >>> {"FeatureVAE", "Identity", "PCA"} <= set(trainable_types("compressor"))
        True
    """
    return sorted(name for k, name in _TRAINERS if k == kind)


@register_trainer("encoder", "ToyEncoder")
def _train_toy_encoder(encoder: nn.Module, data: Any, train: dict[str, Any], ctx: StageContext) -> None:
    from featureflow.data import ToyWorld
    from featureflow.training.toy_encoder import train_toy_encoder

    data_cfg = ctx.config["data"]
    if data_cfg.get("world", "toyworld") != "toyworld":
        raise ValueError("encoder training of a ToyEncoder needs data.world = 'toyworld' (its objective uses "
                         "ToyWorld's depth, normals and segmentation); drop encoder.train to use it frozen")
    world = ToyWorld(resolution=int(data_cfg.get("resolution", 64)))
    train = {"seed": ctx.seed, "ckpt_every": ctx.ckpt_every, **train}
    encoder.to(ctx.device)
    train_toy_encoder(encoder, world, progress=ctx.progress, log_path=ctx.log_path, ckpt_dir=ctx.ckpt_dir, resume=True,
                      **train)


@register_trainer("compressor", "FeatureVAE")
def _train_feature_vae(comp: nn.Module, features: Any, train: dict[str, Any], ctx: StageContext) -> None:
    from featureflow.training.vae import train_vae

    train = {"seed": ctx.seed, "ckpt_every": ctx.ckpt_every, **train}
    train_vae(comp, features, progress=ctx.progress, log_path=ctx.log_path, ckpt_dir=ctx.ckpt_dir, resume=True,
              device=ctx.device, **train)


@register_trainer("compressor", "PCA")
def _fit_pca(comp: nn.Module, features: Any, train: dict[str, Any], ctx: StageContext) -> None:
    if train:
        raise ValueError(f"compressor PCA takes no train settings (got {sorted(train)}); put them in its config")
    comp.fit(features.split(1024))


@register_trainer("compressor", "Identity")
def _fit_identity(comp: nn.Module, features: Any, train: dict[str, Any], ctx: StageContext) -> None:
    from featureflow.compressors import fit_statistics

    if train:
        raise ValueError(f"compressor Identity takes no train settings (got {sorted(train)})")
    fit_statistics(comp, features.split(1024))

