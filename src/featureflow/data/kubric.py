"""Read Kubric MOVi exports (the paper's synthetic dataset) at full precision.

A MOVi clip folder holds, per frame ``i``:

* ``rgba_{i:05d}.png``: 8-bit RGBA;
* ``depth_{i:05d}.png``: 16-bit grey ``v``; metres = ``min + v / 65535 * (max - min)``
  with ``{"depth": {"min": ..., "max": ...}}`` from the clip's ``data_ranges.json``;
* ``normal_{i:05d}.png``: 16-bit RGB ``v``; normal = ``v / 65535 * 2 - 1``;
* ``segmentation_{i:05d}.png``: palette (or grey) PNG of instance ids, 0 = background.

Pillow silently truncates 16-bit RGB PNGs to 8 bits, so every PNG here is decoded with
the pure-Python ``pypng``, which returns the stored integers unchanged (palette images
give their indices, not colours).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import png
import torch
from torch import Tensor

__all__ = ["KubricClip", "read_kubric", "read_png"]


def read_png(path: str | os.PathLike) -> np.ndarray:
    """The stored samples of a PNG as an (H, W, planes) uint8/uint16 array.

    16-bit images keep all 16 bits; palette images give palette indices; no gamma,
    palette or alpha conversion is applied.

    Example:
        >>> import tempfile, pathlib, png
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "d.png"
        >>> with open(p, "wb") as fh:
        ...     _ = png.Writer(2, 1, greyscale=True, bitdepth=16).write(fh, [[0, 65535]])
        >>> read_png(p)[..., 0].tolist()
        [[0, 65535]]
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"PNG not found: {file}")
    try:
        with open(file, "rb") as fh:  # pypng's Reader(filename=) leaves the file open
            width, height, rows, info = png.Reader(file=fh).read()
            data = np.array([np.asarray(row) for row in rows])
    except png.Error as err:
        raise ValueError(f"could not decode {file} as PNG: {err}") from None
    planes = int(info["planes"])
    dtype = np.uint16 if info["bitdepth"] > 8 else np.uint8
    return data.reshape(height, width, planes).astype(dtype, copy=False)


@dataclass
class KubricClip:
    """A Kubric MOVi clip. Fields are ``None`` when the export lacks that modality.

    Attributes:
        rgb: (t, 3, H, W) float32 in [0, 1] (alpha dropped).
        depth: (t, H, W) float32 metres, or None.
        normals: (t, 3, H, W) float32 in [-1, 1], or None.
        segmentation: (t, H, W) int64 instance ids (0 = background), or None.
        data_ranges: the parsed ``data_ranges.json`` (empty if absent).
        frames: the frame indices that were read.
    """

    rgb: Tensor
    depth: Tensor | None
    normals: Tensor | None
    segmentation: Tensor | None
    data_ranges: dict[str, Any]
    frames: list[int]


def _frame_indices(folder: Path) -> list[int]:
    found = sorted(int(m.group(1)) for p in folder.iterdir() if (m := re.fullmatch(r"rgba_(\d+)\.png", p.name)))
    if not found:
        raise FileNotFoundError(f"no Kubric frames in {folder}: expected files named rgba_00000.png, rgba_00001.png, ...")
    return found


def _depth_range(ranges: dict[str, Any], folder: Path) -> tuple[float, float]:
    try:
        lo, hi = float(ranges["depth"]["min"]), float(ranges["depth"]["max"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"{folder / 'data_ranges.json'} must contain {{\"depth\": {{\"min\": float, \"max\": float}}}} "
            f"to decode depth_*.png; got {ranges!r:.200}"
        ) from None
    return lo, hi


def read_kubric(path: str | os.PathLike, frames: Sequence[int] | None = None) -> KubricClip:
    """Read a Kubric MOVi clip folder (see the module docstring for the file layout).

    Args:
        path: the clip folder (holding ``rgba_00000.png`` ...).
        frames: which frame indices to read (default: all ``rgba_*.png`` found).

    Example:
        >>> import tempfile, pathlib, json, png
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> with open(d / "rgba_00000.png", "wb") as fh:
        ...     _ = png.Writer(1, 1, greyscale=False, alpha=True).write(fh, [[255, 0, 0, 255]])
        >>> with open(d / "depth_00000.png", "wb") as fh:
        ...     _ = png.Writer(1, 1, greyscale=True, bitdepth=16).write(fh, [[65535]])
        >>> _ = (d / "data_ranges.json").write_text(json.dumps({"depth": {"min": 1.0, "max": 5.0}}))
        >>> clip = read_kubric(d)
        >>> clip.rgb[0, :, 0, 0].tolist(), clip.depth[0, 0, 0].item()
        ([1.0, 0.0, 0.0], 5.0)
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"Kubric clip folder not found: {folder}")
    indices = list(frames) if frames is not None else _frame_indices(folder)
    if not indices:
        raise ValueError("frames is empty; expected at least one frame index")
    ranges_file = folder / "data_ranges.json"
    ranges: dict[str, Any] = json.loads(ranges_file.read_text()) if ranges_file.is_file() else {}

    def stack(kind: str) -> np.ndarray | None:
        files = [folder / f"{kind}_{i:05d}.png" for i in indices]
        present = [f.is_file() for f in files]
        if not any(present):
            return None
        if not all(present):
            missing = [str(f.name) for f, ok in zip(files, present) if not ok]
            raise FileNotFoundError(f"{folder} lacks {kind} frames {missing[:5]}{'...' if len(missing) > 5 else ''}")
        arrays = [read_png(f) for f in files]
        if len({a.shape for a in arrays}) != 1:
            raise ValueError(f"{kind}_*.png frames in {folder} have different shapes")
        return np.stack(arrays)

    rgba = stack("rgba")
    if rgba is None:
        raise FileNotFoundError(f"{folder} has no rgba_*.png for frames {indices[:5]}")
    if rgba.shape[-1] < 3:
        raise ValueError(f"rgba frames in {folder} must have 3 or 4 channels, got {rgba.shape[-1]}")
    scale = 65535.0 if rgba.dtype == np.uint16 else 255.0
    rgb = torch.from_numpy(rgba[..., :3].astype(np.float64) / scale).permute(0, 3, 1, 2).float().contiguous()

    depth = None
    raw = stack("depth")
    if raw is not None:
        lo, hi = _depth_range(ranges, folder)
        metres = lo + raw[..., 0].astype(np.float64) / 65535.0 * (hi - lo)
        depth = torch.from_numpy(metres).float()

    normals = None
    raw = stack("normal")
    if raw is not None:
        if raw.shape[-1] < 3:
            raise ValueError(f"normal_*.png in {folder} must be RGB, got {raw.shape[-1]} channel(s)")
        n = raw[..., :3].astype(np.float64) / 65535.0 * 2.0 - 1.0
        normals = torch.from_numpy(n).permute(0, 3, 1, 2).float().contiguous()

    seg = stack("segmentation")
    segmentation = torch.from_numpy(seg[..., 0].astype(np.int64)) if seg is not None else None
    return KubricClip(rgb, depth, normals, segmentation, ranges, [int(i) for i in indices])
