"""The data of the training pipeline: training clips named by the config's ``data`` section, probe targets."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["clips_of", "probe_data"]


def clips_of(cfg: dict[str, Any], split: str = "train", size: int | None = None) -> Any:
    """The training clips of a pipeline config's ``data`` section (see :func:`featureflow.data.dataset_from_config`).

    Example:
        >>> len(clips_of({"data": {"world": "toyworld", "train_clips": 3, "resolution": 16}}))
        3
    """
    from featureflow.data import dataset_from_config

    return dataset_from_config(cfg["data"], split=split if split != "train" else None, size=size)


@torch.no_grad()
def probe_data(cfg: dict[str, Any], shards: Any, compressor: nn.Module, clips: int) -> tuple[Tensor, dict[str, Tensor]]:
    """Compressor-reconstructed features and pixel targets of the labelled frames of the first
    ``clips`` training clips (every frame, unless the items carry a ``labeled`` mask)."""
    ds = clips_of(cfg)
    n = min(clips, len(ds))
    feats, targets = [], {}
    for i in range(n):
        f = shards[i]["features"].float()
        item = ds[i]
        keep = item.get("labeled")  # Cityscapes: only some frames of a clip carry labels
        keep = keep.bool() if isinstance(keep, Tensor) else torch.ones(f.shape[0], dtype=torch.bool)
        if not bool(keep.any()):
            continue
        feats.append(compressor.decode(compressor.encode(f[keep])))
        for key in ("segmentation", "depth", "normals", "rgb"):
            if key in item:
                targets.setdefault(key, []).append(item[key][keep])
    if not feats:
        raise ValueError(f"none of the first {n} training clips has a labelled frame; the probe heads need some")
    x = torch.cat(feats)
    return x, {k: torch.cat(v) for k, v in targets.items()}
