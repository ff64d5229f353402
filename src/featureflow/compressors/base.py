"""The ``Compressor`` protocol and the base class that adds feature/latent standardisation."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from featureflow.compressors.standardize import ChannelStandardizer
from featureflow.typing import Float, ShapeError, Tensor, check_finite, typechecked
from featureflow.utils import Configurable

__all__ = ["Compressor", "StandardizedCompressor"]


@runtime_checkable
class Compressor(Protocol):
    """What a world model needs from a compressor (channels-last everywhere).

    * ``encode(features (*batch, h, w, D)) -> latents (*batch, h, w, C)``
    * ``decode(latents (*batch, h, w, C)) -> features (*batch, h, w, D)``
    * ``feature_dim`` = D, ``latent_dim`` = C.

    Both directions include the compressor's per-channel standardisation, so the
    latents are the standardised ones a forecaster is trained on, and ``decode``
    returns features in the encoder's original scale.

    Example:
        >>> from featureflow.compressors import Compressor, Identity
        >>> isinstance(Identity(8), Compressor)
        True
    """

    feature_dim: int
    latent_dim: int

    def encode(self, features: Tensor) -> Tensor: ...

    def decode(self, latents: Tensor) -> Tensor: ...


class StandardizedCompressor(nn.Module, Configurable):
    """Base class: a core map between standardised features and raw latents, wrapped in
    per-channel standardisation on both sides.

    ``encode(x) = latent_norm.normalize(core_encode(feature_norm.normalize(x)))`` and
    ``decode(z) = feature_norm.denormalize(core_decode(latent_norm.denormalize(z)))``.
    The statistics are buffers of the submodules ``feature_norm`` and ``latent_norm``
    (state-dict keys ``feature_norm.mean``, ``feature_norm.std``, ``latent_norm.mean``,
    ``latent_norm.std``); they start as the identity. Fit them with
    :func:`featureflow.compressors.fit_statistics` or set them with
    :meth:`set_feature_stats` / :meth:`set_latent_stats`.

    Subclasses implement ``_core_encode`` and ``_core_decode`` on ``(n, h, w, ·)``.

    Example:
        >>> from featureflow.compressors import Identity
        >>> sorted(Identity(2).state_dict())
        ['feature_norm.mean', 'feature_norm.std', 'latent_norm.mean', 'latent_norm.std']
    """

    #: State-dict keys holding the standardisation statistics.
    STAT_KEYS = ("feature_norm.mean", "feature_norm.std", "latent_norm.mean", "latent_norm.std")

    def __init__(self, feature_dim: int, latent_dim: int) -> None:
        super().__init__()
        for name, value in (("feature_dim", feature_dim), ("latent_dim", latent_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be a positive int, got {value!r}")
        self.feature_dim = int(feature_dim)
        self.latent_dim = int(latent_dim)
        self.feature_norm = ChannelStandardizer(self.feature_dim)
        self.latent_norm = ChannelStandardizer(self.latent_dim)

    # ----------------------------------------------------------------- statistics
    def set_feature_stats(self, mean: Tensor, std: Tensor) -> None:
        """Set the per-channel feature statistics (each of shape ``(feature_dim,)``)."""
        self.feature_norm.set_stats(mean, std)

    def set_latent_stats(self, mean: Tensor, std: Tensor) -> None:
        """Set the per-channel latent statistics (each of shape ``(latent_dim,)``)."""
        self.latent_norm.set_stats(mean, std)

    def feature_stats_locked(self) -> bool:
        """True when changing the feature statistics would invalidate fitted weights."""
        return False

    # ----------------------------------------------------------------- checks
    def _check(self, name: str, x: Tensor, channels: int, what: str) -> Tensor:
        if x.ndim < 3:
            raise ShapeError(
                f"{type(self).__name__}: {name} must have shape (*batch, h, w, {what}={channels}), "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[-1] != channels:
            raise ShapeError(
                f"{type(self).__name__}: {name} must have {channels} channels in the last dimension "
                f"({what}={channels}), got shape {tuple(x.shape)}"
            )
        return check_finite(name, x)

    def check_features(self, features: Tensor) -> Tensor:
        """Raise a clear error unless ``features`` is finite with shape (*batch, h, w, D)."""
        return self._check("features", features, self.feature_dim, "D")

    def check_latents(self, latents: Tensor) -> Tensor:
        """Raise a clear error unless ``latents`` is finite with shape (*batch, h, w, C)."""
        return self._check("latents", latents, self.latent_dim, "C")

    # ----------------------------------------------------------------- core maps
    def _core_encode(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _core_decode(self, z: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def _flat(x: Tensor) -> tuple[Tensor, torch.Size]:
        lead = x.shape[:-3]
        return x.reshape(-1, *x.shape[-3:]), lead

    # ----------------------------------------------------------------- public maps
    def check_ready(self) -> None:
        """Raise a clear error if the compressor cannot map yet (e.g. an unfitted PCA)."""

    def unstandardized_latents(self, features: Tensor) -> Tensor:
        """The latents before latent standardisation (what the latent statistics describe)."""
        self.check_ready()
        x, lead = self._flat(self.check_features(features))
        z = self._core_encode(self.feature_norm.normalize(x))
        return z.reshape(*lead, *z.shape[1:])

    @typechecked
    def encode(self, features: Float[Tensor, "*batch h w D"]) -> Float[Tensor, "*batch h w C"]:
        """Standardised features -> core -> standardised latents.

        Args:
            features: ``(*batch, h, w, D)`` features in the encoder's scale.

        Returns:
            ``(*batch, h, w, C)`` standardised latents.
        """
        self.check_ready()
        x, lead = self._flat(self.check_features(features))
        z = self.latent_norm.normalize(self._core_encode(self.feature_norm.normalize(x)))
        return z.reshape(*lead, *z.shape[1:])

    @typechecked
    def decode(self, latents: Float[Tensor, "*batch h w C"]) -> Float[Tensor, "*batch h w D"]:
        """Standardised latents -> core -> features in the encoder's scale.

        Args:
            latents: ``(*batch, h, w, C)`` standardised latents.

        Returns:
            ``(*batch, h, w, D)`` features.
        """
        self.check_ready()
        z, lead = self._flat(self.check_latents(latents))
        x = self.feature_norm.denormalize(self._core_decode(self.latent_norm.denormalize(z)))
        return x.reshape(*lead, *x.shape[1:])
