"""The `Encoder` protocol, image preparation (dtype, sizing policy) and `encode_frames`.

An encoder maps a batch of images ``(b, 3, H, W)`` (float in [0, 1], or uint8 in
[0, 255], converted) to channels-last patch features ``(b, h, w, D)`` with
``h = H' / patch_size`` and ``w = W' / patch_size``, where ``H' x W'`` is the frame
size after the encoder's sizing policy (its ``resize`` attribute):

* ``"resize"`` (default everywhere): resize each side to the nearest multiple of the
  patch size (at least one patch), bilinear with antialiasing. A frame that already
  fits is left untouched.
* ``"crop"``: center-crop each side down to a multiple of the patch size (a side
  smaller than one patch is an error).
* ``"error"``: refuse frames whose sides are not multiples of the patch size.
"""

from __future__ import annotations

import warnings
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from featureflow.typing import (
    Features,
    Float,
    Frames,
    FramesU8,
    Images,
    ImagesU8,
    ShapeError,
    check_finite,
    typechecked,
)
from featureflow.utils import progress_bar

__all__ = [
    "Encoder",
    "RESIZE_POLICIES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "prepare_images",
    "grid_size",
    "check_encoder_output",
    "check_features",
    "encode_frames",
]

#: The sizing policies an encoder can state in its ``resize`` attribute.
RESIZE_POLICIES = ("resize", "crop", "error")
#: ImageNet channel statistics (DINOv2, CLIP-style ViTs trained on ImageNet pixels).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Images after sizing: the sides may differ from the input's.
SizedImages = Float[Tensor, "b 3 Hp Wp"]


@runtime_checkable
class Encoder(Protocol):
    """Frames → patch features: what the rest of featureflow needs from a vision encoder.

    Attributes:
        patch_size: pixels per patch side; the feature grid is ``(H'/p, W'/p)``.
        feature_dim: ``D``, channels of the returned features.
        resize: sizing policy for frames whose sides are not multiples of
            ``patch_size``: ``"resize"``, ``"crop"`` or ``"error"`` (see the module
            docstring); use `prepare_images` to apply it.

    Calling the encoder on images ``(b, 3, H, W)`` float in [0, 1] (or uint8) returns
    features ``(b, h, w, D)``, channels-last.

    Example:
        >>> import torch
        >>> from featureflow.encoders import Encoder, ToyEncoder
        >>> isinstance(ToyEncoder(depth=2, width=32, heads=2, blocks=(0, 1)), Encoder)
        True
    """

    patch_size: int
    feature_dim: int
    resize: str

    def __call__(self, images: Tensor) -> Tensor: ...


def _check_policy(resize: str) -> str:
    if resize not in RESIZE_POLICIES:
        raise ValueError(f"resize must be one of {RESIZE_POLICIES}, got {resize!r}")
    return resize


