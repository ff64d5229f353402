"""Encoders: frames → patch features ``(b, h, w, D)``, channels-last.

* `Encoder`: the protocol (``__call__``, ``patch_size``, ``feature_dim``, ``resize``).
* `encode_frames`: apply an encoder to clips ``(b, t, 3, H, W)`` → ``(b, t, h, w, D)``.
* `DINOv2Encoder`: frozen DINOv2 (with or without registers) via Hugging Face transformers
  (install the ``hf`` extra); transformers is imported only when it is built.
* `ModuleEncoder`: wrap any network or callable that returns patch features.
* `PixelPatchEncoder`: each patch's raw pixels as its feature (exactly invertible).
* `ToyEncoder`: a small ViT for ToyWorld frames, trained by
  `featureflow.training.toy_encoder.train_toy_encoder`.
"""

from featureflow.encoders.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESIZE_POLICIES,
    Encoder,
    check_encoder_output,
    check_features,
    encode_frames,
    grid_size,
    prepare_images,
)
from featureflow.encoders.dinov2 import DINOv2Encoder, MissingWeightsError
from featureflow.encoders.module import ModuleEncoder
from featureflow.encoders.pixels import PixelPatchEncoder, unpatchify
from featureflow.encoders.toy import ToyEncoder

__all__ = [
    "Encoder",
    "encode_frames",
    "prepare_images",
    "grid_size",
    "check_encoder_output",
    "check_features",
    "RESIZE_POLICIES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DINOv2Encoder",
    "MissingWeightsError",
    "ModuleEncoder",
    "ToyEncoder",
    "PixelPatchEncoder",
    "unpatchify",
]
