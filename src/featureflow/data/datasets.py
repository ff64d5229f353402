"""torch Datasets over ToyWorld: whole clips, and (context, future) windows.

Items are rendered on the fly and deterministically from their index (item ``i`` of a
split uses seed ``ToyWorld.split_seeds(split)[i]``), so a dataset costs no storage and
every worker of a DataLoader produces the same item for the same index.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from featureflow.data.toyworld import ToyWorld

__all__ = ["ToyWorldClips", "ToyWorldWindows", "MODALITIES"]

#: Per-pixel fields a dataset item can carry.
MODALITIES: tuple[str, ...] = ("rgb", "depth", "normals", "segmentation", "instances")


def _world(world: ToyWorld | None, resolution: int, kwargs: dict[str, Any]) -> ToyWorld:
    if world is not None:
        if kwargs:
            raise ValueError(f"pass either world= or ToyWorld keyword arguments, not both (got {sorted(kwargs)})")
        return world
    return ToyWorld(resolution, **kwargs)


def _check_modalities(modalities: tuple[str, ...]) -> tuple[str, ...]:
    bad = [m for m in modalities if m not in MODALITIES]
    if bad or "rgb" not in modalities:
        raise ValueError(f"modalities must include 'rgb' and be drawn from {MODALITIES}; got {modalities}")
    return tuple(modalities)


class _SplitDataset(Dataset):
    def __init__(self, split: str, size: int | None, world: ToyWorld) -> None:
        self.world = world
        self.split = split
        self.seeds = ToyWorld.split_seeds(split)
        if size is not None and not 1 <= size <= len(self.seeds):
            raise ValueError(f"size must be in [1, {len(self.seeds)}] for split {split!r}, got {size}")
        self.size = len(self.seeds) if size is None else int(size)

    def __len__(self) -> int:
        return self.size

    def _seed(self, index: int) -> int:
        if not -self.size <= index < self.size:
            raise IndexError(f"index {index} out of range for a dataset of {self.size} items")
        return self.seeds[index % self.size]


class ToyWorldClips(_SplitDataset):
    """ToyWorld clips of ``length`` frames, ``stride`` simulation steps apart.

    Each item is a dict with ``rgb`` (t, 3, H, W) and the other requested modalities
    (``depth`` (t, H, W), ``normals`` (t, 3, H, W), ``segmentation`` and ``instances``
    (t, H, W) int64), plus ``seed`` (0-d int64).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        length: frames per clip.
        stride: simulation steps between frames.
        size: number of items (default: the whole split's seed range).
        warmup: simulation steps before the first frame.
        modalities: which per-pixel fields to return.
        world: a ToyWorld to use; otherwise one is built from ``resolution`` and ``world_kwargs``.

    Example:
        >>> ds = ToyWorldClips("val", length=3, resolution=16, size=4)
        >>> item = ds[0]
        >>> len(ds), tuple(item["rgb"].shape)
        (4, (3, 3, 16, 16))
    """

    def __init__(
        self,
        split: str = "train",
        length: int = 8,
        stride: int = 1,
        *,
        size: int | None = None,
        warmup: int = 0,
        modalities: tuple[str, ...] = MODALITIES,
        resolution: int = 64,
        world: ToyWorld | None = None,
        **world_kwargs: Any,
    ) -> None:
        super().__init__(split, size, _world(world, resolution, world_kwargs))
        if length < 1 or stride < 1 or warmup < 0:
            raise ValueError(f"expected length >= 1, stride >= 1, warmup >= 0; got {length}, {stride}, {warmup}")
        self.length, self.stride, self.warmup = int(length), int(stride), int(warmup)
        self.modalities = _check_modalities(modalities)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        seed = self._seed(index)
        clip = self.world.clip(seed, self.length, stride=self.stride, start=self.warmup)
        out = {m: getattr(clip, m) for m in self.modalities}
        out["seed"] = torch.tensor(seed)
        return out


class ToyWorldWindows(_SplitDataset):
    """(context, future) windows: ``context`` frames followed by ``horizon`` frames.

    All frames are ``stride`` simulation steps apart; the window starts after ``warmup``
    steps from ``reset``. Each item is a dict with ``context`` (c, 3, H, W) and
    ``future`` (k, 3, H, W) RGB, ``context_<m>`` / ``future_<m>`` for every other
    requested modality ``m``, and ``seed``.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        context: number of context frames.
        horizon: number of future frames.
        stride: simulation steps between frames.
        size: number of items (default: the whole split's seed range).
        warmup: simulation steps before the first context frame.
        modalities: which per-pixel fields to return.
        world: a ToyWorld to use; otherwise one is built from ``resolution`` and ``world_kwargs``.

    Example:
        >>> ds = ToyWorldWindows("test", context=2, horizon=3, stride=2, resolution=16, size=2)
        >>> item = ds[1]
        >>> tuple(item["context"].shape), tuple(item["future_depth"].shape)
        ((2, 3, 16, 16), (3, 16, 16))
    """

    def __init__(
        self,
        split: str = "train",
        context: int = 4,
        horizon: int = 4,
        stride: int = 1,
        *,
        size: int | None = None,
        warmup: int = 0,
        modalities: tuple[str, ...] = MODALITIES,
        resolution: int = 64,
        world: ToyWorld | None = None,
        **world_kwargs: Any,
    ) -> None:
        super().__init__(split, size, _world(world, resolution, world_kwargs))
        if context < 1 or horizon < 1 or stride < 1 or warmup < 0:
            raise ValueError(
                f"expected context >= 1, horizon >= 1, stride >= 1, warmup >= 0; got {context}, {horizon}, {stride}, {warmup}"
            )
        self.context, self.horizon = int(context), int(horizon)
        self.stride, self.warmup = int(stride), int(warmup)
        self.modalities = _check_modalities(modalities)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        seed = self._seed(index)
        clip = self.world.clip(seed, self.context + self.horizon, stride=self.stride, start=self.warmup)
        out: dict[str, Tensor] = {}
        for m in self.modalities:
            value = getattr(clip, m)
            key = "" if m == "rgb" else f"_{m}"
            out[f"context{key}"] = value[: self.context]
            out[f"future{key}"] = value[self.context :]
        out["seed"] = torch.tensor(seed)
        return out
