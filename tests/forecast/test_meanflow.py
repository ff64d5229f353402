"""MeanFlowForecaster and the causal denoiser's interval input (issue 15): values, not just shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from featureflow.forecast import Denoiser, FlowForecaster, MeanFlowForecaster
from featureflow.forecast.rollout import SampleStreams, randn
from featureflow.training import save_forecaster
from featureflow.utils import build_component
from featureflow.utils.component_io import load_component

KW = dict(latent_dim=4, width=16, depth=2, heads=2, max_context=2)


def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-zero weights everywhere (the trunk's zero-initialised layers included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return module


def _flow(residual: bool = False) -> FlowForecaster:
    torch.manual_seed(0)
    scale = [0.5, 1.0, 2.0, 0.25] if residual else None
    return _randomise(FlowForecaster(Denoiser(**KW), "uniform", residual=residual, residual_scale=scale, max_stride=1))


# ------------------------------------------------------------------ interval input
def test_plain_flow_weights_load_into_an_interval_denoiser_with_the_same_outputs_at_any_h():
    plain = _randomise(Denoiser(**KW))
    inter = Denoiser(**KW, interval_cond=True)
    missing = inter.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all("interval_embed" in k for k in missing)
    ctx, x, t = torch.randn(2, 2, 3, 3, 4), torch.randn(2, 3, 3, 4), torch.rand(2)
    ref = plain.velocity(ctx, x, t)
    for h in (torch.zeros(2), torch.rand(2), torch.ones(2)):
        assert torch.equal(inter.velocity(ctx, x, t, h=h), ref)
        assert torch.equal(inter.step(inter.prefill(ctx), x, t, h=h), plain.step(plain.prefill(ctx), x, t))
    clip, xs, ts = torch.randn(2, 3, 3, 3, 4), torch.randn(2, 2, 3, 3, 4), torch.rand(2, 2)
    assert torch.equal(inter.teacher_forced(clip, xs, ts, [1, 2], h=torch.rand(2, 2)),
                       plain.teacher_forced(clip, xs, ts, [1, 2]))


def test_interval_input_changes_outputs_once_trained_and_cached_equals_uncached():
    den = _randomise(Denoiser(**KW, interval_cond=True), seed=1)
    ctx, x, t = torch.randn(2, 2, 3, 3, 4), torch.randn(2, 3, 3, 4), torch.rand(2)
    a, b = den.velocity(ctx, x, t, h=torch.zeros(2)), den.velocity(ctx, x, t, h=torch.full((2,), 0.5))
    assert (a - b).abs().max() > 1e-3
    assert torch.equal(den.velocity(ctx, x, t), a)  # h=None is h=0
    assert torch.allclose(den.step(den.prefill(ctx), x, t, h=torch.full((2,), 0.5)), b, atol=1e-5)
    clip, xs = torch.randn(2, 3, 3, 3, 4), torch.randn(2, 2, 3, 3, 4)
    ts, hs = torch.rand(2, 2), torch.rand(2, 2)
    tf = den.teacher_forced(clip, xs, ts, [1, 2], h=hs)
    assert torch.allclose(tf[:, 1], den.velocity(clip[:, :2], xs[:, 1], ts[:, 1], h=hs[:, 1]), atol=1e-5)


def test_interval_config_is_recorded_only_when_on_and_round_trips():
    plain, inter = Denoiser(**KW), Denoiser(**KW, interval_cond=True)
    assert "interval_cond" not in plain.config and not plain.interval_cond
    assert inter.config["interval_cond"] is True
    assert build_component(inter.describe()).interval_cond and not build_component(plain.describe()).interval_cond


def test_interval_input_errors_name_what_was_expected():
    ctx, x, t = torch.randn(1, 1, 2, 2, 4), torch.randn(1, 2, 2, 4), torch.rand(1)
    with pytest.raises(ValueError, match="interval_cond"):
        Denoiser(**KW).velocity(ctx, x, t, h=torch.rand(1))
    with pytest.raises(ValueError, match="interval_cond"):
        Denoiser(**KW).step(Denoiser(**KW).prefill(ctx), x, t, h=torch.rand(1))
    with pytest.raises(ValueError, match=r"shape \(1,\)"):
        Denoiser(**KW, interval_cond=True).velocity(ctx, x, t, h=torch.rand(3))
    with pytest.raises(ValueError, match="True or False"):
        Denoiser(**KW, interval_cond=1)
    with pytest.raises(TypeError, match="interval_cond"):
        Denoiser("vfmf", grid=(2, 2), **{**KW, "width": 24}, interval_cond=True)


# ------------------------------------------------------------------ MeanFlow loss
@pytest.mark.parametrize("teacher_forcing", [True, False])
def test_h_zero_loss_is_the_flow_matching_loss(teacher_forcing):
    flow = _flow(residual=True)
    flow.teacher_forcing = teacher_forcing
    mf = MeanFlowForecaster.from_flow(flow, flow_ratio=1.0, norm_p=0.0, time_sampling="uniform",
                                      teacher_forcing=teacher_forcing)
    clip = torch.randn(3, 4, 2, 2, 4)
    ref = flow.loss(clip, torch.Generator().manual_seed(5))
    got = mf.loss(clip, torch.Generator().manual_seed(5))
    assert torch.allclose(got, ref, rtol=1e-5) and ref > 0


def test_target_follows_the_meanflow_identity_for_an_analytic_network():
    """u(x, t, h) = x (t + 2h): du/dt along the path (r fixed) = v (t + 2h) + x (1 - 2), so the
    target is v + h (v (t + 2h) - x); the loss (norm_p=0) is the MSE of u to it."""
    mf = MeanFlowForecaster(Denoiser(**KW, interval_cond=True), flow_ratio=0.0, norm_p=0.0, max_stride=1)
    mf.denoiser.teacher_forced = lambda clip, x, t, lengths, cond=None, h=None: x * (t + 2 * h)[..., None, None, None]
    clip = torch.randn(2, 3, 2, 2, 4)
    got = mf.loss_terms(clip, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    c, lengths, _ = mf.draw_targets(clip, g)
    data = c[:, 1:]
    noise = randn(tuple(data.shape), g, data.device, data.dtype)
    t, h = (u.view(2, 2, 1, 1, 1) for u in mf.sample_interval(4, g))
    x = (1 - t) * noise + t * data
    v = data - noise
    u, target = x * (t + 2 * h), v + h * (v * (t + 2 * h) - x)
    keep = mf.trained_targets(lengths)
    assert bool((h > 0).all())
    assert torch.allclose(got["loss"], F.mse_loss(u[:, keep], target[:, keep]), rtol=1e-5)


def test_interval_draws_cover_the_flow_and_grid_fractions():
    den = Denoiser(**KW, interval_cond=True)
    t, h = MeanFlowForecaster(den, flow_ratio=0.25).sample_interval(4000, torch.Generator().manual_seed(0))
    assert bool((t >= 0).all() and (h >= 0).all() and (t + h <= 1).all())
    assert abs(float((h == 0).float().mean()) - 0.25) < 0.03
    t, h = MeanFlowForecaster(den, flow_ratio=0.0, grid_ratio=1.0).sample_interval(300, torch.Generator().manual_seed(0))
    pairs = {(round(float(a), 6), round(float(b), 6)) for a, b in zip(t, h)}
    assert pairs == {(0.0, 1.0), (0.0, 0.5), (0.5, 0.5)}


def test_distillation_trains_the_student_only():
    mf = MeanFlowForecaster.from_flow(_flow(), distill=True, flow_ratio=0.25)
    assert not any("teacher" in k for k in mf.state_dict())
    assert {id(p) for p in mf.parameters()}.isdisjoint(id(p) for p in mf.teacher.parameters())
    loss = mf.loss(torch.randn(2, 3, 2, 2, 4), torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and mf.denoiser.trunk.interval_embed.mlp.fc2.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in mf.teacher.parameters())


# ------------------------------------------------------------------ sampling
def test_one_step_sample_is_z0_plus_u_by_hand_and_two_steps_cost_two_evaluations():
    mf = MeanFlowForecaster.from_flow(_flow(residual=True))
    _randomise(mf.denoiser.trunk.interval_embed, seed=3)
    ctx = torch.randn(2, 2, 3, 3, 4)
    r = mf.rollout(ctx, 1, 3, steps=1, generator=torch.Generator().manual_seed(7))
    z0 = SampleStreams(torch.Generator().manual_seed(7), 2, 3).randn((6, 3, 3, 4), ctx.device, ctx.dtype)
    c = ctx.repeat_interleave(3, 0)
    u = mf.denoiser.velocity(c, z0, torch.zeros(6), h=torch.ones(6))
    by_hand = (z0 + u) * mf.residual_scale + c[:, -1]
    assert r.nfe == 1 and torch.allclose(r.latents[:, :, 0].reshape(6, 3, 3, 4), by_hand, atol=1e-5)
    r2 = mf.rollout(ctx, 1, 3, steps=2, generator=torch.Generator().manual_seed(7))
    half = z0 + 0.5 * mf.denoiser.velocity(c, z0, torch.zeros(6), h=torch.full((6,), 0.5))
    two = half + 0.5 * mf.denoiser.velocity(c, half, torch.full((6,), 0.5), h=torch.full((6,), 0.5))
    assert r2.nfe == 2 and torch.allclose(r2.latents[:, :, 0].reshape(6, 3, 3, 4), two * mf.residual_scale + c[:, -1],
                                          atol=1e-5)


def test_sampling_is_deterministic_from_the_seed():
    mf = MeanFlowForecaster.from_flow(_flow())
    ctx = torch.randn(1, 2, 2, 2, 4)
    a = mf.rollout(ctx, 2, 4, steps=2, generator=torch.Generator().manual_seed(0)).latents
    b = mf.rollout(ctx, 2, 4, steps=2, generator=torch.Generator().manual_seed(0)).latents
    c = mf.rollout(ctx, 2, 2, steps=2, generator=torch.Generator().manual_seed(0)).latents
    d = mf.rollout(ctx, 2, 4, steps=2, generator=torch.Generator().manual_seed(1)).latents
    assert torch.equal(a, b) and torch.allclose(a[:, :2], c, atol=1e-5) and not torch.allclose(a, d)
    assert a.shape == (1, 4, 2, 2, 2, 4)


def test_save_load_round_trip_through_the_component_registry(tmp_path):
    mf = MeanFlowForecaster.from_flow(_flow(residual=True), flow_ratio=0.25)
    _randomise(mf.denoiser.trunk.interval_embed, seed=2)
    save_forecaster(mf, tmp_path)
    back = load_component(tmp_path, "forecaster")
    assert type(back) is MeanFlowForecaster and back.config == mf.config and back.flow_ratio == 0.25
    ctx = torch.randn(1, 2, 2, 2, 4)
    a = mf.rollout(ctx, 2, 2, steps=1, generator=torch.Generator().manual_seed(0)).latents
    assert torch.equal(back.rollout(ctx, 2, 2, steps=1, generator=torch.Generator().manual_seed(0)).latents, a)


def test_bad_input_errors_say_what_was_expected():
    mf = MeanFlowForecaster.from_flow(_flow())
    ctx = torch.randn(1, 2, 2, 2, 4)
    with pytest.raises(ValueError, match="solver must be one of"):
        mf.rollout(ctx, 1, 1, solver="heun")
    with pytest.raises(ValueError, match="steps must be a positive int"):
        mf.rollout(ctx, 1, 1, steps=0)
    with pytest.raises(ValueError, match="guidance"):
        mf.rollout(ctx, 1, 1, guidance=2.0)
    with pytest.raises(ValueError, match="interval_cond=True"):
        MeanFlowForecaster(Denoiser(**KW))
    with pytest.raises(ValueError, match="flow_ratio"):
        MeanFlowForecaster(Denoiser(**KW, interval_cond=True), flow_ratio=1.5)
    with pytest.raises(ValueError, match="grid_ratio"):
        MeanFlowForecaster(Denoiser(**KW, interval_cond=True), grid_ratio=-0.1)
    with pytest.raises(ValueError, match="needs a teacher"):
        MeanFlowForecaster(Denoiser(**KW, interval_cond=True), velocity_target="teacher").loss(torch.randn(1, 3, 2, 2, 4))
    with pytest.raises(ValueError, match="causal denoiser"):
        MeanFlowForecaster.from_flow(FlowForecaster(Denoiser("vfmf", grid=(2, 2), **{**KW, "width": 24})))
    with pytest.raises(ValueError, match="latent channels"):
        mf.rollout(torch.randn(1, 2, 2, 2, 3), 1, 1)
