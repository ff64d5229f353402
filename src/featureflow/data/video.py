"""Video files through PyAV (the optional ``video`` extra): decode, write, and cut into clips.

PyAV (``pip install featureflow[video]``) bundles FFmpeg, so mp4, mkv, avi, mov, webm
and animated GIF all decode without a system FFmpeg. :class:`VideoClips` decodes only
as far as the clip it is asked for and keeps the file open between consecutive clips
of one video, so reading a video's clips in order decodes it once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from featureflow.data.clips import SequenceClips
from featureflow.data.frames import _natural_key, _opening, to_uint8
from featureflow.typing import Float, UInt8, typechecked
from featureflow.utils import atomic_write

__all__ = ["VIDEO_EXTENSIONS", "VideoClips", "decode_video", "count_video_frames", "write_video", "require_av"]

#: File extensions that :class:`VideoClips` picks up in a folder.
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".gif")


def require_av() -> Any:
    """Import PyAV, or raise an ``ImportError`` that says how to install it.

    Example:
        >>> require_av().__name__
        'av'
    """
    try:
        import av
    except ImportError:
        raise ImportError(
            "reading or writing video files needs PyAV, which is not installed: pip install 'featureflow[video]' "
            "(or pip install av). Alternatively extract the frames to a folder and use the 'frames' dataset."
        ) from None
    return av


def _open(path: Path) -> Any:
    av = require_av()
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    with _opening(path, "a video"):
        container = av.open(str(path))
        if not container.streams.video:
            container.close()
            raise ValueError(f"{path} has no video stream; expected a video file")
    return container


def _frames(container: Any, path: Path) -> Iterator[np.ndarray]:
    """Decoded RGB frames (H, W, 3) uint8 of the first video stream, in order."""
    with _opening(path, "a video"):
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def count_video_frames(path: str | os.PathLike) -> int:
    """Number of frames of a video file (the container's count, else by demuxing packets).

    Example:
        >>> import tempfile, pathlib, torch
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.mp4"
        >>> write_video(torch.rand(5, 3, 16, 16), p)
        >>> count_video_frames(p)
        5
    """
    file = Path(path)
    container = _open(file)
    try:
        stream = container.streams.video[0]
        if stream.frames and stream.frames > 0:
            return int(stream.frames)
        with _opening(file, "a video"):
            return sum(1 for packet in container.demux(stream) if packet.size)
    finally:
        container.close()


def decode_video(path: str | os.PathLike, frames: Sequence[int] | None = None) -> list[np.ndarray]:
    """Decode a video file's frames as (H, W, 3) uint8 RGB arrays.

    Args:
        path: the video file.
        frames: frame indices to return, in this order (default: every frame). Decoding
            stops after the largest one.

    Example:
        >>> import tempfile, pathlib, torch
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.mkv"
        >>> write_video(torch.zeros(4, 3, 8, 8), p, codec="ffv1")
        >>> frames = decode_video(p, [3, 1])
        >>> len(frames), frames[0].shape
        (2, (8, 8, 3))
    """
    file = Path(path)
    container = _open(file)
    try:
        if frames is None:
            out = list(_frames(container, file))
            if not out:
                raise ValueError(f"{file} has no decodable frames; expected a non-empty video")
            return out
        wanted = sorted(set(int(i) for i in frames))
        if wanted and wanted[0] < 0:
            raise ValueError(f"frame indices must be >= 0, got {wanted[0]}")
        got: dict[int, np.ndarray] = {}
        for i, arr in enumerate(_frames(container, file)):
            if i in wanted:
                got[i] = arr
            if not wanted or i >= wanted[-1]:
                break
        missing = [i for i in wanted if i not in got]
        if missing:
            raise ValueError(f"{file} has only {len(got) and max(got) + 1 or 0}+ frames; frame {missing[0]} was asked for")
        return [got[int(i)] for i in frames]
    finally:
        container.close()


@typechecked
def write_video(
    frames: Float[Tensor, "t 3 H W"] | UInt8[Tensor, "t 3 H W"],
    path: str | os.PathLike,
    fps: int = 10,
    codec: str = "libx264",
    options: dict[str, str] | None = None,
) -> None:
    """Encode frames (t, 3, H, W) (float in [0, 1] or uint8) as a video file, atomically.

    ``libx264`` is lossy and needs even sides (odd sides are padded by one pixel by
    repeating the edge); ``ffv1`` in ``.mkv`` is lossless. The file appears only once
    it is complete.

    Example:
        >>> import tempfile, pathlib, torch
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.mkv"
        >>> x = (torch.rand(3, 3, 8, 8) * 255).to(torch.uint8)
        >>> write_video(x, p, codec="ffv1")
        >>> torch.equal(torch.from_numpy(decode_video(p)[2]).permute(2, 0, 1), x[2])
        True
    """
    av = require_av()
    data = to_uint8(frames).permute(0, 2, 3, 1).cpu().numpy()
    if codec in ("libx264", "h264", "mpeg4") and (data.shape[1] % 2 or data.shape[2] % 2):
        data = np.pad(data, ((0, 0), (0, data.shape[1] % 2), (0, data.shape[2] % 2), (0, 0)), mode="edge")
    target = Path(path)
    with atomic_write(target) as tmp:
        fmt = {".mkv": "matroska", ".mp4": "mp4", ".avi": "avi", ".mov": "mov", ".webm": "webm"}.get(
            target.suffix.lower())
        with av.open(str(tmp), mode="w", format=fmt) as container:
            stream = container.add_stream(codec, rate=fps)
            stream.width, stream.height = int(data.shape[2]), int(data.shape[1])
            stream.pix_fmt = "yuv420p" if codec in ("libx264", "h264", "mpeg4") else "rgb24" if codec in (
                "png", "rawvideo") else "bgr0"
            if options:
                stream.options = dict(options)
            for arr in data:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


class _Reader:
    """An open video with its decoding position, for reading clips in order without re-decoding."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.container = _open(path)
        self.frames = _frames(self.container, path)
        self.next = 0

    def read(self, indices: list[int]) -> list[np.ndarray]:
        got: dict[int, np.ndarray] = {}
        wanted, last = set(indices), max(indices)
        while self.next <= last:
            arr = next(self.frames, None)
            if arr is None:
                raise ValueError(f"{self.path} ended after {self.next} frames; frame {last} was asked for")
            if self.next in wanted:
                got[self.next] = arr
            self.next += 1
        return [got[i] for i in indices]

    def close(self) -> None:
        self.container.close()


class VideoClips(SequenceClips):
    """Clips of ``length`` frames from a video file or a folder of video files (PyAV).

    Every video is one sequence; a folder is searched recursively for files ending in
    :data:`VIDEO_EXTENSIONS` (natural order). Items: ``rgb`` (t, 3, H, W) float32 in
    [0, 1]. Video carries no labels: a model trained on it has no probe heads until
    they are trained on labelled data.

    Args:
        root: a video file, or a folder of them.
        length: frames per clip.
        stride: frames between consecutive frames of a clip (1 = consecutive).
        hop: frames between the starts of consecutive clips (default ``length * stride``).
        resolution: resize frames to this side or (H, W) (default: keep their size).
        max_clips: keep only the first ``max_clips`` clips.
        split: optional sub-folder of ``root`` (e.g. ``"train"``).

    Example:
        >>> import tempfile, pathlib, torch
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> write_video(torch.rand(7, 3, 16, 16), d / "a.mp4")
        >>> ds = VideoClips(d, length=3)
        >>> item = ds[1]
        >>> len(ds), tuple(item["rgb"].shape)
        (2, (3, 3, 16, 16))
    """

    def __init__(self, root: str | os.PathLike, length: int = 8, stride: int = 1, hop: int | None = None, *,
                 split: str | None = None, resolution: int | Sequence[int] | None = None,
                 max_clips: int | None = None) -> None:
        super().__init__(length, stride, hop, resolution=resolution, max_clips=max_clips)
        require_av()
        base = Path(root) if split is None else Path(root) / split
        if base.is_file():
            files = [base]
        elif base.is_dir():
            files = sorted((p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS),
                           key=lambda p: [_natural_key(Path(part)) for part in p.relative_to(base).parts])
            if not files:
                raise FileNotFoundError(f"no video files under {base}: expected files ending in "
                                        f"{', '.join(VIDEO_EXTENSIONS)}")
        else:
            raise FileNotFoundError(f"video dataset root not found: {base} (expected a video file or a folder of them)")
        self.root = base
        self._index([(f, count_video_frames(f)) for f in files], str(base))
        self._reader: _Reader | None = None

    def load(self, key: Path, frames: list[int]) -> dict[str, Tensor]:
        reader = self._reader
        if reader is None or reader.path != key or frames[0] < reader.next:
            if reader is not None:
                reader.close()
            reader = self._reader = _Reader(key)
        arrays = reader.read(frames)
        rgb = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
        return {"rgb": rgb}

    def __getstate__(self) -> dict[str, Any]:  # an open decoder does not cross process boundaries
        state = dict(self.__dict__)
        state["_reader"] = None
        return state

    def __del__(self) -> None:
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.close()
