"""Stage 1 of training: encode every clip once with the frozen encoder and cache the features as safetensors shards.

A cache directory holds ``shard_00000.safetensors`` … (each with a ``features`` tensor
(n, t, h, w, D) and any extra per-clip targets) and ``index.json``, written last. Shard
``s`` holds clips ``[s * shard_size, (s + 1) * shard_size)``.

Under ``torch.distributed`` (``torchrun``) every rank calls `extract_features`: rank
``r`` encodes and writes the shards ``s`` with ``s % world_size == r`` (its own files),
all ranks meet at a barrier, rank 0 checks every shard and writes the index, and a
second barrier lets every rank read the cache. The files are the ones a one-process
extraction writes, byte for byte, whatever the number of processes.

Every file is written to a temporary name and renamed when complete, so a killed
extraction leaves complete shards and no index; running it again keeps the complete
shards that match (same clip range, keys, dtype and ``fingerprint``) and encodes the rest.
"""

from __future__ import annotations

import json
import math
import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from safetensors import safe_open
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from featureflow.utils.io import load_safetensors, save_json, save_safetensors
from featureflow.utils.progress import progress_bar

__all__ = ["extract_features", "FeatureShards", "INDEX_NAME", "FORMAT"]

INDEX_NAME = "index.json"
#: Format tag stored in the index and in every shard's metadata.
FORMAT = "featureflow-features/2"


def _frames_of(item: Any, index: int) -> tuple[Tensor, dict[str, Tensor]]:
    if isinstance(item, Tensor):
        return item, {}
    if isinstance(item, dict):
        for key in ("frames", "rgb"):
            if key in item:
                extras = {k: v for k, v in item.items() if isinstance(v, Tensor) and k not in ("frames", "rgb")}
                return item[key], extras
    raise TypeError(
        "extract_features: each dataset item must be a (t, 3, H, W) tensor or a dict with a "
        f"'frames' or 'rgb' tensor; item {index} is a {type(item).__name__}"
    )


def _as_list(items: list[Any]) -> list[Any]:
    return items


def _world(rank: int | None, world_size: int | None) -> tuple[int, int, bool]:
    """(rank, world size, whether to meet at barriers)."""
    active = dist.is_available() and dist.is_initialized()
    if rank is None and world_size is None:
        return (dist.get_rank(), dist.get_world_size(), True) if active else (0, 1, False)
    if rank is None or world_size is None:
        raise ValueError("pass both rank and world_size, or neither (then torch.distributed decides)")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
    return int(rank), int(world_size), active and world_size > 1


def _barrier() -> None:
    if dist.get_backend() == "gloo":  # names a rank that does not arrive, instead of hanging
        seconds = float(os.environ.get("FEATUREFLOW_STAGE_TIMEOUT", 24 * 3600))
        dist.monitored_barrier(timeout=timedelta(seconds=seconds))
    else:
        dist.barrier()


def _shard_metadata(start: int, count: int, keys: Sequence[str], dtype: torch.dtype, fingerprint: str) -> dict[str, str]:
    # One JSON entry: safetensors writes several metadata entries in a per-process hash order,
    # which would make the same shard differ byte-wise between processes.
    info = {"format": FORMAT, "start": start, "count": count, "keys": list(keys),
            "dtype": str(dtype).replace("torch.", ""), "fingerprint": fingerprint}
    return {"featureflow": json.dumps(info, sort_keys=True)}


def _read_metadata(path: Path) -> dict[str, str] | None:
    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # unreadable or truncated by something else: encode again
        return None


def _remove_temporaries(out: Path, name: str) -> None:
    for tmp in out.glob(f".{name}.*.tmp"):  # left by a writer that was killed (atomic_write's names)
        tmp.unlink(missing_ok=True)


