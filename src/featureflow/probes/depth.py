"""Depth on top of any probe head: continuous regression or the released 256-bin form."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featureflow.probes._common import ImageSize, valid_mean
from featureflow.probes.task import TaskHead
from featureflow.typing import Float, FrameFeatures, Int, typechecked
from featureflow.utils import register_component

__all__ = ["DepthHead"]

MODES = ("log", "range", "bins")
BIN_PREDICTIONS = ("argmax", "expectation")


@register_component
class DepthHead(TaskHead):
    """Per-pixel depth in [``min_depth``, ``max_depth``] (metres, or whatever unit the targets use).

    Three forms, chosen by ``mode``:

    * ``"log"`` (1 output): ``depth = min_depth · exp(raw)``, clamped to ``max_depth``;
      the loss is L1 between ``raw`` and ``log(target / min_depth)`` — an L1 on log
      depth, i.e. on relative error. A non-negative raw output (the released one-output
      DPT ends with a ReLU) maps to depth ≥ ``min_depth``.
    * ``"range"`` (1 output): ``depth = min + (max − min) · sigmoid(raw)``; the loss is
      L1 on the normalised depth ``(target − min) / (max − min)`` clipped to [0, 1].
    * ``"bins"`` (``num_bins`` outputs, 256 released): classification over
      ``num_bins`` levels evenly spaced over [min, max] (``bin_values``, both ends
      included). This is the released form: targets are normalised to [0, 1] over
      [min, max], clipped and quantised by truncation, ``floor(255 · d_norm)`` (the
      uint8 cast of the released data loader), and the released decoder takes the
      **argmax** bin. ``bin_prediction="argmax"`` returns that bin's value (exact for a
      one-hot logit); ``"expectation"`` returns the softmax-weighted mean of the bin
      values (smoother; also within [min, max]). The loss is cross-entropy on the bins.

    Pixels whose target is not finite or not positive are left out of every loss.

    Args:
        head: probe head with 1 output (log/range) or ``num_bins`` outputs (bins).
        min_depth: lower end of the depth range (``> 0``; bins also allow 0).
        max_depth: upper end of the depth range (``> min_depth``).
        mode: "log", "range" or "bins".
        num_bins: number of bins for ``mode="bins"``.
        bin_prediction: "argmax" (released) or "expectation".

    Example:
        >>> import torch
        >>> from featureflow.probes import LinearHead
        >>> depth = DepthHead(LinearHead(16, 256), min_depth=1.0, max_depth=10.0, mode="bins")
        >>> d = depth.predict(torch.randn(2, 4, 4, 16), size=(8, 8))
        >>> d.shape, bool(((d >= 1.0) & (d <= 10.0)).all())
        (torch.Size([2, 8, 8]), True)
    """

    task = "depth"

    def __init__(
        self,
        head: nn.Module | dict[str, Any],
        min_depth: float,
        max_depth: float,
        mode: str = "log",
        num_bins: int = 256,
        bin_prediction: str = "argmax",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"DepthHead mode must be one of {MODES}, got {mode!r}")
        if bin_prediction not in BIN_PREDICTIONS:
            raise ValueError(f"DepthHead bin_prediction must be one of {BIN_PREDICTIONS}, got {bin_prediction!r}")
        lowest_ok = min_depth >= 0 if mode == "bins" else min_depth > 0
        if not (lowest_ok and max_depth > min_depth and math.isfinite(max_depth)):
            raise ValueError(
                f"DepthHead needs 0 < min_depth < max_depth < inf (min_depth = 0 allowed for bins); "
                f"got min_depth={min_depth}, max_depth={max_depth}"
            )
        if mode == "bins" and num_bins < 2:
            raise ValueError(f"DepthHead(mode='bins') needs num_bins >= 2, got {num_bins}")
        super().__init__(head, out_channels=num_bins if mode == "bins" else 1)
        self.mode = mode
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.num_bins = int(num_bins)
        self.bin_prediction = bin_prediction
        self.config.update(
            min_depth=self.min_depth,
            max_depth=self.max_depth,
            mode=mode,
            num_bins=self.num_bins,
            bin_prediction=bin_prediction,
        )
        # Derived from the config, so not saved in the state dict (keeps the released layout).
        self.register_buffer(
            "bin_values", torch.linspace(self.min_depth, self.max_depth, self.num_bins), persistent=False
        )

    @typechecked
    def decode(self, raw: Float[Tensor, "b c H W"]) -> Float[Tensor, "b H W"]:
        """Turn the head's raw output into depth (b, H, W) within [min_depth, max_depth]."""
        if raw.shape[1] != self.out_channels:
            raise ValueError(f"DepthHead.decode expected {self.out_channels} channels, got {raw.shape[1]}")
        if self.mode == "log":
            return (self.min_depth * torch.exp(raw[:, 0])).clamp(self.min_depth, self.max_depth)
        if self.mode == "range":
            return self.min_depth + (self.max_depth - self.min_depth) * torch.sigmoid(raw[:, 0])
        values = self.bin_values.to(raw.dtype)
        if self.bin_prediction == "argmax":
            return values[raw.argmax(dim=1)]
        probs = raw.softmax(dim=1)
        return torch.einsum("bchw,c->bhw", probs, values).clamp(self.min_depth, self.max_depth)

    @typechecked
    def predict(self, features: FrameFeatures, size: ImageSize = None) -> Float[Tensor, "b H W"]:
        """Depth (b, H, W) within [min_depth, max_depth]."""
        return self.decode(self.head(features, size=size))

    @typechecked
    def predict_bins(self, features: FrameFeatures, size: ImageSize = None) -> Int[Tensor, "b H W"]:
        """The released output: argmax bin ids (b, H, W) int64 (``mode="bins"`` only)."""
        self._need_bins("predict_bins")
        return self.head(features, size=size).argmax(dim=1)

    @typechecked
    def depth_to_bins(self, depth: Float[Tensor, "*shape"]) -> Int[Tensor, "*shape"]:
        """Released quantisation: ``floor((num_bins − 1) · clip((d − min) / (max − min), 0, 1))``."""
        self._need_bins("depth_to_bins")
        norm = ((depth - self.min_depth) / (self.max_depth - self.min_depth)).clamp(0.0, 1.0)
        norm = torch.nan_to_num(norm, nan=0.0)
        return torch.floor(norm * (self.num_bins - 1)).long().clamp(0, self.num_bins - 1)

    @typechecked
    def loss(self, features: FrameFeatures, target: Float[Tensor, "b H W"]) -> Float[Tensor, ""]:
        """L1 on log depth (log), L1 on normalised depth (range) or bin cross-entropy (bins)."""
        raw = self._raw_for(features, target, "target depth")
        valid = torch.isfinite(target) & (target > 0)
        safe = torch.where(valid, target, torch.full_like(target, self.max_depth))
        if self.mode == "bins":
            labels = self.depth_to_bins(safe)
            per_pixel = F.cross_entropy(raw, labels, reduction="none")
            return valid_mean(per_pixel, valid)
        if self.mode == "log":
            goal = torch.log(safe.clamp(self.min_depth, self.max_depth) / self.min_depth)
            return valid_mean((raw[:, 0] - goal).abs(), valid)
        goal = ((safe - self.min_depth) / (self.max_depth - self.min_depth)).clamp(0.0, 1.0)
        return valid_mean((torch.sigmoid(raw[:, 0]) - goal).abs(), valid)

    def _need_bins(self, name: str) -> None:
        if self.mode != "bins":
            raise ValueError(f"DepthHead.{name} needs mode='bins' (this head has mode={self.mode!r})")
