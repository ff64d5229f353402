"""A diagonal Gaussian posterior over channels-last latents."""

from __future__ import annotations

import torch

from featureflow.typing import Tensor

__all__ = ["DiagonalGaussian", "LOGVAR_RANGE"]

#: The released VAE clamps the log-variance to this range.
LOGVAR_RANGE = (-30.0, 20.0)


class DiagonalGaussian:
    """``N(mean, diag(exp(logvar)))`` with ``logvar`` clamped to [-30, 20].

    Args:
        mean: ``(n, h, w, C)`` means.
        logvar: ``(n, h, w, C)`` log-variances (clamped on construction).

    Example:
        >>> import torch
        >>> q = DiagonalGaussian.from_parameters(torch.zeros(1, 1, 1, 4))
        >>> q.mean.shape, float(q.kl()[0])
        (torch.Size([1, 1, 1, 2]), 0.0)
    """

    def __init__(self, mean: Tensor, logvar: Tensor) -> None:
        if mean.shape != logvar.shape:
            raise ValueError(f"DiagonalGaussian: mean {tuple(mean.shape)} and logvar {tuple(logvar.shape)} differ")
        self.mean = mean
        self.logvar = logvar.clamp(*LOGVAR_RANGE)

    @classmethod
    def from_parameters(cls, params: Tensor) -> "DiagonalGaussian":
        """Split the last dimension of ``params`` into (mean, logvar) halves."""
        if params.shape[-1] % 2:
            raise ValueError(f"DiagonalGaussian: expected an even last dimension, got shape {tuple(params.shape)}")
        mean, logvar = params.chunk(2, dim=-1)
        return cls(mean, logvar)

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    @property
    def var(self) -> Tensor:
        return torch.exp(self.logvar)

    def mode(self) -> Tensor:
        """The mean (the mode of a Gaussian)."""
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """A reparameterised sample ``mean + std * eps`` (gradients flow to mean and logvar)."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def kl(self) -> Tensor:
        """KL to ``N(0, I)``, summed over every dimension but the first: shape ``(n,)``."""
        terms = 0.5 * (self.mean**2 + self.var - 1.0 - self.logvar)
        return terms.reshape(terms.shape[0], -1).sum(1)
