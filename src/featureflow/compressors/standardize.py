"""Per-channel standardisation: streaming moments and a module that stores them as buffers."""

from __future__ import annotations

import torch
from torch import nn

from featureflow.typing import Tensor, check_finite

__all__ = ["RunningMoments", "ChannelStandardizer"]


class RunningMoments:
    """Streaming per-channel mean and variance over batches, accumulated in float64.

    Batches are merged with the parallel update of Chan, Golub and LeVeque, so the
    result equals the mean and (unbiased) variance of all values seen, without ever
    holding them. Every leading dimension of a batch counts as samples; the last one is
    the channel.

    Args:
        channels: expected channel count (checked on every update), or ``None`` to take
            it from the first batch.

    Example:
        >>> import torch
        >>> m = RunningMoments()
        >>> m.update(torch.tensor([[0.0], [2.0]]))
        >>> m.update(torch.tensor([[4.0]]))
        >>> m.count, m.mean.tolist(), m.var.tolist()
        (3, [2.0], [4.0])
    """

    def __init__(self, channels: int | None = None) -> None:
        self.channels = channels
        self.count = 0
        self._mean: Tensor | None = None
        self._m2: Tensor | None = None

    def update(self, x: Tensor) -> None:
        """Add a batch ``x`` of shape ``(..., channels)``."""
        if x.ndim < 1:
            raise ValueError("RunningMoments.update: expected a tensor of shape (..., channels), got a 0-d tensor")
        if self.channels is None:
            self.channels = int(x.shape[-1])
        if x.shape[-1] != self.channels:
            raise ValueError(
                f"RunningMoments.update: expected last dimension {self.channels} (channels), got shape {tuple(x.shape)}"
            )
        check_finite("statistics batch", x)
        flat = x.detach().reshape(-1, self.channels).to(torch.float64)
        n = flat.shape[0]
        if n == 0:
            return
        batch_mean = flat.mean(0)
        batch_m2 = ((flat - batch_mean) ** 2).sum(0)
        if self._mean is None or self._m2 is None:
            self._mean, self._m2, self.count = batch_mean, batch_m2, n
            return
        total = self.count + n
        delta = batch_mean - self._mean
        self._mean = self._mean + delta * (n / total)
        self._m2 = self._m2 + batch_m2 + delta**2 * (self.count * n / total)
        self.count = total

    @property
    def mean(self) -> Tensor:
        """Per-channel mean (float64)."""
        if self._mean is None:
            raise ValueError("RunningMoments: no data seen yet; call update() with at least one batch")
        return self._mean

    @property
    def var(self) -> Tensor:
        """Per-channel unbiased variance (float64); needs at least two samples."""
        if self._m2 is None or self.count < 2:
            raise ValueError(f"RunningMoments: need at least 2 samples for a variance, have {self.count}")
        return self._m2 / (self.count - 1)

    @property
    def std(self) -> Tensor:
        """Per-channel unbiased standard deviation (float64)."""
        return self.var.sqrt()


class ChannelStandardizer(nn.Module):
    """Per-channel ``(x - mean) / std`` over the last dimension; ``mean``/``std`` are buffers.

    The buffers travel in ``state_dict()``, so a saved compressor keeps its statistics.
    They start as the identity (mean 0, std 1).

    Args:
        channels: number of channels (the last dimension of the inputs).
        min_std: floor applied to standard deviations estimated from data (constant
            channels would otherwise divide by zero).

    Example:
        >>> import torch
        >>> s = ChannelStandardizer(2)
        >>> s.set_stats(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0]))
        >>> s.normalize(torch.tensor([[3.0, 6.0]])).tolist()
        [[1.0, 1.0]]
        >>> s.denormalize(torch.tensor([[1.0, 1.0]])).tolist()
        [[3.0, 6.0]]
    """

    mean: Tensor
    std: Tensor

    def __init__(self, channels: int, min_std: float = 1e-6) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"ChannelStandardizer: channels must be >= 1, got {channels}")
        self.channels = int(channels)
        self.min_std = float(min_std)
        self.register_buffer("mean", torch.zeros(self.channels))
        self.register_buffer("std", torch.ones(self.channels))

    def extra_repr(self) -> str:
        return f"channels={self.channels}"

    def set_stats(self, mean: Tensor, std: Tensor) -> None:
        """Set the statistics: ``(channels,)`` tensors (or any shape of ones ending in
        ``channels``, such as ``(1, 1, 1, channels)``); std must be finite and positive."""
        mean, std = self._vector("mean", mean), self._vector("std", std)
        check_finite("mean", mean)
        check_finite("std", std)
        if bool((std <= 0).any()):
            raise ValueError(f"set_stats: std must be positive in every channel; got min {float(std.min()):.3g}")
        with torch.no_grad():
            self.mean.copy_(mean.to(self.mean))
            self.std.copy_(std.to(self.std))

    def _vector(self, name: str, x: Tensor) -> Tensor:
        x = torch.as_tensor(x)
        if x.ndim == 0 or x.shape[-1] != self.channels or x.numel() != self.channels:
            raise ValueError(
                f"set_stats: expected {name} of shape ({self.channels},) (channels), got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(f"set_stats: expected a float {name}, got {x.dtype}")
        return x.reshape(self.channels)

    def set_from_moments(self, moments: RunningMoments) -> None:
        """Set the statistics from accumulated :class:`RunningMoments` (std floored at ``min_std``)."""
        if moments.channels != self.channels:
            raise ValueError(f"set_from_moments: expected {self.channels} channels, got {moments.channels}")
        self.set_stats(moments.mean.float(), moments.std.clamp_min(self.min_std).float())

    def normalize(self, x: Tensor) -> Tensor:
        """``(x - mean) / std`` over the last dimension."""
        return (x - self.mean) / self.std

    def denormalize(self, x: Tensor) -> Tensor:
        """``x * std + mean`` over the last dimension (the inverse of :meth:`normalize`)."""
        return x * self.std + self.mean
