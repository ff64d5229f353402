"""Single-process or ``torchrun`` training on PyTorch's own distributed engine.

Under ``torchrun`` (``WORLD_SIZE`` > 1) :func:`setup` initialises the process group
(NCCL when CUDA is present, gloo otherwise) with a timeout, and :func:`wrap` puts the
model under :class:`torch.nn.parallel.DistributedDataParallel` (or FSDP2's
:func:`torch.distributed.fsdp.fully_shard`). Gradients are averaged by PyTorch, never
by hand. Without ``torchrun`` every helper is a no-op and the world has size 1.

The timeout (``FEATUREFLOW_DIST_TIMEOUT`` seconds, default 600) bounds how long a rank
waits for the others inside a training step: a killed or stopped rank ends the
survivors with :class:`RankTimeoutError` instead of a hang. Ranks waiting while rank 0
alone runs a whole stage (:func:`main_first`), and ranks starting at different times,
wait up to ``FEATUREFLOW_STAGE_TIMEOUT`` (default 24 h; the default process group), while
training collectives run on :func:`train_group` with the short timeout; a rank that dies
meanwhile still ends the others at once (its sockets close).

Example:
    >>> info = setup()  # not under torchrun: a world of one
    >>> (info.rank, info.world_size, info.is_main)
    (0, 1, True)
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo",
    "RankTimeoutError",
    "STRATEGIES",
    "setup",
    "teardown",
    "is_active",
    "wrap",
    "shard_batch",
    "all_reduce_mean",
    "barrier",
    "broadcast_object",
    "all_gather_object",
    "main_first",
    "full_state_dict",
    "collective_errors",
    "default_timeout",
    "stage_timeout",
    "train_group",
]

#: Data-parallel strategies of :func:`wrap`.
STRATEGIES = ("ddp", "fsdp")


class RankTimeoutError(RuntimeError):
    """Another rank died, stopped or fell behind beyond the process-group timeout."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``; ``is_main`` writes logs/checkpoints."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    timeout: float = 600.0

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1


def _env_seconds(name: str, default: float) -> float:
    """A positive number of seconds from the environment variable ``name`` (else ``default``)."""
    text = os.environ.get(name, str(default))
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be > 0 seconds, got {value}")
    return value


def default_timeout() -> float:
    """Seconds a collective waits: ``FEATUREFLOW_DIST_TIMEOUT`` or 600.

    Example:
        >>> default_timeout() > 0
        True
    """
    return _env_seconds("FEATUREFLOW_DIST_TIMEOUT", 600.0)


def is_active() -> bool:
    """True inside an initialised process group of more than one rank.

    Example:
        >>> is_active()
        False
    """
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def setup(device: str | torch.device | None = None, *, timeout: float | None = None) -> DistInfo:
    """Initialise the process group if launched by ``torchrun``; return this process's `DistInfo`.

    Args:
        device: ``None`` picks CUDA (this rank's ``LOCAL_RANK`` GPU) when present, else
            the CPU; ``"cpu"`` forces gloo on the CPU.
        timeout: seconds any collective may wait for the other ranks (default
            :func:`default_timeout`).

    Example:
        >>> setup("cpu").device
        device(type='cpu')
    """
    timeout = float(timeout) if timeout is not None else default_timeout()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        if device is not None:
            dev = torch.device(device)
        else:
            dev = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        return DistInfo(device=dev, timeout=timeout)
    for key in ("RANK", "LOCAL_RANK"):
        if key not in os.environ:
            raise RuntimeError(f"WORLD_SIZE={world} but {key} is not set: launch with torchrun")
    rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    use_cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        # the default group waits long (start-up skew, rank 0 alone on a stage); training
        # collectives run on a group with the short timeout (see train_group)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                timeout=timedelta(seconds=max(timeout, stage_timeout())))
    if not _TRAIN_GROUP:
        _TRAIN_GROUP.append(dist.new_group(timeout=timedelta(seconds=timeout)))
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev, timeout=timeout)


def teardown() -> None:
    """Destroy the process group if one was created (safe to call twice)."""
    _TRAIN_GROUP.clear()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


_PEER_TROUBLE = ("timed out", "timeout", "connection", "closed", "peer", "gloo", "nccl", "socket", "broken pipe")


@contextmanager
def collective_errors(what: str) -> Iterator[None]:
    """Turn a lost peer or a collective's timeout inside the block into a `RankTimeoutError`
    that says what happened and how to change the timeout (no-op when not distributed).

    Example:
        >>> with collective_errors("a step"):
        ...     pass
    """
    if not is_active():
        yield
        return
    try:
        yield
    except RankTimeoutError:
        raise
    except (RuntimeError, dist.DistError) as err:  # DistBackendError, gloo/NCCL timeouts, closed sockets
        text = str(err)
        if not isinstance(err, dist.DistError) and not any(w in text.lower() for w in _PEER_TROUBLE):
            raise  # an ordinary error of this rank's own code
        first = text.splitlines()[0][:300] if text else type(err).__name__
        raise RankTimeoutError(
            f"rank {dist.get_rank()}: {what} failed because another rank did not answer (it died, was stopped, "
            f"or fell behind by more than the process-group timeout; set FEATUREFLOW_DIST_TIMEOUT to change it). "
            f"Backend said: {first}"
        ) from err


def stage_timeout() -> float:
    """Seconds a rank waits for rank 0 to finish a whole stage: ``FEATUREFLOW_STAGE_TIMEOUT`` or 86400.

    Example:
        >>> stage_timeout() >= 1
        True
    """
    return _env_seconds("FEATUREFLOW_STAGE_TIMEOUT", 86400.0)


