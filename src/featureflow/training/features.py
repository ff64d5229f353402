"""Stage 1 of training: extract frozen-encoder features once and cache them as safetensors shards.

A cache directory holds ``shard_00000.safetensors`` … (each with a ``features`` tensor
(n, t, h, w, D) and any extra per-clip targets) and ``index.json`` written last, so an
interrupted extraction is resumed shard by shard and never leaves a half-written shard.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from featureflow.utils.io import load_safetensors, save_json, save_safetensors
from featureflow.utils.progress import progress_bar

__all__ = ["extract_features", "FeatureShards"]

INDEX_NAME = "index.json"


def _frames_of(item: Any) -> tuple[Tensor, dict[str, Tensor]]:
    if isinstance(item, Tensor):
        return item, {}
    if isinstance(item, dict):
        for key in ("frames", "rgb"):
            if key in item:
                extras = {k: v for k, v in item.items() if isinstance(v, Tensor) and k not in ("frames", "rgb")}
                return item[key], extras
    raise TypeError(
        "extract_features: each dataset item must be a (t, 3, H, W) tensor or a dict with a "
        f"'frames' or 'rgb' tensor, got {type(item).__name__}"
    )


@torch.no_grad()
def extract_features(
    encoder: Any,
    clips: Dataset | Sequence[Any],
    out_dir: str | os.PathLike,
    *,
    shard_size: int = 64,
    batch_size: int = 8,
    keep: Sequence[str] = (),
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> Path:
    """Encode every clip with ``encoder`` and write feature shards to ``out_dir``.

    Args:
        encoder: an `featureflow.encoders.Encoder` (images (b,3,H,W) → (b,h,w,D)).
        clips: items are (t, 3, H, W) tensors or dicts with ``frames``/``rgb``.
        out_dir: cache directory (created). Existing complete shards are kept (resume).
        shard_size: clips per shard.
        batch_size: clips encoded at once.
        keep: extra dict keys to store beside the features (e.g. ("segmentation", "depth")).
        dtype: storage dtype of features (bfloat16 halves the size).
        progress: show a progress bar.

    Returns:
        ``out_dir``; read it back with `FeatureShards`.

    Example:
        >>> import tempfile, torch
        >>> from featureflow.encoders import ModuleEncoder
        >>> enc = ModuleEncoder(lambda x: x.unfold(2, 4, 4).unfold(3, 4, 4).mean((-1, -2)).permute(0, 2, 3, 1),
        ...                     patch_size=4, feature_dim=3)
        >>> d = extract_features(enc, [torch.rand(2, 3, 8, 8)] * 3, tempfile.mkdtemp(), shard_size=2, progress=False)
        >>> item = FeatureShards(d)[2]
        >>> item["features"].shape
        torch.Size([2, 2, 2, 3])
    """
    from featureflow.encoders import encode_frames

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(clips)
    if n == 0:
        raise ValueError("extract_features: the clip dataset is empty")
    num_shards = math.ceil(n / shard_size)
    shards = []
    bar = progress_bar(total=n, progress=progress, desc="extract features", unit="clip")
    for s in range(num_shards):
        name = f"shard_{s:05d}.safetensors"
        lo, hi = s * shard_size, min(n, (s + 1) * shard_size)
        shards.append({"file": name, "start": lo, "count": hi - lo})
        if (out / name).is_file():
            bar.update(hi - lo)
            continue
        feats: list[Tensor] = []
        extras: dict[str, list[Tensor]] = {k: [] for k in keep}
        for i in range(lo, hi, batch_size):
            items = [clips[j] for j in range(i, min(hi, i + batch_size))]
            frames, ex = zip(*(_frames_of(it) for it in items))
            batch = torch.stack([f if f.is_floating_point() else f.float() / 255.0 for f in frames])
            feats.append(encode_frames(encoder, batch).to(dtype).cpu())
            for k in keep:
                if k not in ex[0]:
                    raise KeyError(f"extract_features: key {k!r} not in dataset items (have {sorted(ex[0])})")
                extras[k].append(torch.stack([e[k] for e in ex]))
            bar.update(len(items))
        tensors = {"features": torch.cat(feats)}
        tensors.update({k: torch.cat(v) for k, v in extras.items()})
        save_safetensors(tensors, out / name)
    bar.close()
    save_json({"num_clips": n, "shards": shards, "keys": ["features", *keep]}, out / INDEX_NAME)
    return out


class FeatureShards(Dataset):
    """Read a feature cache written by `extract_features`; item i is a dict of tensors.

    Shards are loaded lazily and the most recent one is kept in memory.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        index = self.directory / INDEX_NAME
        if not index.is_file():
            raise FileNotFoundError(
                f"{self.directory} has no {INDEX_NAME}: not a feature cache, or extraction did not finish"
            )
        self.index = json.loads(index.read_text())
        self._bounds = [(s["start"], s["start"] + s["count"], s["file"]) for s in self.index["shards"]]
        self._cached: tuple[str, dict[str, Tensor]] | None = None

    def __len__(self) -> int:
        return int(self.index["num_clips"])

    def _shard(self, file: str) -> dict[str, Tensor]:
        if self._cached is None or self._cached[0] != file:
            self._cached = (file, load_safetensors(self.directory / file))
        return self._cached[1]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} clips")
        for lo, hi, file in self._bounds:
            if lo <= i < hi:
                shard = self._shard(file)
                return {k: v[i - lo] for k, v in shard.items()}
        raise IndexError(i)  # pragma: no cover

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        for i in range(len(self)):
            yield self[i]

    def tensor(self, key: str = "features") -> Tensor:
        """All items of ``key`` stacked into one tensor (loads every shard)."""
        return torch.cat([load_safetensors(self.directory / f)[key] for _, _, f in self._bounds])
