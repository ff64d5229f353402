"""Frame folders and video files: round trips, ordering and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from featureflow.data import read_frames, read_video, write_frames
from featureflow.viz import save_gif


def test_frame_folder_round_trip_is_exact_for_8bit_frames(tmp_path):
    frames_u8 = torch.randint(0, 256, (4, 3, 6, 7), dtype=torch.uint8)
    paths = write_frames(frames_u8, tmp_path / "clip")
    assert [p.name for p in paths] == [f"frame_{i:05d}.png" for i in range(4)]
    back = read_frames(tmp_path / "clip")
    assert back.shape == (4, 3, 6, 7) and back.dtype == torch.float32
    assert torch.equal((back * 255).round().to(torch.uint8), frames_u8)
    assert torch.equal(read_frames(tmp_path / "clip"), frames_u8.float() / 255)


def test_float_frames_round_trip_within_half_a_level(tmp_path):
    frames = torch.rand(2, 3, 5, 5)
    write_frames(frames, tmp_path)
    assert (read_frames(tmp_path) - frames).abs().max() <= 0.5 / 255 + 1e-6


def test_natural_order_and_pattern(tmp_path):
    for i in (10, 2, 1):
        Image.fromarray(np.full((2, 2, 3), i, np.uint8)).save(tmp_path / f"img_{i}.png")
    Image.fromarray(np.full((2, 2, 3), 99, np.uint8)).save(tmp_path / "other_0.png")
    frames = read_frames(tmp_path, pattern="img_*.png")
    assert (frames[:, 0, 0, 0] * 255).round().tolist() == [1.0, 2.0, 10.0]
    assert read_frames(tmp_path).shape[0] == 4


def test_frame_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="frame folder not found"):
        read_frames(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no frames"):
        read_frames(tmp_path)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "a_0.png")
    Image.fromarray(np.zeros((3, 2, 3), np.uint8)).save(tmp_path / "a_1.png")
    with pytest.raises(ValueError, match="different sizes"):
        read_frames(tmp_path)
    with pytest.raises(ValueError, match="ext"):
        write_frames(torch.zeros(1, 3, 2, 2), tmp_path, ext=".xyz")


def test_gif_video_round_trip(tmp_path):
    colours = torch.tensor([[0, 0, 0], [255, 0, 0], [0, 255, 0], [10, 20, 200]], dtype=torch.uint8)
    idx = torch.randint(0, 4, (5, 6, 6))
    idx[:, 0, :4] = torch.arange(4)  # every frame uses all four colours, so no two frames are equal
    idx[torch.arange(5), 1, 0] = torch.arange(5) % 4
    frames = colours[idx].permute(0, 3, 1, 2).contiguous()
    frames[:, :, 2, 2] = torch.arange(5, dtype=torch.uint8).view(5, 1) * 40  # distinct frames
    save_gif(frames, tmp_path / "clip.gif")
    back = read_video(tmp_path / "clip.gif")
    assert back.shape == (5, 3, 6, 6)
    assert torch.equal((back * 255).round().to(torch.uint8), frames)


def test_video_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "none.mp4")
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 16)
    try:
        import av  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"featureflow\[video\]"):
            read_video(tmp_path / "clip.mp4")
    else:
        with pytest.raises(ValueError, match="could not read .*clip.mp4 as a video"):
            read_video(tmp_path / "clip.mp4")