def grid_size(height: int, width: int, patch_size: int, resize: str = "resize") -> tuple[int, int]:
    """The patch grid ``(h, w)`` an encoder produces for ``height x width`` frames.

    Raises ``ValueError`` where `prepare_images` would (policy ``"error"`` and a side
    not a multiple of the patch, or ``"crop"`` and a side smaller than one patch).

    Example:
        >>> grid_size(64, 64, 8), grid_size(230, 100, 14), grid_size(230, 100, 14, "crop")
        ((8, 8), (16, 7), (16, 7))
    """
    _check_policy(resize)
    if patch_size < 1:
        raise ValueError(f"patch_size must be a positive integer, got {patch_size}")
    out = []
    for name, size in (("height", height), ("width", width)):
        if size % patch_size == 0:
            out.append(size // patch_size)
        elif resize == "error":
            raise ShapeError(
                f"frame {name} {size} is not a multiple of the patch size {patch_size} and the encoder's "
                f"resize policy is 'error'; expected a multiple of {patch_size} (e.g. "
                f"{max(1, round(size / patch_size)) * patch_size}), or use resize='resize' or 'crop'"
            )
        elif resize == "crop":
            if size < patch_size:
                raise ShapeError(f"frame {name} {size} is smaller than one patch ({patch_size}); cannot center-crop")
            out.append(size // patch_size)
        else:
            out.append(max(1, round(size / patch_size)))
    return out[0], out[1]


@typechecked
def prepare_images(images: Images | ImagesU8, patch_size: int, resize: str = "resize") -> SizedImages:
    """Convert images to float in [0, 1] and size them to a multiple of ``patch_size``.

    Float images must be finite (NaN or Inf raise ``ValueError``).

    Args:
        images: ``(b, 3, H, W)`` float in [0, 1], or uint8 in [0, 255] (divided by 255).
        patch_size: the encoder's patch size.
        resize: ``"resize"`` (nearest multiple, bilinear + antialias), ``"crop"``
            (center-crop down to a multiple) or ``"error"``.

    Returns:
        ``(b, 3, H', W')`` floating images with ``H'``, ``W'`` multiples of ``patch_size``
        (the input itself when it already fits and is float).

    Example:
        >>> import torch
        >>> prepare_images(torch.zeros(1, 3, 30, 17, dtype=torch.uint8), 8).shape
        torch.Size([1, 3, 32, 16])
        >>> prepare_images(torch.rand(1, 3, 30, 17), 8, "crop").shape
        torch.Size([1, 3, 24, 16])
    """
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    else:
        check_finite("images", images)
    height, width = images.shape[-2:]
    h, w = grid_size(height, width, patch_size, resize)
    new_h, new_w = h * patch_size, w * patch_size
    if (new_h, new_w) == (height, width):
        return images
    if resize == "crop":
        top, left = (height - new_h) // 2, (width - new_w) // 2
        return images[..., top : top + new_h, left : left + new_w]
    dtype = images.dtype
    out = F.interpolate(images.float(), size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0).to(dtype)


def check_encoder_output(features: Any, batch: int, grid: tuple[int, int], feature_dim: int, who: str) -> Tensor:
    """Raise `ShapeError` unless an encoder's output is a float tensor ``(batch, h, w, feature_dim)``.

    (Compressors check their *input* features with ``Compressor.check_features``, a method
    with another signature; this function checks what an encoder returned.)

    Args:
        features: What the encoder returned.
        batch: The number of images given to it.
        grid: The patch grid (h, w) it should have produced.
        feature_dim: Its ``feature_dim`` (D).
        who: The encoder's name, for the error message.

    Returns:
        ``features``, unchanged.

    Raises:
        ShapeError: Not a tensor, not floating point, or not of shape (batch, h, w, D).

    Example:
        >>> import torch
        >>> check_encoder_output(torch.zeros(2, 4, 4, 8), 2, (4, 4), 8, "enc").shape
        torch.Size([2, 4, 4, 8])
    """
    expected = (batch, grid[0], grid[1], feature_dim)
    if not isinstance(features, Tensor):
        raise ShapeError(f"{who} returned {type(features).__name__}; expected a tensor of shape (b, h, w, D) = {expected}")
    if not features.is_floating_point():
        raise ShapeError(f"{who} returned a {features.dtype} tensor; expected floating-point features")
    if tuple(features.shape) != expected:
        raise ShapeError(
            f"{who} returned features of shape {tuple(features.shape)}; expected (b, h, w, D) = {expected} "
            f"(patch grid {grid[0]}x{grid[1]}, feature_dim {feature_dim})"
        )
    return features


def check_features(features: Any, batch: int, grid: tuple[int, int], feature_dim: int, who: str) -> Tensor:
    """Deprecated alias of `check_encoder_output` (a ``DeprecationWarning``).

    The name ``check_features`` is kept by ``Compressor.check_features`` alone.

    Example:
        >>> import torch, warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", DeprecationWarning)
        ...     check_features(torch.zeros(1, 2, 2, 3), 1, (2, 2), 3, "enc").shape
        torch.Size([1, 2, 2, 3])
    """
    warnings.warn(
        "featureflow.encoders.check_features is deprecated; use check_encoder_output (same arguments)",
        DeprecationWarning,
        stacklevel=2,
    )
    return check_encoder_output(features, batch, grid, feature_dim, who)


@typechecked
def encode_frames(
    encoder: Any,
    frames: Frames | FramesU8,
    batch_size: int | None = None,
    progress: bool = False,
) -> Features:
    """Encode every frame of a clip batch: ``(b, t, 3, H, W)`` → ``(b, t, h, w, D)``.

    Frames are flattened to ``b * t`` images and passed through ``encoder`` in chunks of
    ``batch_size`` images (all at once when ``None``), without gradients. uint8 frames
    are converted to float in [0, 1]; the encoder applies its own sizing policy.

    Args:
        encoder: any `Encoder` (callable with ``patch_size``, ``feature_dim`` and
            optionally ``resize``, default ``"resize"``).
        frames: ``(b, t, 3, H, W)`` float in [0, 1] or uint8.
        batch_size: images per encoder call (``None`` = all).
        progress: show a progress bar over chunks.

    Returns:
        Features ``(b, t, h, w, D)`` on the device the encoder returns them on.

    Example:
        >>> import torch
        >>> from featureflow.encoders import ToyEncoder, encode_frames
        >>> enc = ToyEncoder(image_size=16, patch_size=8, width=16, depth=2, heads=2, blocks=(0, 1))
        >>> encode_frames(enc, torch.rand(2, 3, 3, 16, 16), batch_size=4).shape
        torch.Size([2, 3, 2, 2, 32])
    """
    missing = [a for a in ("patch_size", "feature_dim") if not hasattr(encoder, a)]
    if missing or not callable(encoder):
        raise TypeError(
            f"encode_frames expected an Encoder (callable with patch_size and feature_dim attributes); "
            f"got {type(encoder).__name__}" + (f" without {', '.join(missing)}" if missing else " (not callable)")
        )
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size}")
    b, t = frames.shape[:2]
    flat = frames.reshape(b * t, *frames.shape[2:])
    n = flat.shape[0]
    step = n if batch_size is None else batch_size
    patch = int(encoder.patch_size)
    grid = grid_size(flat.shape[-2], flat.shape[-1], patch, getattr(encoder, "resize", "resize"))
    name = type(encoder).__name__
    chunks = []
    with torch.no_grad():
        for start in progress_bar(range(0, n, step), progress=progress, desc="encode frames", unit="batch"):
            part = flat[start : start + step]
            feats = encoder(part)
            chunks.append(check_encoder_output(feats, part.shape[0], grid, int(encoder.feature_dim), name))
    out = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
    return out.reshape(b, t, *out.shape[1:])
