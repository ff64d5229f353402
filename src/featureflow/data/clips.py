"""Cut sequences of frames into fixed-length clips; the base of every file-backed dataset.

A *sequence* is an ordered run of frames (a folder of images, a video file, a Kubric
scene, a Cityscapes snippet). A *clip* is ``length`` frames of one sequence, ``stride``
frames apart, starting every ``hop`` frames. :class:`SequenceClips` indexes all clips of
all sequences up front (cheap: names only) and loads a clip's frames on access.

Items are dicts: ``rgb`` (t, 3, H, W) float32 in [0, 1], plus whatever per-frame labels
a dataset has. With ``resolution`` set, frames are resized (bilinear, antialiased) and
label maps with nearest neighbour, so every item of a dataset has one size and a batch
collates.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from featureflow.typing import Float, Shaped, typechecked

__all__ = ["SequenceClips", "clip_starts", "resize_frames", "resize_labels", "parse_resolution"]


def parse_resolution(resolution: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``None``, a side ``s`` (square) or ``(H, W)`` → ``None`` or ``(H, W)``, with a clear error.

    Example:
        >>> parse_resolution(32), parse_resolution([24, 40]), parse_resolution(None)
        ((32, 32), (24, 40), None)
    """
    if resolution is None:
        return None
    if isinstance(resolution, int) and not isinstance(resolution, bool):
        size = (resolution, resolution)
    elif isinstance(resolution, (list, tuple)) and len(resolution) == 2 and all(isinstance(v, int) for v in resolution):
        size = (int(resolution[0]), int(resolution[1]))
    else:
        raise ValueError(f"resolution must be None, an int side or (height, width); got {resolution!r}")
    if min(size) < 1:
        raise ValueError(f"resolution must be positive, got {resolution!r}")
    return size