_TRAIN_GROUP: list[Any] = []


def train_group() -> Any:
    """The process group of training collectives (DDP, FSDP, loss averages), with the short
    timeout; ``None`` (the default group) outside :func:`setup`.

    Example:
        >>> train_group() is None
        True
    """
    return _TRAIN_GROUP[0] if _TRAIN_GROUP else None


def barrier(what: str = "barrier", *, long: bool = False) -> None:
    """Wait for every rank (no-op when not distributed); `RankTimeoutError` if one never comes.

    ``long=True`` waits up to :func:`stage_timeout` (the default group) instead of the
    training timeout (for ranks waiting while rank 0 alone runs a stage).

    Example:
        >>> barrier()  # one process: returns at once
    """
    if is_active():
        with collective_errors(what):
            dist.barrier(group=None if long else train_group())


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (JSON-like values; identity when not distributed).

    Example:
        >>> broadcast_object({"a": 1})
        {'a': 1}
    """
    if not is_active():
        return obj
    box = [obj]
    with collective_errors("broadcast"):
        dist.broadcast_object_list(box, src=src, group=train_group())
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` when not distributed).

    Example:
        >>> all_gather_object(3)
        [3]
    """
    if not is_active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    with collective_errors("all_gather"):
        dist.all_gather_object(out, obj, group=train_group())
    return out


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of ``value`` over ranks (a detached copy; the value itself when not distributed).

    Example:
        >>> all_reduce_mean(torch.tensor(2.0)).item()
        2.0
    """
    if not is_active():
        return value
    out = value.detach().clone()
    with collective_errors("all_reduce"):
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=train_group())
    return out / dist.get_world_size()


@contextmanager
def main_first(info: DistInfo, what: str = "stage") -> Iterator[bool]:
    """Run a block on rank 0 first, then on the others (which typically load what it wrote).

    Yields ``True`` on rank 0. The other ranks wait at a barrier until rank 0 has left the
    block, so they see its files complete.

    Example:
        >>> with main_first(DistInfo()) as first:
        ...     first
        True
    """
    if not info.is_main:
        barrier(f"waiting for rank 0 to finish {what}", long=True)
    yield info.is_main
    if info.is_main:
        barrier(f"rank 0 finished {what}; waiting for the others", long=True)


def shard_batch(batch: Any, info: DistInfo) -> Any:
    """This rank's contiguous slice of a collated global batch (tensors, dicts, lists/tuples).

    Example:
        >>> shard_batch({"x": torch.arange(4)}, DistInfo(rank=1, world_size=2))["x"].tolist()
        [2, 3]
    """
    if info.world_size == 1:
        return batch
    if isinstance(batch, torch.Tensor):
        n = batch.shape[0]
        if n % info.world_size:
            raise ValueError(
                f"a global batch of {n} examples cannot be split evenly over {info.world_size} processes; "
                "use a batch size divisible by the number of processes"
            )
        per = n // info.world_size
        return batch[info.rank * per : (info.rank + 1) * per]
    if isinstance(batch, dict):
        return {k: shard_batch(v, info) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(shard_batch(v, info) for v in batch)
    return batch


def _fsdp_units(module: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a transformer (children of every ``nn.ModuleList``) to shard one by one."""
    return [block for child in module.modules() if isinstance(child, nn.ModuleList) for block in child]


def wrap(module: nn.Module, info: DistInfo, strategy: str = "ddp", *, find_unused_parameters: bool = True) -> nn.Module:
    """Put ``module`` under PyTorch's data-parallel engine (identity when not distributed).

    ``"ddp"``: `DistributedDataParallel` (rank 0's weights and buffers are broadcast at
    construction; gradients are averaged in backward). ``"fsdp"``: FSDP2 `fully_shard`,
    one unit per block of every ``nn.ModuleList`` and one for the rest, so parameters,
    gradients and optimizer state are sharded over ranks (for models that do not fit one
    device, e.g. the released 317M trunk). The module must be called through the
    wrapper's ``forward`` for gradients to be synchronised.

    Example:
        >>> m = nn.Linear(2, 2)
        >>> wrap(m, DistInfo()) is m
        True
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if not info.distributed:
        return module
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        from torch.distributed.device_mesh import DeviceMesh

        mesh = DeviceMesh.from_group(train_group() or dist.group.WORLD, info.device.type)
        with collective_errors("fully_shard"):
            for unit in _fsdp_units(module):
                fully_shard(unit, mesh=mesh)
            fully_shard(module, mesh=mesh)
        return module
    ids = [info.local_rank] if info.device.type == "cuda" else None
    with collective_errors("DistributedDataParallel setup"):
        return nn.parallel.DistributedDataParallel(module, device_ids=ids, process_group=train_group(),
                                                   find_unused_parameters=find_unused_parameters)


def full_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Gather FSDP-sharded (DTensor) entries of a state dict into full tensors; plain tensors pass.

    Every rank must call it (it is a collective when entries are sharded).

    Example:
        >>> full_state_dict({"w": torch.ones(2)})["w"].tolist()
        [1.0, 1.0]
    """
    from torch.distributed.tensor import DTensor

    out = {}
    for k, v in state.items():
        if isinstance(v, DTensor):
            with collective_errors("gathering sharded weights"):
                v = v.full_tensor()
        out[k] = v
    return out
