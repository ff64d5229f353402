"""Each sample has its own noise stream: growing an ensemble keeps the samples already drawn."""

from __future__ import annotations

import pytest
import torch

from featureflow.compressors import Identity
from featureflow.encoders import PixelPatchEncoder
from featureflow.forecast import Denoiser, FlowForecaster
from featureflow.forecast.rollout import SampleStreams
from featureflow.probes import PixelPatchRGBHead
from featureflow.world import WorldModel


def forecaster() -> FlowForecaster:
    torch.manual_seed(0)
    fc = FlowForecaster(Denoiser(latent_dim=4, width=16, depth=1, heads=2, max_context=2))
    for p in fc.parameters():  # a non-trivial velocity, so frames depend on the past
        torch.nn.init.normal_(p, std=0.2)
    return fc.eval()


@pytest.mark.parametrize("solver, steps", [("euler", 2), ("heun", 4)])
def test_first_k_samples_do_not_depend_on_num_samples(solver, steps):
    fc = forecaster()
    context = torch.randn(2, 2, 3, 3, 4, generator=torch.Generator().manual_seed(1))
    k = 3
    small = fc.rollout(context, horizon=4, num_samples=k, solver=solver, steps=steps,
                       generator=torch.Generator().manual_seed(7)).latents
    large = fc.rollout(context, horizon=4, num_samples=2 * k, solver=solver, steps=steps,
                       generator=torch.Generator().manual_seed(7)).latents
    assert small.shape == (2, k, 4, 3, 3, 4) and large.shape == (2, 2 * k, 4, 3, 3, 4)
    torch.testing.assert_close(large[:, :k], small, atol=1e-5, rtol=1e-5)  # every frame, both clips
    assert not torch.allclose(large[:, k:], large[:, :k])  # the new samples are new draws
    assert not torch.allclose(small[:, 0], small[:, 1])
    other = fc.rollout(context, horizon=4, num_samples=k, solver=solver, steps=steps,
                       generator=torch.Generator().manual_seed(8)).latents
    assert not torch.allclose(other, small)  # the seed matters


def test_world_model_forecast_keeps_samples_when_the_ensemble_grows():
    torch.manual_seed(0)
    den = Denoiser(latent_dim=48, width=16, depth=1, heads=2, max_context=2)
    wm = WorldModel(PixelPatchEncoder(4), Identity(48), FlowForecaster(den), {"rgb": PixelPatchRGBHead(4)})
    for p in wm.forecaster.parameters():
        torch.nn.init.normal_(p, std=0.1)
    frames = torch.rand(1, 2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    a = wm.forecast(frames, horizon=3, num_samples=2, steps=2, generator=torch.Generator().manual_seed(0))
    b = wm.forecast(frames, horizon=3, num_samples=5, steps=2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(b.latents[:, :2], a.latents, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.decode("rgb")[:, :2], a.decode("rgb"), atol=1e-5, rtol=1e-5)


def test_streams_take_one_draw_from_the_user_generator_and_check_rows():
    g = torch.Generator().manual_seed(3)
    streams = SampleStreams(g, batch=2, samples=3)
    before = g.get_state().clone()
    assert torch.equal(g.get_state(), before)  # nothing drawn until noise is needed
    x = streams.randn((6, 2), torch.device("cpu"), torch.float64)
    assert x.shape == (6, 2) and x.dtype == torch.float64
    assert not torch.equal(g.get_state(), before)
    after = g.get_state().clone()
    streams.randn((6, 2), torch.device("cpu"), torch.float32)  # later frames use the streams only
    assert torch.equal(g.get_state(), after)
    with pytest.raises(ValueError, match="expected noise for 6 rows"):
        streams.randn((5, 2), torch.device("cpu"), torch.float32)
    # clip i's streams do not depend on the batch size either
    one = SampleStreams(torch.Generator().manual_seed(3), batch=1, samples=3).randn((3, 2), torch.device("cpu"), torch.float32)
    assert torch.equal(one, x[:3].float())


@pytest.mark.parametrize("scale", [0.5, 1.7])
def test_noise_scale_multiplies_the_source_noise_of_every_sample(scale, zero_velocity):
    fc = forecaster()
    context = torch.randn(1, 2, 3, 3, 4, generator=torch.Generator().manual_seed(1))
    fc.denoiser = zero_velocity(fc.denoiser)  # frame = source noise exactly (absolute target)
    base = fc.rollout(context, 2, 3, steps=2, generator=torch.Generator().manual_seed(3)).latents
    fc.set_noise_scale(scale)
    scaled = fc.rollout(context, 2, 3, steps=2, generator=torch.Generator().manual_seed(3)).latents
    torch.testing.assert_close(scaled, scale * base)
    assert fc.config["noise_scale"] == scale
    fc.set_noise_scale(1.0)  # back to the trained path: bit for bit, and no longer recorded
    assert "noise_scale" not in fc.config
    assert torch.equal(fc.rollout(context, 2, 3, steps=2, generator=torch.Generator().manual_seed(3)).latents, base)


def test_noise_scale_narrows_a_trained_style_flow_and_round_trips(tmp_path):
    from featureflow.utils.component_io import load_component, save_component

    fc = forecaster()
    context = torch.randn(2, 2, 3, 3, 4, generator=torch.Generator().manual_seed(1))
    wide = fc.rollout(context, 1, 16, steps=3, generator=torch.Generator().manual_seed(0)).latents
    fc.set_noise_scale(0.5)
    narrow = fc.rollout(context, 1, 16, steps=3, generator=torch.Generator().manual_seed(0)).latents
    assert narrow.std(1).mean() < 0.8 * wide.std(1).mean()
    save_component(fc, tmp_path, "forecaster")
    back = load_component(tmp_path, "forecaster")
    assert back.noise_scale == 0.5
    again = back.rollout(context, 1, 16, steps=3, generator=torch.Generator().manual_seed(0)).latents
    torch.testing.assert_close(again, narrow)
    assert FlowForecaster(Denoiser(latent_dim=4, width=16, depth=1, heads=2), noise_scale=0.5).noise_scale == 0.5


def test_noise_scale_refuses_bad_values_and_deterministic_forecasters():
    from featureflow.forecast import RegressionForecaster

    fc = forecaster()
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="noise_scale must be a finite number > 0"):
            fc.set_noise_scale(bad)
    assert fc.noise_scale == 1.0
    with pytest.raises(ValueError, match="noise_scale must be a finite number > 0"):
        FlowForecaster(Denoiser(latent_dim=4, width=16, depth=1, heads=2), noise_scale=0.0)
    reg = RegressionForecaster(Denoiser(latent_dim=4, width=16, depth=1, heads=2))
    with pytest.raises(ValueError, match="draws no sampling noise"):
        reg.set_noise_scale(0.5)
