"""Datasets by name: frame folders, video (PyAV), Kubric MOVi layouts, Cityscapes sequences."""

from __future__ import annotations

import json
import sys

import numpy as np
import png
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from featureflow.data import (
    CityscapesClips,
    FrameFolderClips,
    KubricClips,
    ToyWorldClips,
    available_datasets,
    build_dataset,
    dataset_from_config,
    dataset_labels,
    register_dataset,
    write_frames,
)


def _u8(t, h=6, w=8, seed=0):
    return torch.randint(0, 256, (t, 3, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


# ---------------------------------------------------------------- registry


def test_registry_names_and_errors():
    assert {"toyworld", "frames", "video", "kubric", "cityscapes"} <= set(available_datasets())
    assert isinstance(build_dataset("ToyWorld", split="val", length=2, resolution=8, size=1), ToyWorldClips)
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*cityscapes"):
        build_dataset("nope")
    with pytest.raises(TypeError, match="dataset 'frames'.*unexpected keyword argument 'colour'"):
        build_dataset("frames", root=".", colour=1)
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("frames", list)
    register_dataset("frames-again", FrameFolderClips, overwrite=True)
    assert "frames-again" in available_datasets()


def test_dataset_from_a_pipeline_data_section(tmp_path):
    toy = dataset_from_config({"world": "toyworld", "resolution": 16, "train_clips": 3, "clip_length": 2,
                               "stride": 3, "warmup": 0})
    assert isinstance(toy, ToyWorldClips) and len(toy) == 3 and toy.stride == 3 and toy[0]["rgb"].shape[-1] == 16
    assert len(dataset_from_config({"resolution": 16}, split="val", size=2)) == 2 and toy.split == "train"
    write_frames(_u8(6), tmp_path / "train" / "a")
    frames = dataset_from_config({"dataset": "frames", "root": str(tmp_path), "clip_length": 2, "train_clips": 2,
                                  "resolution": 4}, split="train")
    assert isinstance(frames, FrameFolderClips) and len(frames) == 2 and frames[1]["rgb"].shape == (2, 3, 4, 4)
    with pytest.raises(TypeError, match="dataset 'frames'.*warmup"):
        dataset_from_config({"dataset": "frames", "root": str(tmp_path), "warmup": 2})
    with pytest.raises(ValueError, match="data names two datasets"):
        dataset_from_config({"dataset": "frames", "world": "toyworld"})


# ---------------------------------------------------------------- frame folders


def test_frame_folders_cut_clips_in_natural_order(tmp_path):
    a, b = _u8(5, seed=1), _u8(3, seed=2)
    write_frames(a, tmp_path / "train" / "clip_10")
    write_frames(b, tmp_path / "train" / "clip_2")
    ds = build_dataset("frames", root=tmp_path, split="train", length=2, stride=1, hop=1)
    # clip_2 (3 frames -> 2 clips) comes before clip_10 (5 frames -> 4 clips)
    assert len(ds) == 6 and [ds.clip_name(i) for i in (0, 2)] == ["clip_2[0:2:1]", "clip_10[0:2:1]"]
    assert torch.equal(ds[3]["rgb"], a[1:3].float() / 255)  # PNG is lossless
    strided = FrameFolderClips(tmp_path / "train", length=2, stride=2)
    assert [strided.clip_name(i) for i in range(len(strided))] == ["clip_2[0:3:2]", "clip_10[0:3:2]"]
    assert torch.equal(strided[1]["rgb"], a[[0, 2]].float() / 255)
    small = FrameFolderClips(tmp_path / "train", length=3, resolution=(3, 4))
    assert small[0]["rgb"].shape == (3, 3, 3, 4) and len(small) == 2
    batch = next(iter(DataLoader(small, batch_size=2)))
    assert batch["rgb"].shape == (2, 3, 3, 3, 4) and dataset_labels(small) == ()


def test_frame_folders_bad_layouts_say_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a directory of image folders"):
        FrameFolderClips(tmp_path / "missing")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no frames under .*expected files ending in \.png"):
        FrameFolderClips(tmp_path / "empty")
    write_frames(_u8(2), tmp_path / "short")
    with pytest.raises(ValueError, match="no clip of 3 frames .* the longest has 2 frame"):
        FrameFolderClips(tmp_path / "short", length=3)
    with pytest.raises(ValueError, match="stride must be a positive int"):
        FrameFolderClips(tmp_path / "short", length=1, stride=0)
    with pytest.raises(IndexError):
        FrameFolderClips(tmp_path / "short", length=1)[2]


# ---------------------------------------------------------------- video (PyAV)


def test_video_clips_decode_exactly_and_in_any_order(tmp_path):
    pytest.importorskip("av", reason="PyAV (the 'video' extra) is not installed")
    from featureflow.data import VideoClips, count_video_frames, read_video, write_video

    x = _u8(7, 8, 10, seed=3)
    write_video(x, tmp_path / "v" / "a.mkv", codec="ffv1")  # lossless
    ramp = torch.linspace(0, 1, 16)
    smooth = (ramp[None, None, None, :] * 0.5 + ramp[None, None, :, None] * 0.3 + torch.arange(7.0)[:, None, None, None]
              * 0.02).expand(7, 3, 16, 16).contiguous()
    write_video(smooth, tmp_path / "v" / "b.mp4", fps=5)  # H.264, lossy
    assert count_video_frames(tmp_path / "v" / "b.mp4") == 7
    mp4 = read_video(tmp_path / "v" / "b.mp4")
    assert mp4.shape == (7, 3, 16, 16) and (mp4 - smooth).abs().mean() < 0.02
    ds = build_dataset("video", root=tmp_path / "v", length=3, hop=2)
    assert len(ds) == 6 and ds.clip_name(0).endswith("a.mkv[0:3:1]")
    in_order = [ds[i]["rgb"] for i in range(3)]
    assert torch.equal(in_order[1], x[2:5].float() / 255)
    assert torch.equal(ds[2]["rgb"], in_order[2]) and torch.equal(ds[0]["rgb"], in_order[0])  # reopened, same
    assert (ds[4]["rgb"] - smooth[2:5]).abs().mean() < 0.02
    single = VideoClips(tmp_path / "v" / "a.mkv", length=7)
    assert len(single) == 1 and torch.equal(single[0]["rgb"], x.float() / 255)
    with pytest.raises(FileNotFoundError, match="no video files under .*expected files ending in .mp4"):
        VideoClips(tmp_path / "nothing-here" if (tmp_path / "nothing-here").mkdir() is None else None)
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="could not read .*bad.mp4 as a video"):
        VideoClips(tmp_path / "bad.mp4")


def test_video_without_pyav_says_how_to_install(tmp_path, monkeypatch):
    from featureflow.data import read_video

    (tmp_path / "a.mp4").write_bytes(b"\x00")
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'featureflow\[video\]'"):
        read_video(tmp_path / "a.mp4")
    with pytest.raises(ImportError, match="PyAV"):
        build_dataset("video", root=tmp_path)


# ---------------------------------------------------------------- Kubric MOVi


def _png(path, rows, width, **kw):
    with open(path, "wb") as fh:
        png.Writer(width, len(rows), **kw).write(fh, rows)


def test_kubric_training_layout(tmp_path):
    frames = _u8(4, seed=4)
    seq = tmp_path / "movi_a" / "128x128" / "validation" / "000007"
    seq.mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(f.permute(1, 2, 0).numpy()).save(seq / f"{i:05d}_rgb.png")
    ds = build_dataset("kubric", root=tmp_path, split="validation", original_resolution=128, length=2)
    assert ds.layout == "training" and len(ds) == 2 and ds.clip_name(1) == "000007[2:4:1]"
    assert torch.equal(ds[1]["rgb"], frames[2:].float() / 255) and set(ds[0]) == {"rgb"}


def test_kubric_export_layout_with_labels(tmp_path):
    h, w, depth_range = 2, 3, {"min": 1.0, "max": 9.0}
    folders = [tmp_path / "master_seed=42" / f"scene={s}" / "rollout=1" for s in (2, 10)]
    for k, folder in enumerate(folders):
        folder.mkdir(parents=True)
        (folder / "data_ranges.json").write_text(json.dumps({"depth": depth_range}))
        for i in range(3):
            _png(folder / f"rgba_{i:05d}.png", [[(10 * k + i) % 256, 0, 0, 255] * w] * h, w, greyscale=False, alpha=True)
            _png(folder / f"depth_{i:05d}.png", [[65535 * (i % 2)] * w] * h, w, greyscale=True, bitdepth=16)
            _png(folder / f"segmentation_{i:05d}.png", [[i] * w] * h, w, greyscale=True, bitdepth=8)
    ds = KubricClips(tmp_path, length=2, hop=1)
    assert ds.layout == "export" and ds.labels == ("depth", "segmentation") and len(ds) == 4
    assert ds.clip_name(2) == "master_seed=42/scene=10/rollout=1[0:2:1]"  # natural order: 2 before 10
    item = ds[3]
    assert item["rgb"][:, 0, 0, 0].mul(255).round().tolist() == [11.0, 12.0]
    assert item["depth"][:, 0, 0].tolist() == [9.0, 1.0] and item["segmentation"][:, 0, 0].tolist() == [1, 2]
    assert "normals" not in item
    (folders[1] / "depth_00002.png").unlink()
    with pytest.raises(FileNotFoundError, match="lacks depth frames"):
        ds[3]
    with pytest.raises(FileNotFoundError, match=r"expected the training layout .*movi_a/256x256/train.*rgba_00000.png"):
        KubricClips(tmp_path / "master_seed=42" / "scene=2" / "rollout=1" / "nothing" if (
            tmp_path / "master_seed=42" / "scene=2" / "rollout=1" / "nothing").mkdir() is None else None)


# ---------------------------------------------------------------- Cityscapes sequences


def _cityscapes(root, labels_as="labelIds"):
    rng = np.random.default_rng(0)
    truth = {}
    for city, seq, numbers in (("ulm", "000001", range(16, 23)), ("aachen", "000000", [17, 18, 19, 25, 26])):
        img_dir = root / "leftImg8bit_sequence" / "val" / city
        lbl_dir = root / "gtFine" / "val" / city
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        for n in numbers:
            arr = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
            Image.fromarray(arr).save(img_dir / f"{city}_{seq}_{n:06d}_leftImg8bit.png")
            truth[(city, n)] = arr
            if n == 19:
                ids = np.array([[7, 26, 0, 33, 24, 11]] * 4, dtype=np.uint8)
                Image.fromarray(ids).save(lbl_dir / f"{city}_{seq}_{n:06d}_gtFine_{labels_as}.png")
                Image.fromarray(ids).save(lbl_dir / f"{city}_{seq}_{n:06d}_gtFine_color.png")  # ignored
    return truth


def test_cityscapes_clips_follow_sequences_and_expose_labels(tmp_path):
    truth = _cityscapes(tmp_path)
    ds = build_dataset("cityscapes", root=tmp_path, split="val", length=3, hop=1)
    # aachen: runs 17-19 (1 clip) and 25-26 (gap: no clip); ulm: 16-22 (5 clips)
    names = [ds.clip_name(i) for i in range(len(ds))]
    assert names == ["aachen_000000[17:20:1]"] + [f"ulm_000001[{s}:{s + 3}:1]" for s in range(16, 21)]
    item = ds[0]
    assert torch.equal(item["rgb"][2], torch.from_numpy(truth[("aachen", 19)]).permute(2, 0, 1).float() / 255)
    assert item["labeled"].tolist() == [False, False, True]
    assert item["segmentation"][2, 0].tolist() == [0, 13, 255, 18, 11, 2]  # label ids -> train ids
    assert (item["segmentation"][:2] == 255).all()
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["segmentation"].shape == (3, 3, 4, 6) and batch["labeled"].shape == (3, 3)
    assert dataset_labels(ds) == ("segmentation", "labeled")
    # one clip per labelled frame, the labelled frame last (the forecast target)
    target = CityscapesClips(tmp_path, split="val", length=3, stride=1, label_position=-1, label_ids="raw")
    assert [target.clip_name(i) for i in range(len(target))] == ["aachen_000000[17:20:1]", "ulm_000001[17:20:1]"]
    assert target[1]["labeled"].tolist() == [False, False, True]
    assert target[1]["segmentation"][2, 0].tolist() == [7, 26, 0, 33, 24, 11]
    resized = CityscapesClips(tmp_path, split="val", length=2, label_position=1, resolution=(8, 12))
    assert resized[0]["segmentation"].shape == (2, 8, 12) and resized[0]["segmentation"][1, 0, :2].tolist() == [0, 0]


def test_cityscapes_train_ids_file_and_bad_layouts(tmp_path):
    _cityscapes(tmp_path, labels_as="labelTrainIds")
    ds = CityscapesClips(tmp_path, split="val", length=1, label_position=0)
    assert len(ds) == 2 and ds[0]["segmentation"][0, 0].tolist() == [7, 26, 0, 33, 24, 11]  # stored ids as is
    with pytest.raises(FileNotFoundError, match=r"expected .*leftImg8bit_sequence/train/<city>/<city>_<seq>_<frame>"):
        CityscapesClips(tmp_path, split="train")
    (tmp_path / "leftImg8bit_sequence" / "test" / "bonn").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no Cityscapes frames"):
        CityscapesClips(tmp_path, split="test")
    with pytest.raises(ValueError, match="label_position must be in"):
        CityscapesClips(tmp_path, split="val", length=2, label_position=2)
