"""`Forecast`: what `WorldModel.forecast` returns — latents, features, decoded modalities, uncertainty."""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from featureflow.typing import Float, typechecked
from featureflow.world.checks import check_output
from featureflow.world.modalities import MODALITIES, modality as _modality

if TYPE_CHECKING:  # pragma: no cover
    from featureflow.world.model import WorldModel

__all__ = ["Forecast", "MODALITIES"]


@dataclass
class Forecast:
    """Sampled futures of a batch of clips.

    Decoding is on request and memory stays flat in horizon: ``decode`` runs the
    compressor and the probe on chunks of latents (batched across samples and steps),
    keeps only small outputs (:attr:`cache_bytes`), and ``decode(m, steps=...)`` decodes
    only the steps asked for.

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

    #: Decoded outputs are kept for repeated calls only while all kept outputs together
    #: stay under this many bytes; larger ones are returned and not kept, so memory stays
    #: flat in horizon and samples (decode again, or decode a few ``steps``, as needed).
    cache_bytes: ClassVar[int] = 8 * 2**20
    #: Images decoded per probe call: probes run batched across samples and steps, in
    #: chunks of this many (b * s * k rows), straight from the latents. 8 keeps a probe's
    #: activations small (a width-96 head at 64x64 holds ~12 MiB per activation for 8
    #: images) and was as fast as 16 here.
    chunk: ClassVar[int] = 8

    @property
    def num_samples(self) -> int:
        return int(self.latents.shape[1])

    @property
    def horizon(self) -> int:
        return int(self.latents.shape[2])

    @property
    def features(self) -> Tensor:
        """(b, s, k, h, w, D) features decoded from the latents by the compressor.

        Computed on first access and kept (decoding modalities does not need them: it
        decodes latents chunk by chunk).
        """
        if "features" not in self._cache:
            b, s, k = self.latents.shape[:3]
            flat = self.latents.reshape(b * s * k, *self.latents.shape[3:])
            with torch.no_grad():
                feats = self.model.compressor.decode(flat)
            check_output(f"compressor.decode ({type(self.model.compressor).__name__})", feats)
            self._cache["features"] = feats.reshape(b, s, k, *feats.shape[1:])
        return self._cache["features"]

    def _select(self, steps: int | slice | Sequence[int] | None) -> tuple[Tensor, Tensor | None]:
        """Latents (and kept features, if any) of the chosen forecast steps, (b, s, k', ...)."""
        feats = self._cache.get("features")
        if steps is None:
            return self.latents, feats
        if isinstance(steps, bool) or not isinstance(steps, (int, slice, list, tuple, range)):
            raise TypeError(f"steps: expected an int, a slice or a sequence of ints, got {type(steps).__name__}")
        if isinstance(steps, int):
            if not -self.horizon <= steps < self.horizon:
                raise IndexError(f"steps: forecast step {steps} out of range for a horizon of {self.horizon}")
            steps = [steps]
        index = torch.arange(self.horizon)[list(steps) if isinstance(steps, (tuple, range)) else steps]
        pick = (lambda x: None if x is None else x.index_select(2, index.to(x.device)))  # noqa: E731
        return pick(self.latents), pick(feats)

    def _run_probe(self, modality: str, method: str, steps: Any = None) -> Tensor:
        self._check_probe(modality)
        head, compressor = self.model.probes[modality], self.model.compressor
        latents, feats = self._select(steps)
        lead = latents.shape[:3]
        flat = latents.reshape(-1, *latents.shape[3:])
        flat_feats = None if feats is None else feats.reshape(-1, *feats.shape[3:])
        run = getattr(head, method)
        out: Tensor | None = None
        with torch.no_grad():  # chunks bound the memory: nothing but the output grows with b * s * k
            for start in range(0, flat.shape[0], self.chunk):
                part = slice(start, start + self.chunk)
                if flat_feats is not None:
                    f = flat_feats[part]
                else:
                    f = compressor.decode(flat[part])
                    check_output(f"compressor.decode ({type(compressor).__name__})", f)
                y = run(f, size=self.image_size)
                check_output(f"the {modality!r} probe ({type(head).__name__})", y)
                if out is None:
                    out = y.new_empty(flat.shape[0], *y.shape[1:])
                out[part] = y
        assert out is not None
        return out.reshape(*lead, *out.shape[1:])

    def _check_probe(self, modality: str) -> None:
        probes = self.model.probes
        if modality not in probes:
            raise ValueError(
                f"no probe head for {modality!r}; this model has {sorted(probes)} "
                f"(modalities featureflow knows: {sorted(MODALITIES)})"
            )

    def _kept(self, key: str, make: Callable[[], Tensor]) -> Tensor:
        if key in self._cache:
            return self._cache[key]
        value = make()
        used = sum(v.numel() * v.element_size() for k, v in self._cache.items() if k != "features")
        if used + value.numel() * value.element_size() <= self.cache_bytes:
            self._cache[key] = value
        return value

    @typechecked
    def decode(self, modality: str, steps: int | slice | Sequence[int] | None = None) -> Tensor:
        """Decode every sample of the chosen forecast steps into ``modality`` (layouts in `MODALITIES`).

        The compressor and the probe run batched across samples and steps, in chunks of
        :attr:`chunk` images; features are not kept. Outputs smaller than
        :attr:`cache_bytes` are kept for repeated calls, larger ones are not.

        Args:
            modality: one of "segmentation", "depth", "normals", "rgb" (those the model has probes for).
            steps: forecast steps to decode (an int, a slice or a list of step indices);
                ``None`` decodes all k. An int keeps the step axis (size 1).
        """
        if steps is not None:
            return self._run_probe(modality, "predict", steps)
        return self._kept(f"decode:{modality}", lambda: self._run_probe(modality, "predict"))

    @typechecked
    def probabilities(self, steps: int | slice | Sequence[int] | None = None) -> Float[Tensor, "b s k n H W"]:
        """(b, s, k, classes, H, W) segmentation class probabilities of every sample (``steps`` as in `decode`)."""
        if steps is not None:
            return self._run_probe("segmentation", "probabilities", steps)
        return self._kept("probs:segmentation", lambda: self._run_probe("segmentation", "probabilities"))

    @typechecked
    def uncertainty(self, modality: str) -> dict[str, Tensor]:
        """Per-pixel mean and spread across samples.

        Returns a dict with ``mean`` and ``spread`` (both over the sample axis s):

        * segmentation: ``mean`` = argmax of the sample-averaged class probabilities
          (b, k, H, W); ``spread`` = entropy (nats) of that averaged distribution.
        * depth: mean and standard deviation (b, k, H, W).
        * normals: ``mean`` = normalised mean direction (b, k, 3, H, W); ``spread`` = mean
          angle in degrees between each sample and the mean direction (b, k, H, W).
        * rgb: mean (b, k, 3, H, W) and standard deviation averaged over channels (b, k, H, W).

        Computed a few forecast steps at a time (all samples of a step together), so the
        samples' decoded outputs are never all held at once.
        """
        self._check_probe(modality)
        entry = _modality(modality)
        rows = max(1, self.chunk // max(1, int(self.latents.shape[0]) * self.num_samples))
        parts = []
        for k in range(0, self.horizon, rows):
            outputs = self._run_probe(modality, entry.probe_method, slice(k, k + rows))
            parts.append(entry.uncertainty(outputs))
        return {key: torch.cat([p[key] for p in parts], dim=1) for key in parts[0]}

    def __len__(self) -> int:
        return int(self.latents.shape[0])

    def extra_repr(self) -> dict[str, Any]:  # pragma: no cover - cosmetic
        return {"latents": tuple(self.latents.shape), "nfe": self.nfe}


