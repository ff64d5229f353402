"""``FeatureVAE``: the ConvNeXt-isotropic feature VAE released with VFMF."""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from featureflow.compressors.base import StandardizedCompressor
from featureflow.compressors.convnext import ConvNeXtIsotropic
from featureflow.compressors.gaussian import DiagonalGaussian
from featureflow.typing import Float, Tensor, typechecked
from featureflow.utils import record_config, register_component

__all__ = ["FeatureVAE", "VAEOutput"]


@dataclass
class VAEOutput:
    """What :meth:`FeatureVAE.forward` returns (all in the standardised feature space).

    Attributes:
        reconstruction: ``(n, h, w, D)`` decoded standardised features.
        latents: ``(n, h, w, C)`` the raw latents that were decoded (a sample or the mean).
        posterior: the diagonal Gaussian ``q(z | x)``.
        mse: ``(n,)`` squared error summed over h, w, D.
        kl: ``(n,)`` KL to ``N(0, I)`` summed over h, w, C.
        elbo: ``(n,)`` ``-mse - kl_weight * kl``.
    """

    reconstruction: Tensor
    latents: Tensor
    posterior: DiagonalGaussian
    mse: Tensor
    kl: Tensor
    elbo: Tensor

    @property
    def loss(self) -> Tensor:
        """The training loss: ``-elbo`` averaged over the batch."""
        return -self.elbo.mean()


