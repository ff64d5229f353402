"""Visualisation helpers: colour maps, palette, grids, PNG and GIF writers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from featureflow import ShapeError, viz
from featureflow.data import read_video


def test_colorize_depth_maps_near_to_bright_and_far_to_dark():
    depth = torch.tensor([[1.0, 2.0, 4.0]])
    img = viz.colorize_depth(depth)
    assert img.shape == (3, 1, 3)
    assert torch.allclose(img[:, 0, 0], torch.tensor([0.993, 0.906, 0.144]))  # nearest: yellow
    assert torch.allclose(img[:, 0, 2], torch.tensor([0.267, 0.005, 0.329]))  # farthest: purple
    assert img[:, 0, 0].sum() > img[:, 0, 1].sum() > img[:, 0, 2].sum()
    # an explicit range clips; batches share one range
    clipped = viz.colorize_depth(depth, vmin=1.0, vmax=2.0)
    assert torch.equal(clipped[:, 0, 2], clipped[:, 0, 1])  # 4 m is clipped to vmax = 2 m
    batch = viz.colorize_depth(torch.stack([depth, depth * 2]))
    assert batch.shape == (2, 3, 1, 3) and torch.allclose(batch[1, :, 0, 2], img[:, 0, 2])
    with pytest.raises(ValueError, match="positive"):
        viz.colorize_depth(torch.zeros(2, 2))


def test_colorize_normals_and_shape_errors():
    n = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]).T.reshape(3, 1, 2)
    img = viz.colorize_normals(n)
    assert img[:, 0, 0].tolist() == [1.0, 0.5, 0.5] and img[:, 0, 1].tolist() == [0.5, 0.0, 0.5]
    with pytest.raises(ShapeError):
        viz.colorize_normals(torch.zeros(2, 4, 4))


def test_colorize_segmentation_uses_fixed_palette():
    labels = torch.tensor([[0, 1, 2], [3, 4, 260]])
    img = viz.colorize_segmentation(labels)
    assert img.shape == (3, 2, 3)
    assert img[:, 0, 0].tolist() == [0.0, 0.0, 0.0]
    for k, (i, j) in enumerate([(0, 1), (0, 2), (1, 0), (1, 1)], start=1):
        assert torch.equal(img[:, i, j], viz.PALETTE[k])
    assert torch.equal(img[:, 1, 2], viz.PALETTE[260 % 256])
    assert len({tuple(c) for c in viz.PALETTE.tolist()}) == 256  # all colours distinct
    with pytest.raises(ValueError, match=">= 0"):
        viz.colorize_segmentation(torch.tensor([[-1]]))


def test_make_grid_layout_and_errors():
    a, b = torch.zeros(3, 2, 2), torch.ones(3, 2, 2) * 0.5
    grid = viz.make_grid([[a, b], [b]], pad=1, pad_value=1.0, scale=2)
    assert grid.shape == (3, 1 + 2 * 5, 1 + 2 * 5)
    assert torch.equal(grid[:, 1:5, 1:5], torch.zeros(3, 4, 4))
    assert torch.equal(grid[:, 1:5, 6:10], torch.full((3, 4, 4), 0.5))
    assert torch.equal(grid[:, 6:10, 6:10], torch.ones(3, 4, 4))  # missing cell stays pad colour
    assert grid[:, 0].eq(1).all()
    with pytest.raises(ValueError, match="one shape"):
        viz.make_grid([[a, torch.zeros(3, 3, 3)]])
    with pytest.raises(ValueError, match="non-empty"):
        viz.make_grid([])


def test_save_png_and_gif(tmp_path):
    img = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8)
    viz.save_png(img, tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as im:
        assert np.array_equal(np.asarray(im), img.permute(1, 2, 0).numpy())
    frames = torch.rand(3, 3, 4, 4)
    viz.save_gif(frames, tmp_path / "a.gif", fps=4)
    with Image.open(tmp_path / "a.gif") as im:
        assert im.n_frames == 3 and im.info["duration"] == 250
    assert read_video(tmp_path / "a.gif").shape == (3, 3, 4, 4)
    with pytest.raises(ShapeError):
        viz.save_gif(torch.rand(3, 4, 4), tmp_path / "b.gif")
    assert not (tmp_path / "b.gif").exists()


def test_labeled_grid_draws_labels_around_the_unchanged_grid():
    rows = [[torch.rand(3, 8, 8) for _ in range(3)] for _ in range(2)]
    grid = viz.make_grid(rows, pad=2, scale=4)
    out = viz.make_labeled_grid(rows, ["rgb", "segmentation"], ["t", "truth", "sample 1"],
                                col_groups=[("context", 0, 1), ("forecast t+1", 1, 2)], title="a title", pad=2, scale=4)
    top, left = out.shape[1] - grid.shape[1], out.shape[2] - grid.shape[2]
    assert top > 3 * 12 and left > 30  # three bands above (title, groups, columns) and one on the left
    assert torch.allclose(out[:, top:, left:], grid, atol=1 / 255)  # the images are untouched
    assert out[:, :top].std() > 0.05 and out[:, top:, :left].std() > 0.05  # text is drawn in both bands
    plain = viz.make_labeled_grid(rows, pad=2, scale=4)
    assert plain.shape == grid.shape
    with pytest.raises(ValueError, match="one label per col"):
        viz.make_labeled_grid(rows, col_labels=["a", "b"])
    with pytest.raises(ValueError, match="column group 'x' spans columns 2..3"):
        viz.make_labeled_grid(rows, col_groups=[("x", 2, 2)])
