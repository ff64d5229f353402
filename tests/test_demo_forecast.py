"""`featureflow demo` and `featureflow forecast` with the bundled ToyWorld model."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

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


def labelled_grid_bands(path, columns: int, size: int, rows: int = 4) -> tuple[int, int]:
    """The (top, left) label bands of a labelled picture of rows x columns images of
    ``size`` px (drawn at scale 2 with 2 px gaps), checking that the images fill the
    rest exactly and that the bands hold text."""
    tile = 2 + 2 * size
    with Image.open(path) as im:
        img = np.asarray(im.convert("RGB")).astype(float)
    top, left = img.shape[0] - (2 + rows * tile), img.shape[1] - (2 + columns * tile)
    assert 3 * 14 <= top <= 3 * 30 and 40 <= left <= 160, (path, img.shape)  # title, groups, column labels
    assert img[:top].std() > 10 and img[top:, :left].std() > 10  # not uniform: labels are drawn
    gaps = img[top:, left + tile :: tile][:, : columns - 1]  # the white gaps between columns
    assert (gaps > 250).mean() > 0.99
    return top, left


@pytest.mark.slow
def test_demo_writes_pictures_and_table(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--num-samples", "3", "--horizon", "2", "--no-progress"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["forecast_ctx1.gif", "forecast_ctx1.png", "forecast_ctx1_vs_ctx4.png", "forecast_ctx4.gif",
                     "forecast_ctx4.png", "metrics.json", "metrics.md"]
    wm = WorldModel.from_pretrained("toyworld")  # the demo's clip: test clip 0 as the model's data recipe says
    data = wm.metadata.get("data", {})
    size = int(data.get("resolution", 64))
    tile = 2 + 2 * size
    # columns: context frames shown (1 of 1, 2 of 4) | truth | 3 samples | mean | uncertainty
    assert labelled_grid_bands(tmp_path / "forecast_ctx1.png", 1 + 1 + 3 + 2, size)
    top, left = labelled_grid_bands(tmp_path / "forecast_ctx4.png", 2 + 1 + 3 + 2, size)
    # the comparison: last context frame | truth | for |C| = 1 and 4: 2 samples | mean | uncertainty
    assert labelled_grid_bands(tmp_path / "forecast_ctx1_vs_ctx4.png", 2 + 2 * 4, size)
    with Image.open(tmp_path / "forecast_ctx4.gif") as gif:
        assert gif.n_frames == 2 and gif.size == (left + 2 + 8 * tile, top + 2 + 4 * tile)
    with Image.open(tmp_path / "forecast_ctx4.png") as png:
        img = np.asarray(png.convert("RGB"))
    clip = ToyWorld(resolution=size).clip(ToyWorld.split_seeds("test")[0], wm.max_context + 2,
                                          stride=int(data.get("stride", 1)), start=int(data.get("warmup", 0)))
    y, x = top + 2, left + tile + 2
    last = img[y : y + 2 * size : 2, x : x + 2 * size : 2]  # rgb row, column "t"
    expected = (clip.rgb[wm.max_context - 1] * 255).round().permute(1, 2, 0).numpy()
    assert np.abs(last.astype(int) - expected).max() <= 1
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
    # rows = modalities; columns = the last 2 context frames | 2 samples | mean | uncertainty (no truth)
    top, left = labelled_grid_bands(out / "forecast.png", 2 + 2 + 2, 64)
    with Image.open(out / "forecast.gif") as gif:
        assert gif.n_frames == 2 and gif.size == (left + 2 + 6 * 130, top + 2 + 4 * 130)
    with Image.open(out / "segmentation_samples.png") as im:  # rows = 2 samples; columns = context | 2 steps
        img = np.asarray(im.convert("RGB")).astype(float)
    assert img.shape[0] - (2 + 2 * 130) >= 3 * 14 and img.shape[1] - (2 + 3 * 130) >= 40
    assert img[:40].std() > 10 and img[:, :40].std() > 10
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