@register_component
class FeatureVAE(StandardizedCompressor):
    """The ConvNeXt-isotropic feature VAE of VFMF: per-patch channel compression
    (D → C), no spatial downsampling.

    Network (raw, on standardised features): ConvNeXt-isotropic encoder
    (1×1 stem D → ``dim``, ``depth`` blocks) → LayerNorm → Linear to ``2C``
    (mean, logvar clamped to [-30, 20]); decoder Linear C → ``dim`` → ConvNeXt-isotropic
    (``dim`` → ``dim``) → Linear to D. Its parameter names equal the released
    checkpoint's, so :meth:`load_network_state_dict` takes a released VAE state dict.

    Standardisation wraps the network exactly as in the released pipeline:
    ``encode(x) = latent_norm(raw_encode(feature_norm(x)).mean)`` and
    ``decode(z) = feature_norm⁻¹(raw_decode(latent_norm⁻¹(z)))``, with the statistics
    stored as buffers (``feature_norm.*``, ``latent_norm.*``) next to the network
    weights. :meth:`raw_encode` / :meth:`raw_decode` expose the bare network.

    Args:
        feature_dim: D (3072 for DINOv2-B blocks (2, 5, 8, 11)).
        latent_dim: C (16 in the paper).
        dim: ConvNeXt width (768 Kubric "base", 1024 Cityscapes "large").
        depth: ConvNeXt blocks in the encoder and in the decoder (18 / 36).
        kl_weight: weight of the KL term in the ELBO (the released ``beta``, 0.01).
        drop_path_rate: stochastic depth while training.
        layer_scale_init_value: ConvNeXt layer scale (0 = off, as released).

    Example:
        >>> import torch
        >>> from featureflow.compressors import FeatureVAE
        >>> vae = FeatureVAE(feature_dim=12, latent_dim=4, dim=8, depth=1)
        >>> z = vae.encode(torch.randn(2, 3, 5, 6, 12))
        >>> z.shape, vae.decode(z).shape
        (torch.Size([2, 3, 5, 6, 4]), torch.Size([2, 3, 5, 6, 12]))
    """

    @record_config(feature_dim=int, latent_dim=int, dim=int, depth=int, kl_weight=float, drop_path_rate=float,
                   layer_scale_init_value=float)
    def __init__(
        self,
        feature_dim: int,
        latent_dim: int = 16,
        dim: int = 768,
        depth: int = 18,
        kl_weight: float = 0.01,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 0.0,
    ) -> None:
        super().__init__(feature_dim, latent_dim)
        if kl_weight < 0:
            raise ValueError(f"FeatureVAE: kl_weight must be >= 0, got {kl_weight}")
        self.kl_weight = float(kl_weight)
        trunk = {"dim": dim, "depth": depth, "drop_path_rate": drop_path_rate,
                 "layer_scale_init_value": layer_scale_init_value}
        self.encoder_backbone = ConvNeXtIsotropic(feature_dim, **trunk)
        self.to_latents_norm = nn.LayerNorm(dim)
        self.to_latents = nn.Linear(dim, 2 * latent_dim)
        self.from_latents = nn.Linear(latent_dim, dim)
        self.decoder_backbone = ConvNeXtIsotropic(dim, **trunk)
        self.out_proj = nn.Linear(dim, feature_dim)
        for layer in (self.to_latents, self.from_latents, self.out_proj):
            nn.init.normal_(layer.weight, std=0.02)

    @classmethod
    def from_released_config(cls, config: Mapping[str, Any]) -> "FeatureVAE":
        """Build from a released ``ConvNeXtIsotropicVAE`` config (``input_dim``, ``depth``,
        ``dim``, ``latent_channels``, ``beta``, ...; ``shape`` is not needed).

        Example:
            >>> cfg = {"input_dim": 48, "depth": 2, "dim": 32, "latent_channels": 8, "beta": 0.01}
            >>> FeatureVAE.from_released_config(cfg).latent_dim
            8
        """
        return cls(
            feature_dim=int(config["input_dim"]),
            latent_dim=int(config["latent_channels"]),
            dim=int(config["dim"]),
            depth=int(config["depth"]),
            kl_weight=float(config.get("beta", 0.01)),
            drop_path_rate=float(config.get("drop_path_rate", 0.0)),
            layer_scale_init_value=float(config.get("layer_scale_init_value", 0.0)),
        )

    # ----------------------------------------------------------------- network weights
    def network_state_dict(self) -> dict[str, Tensor]:
        """The state dict without the standardisation buffers (the released key set)."""
        return {k: v for k, v in self.state_dict().items() if k not in self.STAT_KEYS}

    def load_network_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load network weights only (e.g. a released VAE ``model_state_dict``), strictly:
        every network key must be present with the right shape and nothing else is
        accepted except the standardisation keys, which are loaded if given."""
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict and k not in self.STAT_KEYS]
        unexpected = [k for k in state_dict if k not in own]
        wrong = [f"{k}: expected {tuple(own[k].shape)}, got {tuple(state_dict[k].shape)}"
                 for k in state_dict if k in own and tuple(state_dict[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or wrong:
            raise ValueError(
                "FeatureVAE.load_network_state_dict: state dict does not match "
                f"{self.config}: missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatch {wrong[:5]}"
            )
        self.load_state_dict(dict(state_dict), strict=False)

    # ----------------------------------------------------------------- raw network
    @typechecked
    def raw_encode(self, x: Float[Tensor, "n h w D"]) -> DiagonalGaussian:
        """The bare encoder on already-standardised features: ``q(z | x)`` over raw latents."""
        h = self.encoder_backbone(x.permute(0, 3, 1, 2).contiguous())
        h = self.to_latents_norm(h.permute(0, 2, 3, 1))
        return DiagonalGaussian.from_parameters(self.to_latents(h))

    @typechecked
    def raw_decode(self, z: Float[Tensor, "n h w C"]) -> Float[Tensor, "n h w D"]:
        """The bare decoder: raw latents -> standardised features."""
        h = self.from_latents(z).permute(0, 3, 1, 2).contiguous()
        h = self.decoder_backbone(h).permute(0, 2, 3, 1)
        return self.out_proj(h)

    def _core_encode(self, x: Tensor) -> Tensor:
        return self.raw_encode(x).mean

    def _core_decode(self, z: Tensor) -> Tensor:
        return self.raw_decode(z)

    # ----------------------------------------------------------------- public maps
    @typechecked
    def encode(
        self,
        features: Float[Tensor, "*batch h w D"],
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> Float[Tensor, "*batch h w C"]:
        """Features -> standardised latents: the posterior mean, or a posterior sample
        when ``sample=True`` (drawn with ``generator``).

        Args:
            features: ``(*batch, h, w, D)`` features in the encoder's scale.
            sample: draw from ``q(z | x)`` instead of returning its mean.
            generator: random generator for the sample.

        Returns:
            ``(*batch, h, w, C)`` standardised latents.
        """
        x, lead = self._flat(self.check_features(features))
        q = self.raw_encode(self.feature_norm.normalize(x))
        z = self.latent_norm.normalize(q.sample(generator) if sample else q.mean)
        return z.reshape(*lead, *z.shape[1:])

    def forward(
        self,
        features: Tensor,
        *,
        sample: bool = True,
        generator: torch.Generator | None = None,
        kl_weight: float | None = None,
    ) -> VAEOutput:
        """The ELBO terms on a batch, in the standardised feature space.

        ``elbo = -Σ (x̂ - x)² - kl_weight · Σ KL(q(z|x) || N(0, I))``, sums over
        (h, w, channels) per example, where ``x`` are the standardised features. With
        ``sample=False`` the mean is decoded (the KL is still reported and weighted).

        Args:
            features: ``(*batch, h, w, D)`` features in the encoder's scale.
            sample: decode a reparameterised posterior sample (training) or the mean.
            generator: random generator for the sample.
            kl_weight: overrides ``self.kl_weight``.

        Returns:
            :class:`VAEOutput`; ``.loss`` is ``-elbo.mean()``.
        """
        x, _ = self._flat(self.check_features(features))
        x = self.feature_norm.normalize(x)
        q = self.raw_encode(x)
        z = q.sample(generator) if sample else q.mean
        recon = self.raw_decode(z)
        mse = ((recon - x) ** 2).reshape(x.shape[0], -1).sum(1)
        kl = q.kl()
        beta = self.kl_weight if kl_weight is None else float(kl_weight)
        return VAEOutput(recon, z, q, mse, kl, -mse - beta * kl)
