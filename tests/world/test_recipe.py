"""SamplingRecipe: the released recipe is data the ordinary WorldModel.forecast follows."""

from __future__ import annotations

import json

import pytest
import torch

from featureflow.compat.vfmf import ReleasedRecipe, forecast_released
from featureflow.compressors import FeatureVAE
from featureflow.encoders import ToyEncoder
from featureflow.forecast import Denoiser, FlowForecaster
from featureflow.forecast.rollout import SampleStreams
from featureflow.probes import DepthHead, LinearHead
from featureflow.solvers import DEFAULT_SOLVER, DEFAULT_STEPS, Euler
from featureflow.world import SamplingRecipe, WorldModel, recipe_rollout


def _model(max_context: int = 2) -> WorldModel:
    torch.manual_seed(0)
    enc = ToyEncoder(image_size=16, patch_size=8, width=16, depth=2, heads=2, blocks=(0, 1))
    vae = FeatureVAE(feature_dim=32, latent_dim=4, dim=8, depth=1)
    den = Denoiser(latent_dim=4, width=16, depth=1, heads=2, max_context=max_context)
    return WorldModel(enc, vae, FlowForecaster(den), {"depth": DepthHead(LinearHead(32, 1), min_depth=0.5, max_depth=9)})


def test_recipe_defaults_come_from_the_solvers_package():
    r = SamplingRecipe()
    assert (r.solver, r.steps, r.max_context, r.reencode, r.context_posterior) == (DEFAULT_SOLVER, None, None, False,
                                                                                  "mean")
    assert Euler().steps == DEFAULT_STEPS == 8
    assert r.solver_and_steps(None, None) == ("euler", None)
    assert ReleasedRecipe().solver_and_steps("heun", None) == ("heun", None)  # 9 belongs to Euler
    assert ReleasedRecipe().solver_and_steps(None, None) == ("euler", 9)


def test_recipes_compare_by_value_across_classes_and_refuse_bad_fields():
    released = ReleasedRecipe()
    same = SamplingRecipe.from_dict(released.to_dict())
    assert type(same) is SamplingRecipe and same == released and hash(same) == hash(released)
    assert SamplingRecipe(steps=3) != SamplingRecipe(steps=4)
    with pytest.raises(ValueError, match="SamplingRecipe.steps must be a positive int"):
        SamplingRecipe(steps=0)
    with pytest.raises(ValueError, match="max_context"):
        SamplingRecipe(max_context=True)
    with pytest.raises(ValueError, match="context_posterior must be one of"):
        SamplingRecipe(context_posterior="mode")
    with pytest.raises(ValueError, match="unknown SamplingRecipe field"):
        SamplingRecipe.from_dict({"nfe": 3})


def test_model_recipe_is_followed_without_a_solver_and_saved(tmp_path):
    wm = _model()
    frames = torch.rand(1, 3, 3, 16, 16)
    plain = wm.forecast(frames, 2, 2, generator=torch.Generator().manual_seed(0))
    assert plain.nfe == DEFAULT_STEPS  # no recipe: the default solver and its default steps
    wm.recipe = SamplingRecipe(steps=3, reencode=True)
    assert wm.vfmf_recipe is wm.recipe  # the former name still reads it
    fc = wm.forecast(frames, 2, 2, generator=torch.Generator().manual_seed(0))
    assert fc.nfe == 3 and fc.latents.shape == (1, 2, 2, 2, 2, 4)
    with torch.no_grad():
        feats = wm.encoder(frames[0, -2:]).unsqueeze(0)
    expected = recipe_rollout(wm.forecaster, wm.compressor, feats, 2, 2, wm.recipe,
                              generator=torch.Generator().manual_seed(0))
    assert torch.equal(fc.latents, expected.latents)
    # a named solver leaves the recipe; an explicit recipe overrides the model's
    assert wm.forecast(frames, 1, 1, solver="heun", steps=2).nfe == 2
    assert wm.forecast(frames, 1, 1, recipe=SamplingRecipe(steps=5)).nfe == 5
    with pytest.raises(ValueError, match="recipe has no guidance"):
        wm.forecast(frames, 1, 1, guidance=2.0)
    with pytest.raises(ValueError, match="exclude each other"):
        wm.forecast(frames, 1, 1, recipe=SamplingRecipe(), baseline="copy-last")
    out = wm.save_pretrained(tmp_path / "m")
    assert json.loads((out / "config.json").read_text())["vfmf_recipe"] == wm.recipe.to_dict()
    back = WorldModel.from_pretrained(out)
    assert back.recipe == wm.recipe
    again = back.forecast(frames, 2, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.latents, fc.latents)


def test_reencoding_rollout_matches_a_manual_loop():
    wm = _model()
    feats = torch.randn(1, 3, 2, 2, 32)
    recipe = SamplingRecipe(steps=2, reencode=True, max_context=2)
    roll = recipe_rollout(wm.forecaster, wm.compressor, feats, 2, 1, recipe, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    den, vae = wm.forecaster.denoiser, wm.compressor
    window, expected = feats[:, -2:], []
    with torch.no_grad():
        for _ in range(2):
            z = vae.encode(window)
            x = SampleStreams(g, 1, 1).randn((1, 2, 2, 4), torch.device("cpu"), torch.float32)
            for i in range(2):
                x = x + 0.5 * den.velocity(z, x, torch.tensor(i * 0.5).expand(1))
            expected.append(x)
            window = torch.cat([window, vae.decode(x)[:, None]], dim=1)[:, -2:]
    torch.testing.assert_close(roll.latents[0, 0], torch.cat(expected), atol=1e-5, rtol=0)


def test_forecast_released_is_the_model_forecast_with_the_released_recipe():
    wm = _model(max_context=4)
    frames = torch.rand(1, 2, 3, 16, 16)
    a = forecast_released(wm, frames, horizon=1, generator=torch.Generator().manual_seed(0))
    b = wm.forecast(frames, 1, recipe=ReleasedRecipe(), generator=torch.Generator().manual_seed(0))
    assert a.nfe == 9 and torch.equal(a.latents, b.latents)


def test_recipe_sampling_takes_the_speed_options_and_the_size_limit(monkeypatch):
    wm = _model()
    with torch.no_grad():  # a trained-looking denoiser (a fresh one outputs zeros: adaLN-zero)
        for param in wm.forecaster.parameters():
            param.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(param.numel()))
    wm.recipe = SamplingRecipe(steps=2, reencode=True)
    frames = torch.rand(1, 2, 3, 16, 16)
    ref = wm.forecast(frames, 1, 2, generator=torch.Generator().manual_seed(0))
    fast = wm.forecast(frames, 1, 2, generator=torch.Generator().manual_seed(0), precision="bf16")
    assert fast.latents.dtype == torch.float32 and not torch.equal(fast.latents, ref.latents)
    torch.testing.assert_close(fast.latents, ref.latents, atol=0.1, rtol=0.1)
    with pytest.raises(ValueError, match="precision must be one of"):
        wm.forecast(frames, 1, precision="fp8")
    monkeypatch.setattr("featureflow.world.checks.MAX_FORECAST_BYTES", 1000)  # 2x2x4 floats: 64 bytes a frame
    with pytest.raises(ValueError, match=r"num_samples=4 x horizon=4 frames of 16 values\), more than the limit"):
        wm.forecast(frames, 4, 4)
    with pytest.raises(TypeError, match="takes a solver name"):
        wm.forecast(frames, 1, solver=Euler(2), recipe=wm.recipe)
