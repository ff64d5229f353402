"""Read and write clips as folders of image files, and read (animated) video files.

Frames are (t, 3, H, W) float32 in [0, 1]. Folders are read with Pillow in natural
filename order (``frame_2`` before ``frame_10``). Videos: animated GIF, WebP and PNG are
read with Pillow; other containers (mp4, avi, ...) are decoded with PyAV, the optional
``video`` extra (``pip install featureflow[video]``); without it a clear error says so.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageSequence
from torch import Tensor

from featureflow.typing import Float, UInt8, typechecked
from featureflow.utils import atomic_write

__all__ = ["IMAGE_EXTENSIONS", "read_frames", "read_image", "write_frames", "read_video", "to_uint8"]

#: File extensions that :func:`read_frames` picks up.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_PILLOW_VIDEO = (".gif", ".webp", ".png", ".apng")


def _natural_key(path: Path) -> list[object]:
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", path.name)]


@contextlib.contextmanager
def _opening(path: Path, what: str) -> Iterator[None]:
    """Turn Pillow's errors for a corrupt or truncated file (OSError, SyntaxError, IndexError,
    ... depending on the format) into a ``ValueError`` naming it."""
    try:
        yield
    except (FileNotFoundError, PermissionError, MemoryError):
        raise
    except Exception as err:
        raise ValueError(f"could not read {path} as {what} (corrupt or truncated file?): "
                         f"{type(err).__name__}: {err}") from None


def _stack(images: list[np.ndarray], source: str) -> Tensor:
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"frames of {source} have different sizes {sorted(shapes)}; expected one size")
    arr = np.stack(images)  # (t, H, W, 3) uint8
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def read_image(path: str | os.PathLike) -> np.ndarray:
    """One image file as an (H, W, 3) uint8 RGB array (any mode converted to RGB).

    Example:
        >>> import tempfile, pathlib, torch
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = write_frames(torch.ones(1, 3, 2, 3), d)
        >>> read_image(d / "frame_00000.png").shape
        (2, 3, 3)
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"image not found: {file}")
    with _opening(file, "an image"):
        with Image.open(file) as im:
            return np.asarray(im.convert("RGB"))


@typechecked
def read_frames(path: str | os.PathLike, pattern: str | None = None) -> Float[Tensor, "t 3 H W"]:
    """Read a folder of images into frames (t, 3, H, W) float32 in [0, 1].

    Args:
        path: the folder.
        pattern: optional glob (e.g. ``"rgba_*.png"``); by default every file with an
            extension in :data:`IMAGE_EXTENSIONS`.

    Example:
        >>> import tempfile, torch
        >>> d = tempfile.mkdtemp()
        >>> _ = write_frames(torch.zeros(2, 3, 4, 5), d)
        >>> tuple(read_frames(d).shape)
        (2, 3, 4, 5)
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"frame folder not found: {folder} (expected a directory of images)")
    if pattern is None:
        files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    else:
        files = [p for p in folder.glob(pattern) if p.is_file()]
    if not files:
        what = pattern or f"files ending in {', '.join(IMAGE_EXTENSIONS)}"
        raise FileNotFoundError(f"no frames in {folder}: expected {what}")
    files.sort(key=_natural_key)
    return _stack([read_image(f) for f in files], str(folder))


def to_uint8(images: Tensor) -> Tensor:
    """Float images in [0, 1] to uint8 (rounded, clipped); uint8 input is returned as is.

    Example:
        >>> import torch
        >>> to_uint8(torch.tensor([0.0, 0.5, 1.0, 2.0])).tolist()
        [0, 128, 255, 255]
    """
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise TypeError(f"expected float images in [0, 1] or uint8, got dtype {images.dtype}")
    return (images.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


@typechecked
def write_frames(
    frames: Float[Tensor, "t 3 H W"] | UInt8[Tensor, "t 3 H W"],
    path: str | os.PathLike,
    prefix: str = "frame_",
    ext: str = ".png",
) -> list[Path]:
    """Write frames (t, 3, H, W) as ``{prefix}{index:05d}{ext}`` files (8-bit RGB).

    Float frames are taken to be in [0, 1] and rounded to 8 bits, so a PNG round trip
    returns them within 1/510 (exactly for multiples of 1/255). Each file is written
    atomically.

    Returns:
        the written paths, in order.
    """
    if ext.lower() not in IMAGE_EXTENSIONS:
        raise ValueError(f"ext must be one of {IMAGE_EXTENSIONS}, got {ext!r}")
    data = to_uint8(frames).permute(0, 2, 3, 1).cpu().numpy()
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, arr in enumerate(data):
        target = folder / f"{prefix}{i:05d}{ext}"
        with atomic_write(target) as tmp:
            Image.fromarray(arr, "RGB").save(tmp, format=Image.registered_extensions()[ext.lower()])
        out.append(target)
    return out


@typechecked
def read_video(path: str | os.PathLike) -> Float[Tensor, "t 3 H W"]:
    """Read a video file into frames (t, 3, H, W) float32 in [0, 1].

    Animated GIF / WebP / PNG are read with Pillow; other containers (mp4, avi, mkv,
    webm, ...) are decoded with PyAV (``pip install featureflow[video]``); without it a
    clear ``ImportError`` says so. For long videos use `featureflow.data.VideoClips`,
    which decodes only the frames of the clip it is asked for.

    Example:
        >>> import tempfile, pathlib, torch
        >>> from featureflow.viz import save_gif
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.gif"
        >>> _ = save_gif(torch.rand(3, 3, 8, 8), p)
        >>> tuple(read_video(p).shape)
        (3, 3, 8, 8)
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"video file not found: {file}")
    if file.suffix.lower() in _PILLOW_VIDEO:
        with _opening(file, "an animated image"):
            with Image.open(file) as im:
                images = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(im)]
        return _stack(images, str(file))
    from featureflow.data.video import decode_video

    return _stack(decode_video(file), str(file))
