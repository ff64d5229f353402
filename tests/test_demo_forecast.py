"""`featureflow demo` and `featureflow forecast` with the bundled ToyWorld model."""

import json

import pytest
import torch

from featureflow.cli import main
from featureflow.data import ToyWorld, write_frames
from featureflow.world import WorldModel
from featureflow.world.serialization import bundled_models


def test_toyworld_model_is_bundled_and_small():
    models = bundled_models()
    assert "toyworld" in models
    size = sum(p.stat().st_size for p in models["toyworld"].iterdir())
    assert size <= 25e6
    wm = WorldModel.from_pretrained("toyworld")
    assert sorted(wm.probes) == ["depth", "normals", "rgb", "segmentation"]
    assert "regression" in wm.baselines and wm.max_context == 4


@pytest.mark.slow
def test_demo_writes_pictures_and_table(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--samples", "3", "--horizon", "2", "--no-progress"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["forecast_ctx1.gif", "forecast_ctx1.png", "forecast_ctx4.gif", "forecast_ctx4.png",
                     "metrics.json", "metrics.md"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    flow = metrics["results"]["4"]["flow"]
    assert flow["miou"]["best"] >= flow["miou"]["mean"]  # best-of-K can only be better
    assert flow["abs_rel"]["best"] <= flow["abs_rel"]["mean"]
    assert set(metrics["results"]["1"]) == {"flow", "regression", "copy-last"}
    out = capsys.readouterr().out
    assert "flow best-of-K" in out and "copy-last" in out


@pytest.mark.slow
def test_forecast_command_on_a_frame_folder(tmp_path):
    world = ToyWorld(resolution=64)
    clip = world.clip(seed=ToyWorld.split_seeds("test")[1], length=4, stride=3)
    write_frames(clip.rgb, tmp_path / "frames")
    out = tmp_path / "out"
    assert main(["forecast", "--input", str(tmp_path / "frames"), "--horizon", "2", "--samples", "2",
                 "--out", str(out), "--no-progress", "--solver", "euler", "--steps", "2"]) == 0
    info = json.loads((out / "forecast.json").read_text())
    assert info["latents_shape"] == [1, 2, 2, 8, 8, 16] and info["nfe_per_frame"] == 2
    for m in ("rgb", "segmentation", "depth", "normals"):
        assert (out / f"{m}_samples.png").is_file() and (out / f"{m}_uncertainty.png").is_file()
    assert main(["forecast", "--input", str(tmp_path / "missing"), "--out", str(out)]) == 1


def test_forecast_is_reproducible_with_a_generator():
    wm = WorldModel.from_pretrained("toyworld")
    frames = ToyWorld(resolution=64).clip(seed=ToyWorld.split_seeds("test")[2], length=2, stride=3).rgb[None]
    a = wm.forecast(frames, num_samples=2, steps=2, generator=torch.Generator().manual_seed(5))
    b = wm.forecast(frames, num_samples=2, steps=2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.latents, b.latents)
    assert not torch.equal(a.latents[:, 0], a.latents[:, 1])


def test_demo_and_forecast_refuse_an_action_conditioned_model(tmp_path, capsys):
    world = ToyWorld(resolution=24)
    write_frames(world.clip(seed=1, length=2).rgb, tmp_path / "frames")
    assert main(["forecast", "--model", "toyworld-agent", "--input", str(tmp_path / "frames"),
                 "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    assert main(["demo", "--model", "toyworld-agent", "--out", str(tmp_path / "demo"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("'toyworld-agent' is action-conditioned") == 2 and "actions=" in err