def _device_of(encoder: Any) -> torch.device | None:
    if isinstance(encoder, torch.nn.Module):
        for p in encoder.parameters():
            return p.device
    return None


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
    fingerprint: str = "",
    num_workers: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
) -> Path:
    """Encode every clip with ``encoder`` and write feature shards to ``out_dir``; sharded over ranks.

    Call it on every rank under ``torchrun`` (it meets the other ranks at barriers);
    each rank needs the same encoder weights and the same clips.

    Args:
        encoder: an `featureflow.encoders.Encoder` (images (b,3,H,W) → (b,h,w,D)).
        clips: items are (t, 3, H, W) tensors or dicts with ``frames``/``rgb``; every
            clip must have the same shape.
        out_dir: cache directory (created). Complete shards that match are kept (resume).
        shard_size: clips per shard (the unit of work of a rank and of resuming).
        batch_size: clips encoded at once.
        keep: extra dict keys to store beside the features (e.g. ("segmentation", "depth")).
        dtype: storage dtype of features (bfloat16 halves the size).
        fingerprint: a string that identifies what is encoded (e.g. a hash of the encoder
            and data config); shards or an index with another fingerprint are redone.
        num_workers: DataLoader worker processes that read clips (0: read in this process).
        rank: this process's part of an explicit partition (default: from
            ``torch.distributed``, or one process), e.g. for independent jobs of an array;
            no barrier is used then, and the job that finds every shard on disk when it
            ends writes the index.
        world_size: the number of parts of an explicit partition (given with ``rank``).
        progress: show a progress bar (on rank 0).

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

    for name, value in (("shard_size", shard_size), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
    rank, world, sync = _world(rank, world_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(clips)
    if n == 0:
        raise ValueError("extract_features: the clip dataset is empty")
    keys = ["features", *keep]
    num_shards = math.ceil(n / shard_size)
    shards = [{"file": f"shard_{s:05d}.safetensors", "start": s * shard_size,
               "count": min(n, (s + 1) * shard_size) - s * shard_size} for s in range(num_shards)]
    index = {"format": FORMAT, "num_clips": n, "shards": shards, "keys": keys,
             "dtype": str(dtype).replace("torch.", ""), "fingerprint": fingerprint}
    index_path = out / INDEX_NAME

    def complete(shard: dict[str, Any]) -> bool:
        meta = _read_metadata(out / shard["file"]) if (out / shard["file"]).is_file() else None
        return meta == _shard_metadata(shard["start"], shard["count"], keys, dtype, fingerprint)

    if _read_index(index_path) == index and all(complete(s) for s in shards):
        return out  # already extracted with these settings
    if rank == 0:
        index_path.unlink(missing_ok=True)  # stale: the index is rewritten when every shard is done

    mine = [s for i, s in enumerate(shards) if i % world == rank]
    for shard in mine:
        _remove_temporaries(out, shard["file"])
    todo = [s for s in mine if not complete(s)]
    batches = [list(range(i, min(s["start"] + s["count"], i + batch_size)))
               for s in todo for i in range(s["start"], s["start"] + s["count"], batch_size)]
    bar = progress_bar(total=sum(s["count"] for s in todo), progress=progress and rank == 0,
                       desc=f"extract features (rank {rank}/{world})" if world > 1 else "extract features",
                       unit="clip")
    loader = DataLoader(clips, batch_sampler=batches, collate_fn=_as_list, num_workers=num_workers)
    device = _device_of(encoder)
    pending = iter(todo)
    shard = next(pending, None)
    feats: list[Tensor] = []
    extras: dict[str, list[Tensor]] = {k: [] for k in keep}
    done = 0
    for batch_indices, items in zip(batches, loader):
        frames, ex = zip(*(_frames_of(it, j) for it, j in zip(items, batch_indices)))
        shapes = {tuple(f.shape) for f in frames}
        if len(shapes) != 1 or len(next(iter(shapes))) != 4:
            raise ValueError(f"extract_features: clips {batch_indices[0]}..{batch_indices[-1]} have frame shapes "
                             f"{sorted(shapes)}; expected one (t, 3, H, W) shape (set the dataset's resolution)")
        batch = torch.stack([f if f.is_floating_point() else f.float() / 255.0 for f in frames])
        if device is not None:
            batch = batch.to(device)
        feats.append(encode_frames(encoder, batch).to(dtype).cpu())
        for k in keep:
            missing = [j for j, e in zip(batch_indices, ex) if k not in e]
            if missing:
                raise KeyError(f"extract_features: key {k!r} is not in clip {missing[0]} (it has {sorted(ex[0])})")
            extras[k].append(torch.stack([e[k] for e in ex]))
        bar.update(len(items))
        done += len(items)
        assert shard is not None
        if done == shard["count"]:  # the shard is complete: write it, atomically
            tensors = {"features": torch.cat(feats), **{k: torch.cat(v) for k, v in extras.items()}}
            meta = _shard_metadata(shard["start"], shard["count"], keys, dtype, fingerprint)
            save_safetensors(tensors, out / shard["file"], metadata=meta)
            feats, extras, done = [], {k: [] for k in keep}, 0
            shard = next(pending, None)
    bar.close()

    if sync:
        _barrier()  # every rank's shards are on disk
    if rank == 0 or not sync:  # without barriers, whichever rank completes the set writes the (same) index
        unfinished = [s["file"] for s in shards if not complete(s)]
        if unfinished and (sync or world == 1):
            raise RuntimeError(f"extract_features: shards {unfinished[:5]} are missing or incomplete after every "
                               f"rank finished; is {out} on a file system all ranks share?")
        if not unfinished:
            for stale in out.glob("shard_*.safetensors"):  # from an earlier extraction of more clips
                if stale.name not in {s["file"] for s in shards}:
                    stale.unlink(missing_ok=True)
            save_json(index, index_path)
    if sync:
        _barrier()  # the index exists for every rank
    return out


def _read_index(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, OSError):
        return None


class FeatureShards(Dataset):
    """Read a feature cache written by `extract_features`; item i is a dict of tensors.

    Shards are loaded lazily and the most recent one is kept in memory.

    Example:
        >>> import tempfile, torch
        >>> from featureflow.encoders import ModuleEncoder
        >>> enc = ModuleEncoder(lambda x: x[:, :, ::4, ::4].permute(0, 2, 3, 1), patch_size=4, feature_dim=3)
        >>> d = extract_features(enc, [torch.rand(1, 3, 8, 8)] * 3, tempfile.mkdtemp(), shard_size=2, progress=False)
        >>> shards = FeatureShards(d)
        >>> len(shards), tuple(shards.tensor().shape)
        (3, (3, 1, 2, 2, 3))
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
