"""Clips from Kubric MOVi data in the two layouts the paper's released code reads.

* **Training layout** (what the released training code reads):
  ``{root}/{suite}/{R}x{R}/{split}/{sequence}/*_rgb.png``, e.g.
  ``movi_a/256x256/train/000017/00000_rgb.png``; RGB only.
* **Export layout** (a Kubric MOVi export, as the released evaluation reads it): any
  folder under ``root`` holding ``rgba_00000.png``, ``rgba_00001.png``, ... with
  optional ``depth_*.png``, ``normal_*.png``, ``segmentation_*.png`` and
  ``data_ranges.json`` beside them (see `featureflow.data.read_kubric`), e.g.
  ``master_seed=42/scene=0026855092/rollout=1418122390/``. Labels are decoded at
  full 16-bit precision.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from torch import Tensor

from featureflow.data.clips import SequenceClips
from featureflow.data.frames import _natural_key, _stack, read_image
from featureflow.data.kubric import read_kubric

__all__ = ["KubricClips", "KUBRIC_LABELS"]

#: Label fields an export-layout item can carry (besides ``rgb``).
KUBRIC_LABELS: tuple[str, ...] = ("depth", "normals", "segmentation")
_FILE_OF = {"depth": "depth", "normals": "normal", "segmentation": "segmentation"}
_RGBA = re.compile(r"rgba_(\d+)\.png")


def _path_key(base: Path):  # natural order of relative paths
    return lambda p: [_natural_key(Path(part)) for part in p.relative_to(base).parts]


class KubricClips(SequenceClips):
    """Clips of ``length`` frames from Kubric MOVi data (training or export layout).

    Items: ``rgb`` (t, 3, H, W) float32 in [0, 1]; in the export layout also, when the
    files exist, ``depth`` (t, H, W) metres, ``normals`` (t, 3, H, W) and
    ``segmentation`` (t, H, W) int64 instance ids (0 = background).

    Args:
        root: the dataset root.
        length: frames per clip.
        stride: frames between consecutive frames of a clip (1 = consecutive).
        hop: frames between the starts of consecutive clips (default ``length * stride``).
        resolution: resize frames to this side or (H, W) (default: keep their size).
        max_clips: keep only the first ``max_clips`` clips.
        split: ``"train"``, ``"validation"``, ... (training layout: the split folder;
            export layout: ``root/split`` is searched if it exists, else ``root``).
        suite: MOVi suite folder of the training layout (``"movi_a"`` ...).
        original_resolution: ``R`` of the training layout's ``{R}x{R}`` folder.
        layout: ``"auto"`` (training layout if its split folder exists, else export),
            ``"training"`` or ``"export"``.
        labels: label fields to return in the export layout (default: those whose files
            exist for the first sequence); every sequence must then have them.

    Example:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> seq = d / "movi_a" / "256x256" / "train" / "000000"
        >>> seq.mkdir(parents=True)
        >>> for i in range(4):
        ...     Image.new("RGB", (8, 8)).save(seq / f"{i:05d}_rgb.png")
        >>> ds = KubricClips(d, length=2)
        >>> item = ds[1]
        >>> ds.layout, len(ds), tuple(item["rgb"].shape)
        ('training', 2, (2, 3, 8, 8))
    """

    def __init__(self, root: str | os.PathLike, length: int = 8, stride: int = 1, hop: int | None = None, *,
                 split: str = "train", suite: str = "movi_a", original_resolution: int = 256,
                 layout: str = "auto", labels: Sequence[str] | None = None,
                 resolution: int | Sequence[int] | None = None, max_clips: int | None = None) -> None:
        super().__init__(length, stride, hop, resolution=resolution, max_clips=max_clips)
        if layout not in ("auto", "training", "export"):
            raise ValueError(f"layout must be 'auto', 'training' or 'export', got {layout!r}")
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"Kubric dataset root not found: {root}")
        training_dir = root / suite / f"{original_resolution}x{original_resolution}" / split
        if layout == "training" or (layout == "auto" and training_dir.is_dir()):
            self._init_training(training_dir)
        else:
            self._init_export(root / split if (root / split).is_dir() else root, training_dir, labels)

    def _init_training(self, base: Path) -> None:
        if not base.is_dir():
            raise FileNotFoundError(f"Kubric training layout not found: expected {base}/<sequence>/*_rgb.png")
        sequences = []
        for folder in sorted((p for p in base.iterdir() if p.is_dir()), key=_path_key(base)):
            files = sorted((p for p in folder.iterdir() if p.name.endswith("_rgb.png")), key=_natural_key)
            if files:
                sequences.append(((folder.name, files), len(files)))
        if not sequences:
            raise FileNotFoundError(f"no Kubric sequences in {base}: expected sub-folders holding *_rgb.png frames")
        self.layout, self.root, self.labels = "training", base, ()
        self._index(sequences, str(base))

    def _init_export(self, base: Path, training_dir: Path, labels: Sequence[str] | None) -> None:
        folders = [base] + sorted((p for p in base.rglob("*") if p.is_dir()), key=_path_key(base))
        sequences = []
        for folder in folders:
            idx = sorted(int(m.group(1)) for p in folder.iterdir() if (m := _RGBA.fullmatch(p.name)))
            if idx:
                sequences.append(((folder, idx), len(idx)))
        if not sequences:
            raise FileNotFoundError(
                f"no Kubric MOVi data under {base}: expected the training layout {training_dir}/<sequence>/*_rgb.png, "
                "or folders of rgba_00000.png, rgba_00001.png, ... (a MOVi export, e.g. "
                "master_seed=*/scene=*/rollout=*/)"
            )
        if labels is None:
            first, idx = sequences[0][0]
            labels = tuple(m for m in KUBRIC_LABELS if (first / f"{_FILE_OF[m]}_{idx[0]:05d}.png").is_file())
        bad = [m for m in labels if m not in KUBRIC_LABELS]
        if bad:
            raise ValueError(f"unknown Kubric labels {bad}; expected a subset of {KUBRIC_LABELS}")
        self.layout, self.root, self.labels = "export", base, tuple(labels)
        self._index(sequences, str(base))

    def load(self, key: tuple, frames: list[int]) -> dict[str, Tensor]:
        if self.layout == "training":
            _, files = key
            return {"rgb": _stack([read_image(files[i]) for i in frames], str(files[frames[0]].parent))}
        folder, idx = key
        clip = read_kubric(folder, [idx[i] for i in frames])
        item: dict[str, Tensor] = {"rgb": clip.rgb}
        for m in self.labels:
            value = getattr(clip, m)
            if value is None:
                raise FileNotFoundError(f"{folder} has no {_FILE_OF[m]}_*.png, but {m!r} labels were expected "
                                        "(pass labels= to choose which to read)")
            item[m] = value
        return item

    def clip_name(self, i: int) -> str:
        key, frames = self.frame_indices(i)
        name = key[0] if self.layout == "training" else key[0].relative_to(self.root).as_posix()
        return f"{name}[{frames[0]}:{frames[-1] + 1}:{self.stride}]"

