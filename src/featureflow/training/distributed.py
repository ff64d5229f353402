"""Single-process or ``torchrun`` data-parallel training without code changes.

Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) `setup` initialises the process group
(gloo on CPU, NCCL on CUDA); otherwise everything is a no-op and the world has size 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo", "setup", "teardown", "wrap", "unwrap", "shard_indices", "shard_batch",
    "broadcast_module", "all_reduce_mean", "average_gradients", "barrier",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``; ``is_main`` writes logs/checkpoints."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str | torch.device | None = None) -> DistInfo:
    """Initialise distributed training if launched by ``torchrun``; return this process's `DistInfo`.

    Example:
        >>> info = setup()  # not under torchrun: a world of one
        >>> (info.rank, info.world_size, info.is_main)
        (0, 1, True)
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        dev = torch.device(device) if device is not None else torch.device("cpu")
        return DistInfo(device=dev)
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def teardown() -> None:
    """Destroy the process group if one was created."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (no-op when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src)


def wrap(module: nn.Module, info: DistInfo) -> nn.Module:
    """Wrap in DistributedDataParallel when distributed (after syncing the initial weights)."""
    if not info.distributed:
        return module
    broadcast_module(module)
    ids = [info.local_rank] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)


def unwrap(module: nn.Module) -> nn.Module:
    """The bare module inside a DDP wrapper (or the module itself)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def shard_indices(indices: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's share of a batch of example indices (strided, equal sizes required).

    Example:
        >>> import torch
        >>> shard_indices(torch.arange(6), DistInfo(rank=1, world_size=2)).tolist()
        [1, 3, 5]
    """
    if info.world_size == 1:
        return indices
    if indices.numel() % info.world_size:
        raise ValueError(
            f"batch of {indices.numel()} examples cannot be split evenly over {info.world_size} processes; "
            "use a batch size divisible by the number of processes"
        )
    return indices[info.rank :: info.world_size]


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of ``value`` over ranks (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if _active():
        dist.barrier()


def shard_batch(batch: Any, info: DistInfo) -> Any:
    """This rank's contiguous slice of a collated batch (tensors, dicts, lists/tuples of them).

    Example:
        >>> import torch
        >>> shard_batch({"x": torch.arange(4)}, DistInfo(rank=1, world_size=2))["x"].tolist()
        [2, 3]
    """
    if info.world_size == 1:
        return batch
    if isinstance(batch, torch.Tensor):
        n = batch.shape[0]
        if n % info.world_size:
            raise ValueError(f"a batch of {n} cannot be split evenly over {info.world_size} processes")
        per = n // info.world_size
        return batch[info.rank * per : (info.rank + 1) * per]
    if isinstance(batch, dict):
        return {k: shard_batch(v, info) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(shard_batch(v, info) for v in batch)
    return batch


def average_gradients(params: Sequence[torch.Tensor]) -> None:
    """All-reduce the gradients of ``params`` to their mean over ranks, as one flat buffer."""
    if not _active():
        return
    for p in params:  # a parameter unused on one rank still takes part in the reduction
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n
