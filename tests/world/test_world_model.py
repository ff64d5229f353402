"""WorldModel: composition, forecast shapes and invariants, save/load round trips, Hub path, bad files."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from featureflow.compressors import Identity
from featureflow.forecast import Denoiser, FlowForecaster
from featureflow.typing import ShapeError
from featureflow.world import WorldModel, prepare_frames


@pytest.fixture(scope="module")
def model(make_tiny_world_model) -> WorldModel:
    return make_tiny_world_model()


def test_forecast_shapes_and_invariants(model):
    frames = torch.rand(2, 3, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    fc = model.forecast(frames, horizon=2, num_samples=3, solver="heun", steps=4, generator=g)
    assert fc.latents.shape == (2, 3, 2, 2, 2, 32)
    assert fc.features.shape == (2, 3, 2, 2, 2, 32)
    assert fc.nfe == 4
    seg = fc.decode("segmentation")
    assert seg.shape == (2, 3, 2, 16, 16) and seg.dtype == torch.int64
    assert int(seg.min()) >= 0 and int(seg.max()) < 5
    depth = fc.decode("depth")
    assert depth.shape == (2, 3, 2, 16, 16) and bool((depth > 0).all())
    normals = fc.decode("normals")
    assert normals.shape == (2, 3, 2, 3, 16, 16)
    torch.testing.assert_close(normals.norm(dim=3), torch.ones(2, 3, 2, 16, 16), atol=1e-4, rtol=0)
    rgb = fc.decode("rgb")
    assert rgb.shape == (2, 3, 2, 3, 16, 16) and float(rgb.min()) >= 0 and float(rgb.max()) <= 1


def test_samples_differ_and_seeding_is_deterministic(model):
    frames = torch.rand(1, 2, 3, 16, 16)
    a = model.forecast(frames, horizon=2, num_samples=2, generator=torch.Generator().manual_seed(1))
    b = model.forecast(frames, horizon=2, num_samples=2, generator=torch.Generator().manual_seed(1))
    c = model.forecast(frames, horizon=2, num_samples=2, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.latents, b.latents)
    assert not torch.allclose(a.latents, c.latents)
    assert not torch.allclose(a.latents[:, 0], a.latents[:, 1])


def test_regression_baseline_is_deterministic_across_samples(model):
    fc = model.forecast(torch.rand(1, 2, 3, 16, 16), horizon=2, num_samples=3, baseline="regression")
    assert fc.nfe == 1
    assert torch.equal(fc.latents[:, 0], fc.latents[:, 2])
    with pytest.raises(ValueError, match="unknown baseline 'nope'"):
        model.forecast(torch.rand(1, 2, 3, 16, 16), baseline="nope")


def test_uint8_frames_equal_float_frames(model):
    u8 = torch.randint(0, 256, (1, 2, 3, 16, 16), dtype=torch.uint8)
    a = model.forecast(u8, generator=torch.Generator().manual_seed(0))
    b = model.forecast(u8.float() / 255, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a.latents, b.latents)


def test_context_longer_than_window_keeps_last_frames(model):
    frames = torch.rand(1, 5, 3, 16, 16)
    a = model.forecast(frames, generator=torch.Generator().manual_seed(0))
    b = model.forecast(frames[:, -2:], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a.latents, b.latents)


def test_uncertainty_helpers(model):
    fc = model.forecast(torch.rand(1, 2, 3, 16, 16), horizon=1, num_samples=4,
                        generator=torch.Generator().manual_seed(0))
    seg = fc.uncertainty("segmentation")
    assert seg["mean"].shape == (1, 1, 16, 16) and seg["spread"].shape == (1, 1, 16, 16)
    assert float(seg["spread"].min()) >= 0 and float(seg["spread"].max()) <= torch.log(torch.tensor(5.0)) + 1e-5
    d = fc.uncertainty("depth")
    torch.testing.assert_close(d["spread"], fc.decode("depth").std(dim=1, unbiased=False))
    n = fc.uncertainty("normals")
    torch.testing.assert_close(n["mean"].norm(dim=2), torch.ones(1, 1, 16, 16), atol=1e-4, rtol=0)
    assert float(n["spread"].min()) >= 0 and float(n["spread"].max()) <= 180
    with pytest.raises(ValueError, match="no probe head for .flow."):
        fc.uncertainty("flow")


def test_bad_frames():
    with pytest.raises(ShapeError, match=r"\(b, t, 3, H, W\)"):
        prepare_frames(torch.rand(1, 2, 4, 16, 16))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        prepare_frames(torch.rand(1, 2, 3, 16, 16) * 255)
    with pytest.raises(ValueError, match="non-finite"):
        prepare_frames(torch.full((1, 2, 3, 4, 4), float("nan")))


def test_save_load_round_trip_gives_identical_forecasts(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    back = WorldModel.from_pretrained(tmp_path / "m")
    frames = torch.rand(1, 2, 3, 16, 16)
    a = model.forecast(frames, horizon=2, num_samples=2, generator=torch.Generator().manual_seed(3))
    b = back.forecast(frames, horizon=2, num_samples=2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.latents, b.latents)
    assert torch.equal(a.decode("segmentation"), b.decode("segmentation"))
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["format_version"] == 1 and config["components"]["forecaster"]["type"] == "FlowForecaster"


def test_bf16_storage_loads_into_float32(model, tmp_path):
    model.save_pretrained(tmp_path / "m", dtype=torch.bfloat16)
    back = WorldModel.from_pretrained(tmp_path / "m")
    assert all(p.dtype == torch.float32 for p in back.parameters())
    loaded = dict(back.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(loaded[name], p.to(torch.bfloat16).float(), msg=name)
    size32 = sum(p.numel() * 4 for p in model.parameters())
    assert (tmp_path / "m" / "model.safetensors").stat().st_size < 0.6 * size32


def test_newer_format_and_mismatched_config_are_clear_errors(model, tmp_path):
    d = tmp_path / "m"
    model.save_pretrained(d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["format_version"] = 99
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="format version 99"):
        WorldModel.from_pretrained(d)
    cfg["format_version"] = 1
    cfg["components"]["forecaster"]["config"]["denoiser"]["config"]["width"] = 32
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not match model.safetensors"):
        WorldModel.from_pretrained(d)


def test_truncated_weights_are_a_clear_error(model, tmp_path):
    d = tmp_path / "m"
    model.save_pretrained(d)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="truncated"):
        WorldModel.from_pretrained(d)


def test_unknown_name_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a bundled model"):
        WorldModel.from_pretrained(str(tmp_path / "nothing-here"))


def test_hub_repo_id_resolves_from_local_cache(model, tmp_path, monkeypatch):
    """A Hub repo id loads through huggingface_hub from a cache laid out as the Hub does (no network)."""
    cache = tmp_path / "hub"
    snap = cache / "models--someone--toy" / "snapshots" / ("a" * 40)
    model.save_pretrained(snap)
    (cache / "models--someone--toy" / "refs").mkdir(parents=True)
    (cache / "models--someone--toy" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    back = WorldModel.from_pretrained("someone/toy", local_files_only=True)
    frames = torch.rand(1, 2, 3, 16, 16)
    a = model.forecast(frames, generator=torch.Generator().manual_seed(0))
    b = back.forecast(frames, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.latents, b.latents)
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
        WorldModel.from_pretrained("someone/missing", local_files_only=True)
    shutil.rmtree(cache)


def test_action_conditioned_forecast_and_clear_errors(model):
    from featureflow.encoders import PixelPatchEncoder
    from featureflow.probes import PixelPatchRGBHead

    frames = torch.rand(1, 2, 3, 16, 16)
    with pytest.raises(ValueError, match="not action-conditioned"):
        model.forecast(frames, 2, actions=torch.zeros(1, 2, 2))
    assert model.action_dim is None
    torch.manual_seed(0)
    den = Denoiser(latent_dim=48, width=16, depth=1, heads=2, max_context=2, cond_dim=2)
    wm = WorldModel(PixelPatchEncoder(4), Identity(48), FlowForecaster(den, max_stride=1, residual=True),
                    {"rgb": PixelPatchRGBHead(4)})
    for p in wm.forecaster.parameters():
        torch.nn.init.normal_(p, std=0.1)
    assert wm.action_dim == 2
    with pytest.raises(ValueError, match="action-conditioned: pass actions"):
        wm.forecast(frames, 2)
    a = torch.rand(1, 2, 2) * 2 - 1
    f1 = wm.forecast(frames, 2, 3, steps=2, generator=torch.Generator().manual_seed(0), actions=a)
    f2 = wm.forecast(frames, 2, 3, steps=2, generator=torch.Generator().manual_seed(0), actions=a)
    f3 = wm.forecast(frames, 2, 3, steps=2, generator=torch.Generator().manual_seed(0), actions=-a)
    assert f1.decode("rgb").shape == (1, 3, 2, 3, 16, 16)
    assert torch.equal(f1.latents, f2.latents) and not torch.allclose(f1.latents, f3.latents)
    # the latents decode the same way through decode_latents and the Forecast
    assert torch.allclose(wm.decode_latents(f1.latents, "rgb"), f1.decode("rgb"))
