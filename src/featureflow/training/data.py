"""`BatchStream`: reproducible, resumable mini-batches from a tensor, a dataset or an iterable."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import torch
from torch import Tensor
from torch.utils.data import default_collate

__all__ = ["BatchStream", "DataExhausted", "ReadyBatches", "is_indexable", "to_device"]


class DataExhausted(Exception):
    """A one-shot iterator of batches ran dry after at least one batch (training ends early)."""


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a tensor, or the tensors inside tuples/lists/dicts, to ``device``.

    Example:
        >>> to_device({"x": torch.ones(1)}, torch.device("cpu"))["x"].tolist()
        [1.0]
    """
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


class ReadyBatches:
    """Mark a re-iterable of ready-made batches (e.g. a list of ``(x, y)`` batches) as batches,
    not as a dataset of examples: :class:`BatchStream` then yields its items as they are.

    Example:
        >>> s = BatchStream(ReadyBatches([torch.zeros(2), torch.ones(2)]), batch_size=1)
        >>> s.batch(1).tolist()
        [1.0, 1.0]
    """

    def __init__(self, batches: Iterable[Any]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[Any]:
        return iter(self.batches)


def is_indexable(data: Any) -> bool:
    """True for a Tensor or a map-style dataset (random access by index), False for an iterable of batches."""
    return isinstance(data, Tensor) or (hasattr(data, "__len__") and hasattr(data, "__getitem__"))


class BatchStream:
    """Micro-batch ``m`` of a training run, a pure function of ``(seed, m)`` for indexable data.

    * A ``Tensor`` (examples on dim 0) or a map-style dataset (``__len__`` +
      ``__getitem__``, items collated with ``default_collate``): each epoch is a fresh
      permutation seeded by ``(seed, epoch)``, batches run on across epoch boundaries,
      and :meth:`batch` gives random access, so a resumed run sees exactly the batches
      the uninterrupted run would have seen.
    * Any other iterable yields ready-made batches in its own order (``batch_size`` is
      ignored); it is re-iterated when exhausted, and resuming skips the batches
      already consumed (exact if the iterable is deterministic). A one-shot iterator
      that runs dry raises :class:`DataExhausted` (training ends early).

    Example:
        >>> s = BatchStream(torch.arange(5.0), batch_size=2, seed=0)
        >>> sorted(torch.cat([s.batch(0), s.batch(1), s.batch(2)])[:5].tolist())
        [0.0, 1.0, 2.0, 3.0, 4.0]
    """

    def __init__(self, data: Any, batch_size: int, seed: int = 0) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.data = data
        self.batch_size = batch_size
        self.seed = int(seed)
        self.indexable = is_indexable(data)
        if self.indexable:
            self.size = int(data.shape[0]) if isinstance(data, Tensor) else len(data)
            if self.size < 1:
                raise ValueError("training data is empty")
        elif not isinstance(data, Iterable):
            raise TypeError(
                f"training data must be a Tensor, a map-style Dataset or an iterable of batches, got {type(data).__name__}"
            )
        self._perm_epoch = -1
        self._perm: Tensor | None = None
        self._iter: Iterator[Any] | None = None
        self._consumed = 0

    def _permutation(self, epoch: int) -> Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.size, generator=g)
            self._perm_epoch = epoch
        assert self._perm is not None
        return self._perm

    def indices(self, m: int) -> Tensor:
        """Example indices of micro-batch ``m`` (indexable data only)."""
        out = []
        for p in range(m * self.batch_size, (m + 1) * self.batch_size):
            out.append(self._permutation(p // self.size)[p % self.size])
        return torch.stack(out)

    def batch(self, m: int) -> Any:
        """Micro-batch number ``m`` (0-based, counted over the whole run)."""
        if self.indexable:
            idx = self.indices(m)
            if isinstance(self.data, Tensor):
                return self.data[idx]
            return default_collate([self.data[int(i)] for i in idx])
        if m < self._consumed or self._iter is None:
            self._iter, self._consumed = iter(self.data), 0
        while True:
            try:
                item = next(self._iter)
            except StopIteration:
                if self._consumed and iter(self.data) is self.data:  # a one-shot iterator: it is over
                    raise DataExhausted(f"the training iterator ran dry after {self._consumed} batches") from None
                self._iter = iter(self.data)
                item = next(self._iter, None)
                if item is None:
                    raise ValueError("the training iterable yielded no batches") from None
            self._consumed += 1
            if self._consumed - 1 == m:
                return item
