"""`Forecast`: what `WorldModel.forecast` returns — latents, features, decoded modalities, uncertainty."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from featureflow.world.checks import check_output

if TYPE_CHECKING:  # pragma: no cover
    from featureflow.world.model import WorldModel

__all__ = ["Forecast", "MODALITIES"]

#: Modalities a probe can decode, and the layout ``Forecast.decode`` returns.
MODALITIES: dict[str, str] = {
    "segmentation": "(b, s, k, H, W) int64 class ids",
    "depth": "(b, s, k, H, W) float, metres",
    "normals": "(b, s, k, 3, H, W) unit vectors, camera frame",
    "rgb": "(b, s, k, 3, H, W) in [0, 1]",
}


@dataclass
class Forecast:
    """Sampled futures of a batch of clips.

    Attributes:
        latents: (b, s, k, h, w, C) forecast latents (s samples, k forecast steps).
        nfe: network evaluations actually spent per forecast frame (per sample batch).
        image_size: (H, W) the size decoded modalities are produced at.
        model: the `WorldModel` that made the forecast (used to decode).

    Example:
        >>> import featureflow as ff  # doctest: +SKIP
        >>> fc = ff.WorldModel.from_pretrained("toyworld").forecast(frames, horizon=2)  # doctest: +SKIP
        >>> fc.decode("depth").shape  # doctest: +SKIP
        torch.Size([1, 1, 2, 64, 64])
    """

    latents: Tensor
    nfe: int
    image_size: tuple[int, int]
    model: "WorldModel" = field(repr=False)
    _cache: dict[str, Tensor] = field(default_factory=dict, repr=False)

    @property
    def num_samples(self) -> int:
        return int(self.latents.shape[1])

    @property
    def horizon(self) -> int:
        return int(self.latents.shape[2])

    @property
    def features(self) -> Tensor:
        """(b, s, k, h, w, D) features decoded from the latents by the compressor."""
        if "features" not in self._cache:
            b, s, k = self.latents.shape[:3]
            flat = self.latents.reshape(b * s * k, *self.latents.shape[3:])
            with torch.no_grad():
                feats = self.model.compressor.decode(flat)
            check_output(f"compressor.decode ({type(self.model.compressor).__name__})", feats)
            self._cache["features"] = feats.reshape(b, s, k, *feats.shape[1:])
        return self._cache["features"]

    def _run_probe(self, modality: str, method: str) -> Tensor:
        probes = self.model.probes
        if modality not in probes:
            raise ValueError(
                f"no probe head for {modality!r}; this model has {sorted(probes)} "
                f"(modalities featureflow knows: {sorted(MODALITIES)})"
            )
        head = probes[modality]
        feats = self.features
        b, s, k = feats.shape[:3]
        flat = feats.reshape(b * s * k, *feats.shape[3:])
        run = getattr(head, method)
        with torch.no_grad():  # chunks of 64 images bound the memory of full-resolution outputs
            out = torch.cat([run(part, size=self.image_size) for part in flat.split(64)])
        check_output(f"the {modality!r} probe ({type(head).__name__})", out)
        return out.reshape(b, s, k, *out.shape[1:])

    def decode(self, modality: str) -> Tensor:
        """Decode every sample and step into ``modality`` (see `MODALITIES` for layouts).

        Args:
            modality: one of "segmentation", "depth", "normals", "rgb" (those the model has probes for).
        """
        key = f"decode:{modality}"
        if key not in self._cache:
            self._cache[key] = self._run_probe(modality, "predict")
        return self._cache[key]

    def probabilities(self) -> Tensor:
        """(b, s, k, classes, H, W) segmentation class probabilities of every sample."""
        key = "probs:segmentation"
        if key not in self._cache:
            self._cache[key] = self._run_probe("segmentation", "probabilities")
        return self._cache[key]

    def uncertainty(self, modality: str) -> dict[str, Tensor]:
        """Per-pixel mean and spread across samples.

        Returns a dict with ``mean`` and ``spread`` (both over the sample axis s):

        * segmentation: ``mean`` = argmax of the sample-averaged class probabilities
          (b, k, H, W); ``spread`` = entropy (nats) of that averaged distribution.
        * depth: mean and standard deviation (b, k, H, W).
        * normals: ``mean`` = normalised mean direction (b, k, 3, H, W); ``spread`` = mean
          angle in degrees between each sample and the mean direction (b, k, H, W).
        * rgb: mean (b, k, 3, H, W) and standard deviation averaged over channels (b, k, H, W).
        """
        if modality == "segmentation":
            p = self.probabilities().float().mean(dim=1)
            entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=2)
            return {"mean": p.argmax(dim=2), "spread": entropy}
        x = self.decode(modality).float()
        if modality == "depth":
            return {"mean": x.mean(dim=1), "spread": x.std(dim=1, unbiased=False)}
        if modality == "normals":
            m = x.mean(dim=1)
            m = m / m.norm(dim=2, keepdim=True).clamp_min(1e-8)
            cos = (x * m.unsqueeze(1)).sum(dim=3).clamp(-1.0, 1.0)
            return {"mean": m, "spread": torch.rad2deg(torch.acos(cos)).mean(dim=1)}
        if modality == "rgb":
            return {"mean": x.mean(dim=1), "spread": x.std(dim=1, unbiased=False).mean(dim=2)}
        raise ValueError(f"unknown modality {modality!r}; expected one of {sorted(MODALITIES)}")

    def __len__(self) -> int:
        return int(self.latents.shape[0])

    def extra_repr(self) -> dict[str, Any]:  # pragma: no cover - cosmetic
        return {"latents": tuple(self.latents.shape), "nfe": self.nfe}


