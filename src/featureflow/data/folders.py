"""Clips from folders of image files: one folder of frames per sequence."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from torch import Tensor

from featureflow.data.clips import SequenceClips
from featureflow.data.frames import IMAGE_EXTENSIONS, _natural_key, _stack, read_image

__all__ = ["FrameFolderClips"]


def _images_in(folder: Path, pattern: str | None) -> list[Path]:
    if pattern is None:
        files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    else:
        files = [p for p in folder.glob(pattern) if p.is_file()]
    return sorted(files, key=_natural_key)


class FrameFolderClips(SequenceClips):
    """Clips of ``length`` frames from folders of images (natural filename order).

    ``root`` (or ``root/split``) is either one folder of frames, or a tree whose every
    folder that holds images is one sequence (found recursively, in natural path order:
    ``clip_2`` before ``clip_10``). Items: ``rgb`` (t, 3, H, W) float32 in [0, 1]. All
    frames of one clip must have one size; give ``resolution`` when sequences differ.

    Args:
        root: the folder.
        length: frames per clip.
        stride: frames between consecutive frames of a clip (1 = consecutive).
        hop: frames between the starts of consecutive clips (default ``length * stride``).
        resolution: resize frames to this side or (H, W) (default: keep their size).
        max_clips: keep only the first ``max_clips`` clips.
        split: optional sub-folder of ``root`` (e.g. ``"train"``).
        pattern: glob for frame files inside a sequence folder (e.g. ``"rgba_*.png"``);
            default every file ending in one of `featureflow.data.IMAGE_EXTENSIONS`.

    Example:
        >>> import tempfile, pathlib, torch
        >>> from featureflow.data import write_frames
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = write_frames(torch.rand(5, 3, 8, 8), d / "a")
        >>> _ = write_frames(torch.rand(4, 3, 8, 8), d / "b")
        >>> ds = FrameFolderClips(d, length=2)
        >>> item = ds[2]
        >>> len(ds), ds.clip_name(2), tuple(item["rgb"].shape)
        (4, 'b[0:2:1]', (2, 3, 8, 8))
    """

    def __init__(self, root: str | os.PathLike, length: int = 8, stride: int = 1, hop: int | None = None, *,
                 split: str | None = None, pattern: str | None = None,
                 resolution: int | Sequence[int] | None = None, max_clips: int | None = None) -> None:
        super().__init__(length, stride, hop, resolution=resolution, max_clips=max_clips)
        base = Path(root) if split is None else Path(root) / split
        if not base.is_dir():
            raise FileNotFoundError(f"frame-folder dataset root not found: {base} (expected a directory of image "
                                    "folders, one per sequence)")
        folders = [base] + sorted((p for p in base.rglob("*") if p.is_dir()),
                                  key=lambda p: [_natural_key(Path(part)) for part in p.relative_to(base).parts])
        sequences: list[tuple[tuple[str, list[Path]], int]] = []
        for folder in folders:
            files = _images_in(folder, pattern)
            if files:
                name = folder.relative_to(base).as_posix() if folder != base else "."
                sequences.append(((name, files), len(files)))
        if not sequences:
            what = repr(pattern) if pattern else f"files ending in {', '.join(IMAGE_EXTENSIONS)}"
            raise FileNotFoundError(f"no frames under {base}: expected {what} in it or in its sub-folders "
                                    "(one folder of frames per sequence)")
        self.root = base
        self._index(sequences, str(base))

    def load(self, key: tuple[str, list[Path]], frames: list[int]) -> dict[str, Tensor]:
        _, files = key
        return {"rgb": _stack([read_image(files[i]) for i in frames], str(files[frames[0]].parent))}

    def clip_name(self, i: int) -> str:
        (name, _), frames = self.frame_indices(i)
        return f"{name}[{frames[0]}:{frames[-1] + 1}:{self.stride}]"

