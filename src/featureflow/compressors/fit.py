"""Fit a compressor's standardisation statistics from features, streaming over batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from featureflow.compressors.base import StandardizedCompressor
from featureflow.compressors.standardize import RunningMoments
from featureflow.typing import Tensor
from featureflow.utils import progress_bar

__all__ = ["fit_statistics", "iter_feature_batches", "as_feature_tensor"]


def as_feature_tensor(item: object, key: str = "features") -> Tensor:
    """``item`` itself if it is a tensor, else ``item[key]`` of a dict (e.g. a
    :class:`~featureflow.training.features.FeatureShards` record).

    Example:
        >>> import torch
        >>> as_feature_tensor({"features": torch.zeros(2)}).shape
        torch.Size([2])
    """
    if isinstance(item, Tensor):
        return item
    if isinstance(item, dict) and isinstance(item.get(key), Tensor):
        return item[key]
    raise ValueError(f"expected a features tensor or a dict with a {key!r} tensor, got {type(item).__name__}")


def iter_feature_batches(features: Tensor | Iterable[Tensor], batch_size: int = 64) -> Iterator[Tensor]:
    """Batches of ``(n, h, w, D)`` features from a tensor ``(*batch, h, w, D)`` (split
    along its flattened leading dimensions) or from an iterable of such tensors (or of
    dicts with a ``"features"`` tensor), each flattened to ``(n, h, w, D)``.

    Example:
        >>> import torch
        >>> tuple(b.shape[0] for b in iter_feature_batches(torch.zeros(2, 5, 3, 3, 4), batch_size=4))
        (4, 4, 2)
    """
    if isinstance(features, Tensor):
        if features.ndim < 3:
            raise ValueError(f"expected features of shape (*batch, h, w, D), got shape {tuple(features.shape)}")
        flat = features.reshape(-1, *features.shape[-3:])
        yield from flat.split(batch_size)
        return
    for item in features:
        batch = as_feature_tensor(item)
        if not isinstance(batch, Tensor) or batch.ndim < 3:
            got = tuple(batch.shape) if isinstance(batch, Tensor) else type(batch).__name__
            raise ValueError(f"expected each batch to be a tensor (*batch, h, w, D), got {got}")
        yield batch.reshape(-1, *batch.shape[-3:])


def fit_statistics(
    compressor: StandardizedCompressor,
    features: Tensor | Iterable[Tensor],
    *,
    fit_features: bool = True,
    fit_latents: bool = True,
    batch_size: int = 64,
    progress: bool = False,
) -> StandardizedCompressor:
    """Set a compressor's per-channel feature and/or latent statistics from data.

    Pass 1 streams the features into float64 running moments and sets
    ``feature_norm``; pass 2 encodes the features (posterior mean for a VAE) with the
    new feature statistics and sets ``latent_norm`` from the un-standardised latents.
    Standard deviations are unbiased and floored at ``min_std``. When both passes run,
    ``features`` must be re-iterable (a tensor, list or dataset, not a one-shot
    generator). A fitted :class:`~featureflow.compressors.PCA` fits its own statistics in
    :meth:`~featureflow.compressors.PCA.finalize`; changing its feature statistics
    afterwards is refused.

    Args:
        compressor: any :class:`StandardizedCompressor`.
        features: ``(*batch, h, w, D)`` tensor or an iterable of such batches.
        fit_features: fit the feature statistics.
        fit_latents: fit the latent statistics.
        batch_size: split size when ``features`` is a tensor.
        progress: show a progress bar.

    Returns:
        ``compressor`` (modified in place).

    Example:
        >>> import torch
        >>> from featureflow.compressors import Identity, fit_statistics
        >>> c = fit_statistics(Identity(3), 5 + 2 * torch.randn(400, 2, 2, 3))
        >>> z = c.encode(5 + 2 * torch.randn(400, 2, 2, 3))
        >>> abs(float(z.mean())) < 0.1, abs(float(z.std()) - 1) < 0.1
        (True, True)
    """
    if fit_features and compressor.feature_stats_locked():
        raise ValueError(
            f"{type(compressor).__name__} is already fitted on standardised features; changing its feature "
            "statistics would invalidate it (refit it instead, or pass fit_features=False)"
        )
    if fit_features and fit_latents and not isinstance(features, Tensor) and iter(features) is features:
        raise ValueError(
            "fit_statistics needs two passes over the features; pass a tensor or a re-iterable "
            "(list, dataset), not a one-shot iterator"
        )
    device = compressor.feature_norm.mean.device
    dtype = compressor.feature_norm.mean.dtype
    was_training = compressor.training
    compressor.eval()
    try:
        _fit(compressor, features, fit_features, fit_latents, batch_size, progress, device, dtype)
    finally:
        compressor.train(was_training)
    return compressor


def _fit(compressor: StandardizedCompressor, features: Tensor | Iterable[Tensor], fit_features: bool,
         fit_latents: bool, batch_size: int, progress: bool, device: torch.device, dtype: torch.dtype) -> None:
    with torch.no_grad():
        if fit_features:
            moments = RunningMoments(compressor.feature_dim)
            for batch in progress_bar(iter_feature_batches(features, batch_size), progress=progress,
                                      desc="feature stats"):
                moments.update(compressor.check_features(batch.to(device=device, dtype=dtype)))
            compressor.feature_norm.set_from_moments(moments)
        if fit_latents:
            moments = RunningMoments(compressor.latent_dim)
            for batch in progress_bar(iter_feature_batches(features, batch_size), progress=progress,
                                      desc="latent stats"):
                moments.update(compressor.unstandardized_latents(batch.to(device=device, dtype=dtype)))
            compressor.latent_norm.set_from_moments(moments)
