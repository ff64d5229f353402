"""Compressors: features (…, h, w, D) ⇄ latents (…, h, w, C), with per-channel
standardisation of both sides built in.

* :class:`FeatureVAE` — the ConvNeXt-isotropic feature VAE released with VFMF.
* :class:`PCA` — streaming-fit principal components, optional whitening.
* :class:`Identity` — latents are the standardised features.

Example:
    >>> import torch
    >>> from featureflow.compressors import Compressor, FeatureVAE
    >>> vae = FeatureVAE(feature_dim=8, latent_dim=2, dim=8, depth=1)
    >>> isinstance(vae, Compressor), vae.encode(torch.randn(1, 2, 2, 8)).shape
    (True, torch.Size([1, 2, 2, 2]))
"""

from featureflow.compressors.base import Compressor, StandardizedCompressor
from featureflow.compressors.convnext import ConvNeXtBlock, ConvNeXtIsotropic
from featureflow.compressors.fit import as_feature_tensor, fit_statistics, iter_feature_batches
from featureflow.compressors.gaussian import DiagonalGaussian
from featureflow.compressors.identity import Identity
from featureflow.compressors.pca import PCA
from featureflow.compressors.standardize import ChannelStandardizer, RunningMoments
from featureflow.compressors.vae import FeatureVAE, VAEOutput

__all__ = [
    "Compressor",
    "StandardizedCompressor",
    "FeatureVAE",
    "VAEOutput",
    "PCA",
    "Identity",
    "DiagonalGaussian",
    "ConvNeXtBlock",
    "ConvNeXtIsotropic",
    "ChannelStandardizer",
    "RunningMoments",
    "fit_statistics",
    "iter_feature_batches",
    "as_feature_tensor",
]
