"""Kubric MOVi reader: 16-bit PNGs read at full precision, exact decoding formulas."""

from __future__ import annotations

import json

import numpy as np
import png
import pytest
import torch
from PIL import Image

from featureflow.data import read_kubric, read_png

H, W = 2, 3
DEPTH_RANGE = {"min": 5.510275840759277, "max": 64.21101379394531}


def _write(path, rows, **kw):
    with open(path, "wb") as fh:
        png.Writer(W, H, **kw).write(fh, rows)


def _clip(folder, t=2):
    rng = np.random.default_rng(0)
    truth = {"depth": [], "normal": [], "rgba": [], "seg": []}
    for i in range(t):
        depth = rng.integers(0, 65536, (H, W), dtype=np.int64)
        depth[0, 0], depth[0, 1] = 0, 65535
        normal = rng.integers(0, 65536, (H, W, 3), dtype=np.int64)
        normal[0, 0] = [257, 256, 65280]  # values Pillow's 8-bit path would merge
        rgba = rng.integers(0, 256, (H, W, 4), dtype=np.int64)
        seg = rng.integers(0, 5, (H, W), dtype=np.int64)
        _write(folder / f"depth_{i:05d}.png", depth.tolist(), greyscale=True, bitdepth=16)
        _write(folder / f"normal_{i:05d}.png", normal.reshape(H, -1).tolist(), greyscale=False, bitdepth=16)
        _write(folder / f"rgba_{i:05d}.png", rgba.reshape(H, -1).tolist(), greyscale=False, alpha=True)
        palette = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)]
        _write(folder / f"segmentation_{i:05d}.png", seg.tolist(), palette=palette, bitdepth=8)
        for k, v in zip(("depth", "normal", "rgba", "seg"), (depth, normal, rgba, seg)):
            truth[k].append(v)
    (folder / "data_ranges.json").write_text(
        json.dumps({"backward_flow": {"min": -1.0, "max": 1.0}, "depth": DEPTH_RANGE})
    )
    return {k: np.stack(v) for k, v in truth.items()}


def test_read_png_keeps_16_bits(tmp_path):
    rows = [[0, 1, 2, 257, 258, 259, 65535, 65534, 32768], [300] * 9]
    _write(tmp_path / "n.png", rows, greyscale=False, bitdepth=16)
    arr = read_png(tmp_path / "n.png")
    assert arr.dtype == np.uint16 and arr.shape == (H, W, 3)
    assert arr.reshape(H, -1).tolist() == rows


def test_read_kubric_exact_values(tmp_path):
    truth = _clip(tmp_path)
    clip = read_kubric(tmp_path)
    assert clip.frames == [0, 1]
    lo, hi = DEPTH_RANGE["min"], DEPTH_RANGE["max"]
    expected_depth = torch.from_numpy(lo + truth["depth"] / 65535.0 * (hi - lo)).float()
    assert clip.depth is not None and torch.equal(clip.depth, expected_depth)
    assert float(clip.depth[0, 0, 0]) == pytest.approx(lo) and float(clip.depth[0, 0, 1]) == pytest.approx(hi)
    expected_normals = torch.from_numpy(truth["normal"] / 65535.0 * 2.0 - 1.0).permute(0, 3, 1, 2).float()
    assert clip.normals is not None and torch.equal(clip.normals, expected_normals)
    assert clip.normals[0, 0, 0, 0] != clip.normals[0, 1, 0, 0]  # 257 vs 256 stay distinct
    expected_rgb = torch.from_numpy(truth["rgba"][..., :3] / 255.0).permute(0, 3, 1, 2).float()
    assert torch.equal(clip.rgb, expected_rgb)
    assert clip.segmentation is not None and torch.equal(clip.segmentation, torch.from_numpy(truth["seg"]))
    assert clip.data_ranges["depth"] == DEPTH_RANGE


def test_pillow_would_truncate_16bit_rgb(tmp_path):
    # The reason for pypng: Pillow cannot hold 16-bit RGB and drops the low byte.
    rows = [[257, 256, 65280] * W] * H
    _write(tmp_path / "n.png", rows, greyscale=False, bitdepth=16)
    with Image.open(tmp_path / "n.png") as im:
        assert np.asarray(im.convert("RGB"))[0, 0].tolist() == [1, 1, 255]
    assert read_png(tmp_path / "n.png")[0, 0].tolist() == [257, 256, 65280]


def test_read_kubric_frame_subset_and_missing_modalities(tmp_path):
    _clip(tmp_path, t=3)
    clip = read_kubric(tmp_path, frames=[2, 0])
    assert clip.frames == [2, 0] and clip.rgb.shape == (2, 3, H, W)
    for f in tmp_path.glob("normal_*.png"):
        f.unlink()
    assert read_kubric(tmp_path).normals is None


def test_read_kubric_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="rgba_00000.png"):
        read_kubric(tmp_path)
    _clip(tmp_path)
    (tmp_path / "data_ranges.json").write_text(json.dumps({"forward_flow": {}}))
    with pytest.raises(ValueError, match="depth"):
        read_kubric(tmp_path)
    (tmp_path / "depth_00001.png").unlink()
    (tmp_path / "data_ranges.json").write_text(json.dumps({"depth": DEPTH_RANGE}))
    with pytest.raises(FileNotFoundError, match="depth frames"):
        read_kubric(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="PNG"):
        read_png(tmp_path / "bad.png")
