"""The data of the training pipeline: training clips named by the config's ``data`` section, probe targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["FolderClips", "clips_of", "probe_data"]


class FolderClips(torch.utils.data.Dataset):
    """Clips from a folder of frame folders (one sub-folder per clip), as ``{"rgb": (t, 3, H, W)}``.

    Example:
        >>> import tempfile, pathlib
        >>> from featureflow.data import write_frames
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> _ = write_frames(torch.rand(3, 3, 8, 8), root / "a")
        >>> FolderClips(str(root), length=2, resolution=4)[0]["rgb"].shape
        torch.Size([2, 3, 4, 4])
    """

    def __init__(self, root: str, length: int, resolution: int | None) -> None:
        from featureflow.data import read_frames

        self._read = read_frames
        self.dirs = sorted(p for p in Path(root).iterdir() if p.is_dir()) or [Path(root)]
        self.length, self.resolution = length, resolution

    def __len__(self) -> int:
        return len(self.dirs)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        frames = self._read(self.dirs[i])
        if frames.shape[0] < self.length:
            raise ValueError(f"{self.dirs[i]} has {frames.shape[0]} frames; clip_length is {self.length}")
        frames = frames[: self.length]
        if self.resolution is not None:
            frames = torch.nn.functional.interpolate(frames, size=(self.resolution, self.resolution),
                                                     mode="bilinear", antialias=True, align_corners=False)
        return {"rgb": frames.clamp(0, 1)}


def clips_of(cfg: dict[str, Any], split: str = "train", size: int | None = None) -> Any:
    """The training clips of a pipeline config's ``data`` section (``world``: toyworld or frames).

    Example:
        >>> len(clips_of({"data": {"world": "toyworld", "train_clips": 3, "resolution": 16}}))
        3
    """
    data = cfg["data"]
    kind = data.get("world", "toyworld")
    if kind == "toyworld":
        from featureflow.data import ToyWorldClips

        return ToyWorldClips(split, length=int(data.get("clip_length", 8)), stride=int(data.get("stride", 1)),
                             size=size or int(data.get("train_clips", 256)),
                             resolution=int(data.get("resolution", 64)), warmup=int(data.get("warmup", 0)))
    if kind == "frames":
        return FolderClips(data["root"], int(data.get("clip_length", 8)), data.get("resolution"))
    raise ValueError(f"data.world must be 'toyworld' or 'frames', got {kind!r}")


@torch.no_grad()
def probe_data(cfg: dict[str, Any], shards: Any, compressor: nn.Module, clips: int) -> tuple[Tensor, dict[str, Tensor]]:
    """Compressor-reconstructed features and pixel targets of the first ``clips`` training clips."""
    ds = clips_of(cfg)
    n = min(clips, len(ds))
    feats, targets = [], {}
    for i in range(n):
        f = shards[i]["features"].float()
        feats.append(compressor.decode(compressor.encode(f)))
        item = ds[i]
        for key in ("segmentation", "depth", "normals", "rgb"):
            if key in item:
                targets.setdefault(key, []).append(item[key])
    x = torch.cat(feats)
    return x, {k: torch.cat(v) for k, v in targets.items()}
