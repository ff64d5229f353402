"""The all-stages training pipeline on a tiny ToyWorld config, and its stage-level resume."""

import json

import pytest
import torch

from featureflow.cli import main
from featureflow.training import FeatureShards, extract_features, run_pipeline
from featureflow.world import WorldModel


def _lin(d: int, c: int) -> dict:
    return {"type": "LinearHead", "config": {"feature_dim": d, "out_channels": c}}


def tiny_config(tmp_path) -> dict:
    return {
        "workdir": str(tmp_path / "work"),
        "output": str(tmp_path / "model"),
        "seed": 0,
        "data": {"world": "toyworld", "resolution": 16, "train_clips": 6, "clip_length": 4},
        "encoder": {"type": "ToyEncoder",
                    "config": {"image_size": 16, "patch_size": 8, "width": 16, "depth": 2, "heads": 2, "blocks": [0, 1]},
                    "train": {"steps": 2, "batch_size": 4, "num_clips": 2, "clip_length": 2, "warmup": 1}},
        "features": {"shard_size": 4, "batch_size": 2},
        "compressor": {"type": "FeatureVAE", "config": {"latent_dim": 4, "dim": 16, "depth": 1},
                       "train": {"steps": 2, "batch_size": 4}},
        "forecaster": {"denoiser": {"width": 16, "depth": 1, "heads": 2, "max_context": 2},
                       "train": {"steps": 2, "batch_size": 2, "warmup": 1}},
        "regression": {"train": {"steps": 2, "batch_size": 2, "warmup": 1}},
        "probes": {"clips": 2, "train": {"steps": 2, "batch_size": 2},
                   "heads": {
                       "segmentation": {"type": "SegmentationHead", "config": {"head": _lin(32, 5), "num_classes": 5}},
                       "depth": {"type": "DepthHead", "config": {"head": _lin(32, 1), "min_depth": 0.5, "max_depth": 20.0}},
                       "normals": {"type": "NormalsHead", "config": {"head": _lin(32, 3)}},
                       "rgb": {"type": "RGBHead", "config": {"head": _lin(32, 3)}},
                   }},
    }


@pytest.mark.slow
def test_pipeline_end_to_end_and_stage_resume(tmp_path):
    cfg = tiny_config(tmp_path)
    assert run_pipeline(cfg, progress=False, until="compressor") is None
    work = tmp_path / "work"
    assert (work / "compressor" / "component.json").is_file()
    assert not (work / "flow").exists()
    enc_weights = (work / "encoder" / "component.safetensors").read_bytes()
    out = run_pipeline(cfg, progress=False)  # resumes: earlier stages are loaded, not redone
    assert (work / "encoder" / "component.safetensors").read_bytes() == enc_weights
    wm = WorldModel.from_pretrained(out)
    assert sorted(wm.probes) == ["depth", "normals", "rgb", "segmentation"]
    assert sorted(wm.baselines) == ["regression"]
    fc = wm.forecast(torch.rand(1, 2, 3, 16, 16), horizon=2, num_samples=2, generator=torch.Generator().manual_seed(0))
    assert fc.decode("depth").shape == (1, 2, 2, 16, 16)
    logs = {p.name for p in (work / "logs").iterdir()}
    assert {"encoder.jsonl", "compressor.jsonl", "flow.jsonl", "regression.jsonl", "probe_depth.jsonl"} <= logs
    shards = FeatureShards(work / "features")
    assert len(shards) == 6 and shards[5]["features"].shape == (4, 2, 2, 32)


def test_train_command_reads_config(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    assert main(["train", "--config", str(tmp_path / "cfg.json"), "--until", "encoder", "--no-progress"]) == 0
    assert "stopped after stage 'encoder'" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("{nope")
    assert main(["train", "--config", str(tmp_path / "bad.json")]) == 1
    assert "not valid JSON" in capsys.readouterr().err


def test_feature_cache_resumes_shard_by_shard(tmp_path):
    from featureflow.encoders import ToyEncoder

    enc = ToyEncoder(image_size=16, patch_size=8, width=16, depth=2, heads=2, blocks=(0, 1)).eval()
    clips = [torch.rand(2, 3, 16, 16) for _ in range(5)]
    d = extract_features(enc, clips, tmp_path / "f", shard_size=2, progress=False)
    first = (d / "shard_00000.safetensors").read_bytes()
    (d / "shard_00002.safetensors").unlink()
    (d / "index.json").unlink()
    with pytest.raises(FileNotFoundError, match="extraction did not finish"):
        FeatureShards(d)
    extract_features(enc, clips, d, shard_size=2, progress=False)
    assert (d / "shard_00000.safetensors").read_bytes() == first
    shards = FeatureShards(d)
    with torch.no_grad():
        torch.testing.assert_close(shards[4]["features"], enc(clips[4]))


@pytest.mark.slow
def test_pipeline_on_your_own_frame_folders(tmp_path):
    """The 'train on your own video' path of docs/training.md, at tiny size: one folder of frames per clip."""
    from featureflow.data import ToyWorld, write_frames

    world = ToyWorld(resolution=32)
    for i in range(3):
        write_frames(world.clip(seed=100 + i, length=5).rgb, tmp_path / "clips" / f"clip{i}")
    cfg = tiny_config(tmp_path)
    cfg["data"] = {"world": "frames", "root": str(tmp_path / "clips"), "clip_length": 4, "resolution": 16}
    cfg["encoder"].pop("train")
    cfg.pop("probes")
    out = run_pipeline(cfg, progress=False)
    wm = WorldModel.from_pretrained(out)
    assert len(wm.probes) == 0 and wm.metadata["data"]["world"] == "frames"
    fc = wm.forecast(torch.rand(1, 2, 3, 16, 16), horizon=2, num_samples=2, generator=torch.Generator().manual_seed(0))
    assert fc.latents.shape == (1, 2, 2, 2, 2, 4)
    assert len(FeatureShards(tmp_path / "work" / "features")) == 3


def test_forecasters_train_on_fresh_clips_one_process_each(tmp_path):
    """``train.stream`` renders fresh clips as training goes; ``only=`` trains one forecaster
    (two processes can train both at once); residual forecasters get their scale from data."""
    cfg = tiny_config(tmp_path)
    for section in (cfg["forecaster"], cfg["regression"]):
        section["train"]["stream"] = {"clip_length": 4, "stride": 2}
    cfg["forecaster"]["flow"] = {"residual": True, "max_stride": 1}
    cfg["regression"]["model"] = {"residual": True, "max_stride": 1}
    assert run_pipeline(cfg, progress=False, only="regression") is None
    work = tmp_path / "work"
    assert (work / "regression" / "component.json").is_file() and not (work / "flow").exists()
    assert run_pipeline(cfg, progress=False, only="flow") is None
    out = run_pipeline(cfg, progress=False)
    wm = WorldModel.from_pretrained(out)
    scale = wm.forecaster.config["residual_scale"]
    assert len(scale) == 4 and all(v > 0 for v in scale)
    assert wm.baselines["regression"].config["residual_scale"] == scale
    with pytest.raises(ValueError, match="only must be"):
        run_pipeline(cfg, progress=False, only="probes")
