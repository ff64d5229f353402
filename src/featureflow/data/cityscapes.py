"""Clips from the Cityscapes video sequences (``leftImg8bit_sequence``), with the labels that exist.

Layout (as distributed by the Cityscapes site)::

    {root}/leftImg8bit_sequence/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    {root}/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelTrainIds.png   (optional)
    {root}/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png        (optional)

Each 30-frame snippet has fine labels for its 20th frame only. A run of consecutive
frame numbers of one ``{city}_{seq}`` is one sequence; clips never cross a gap.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from featureflow.data.clips import SequenceClips, clip_starts
from featureflow.data.frames import _stack, read_image
from featureflow.data.kubric import read_png
from featureflow.typing import Int, typechecked

__all__ = ["CityscapesClips", "CITYSCAPES_CLASSES", "IGNORE_INDEX", "label_ids_to_train_ids"]

#: The 19 evaluated classes, indexed by train id.
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
#: Label of pixels that are not evaluated, and of every pixel of a frame without labels.
IGNORE_INDEX = 255

# label id -> train id for the 19 evaluated classes (every other id is ignored).
_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
             26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
_LUT = np.full(256, IGNORE_INDEX, dtype=np.int64)
for _id, _train in _TRAIN_ID.items():
    _LUT[_id] = _train
_FRAME = re.compile(r"(?P<city>.+)_(?P<seq>\d+)_(?P<frame>\d+)_leftImg8bit\.png")


@typechecked
def label_ids_to_train_ids(label_ids: np.ndarray | Tensor) -> Int[Tensor, "..."]:
    """Map Cityscapes label ids (``*_gtFine_labelIds.png``) to train ids 0..18, others to 255.

    Example:
        >>> label_ids_to_train_ids(np.array([7, 26, 0, 33])).tolist()
        [0, 13, 255, 18]
    """
    ids = torch.as_tensor(np.asarray(label_ids), dtype=torch.int64)
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) > 255):
        raise ValueError(f"label ids must be in [0, 255], got range [{int(ids.min())}, {int(ids.max())}]")
    return torch.from_numpy(_LUT)[ids]


class CityscapesClips(SequenceClips):
    """Clips of ``length`` consecutive (``stride`` apart) frames of the Cityscapes sequences.

    Items: ``rgb`` (t, 3, H, W) float32 in [0, 1]. When ``{root}/gtFine/{split}`` exists,
    also ``segmentation`` (t, H, W) int64 train ids (``IGNORE_INDEX`` = 255 on every
    pixel of a frame without labels) and ``labeled`` (t,) bool, True where the frame has
    a label file.

    Args:
        root: the Cityscapes root (holding ``leftImg8bit_sequence``).
        length: frames per clip.
        stride: frames between consecutive frames of a clip (1 = consecutive).
        hop: frames between the starts of consecutive clips (default ``length * stride``).
        resolution: resize frames to this side or (H, W) (default: keep their size).
        max_clips: keep only the first ``max_clips`` clips.
        split: ``"train"``, ``"val"`` or ``"test"``.
        label_position: if set, one clip per labelled frame, placed so that the labelled
            frame is frame ``label_position`` of the clip (``-1``: the last, i.e. the
            forecast target); labelled frames too close to a snippet's ends give no clip.
        label_ids: ``"train"`` (train ids 0..18, 255 ignored) or ``"raw"`` (label ids as
            stored in ``labelIds``).

    Example:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> city = root / "leftImg8bit_sequence" / "val" / "ulm"
        >>> city.mkdir(parents=True)
        >>> for f in (17, 18, 19):
        ...     Image.new("RGB", (8, 4)).save(city / f"ulm_000001_{f:06d}_leftImg8bit.png")
        >>> ds = CityscapesClips(root, length=2, hop=1, split="val")
        >>> item = ds[1]
        >>> len(ds), ds.clip_name(1), tuple(item["rgb"].shape)
        (2, 'ulm_000001[18:20:1]', (2, 3, 4, 8))
    """

    def __init__(self, root: str | os.PathLike, length: int = 4, stride: int = 1, hop: int | None = None, *,
                 split: str = "train", label_position: int | None = None, label_ids: str = "train",
                 resolution: int | Sequence[int] | None = None, max_clips: int | None = None) -> None:
        super().__init__(length, stride, hop, resolution=resolution, max_clips=max_clips)
        if label_ids not in ("train", "raw"):
            raise ValueError(f"label_ids must be 'train' or 'raw', got {label_ids!r}")
        if label_position is not None and not -length <= label_position < length:
            raise ValueError(f"label_position must be in [-{length}, {length}) for clips of {length} frames, "
                             f"got {label_position}")
        root = Path(root)
        base = root / "leftImg8bit_sequence" / split
        pattern = f"{base}/<city>/<city>_<seq>_<frame>_leftImg8bit.png"
        if not base.is_dir():
            raise FileNotFoundError(f"Cityscapes sequences not found: expected {pattern}")
        frames: dict[tuple[str, str], dict[int, Path]] = defaultdict(dict)
        for city_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            for f in city_dir.iterdir():
                m = _FRAME.fullmatch(f.name)
                if m:
                    frames[(m["city"], m["seq"])][int(m["frame"])] = f
        if not frames:
            raise FileNotFoundError(f"no Cityscapes frames in {base}: expected files named {pattern}")
        self.label_dir = root / "gtFine" / split
        self.has_labels = self.label_dir.is_dir()
        self.label_ids = label_ids
        sequences, starts = [], []
        for (city, seq), by_number in sorted(frames.items()):
            numbers = sorted(by_number)
            runs = np.split(np.array(numbers), np.flatnonzero(np.diff(numbers) != 1) + 1)
            for run in runs:
                files = [by_number[int(n)] for n in run]
                labels = [self._label_file(city, f) for f in files]
                sequences.append(((f"{city}_{seq}", files, labels, [int(n) for n in run]), len(files)))
                if label_position is None:
                    starts.append(clip_starts(len(files), self.length, self.stride, self.hop))
                else:
                    starts.append(self._label_starts(labels, label_position))
        if label_position is not None and not self.has_labels:
            raise FileNotFoundError(f"label_position needs labels: expected {self.label_dir}/<city>/"
                                    "<city>_<seq>_<frame>_gtFine_labelTrainIds.png or _gtFine_labelIds.png")
        self.root = root
        self._index(sequences, str(base), starts)

    def _label_file(self, city: str, frame: Path) -> Path | None:
        if not self.has_labels:
            return None
        stem = frame.name[: -len("_leftImg8bit.png")]
        folder = self.label_dir / city
        suffixes = ("labelTrainIds", "labelIds") if self.label_ids == "train" else ("labelIds",)
        for suffix in suffixes:
            path = folder / f"{stem}_gtFine_{suffix}.png"
            if path.is_file():
                return path
        return None

    def _label_starts(self, labels: list[Path | None], position: int) -> list[int]:
        pos = position % self.length
        last = len(labels) - 1
        out = []
        for i, label in enumerate(labels):
            start = i - pos * self.stride
            if label is not None and start >= 0 and start + (self.length - 1) * self.stride <= last:
                out.append(start)
        return out

    def _read_label(self, path: Path) -> Tensor:
        arr = read_png(path)[..., 0].astype(np.int64)
        if self.label_ids == "train" and not path.name.endswith("_labelTrainIds.png"):
            return label_ids_to_train_ids(arr)
        return torch.from_numpy(arr)

    def load(self, key: tuple, frames: list[int]) -> dict[str, Tensor]:
        _, files, labels, _ = key
        rgb = _stack([read_image(files[i]) for i in frames], str(files[frames[0]].parent))
        item = {"rgb": rgb}
        if self.has_labels:
            seg = torch.full((len(frames), *rgb.shape[-2:]), IGNORE_INDEX, dtype=torch.int64)
            labeled = torch.zeros(len(frames), dtype=torch.bool)
            for j, i in enumerate(frames):
                if labels[i] is not None:
                    label = self._read_label(labels[i])
                    if tuple(label.shape) != tuple(rgb.shape[-2:]):
                        raise ValueError(f"{labels[i]} is {tuple(label.shape)}, its frame {files[i].name} is "
                                         f"{tuple(rgb.shape[-2:])}; expected one size")
                    seg[j], labeled[j] = label, True
            item["segmentation"], item["labeled"] = seg, labeled
        return item

    def clip_name(self, i: int) -> str:
        key, frames = self.frame_indices(i)
        numbers = key[3]
        return f"{key[0]}[{numbers[frames[0]]}:{numbers[frames[-1]] + 1}:{self.stride}]"