def clip_starts(num_frames: int, length: int, stride: int = 1, hop: int | None = None) -> list[int]:
    """First-frame indices of the clips of a sequence of ``num_frames`` frames.

    A clip takes frames ``start, start + stride, ..., start + (length - 1) * stride``;
    clips start every ``hop`` frames (default ``length * stride``: back to back, no frame
    used twice). A sequence shorter than one clip gives no clip.

    Example:
        >>> clip_starts(10, 3), clip_starts(10, 3, stride=2, hop=1)
        ([0, 3, 6], [0, 1, 2, 3, 4, 5])
    """
    for name, value in (("length", length), ("stride", stride)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    hop = length * stride if hop is None else hop
    if not isinstance(hop, int) or hop < 1:
        raise ValueError(f"hop must be a positive int, got {hop!r}")
    span = (length - 1) * stride + 1
    return list(range(0, num_frames - span + 1, hop))


@typechecked
def resize_frames(frames: Float[Tensor, "t C H W"], size: tuple[int, int] | None) -> Float[Tensor, "t C _ _"]:
    """Resize (t, C, H, W) float frames to ``size`` (bilinear, antialiased), clamped to [0, 1].

    Example:
        >>> resize_frames(torch.ones(2, 3, 8, 8), (4, 6)).shape
        torch.Size([2, 3, 4, 6])
    """
    if size is None or tuple(frames.shape[-2:]) == size:
        return frames
    out = F.interpolate(frames, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.clamp_(0.0, 1.0)


@typechecked
def resize_labels(labels: Shaped[Tensor, "t H W"], size: tuple[int, int] | None) -> Shaped[Tensor, "t _ _"]:
    """Resize (t, H, W) integer label maps to ``size`` by nearest neighbour (ids never mix).

    Example:
        >>> resize_labels(torch.tensor([[[0, 1], [2, 3]]]), (4, 4))[0, 3].tolist()
        [2, 2, 3, 3]
    """
    if size is None or tuple(labels.shape[-2:]) == size:
        return labels
    out = F.interpolate(labels[:, None].float(), size=size, mode="nearest-exact")
    return out[:, 0].round().to(labels.dtype)


class SequenceClips(Dataset):
    """Base class: clips of ``length`` frames over named sequences, loaded on access.

    Subclasses call :meth:`_index` with ``(name, num_frames)`` per sequence and
    implement :meth:`load` (frames of one sequence by index → item dict with ``rgb``).

    Args:
        length: frames per clip.
        stride: frames between consecutive frames of a clip (1 = consecutive).
        hop: frames between the starts of consecutive clips (default ``length * stride``).
        resolution: resize every frame to this side / (H, W) (default: keep the size).
        max_clips: keep only the first ``max_clips`` clips.
    """

    def __init__(self, length: int = 8, stride: int = 1, hop: int | None = None, *,
                 resolution: int | Sequence[int] | None = None, max_clips: int | None = None) -> None:
        clip_starts(0, length, stride, hop)  # validates the arguments
        if max_clips is not None and (not isinstance(max_clips, int) or max_clips < 1):
            raise ValueError(f"max_clips must be a positive int or None, got {max_clips!r}")
        self.length, self.stride, self.hop = int(length), int(stride), hop
        self.size = parse_resolution(resolution)
        self.max_clips = max_clips
        self.sequences: list[Any] = []
        self.clips: list[tuple[int, int]] = []

    def _index(self, sequences: Sequence[tuple[Any, int]], source: str,
               starts: Sequence[Sequence[int]] | None = None) -> None:
        """Record the sequences ``(key, num_frames)`` and their clips.

        ``starts`` gives each sequence's clip starts explicitly (default: `clip_starts`).
        """
        self.sequences = [key for key, _ in sequences]
        if starts is None:
            starts = [clip_starts(n, self.length, self.stride, self.hop) for _, n in sequences]
        self.clips = [(s, int(start)) for s, first in enumerate(starts) for start in first]
        if self.max_clips is not None:
            self.clips = self.clips[: self.max_clips]
        if not self.clips:
            longest = max((n for _, n in sequences), default=0)
            span = (self.length - 1) * self.stride + 1
            raise ValueError(
                f"no clip of {self.length} frames (stride {self.stride}, {span} frames in all) fits in {source}: "
                f"{len(sequences)} sequence(s), the longest has {longest} frame(s); lower length or stride"
            )

    def frame_indices(self, i: int) -> tuple[Any, list[int]]:
        """The sequence key and frame indices of clip ``i``.

        Example:
            >>> class Two(SequenceClips):
            ...     def __init__(self):
            ...         super().__init__(length=2)
            ...         self._index([("a", 5)], "a test")
            >>> Two().frame_indices(1)
            ('a', [2, 3])
        """
        if not -len(self) <= i < len(self):
            raise IndexError(f"clip {i} out of range for a dataset of {len(self)} clips")
        seq, start = self.clips[i % len(self)]
        return self.sequences[seq], [start + j * self.stride for j in range(self.length)]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        key, frames = self.frame_indices(int(i))
        item = self.load(key, frames)
        return self._resize(item)

    def _resize(self, item: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.size is None:
            return item
        out = {}
        for k, v in item.items():
            if k == "rgb":
                out[k] = resize_frames(v, self.size)
            elif v.is_floating_point() and v.dim() == 4:
                out[k] = _resize_float(v, self.size)
                if k == "normals":  # interpolated unit vectors are shorter: make them unit again
                    out[k] = F.normalize(out[k], dim=1)
            elif v.dim() == 3 and not v.is_floating_point():
                out[k] = resize_labels(v, self.size)
            elif v.dim() == 3:
                out[k] = _resize_float(v[:, None], self.size)[:, 0]
            else:
                out[k] = v
        return out

    def load(self, key: Any, frames: list[int]) -> dict[str, Tensor]:  # pragma: no cover - abstract
        """Read ``frames`` of sequence ``key`` (subclasses implement this)."""
        raise NotImplementedError

    def clip_name(self, i: int) -> str:
        """A readable name for clip ``i``: its sequence and frame indices."""
        key, frames = self.frame_indices(i)
        return f"{key}[{frames[0]}:{frames[-1] + 1}:{self.stride}]"


def _resize_float(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize (t, C, H, W) float fields (depth, normals) bilinearly, no clamping."""
    return F.interpolate(x, size=size, mode="bilinear", antialias=False, align_corners=False)
