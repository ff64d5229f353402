"""Flow and regression forecasters: losses, training windows, sampling and rollouts."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from featureflow.forecast import Denoiser, FlowForecaster, RegressionForecaster, Rollout, draw_window
from featureflow.forecast.rollout import SampleStreams
from featureflow.solvers import Euler, Heun
from featureflow.typing import ShapeError
from featureflow.utils import Configurable, build_component, register_component

C, H, W = 3, 2, 3


@dataclass(frozen=True)
class _State:
    frames: torch.Tensor

    def expand(self, n: int) -> "_State":
        return _State(self.frames.repeat_interleave(n, dim=0))


@register_component
class _TinyDenoiser(nn.Module, Configurable):
    """A test double with the Denoiser interface; its velocity depends on the window order."""

    arch = "tiny"

    def __init__(self, latent_dim: int = C, max_context: int = 3) -> None:
        super().__init__()
        self.latent_dim, self.max_context = latent_dim, max_context
        self.config = {"latent_dim": latent_dim, "max_context": max_context}
        self.lx = nn.Linear(latent_dim, latent_dim)
        self.lc = nn.Linear(latent_dim, latent_dim)
        self.lt = nn.Parameter(torch.randn(latent_dim))
        self.null = nn.Parameter(torch.randn(latent_dim))
        self.windows: list[int] = []

    def velocity(self, context, x_t, t):
        if context is None:
            c = self.null.expand_as(x_t)
        else:
            wts = torch.arange(1, context.shape[1] + 1, dtype=x_t.dtype)
            c = (context * wts.view(1, -1, 1, 1, 1)).sum(1) / wts.sum()
        return self.lx(x_t) + self.lc(c) + t.view(-1, 1, 1, 1) * self.lt

    def prefill(self, context):
        return _State(context[:, -self.max_context :])

    def step(self, state, x_t, t):
        self.windows.append(state.frames.shape[1])
        return self.velocity(state.frames, x_t, t)

    def append(self, state, frame):
        return _State(torch.cat([state.frames, frame[:, None]], 1)[:, -self.max_context :])


def tiny_flow(**kw) -> FlowForecaster:
    return FlowForecaster(_TinyDenoiser(), **kw)


def real(max_context: int = 3) -> Denoiser:
    return Denoiser(latent_dim=C, width=16, depth=1, heads=2, max_context=max_context)


# ----------------------------------------------------------------- training windows
def test_draw_window_lengths_strides_and_order():
    T = 9
    clip = torch.arange(T, dtype=torch.float32).view(1, T, 1, 1, 1).expand(4, T, 1, 1, 1).contiguous()
    clip = clip + 100 * torch.arange(4.0).view(4, 1, 1, 1, 1)  # tells clips apart
    g = torch.Generator().manual_seed(0)
    lengths, strides = set(), set()
    for _ in range(300):
        ctx, tgt = draw_window(clip, min_context=1, max_context=4, max_stride=3, generator=g)
        frames = torch.cat([ctx, tgt[:, None]], 1)[..., 0, 0, 0]  # (b, c+1)
        steps = frames[:, 1:] - frames[:, :-1]
        assert bool((steps == steps[0, 0]).all())  # one stride per batch, consecutive in time
        assert bool(((frames // 100) == torch.arange(4.0)[:, None]).all())  # rows stay in their clip
        lengths.add(ctx.shape[1])
        strides.add(int(steps[0, 0]))
    assert lengths == {1, 2, 3, 4} and strides == {1, 2, 3}
    with pytest.raises(ValueError, match="at least min_context \\+ 1 = 3"):
        draw_window(clip[:, :2], min_context=2, max_context=4, max_stride=1)


def test_flow_loss_matches_manual_computation():
    fc = tiny_flow(max_stride=2)
    clip = torch.randn(4, 5, H, W, C)
    loss = fc.loss(clip, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    ctx, data = draw_window(clip, min_context=1, max_context=3, max_stride=2, generator=g)
    noise = torch.randn(data.shape, generator=g)
    t = torch.rand(4, generator=g)
    x_t = (1 - t.view(-1, 1, 1, 1)) * noise + t.view(-1, 1, 1, 1) * data
    expected = F.mse_loss(fc.denoiser.velocity(ctx, x_t, t), data - noise)
    torch.testing.assert_close(loss, expected)
    assert loss.requires_grad


def test_logit_normal_times():
    fc = tiny_flow(time_sampling="logit_normal", logit_std=1.0)
    t = fc.sample_time(20000, torch.Generator().manual_seed(0))
    assert 0 < float(t.min()) and float(t.max()) < 1
    assert abs(float(t.mean()) - 0.5) < 0.01
    assert float(t.var()) < 1 / 12 - 0.02  # more mass in the middle than uniform
    u = tiny_flow().sample_time(20000, torch.Generator().manual_seed(0))
    assert abs(float(u.var()) - 1 / 12) < 0.005


def test_history_dropout_uses_unconditional_velocity():
    clip = torch.randn(6, 4, H, W, C)
    fc = tiny_flow(history_dropout=0.999999)
    fc_none = tiny_flow()
    fc_none.load_state_dict(fc.state_dict())
    calls = []
    orig = fc.denoiser.velocity
    fc.denoiser.velocity = lambda ctx, x, t: calls.append(ctx is None) or orig(ctx, x, t)
    loss = fc.loss(clip, generator=torch.Generator().manual_seed(1))
    assert calls == [True]
    # Same draws without dropout, but the context replaced by None, gives the same loss.
    g = torch.Generator().manual_seed(1)
    _, data = draw_window(clip, min_context=1, max_context=3, max_stride=4, generator=g)
    noise, t = torch.randn(data.shape, generator=g), torch.rand(6, generator=g)
    x_t = (1 - t.view(-1, 1, 1, 1)) * noise + t.view(-1, 1, 1, 1) * data
    torch.testing.assert_close(loss, F.mse_loss(orig(None, x_t, t), data - noise))
    # p = 0.5 mixes both kinds within a batch and stays differentiable.
    fc.history_dropout = 0.5
    calls.clear()
    fc.loss(torch.randn(32, 4, H, W, C), generator=torch.Generator().manual_seed(2)).backward()
    assert sorted(calls) == [False, True]


# ------------------------------------------------------------------------ rollouts
def _reference_rollout(den, context, horizon, s, steps, seed, max_context):
    """Naive rollout: uncached velocity on an explicitly sliced window, Euler."""
    noise = SampleStreams(torch.Generator().manual_seed(seed), context.shape[0], s)  # one stream per sample
    window = context.repeat_interleave(s, 0)[:, -max_context:]
    outs = []
    for _ in range(horizon):
        x = noise.randn((window.shape[0], *window.shape[2:]), torch.device("cpu"), torch.float32)
        for i in range(steps):
            t = torch.full((window.shape[0],), i / steps)
            x = x + (1 / steps) * den.velocity(window, x, t)
        outs.append(x)
        window = torch.cat([window, x[:, None]], 1)[:, -max_context:]
    b = context.shape[0]
    return torch.stack(outs, 1).view(b, s, horizon, *context.shape[2:])


def real_vfmf(max_context: int = 3) -> Denoiser:
    return Denoiser(arch="vfmf", latent_dim=C, width=12, depth=1, heads=2, max_context=max_context, grid=(H, W))


@pytest.mark.parametrize("make", [lambda: _TinyDenoiser(max_context=3), lambda: real(3), lambda: real_vfmf(3)],
                         ids=["double", "causal", "vfmf"])
def test_rollout_equals_naive_reference(make):
    den = make().eval()
    fc = FlowForecaster(den)
    context = torch.randn(2, 2, H, W, C)
    with torch.no_grad():
        ref = _reference_rollout(den, context, horizon=4, s=3, steps=3, seed=7, max_context=3)
    r = fc.rollout(context, 4, num_samples=3, solver="euler", steps=3, generator=torch.Generator().manual_seed(7))
    assert isinstance(r, Rollout) and r.latents.shape == (2, 3, 4, H, W, C)
    assert r.nfe == 3 and r.nfe_per_frame == (3, 3, 3, 3)
    torch.testing.assert_close(r.latents, ref, rtol=1e-5, atol=1e-5)


def test_rollout_prefills_once_and_cache_stays_bounded():
    den = real(2).eval()
    fc = FlowForecaster(den)
    counts = {"prefill": 0, "append": 0}
    sizes = []
    prefill, append = den.prefill, den.append

    def counting_prefill(ctx):
        counts["prefill"] += 1
        return prefill(ctx)

    def recording_append(state, frame):
        counts["append"] += 1
        new = append(state, frame)
        sizes.append((new.num_frames, new.keys[0].shape[-2], new.values[0].shape[-2]))
        return new

    den.prefill, den.append = counting_prefill, recording_append
    r = fc.rollout(torch.randn(2, 1, H, W, C), 6, num_samples=3, steps=2, generator=torch.Generator().manual_seed(0))
    assert r.latents.shape == (2, 3, 6, H, W, C)
    assert counts == {"prefill": 1, "append": 5}  # one prefill; no append after the last frame
    assert sizes == [(2, 2, 2)] * 5  # window and cache hold max_context frames, whatever the horizon


def test_rollout_window_slides_and_long_context_is_truncated():
    den = _TinyDenoiser(max_context=2)
    fc = FlowForecaster(den)
    ctx = torch.randn(1, 5, H, W, C)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = fc.rollout(ctx, 3, solver="euler", steps=2, generator=g()).latents
    b = fc.rollout(ctx[:, -2:], 3, solver="euler", steps=2, generator=g()).latents
    assert torch.equal(a, b)
    assert max(den.windows) == 2  # the window never grows past max_context


def test_sampling_is_deterministic_given_generator_and_samples_differ():
    fc = FlowForecaster(real(2))
    ctx = torch.randn(2, 2, H, W, C)
    s1 = fc.sample(ctx, num_samples=4, solver="heun", steps=3, generator=torch.Generator().manual_seed(5))
    s2 = fc.sample(ctx, num_samples=4, solver=Heun(steps=3), generator=torch.Generator().manual_seed(5))
    s3 = fc.sample(ctx, num_samples=4, solver="heun", steps=3, generator=torch.Generator().manual_seed(6))
    assert s1.shape == (2, 4, H, W, C)
    assert torch.equal(s1, s2) and not torch.allclose(s1, s3)
    assert not torch.allclose(s1[:, 0], s1[:, 1])  # samples of one context differ


def test_guidance():
    den = _TinyDenoiser()
    fc = FlowForecaster(den)
    ctx = torch.randn(1, 2, H, W, C)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    plain = fc.rollout(ctx, 2, solver=Euler(steps=1), generator=gen())
    same = fc.rollout(ctx, 2, solver=Euler(steps=1), generator=gen(), guidance=1.0)
    guided = fc.rollout(ctx, 1, solver=Euler(steps=1), generator=gen(), guidance=2)  # an int is fine
    assert torch.equal(plain.latents, same.latents)
    assert guided.nfe == 2  # conditional + unconditional per ODE step
    x0 = SampleStreams(gen(), 1, 1).randn((1, H, W, C), torch.device("cpu"), torch.float32)
    t0 = torch.zeros(1)
    with torch.no_grad():
        v_c, v_u = den.velocity(ctx, x0, t0), den.velocity(None, x0, t0)
        expected = x0 + v_u + 2.0 * (v_c - v_u)
    torch.testing.assert_close(guided.latents[0, 0, 0], expected[0])


def test_bad_inputs():
    fc = FlowForecaster(real(2))
    with pytest.raises(ValueError, match="latent channels"):
        fc.sample(torch.randn(1, 2, H, W, C + 1))
    with pytest.raises(ValueError, match="horizon"):
        fc.rollout(torch.randn(1, 2, H, W, C), 0)
    with pytest.raises(ShapeError):
        fc.sample(torch.randn(2, H, W, C))
    with pytest.raises(ValueError, match="time_sampling"):
        FlowForecaster(real(), time_sampling="beta")
    with pytest.raises(ValueError, match="multiple of 4"):
        fc.sample(torch.randn(1, 2, H, W, C), solver="rk4", steps=6)
    with pytest.raises(TypeError, match="denoiser must be"):
        FlowForecaster(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="loss must be"):
        RegressionForecaster(real(), loss="l1")


# ---------------------------------------------------------------------- regression
def test_regression_prediction_loss_and_rollout():
    den = real(3).eval()
    fc = RegressionForecaster(den, loss="smooth_l1", teacher_forcing=False)
    clip = torch.randn(3, 5, H, W, C)
    loss = fc.loss(clip, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    ctx, tgt = draw_window(clip, min_context=1, max_context=3, max_stride=4, generator=g)
    pred = den.velocity(ctx, torch.zeros_like(tgt), torch.zeros(3))
    torch.testing.assert_close(loss, F.smooth_l1_loss(pred, tgt))

    context = torch.randn(2, 2, H, W, C)
    r = fc.rollout(context, 3, num_samples=4, solver="heun", steps=8, generator=torch.Generator().manual_seed(0))
    assert r.latents.shape == (2, 4, 3, H, W, C) and r.nfe == 1
    assert torch.equal(r.latents[:, :1].expand_as(r.latents), r.latents)
    with torch.no_grad():  # naive: predict, slide, predict
        window, outs = context, []
        for _ in range(3):
            outs.append(fc.predict(window))
            window = torch.cat([window, outs[-1][:, None]], 1)[:, -3:]
    torch.testing.assert_close(r.latents[:, 0], torch.stack(outs, 1), rtol=1e-5, atol=1e-5)


def test_config_round_trip():
    for fc in (FlowForecaster(real(), time_sampling="logit_normal", history_dropout=0.1, max_stride=2),
               RegressionForecaster(real(), loss="smooth_l1", min_context=2)):
        spec = fc.describe()
        again = build_component(spec)
        assert type(again) is type(fc) and again.config == fc.config
        again.load_state_dict(fc.state_dict())
        ctx = torch.randn(1, 2, H, W, C)
        gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
        assert torch.equal(fc.sample(ctx, 2, generator=gen()), again.sample(ctx, 2, generator=gen()))


def _zeroed(den):
    with torch.no_grad():
        for p in den.parameters():
            p.zero_()
    return den


def test_residual_forecasters_start_from_copy_last_frame():
    from featureflow.forecast import Denoiser, FlowForecaster, RegressionForecaster

    ctx = torch.randn(2, 3, 2, 2, 4)
    reg = RegressionForecaster(_zeroed(Denoiser(latent_dim=4, width=16, depth=1, heads=2, max_context=2)),
                               residual=True)
    out = reg.rollout(ctx, horizon=3).latents
    assert torch.equal(out, ctx[:, -1][:, None, None].expand_as(out))  # zero network = copy the last frame
    flow = FlowForecaster(_zeroed(Denoiser(latent_dim=4, width=16, depth=1, heads=2, max_context=2)),
                          residual=True)
    g = torch.Generator().manual_seed(0)
    x0 = SampleStreams(torch.Generator().manual_seed(0), 2, 1).randn((2, 2, 2, 4), torch.device("cpu"), torch.float32)
    first = flow.rollout(ctx, horizon=1, steps=2, generator=g).latents[:, 0, 0]
    torch.testing.assert_close(first, x0 + ctx[:, -1])  # zero velocity: noise stays, shifted by the last frame
    assert flow.config["residual"] is True and "residual" not in FlowForecaster(flow.denoiser).config


def test_residual_loss_targets_the_change():
    from featureflow.forecast import Denoiser, RegressionForecaster

    clip = torch.randn(2, 3, 2, 2, 4)
    still = clip[:, :1].expand(2, 3, 2, 2, 4).contiguous()  # nothing moves: copy-last is exact
    reg = RegressionForecaster(_zeroed(Denoiser(latent_dim=4, width=16, depth=1, heads=2, max_context=2)),
                               residual=True, max_stride=1)
    assert float(reg.loss(still)) == 0.0
    assert float(reg.loss(clip)) > 0.0


# --------------------------------------------------------------------------- actions
def _action_flow(**kw) -> FlowForecaster:
    torch.manual_seed(0)
    den = Denoiser(latent_dim=C, width=16, depth=1, heads=2, max_context=2, cond_dim=2)
    return FlowForecaster(den, max_stride=1, **kw)


def test_draw_window_returns_the_action_leading_to_the_target():
    T = 6
    clip = torch.arange(T, dtype=torch.float32).view(1, T, 1, 1, 1).expand(3, T, 1, 1, 1).contiguous()
    actions = torch.arange(T - 1, dtype=torch.float32).view(1, T - 1, 1).expand(3, T - 1, 2) + 10 * torch.arange(3.0).view(3, 1, 1)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        ctx, tgt, act = draw_window(clip, min_context=1, max_context=3, max_stride=3, generator=g, actions=actions)
        frames = torch.cat([ctx, tgt[:, None]], 1)[..., 0, 0, 0]
        assert bool((frames[:, 1:] - frames[:, :-1] == 1).all())  # actions force stride 1
        # action i leads from frame i to i + 1: the target's action is indexed by the last context frame
        assert torch.equal(act[:, 0] - 10 * torch.arange(3.0), frames[:, -2])
    with pytest.raises(ValueError, match=r"actions: expected shape \(3, 5, A\)"):
        draw_window(clip, min_context=1, max_context=2, max_stride=1, actions=actions[:, :4])


def test_action_conditioned_rollout_shared_and_per_sample_actions():
    fc = _action_flow(residual=True)
    for p in fc.parameters():  # an untrained trunk outputs zero; make the action matter
        torch.nn.init.normal_(p, std=0.2)
    assert fc.action_dim == 2 and FlowForecaster(Denoiser(latent_dim=C, width=16, depth=1, heads=2)).action_dim is None
    ctx = torch.randn(1, 2, H, W, C)
    a = torch.rand(1, 3, 2) * 2 - 1
    shared = fc.rollout(ctx, 3, 2, steps=2, generator=torch.Generator().manual_seed(1), actions=a).latents
    per = fc.rollout(ctx, 3, 2, steps=2, generator=torch.Generator().manual_seed(1), actions=a[:, None].expand(1, 2, 3, 2)).latents
    assert shared.shape == (1, 2, 3, H, W, C) and torch.equal(shared, per)
    other = fc.rollout(ctx, 3, 2, steps=2, generator=torch.Generator().manual_seed(1), actions=-a).latents
    assert not torch.allclose(shared, other)  # the action changes the forecast
    # one-step sample with (b, A) actions equals the first rollout frame
    first = fc.sample(ctx, 2, steps=2, generator=torch.Generator().manual_seed(1), actions=a[:, 0])
    assert torch.equal(first, shared[:, :, 0])
    with pytest.raises(ValueError, match=r"pass actions of shape \(b, 3, 2\)"):
        fc.rollout(ctx, 3, 2)
    with pytest.raises(ValueError, match=r"actions: expected shape \(1, 3, 2\) or \(1, 2, 3, 2\)"):
        fc.rollout(ctx, 3, 2, actions=torch.zeros(1, 4, 2))
    with pytest.raises(ValueError, match="not action-conditioned"):
        tiny_flow().rollout(torch.randn(1, 2, H, W, C), 1, actions=torch.zeros(1, 1, 2))
    with pytest.raises(ValueError, match="pass the clips' actions"):
        fc.loss(torch.randn(2, 4, H, W, C))


def test_action_conditioned_losses_use_the_action():
    fc = _action_flow()
    clip, actions = torch.randn(4, 4, H, W, C), torch.rand(4, 3, 2)
    for p in fc.parameters():
        torch.nn.init.normal_(p, std=0.2)
    l1 = fc.loss(clip, torch.Generator().manual_seed(0), actions)
    l2 = fc.loss(clip, torch.Generator().manual_seed(0), actions)
    l3 = fc.loss(clip, torch.Generator().manual_seed(0), -actions)
    assert torch.equal(l1, l2) and not torch.allclose(l1, l3)
    den = Denoiser(latent_dim=C, width=16, depth=1, heads=2, max_context=2, cond_dim=2)
    reg = RegressionForecaster(den, max_stride=1, residual=True)
    for p in reg.parameters():
        torch.nn.init.normal_(p, std=0.2)
    assert reg.loss(clip, torch.Generator().manual_seed(0), actions).dim() == 0
    ctx = clip[:1, :2]
    a = torch.rand(1, 2, 2, 2)  # per-sample actions: a deterministic model computes each sample's own future
    out = reg.rollout(ctx, 2, 2, actions=a).latents
    assert torch.allclose(out[:, 0, 0], reg.predict(ctx, a[:, 0, 0]), atol=1e-5)
    assert torch.allclose(out[:, 1, 0], reg.predict(ctx, a[:, 1, 0]), atol=1e-5)
    assert not torch.allclose(out[:, 0], out[:, 1])


# ------------------------------------------------------------------- teacher forcing
def _random_causal(max_context: int = 3, cond_dim: int | None = None) -> Denoiser:
    torch.manual_seed(0)
    den = Denoiser(latent_dim=C, width=16, depth=2, heads=2, max_context=max_context, cond_dim=cond_dim)
    with torch.no_grad():  # leave the zero-initialised adaLN-zero state, so every layer matters
        for p in den.parameters():
            p.normal_(0.0, 0.3)
    return den


def _windows_loss(fc, clip, lengths, x_t, t, target, actions=None):
    """Mean over targets of the one-window velocity's MSE: the reference of teacher forcing."""
    losses = []
    for j, m in enumerate(lengths, start=1):
        if j < fc.min_context:
            continue
        ctx = clip[:, j - m : j] if m else None
        extra = (actions[:, j - 1],) if actions is not None else ()
        v = fc.denoiser.velocity(ctx, x_t[:, j - 1], t[:, j - 1], *extra)
        losses.append(F.mse_loss(v, target[:, j - 1]))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("residual", [False, True])
def test_teacher_forced_flow_loss_equals_the_one_window_losses(residual):
    fc = FlowForecaster(_random_causal(3), max_stride=2, residual=residual, min_context=2)
    clip = torch.randn(3, 7, H, W, C)
    if residual:
        fc.fit_residual_scale(clip)
    loss = fc.loss(clip, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    sub, lengths, _ = fc.draw_targets(clip, g)
    assert all(m == 0 or 2 <= m <= min(j, 3) for j, m in enumerate(lengths, 1)) and lengths[0] == 0
    data = fc.to_target(sub[:, 1:], sub[:, :-1])
    noise = torch.randn(data.shape, generator=g)
    t = fc.sample_time(data.shape[0] * data.shape[1], g).view(data.shape[:2])
    x_t = (1 - t[..., None, None, None]) * noise + t[..., None, None, None] * data
    expected = _windows_loss(fc, sub, lengths, x_t, t, data - noise)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert all(p.grad is not None for p in fc.denoiser.parameters() if p.requires_grad)


def test_teacher_forced_regression_and_action_losses_equal_the_one_window_losses():
    reg = RegressionForecaster(_random_causal(2), max_stride=1, residual=True)
    clip = torch.randn(2, 5, H, W, C)
    loss = reg.loss(clip, generator=torch.Generator().manual_seed(1))
    sub, lengths, _ = reg.draw_targets(clip, torch.Generator().manual_seed(1))
    target = reg.to_target(sub[:, 1:], sub[:, :-1])
    zeros = torch.zeros_like(target)
    torch.testing.assert_close(loss, _windows_loss(reg, sub, lengths, zeros, zeros[..., 0, 0, 0], target))
    # action-conditioned: target j is conditioned on the action leading to it
    act = FlowForecaster(_random_causal(2, cond_dim=2), max_stride=1)
    actions = torch.randn(2, 4, 2)
    loss = act.loss(clip, torch.Generator().manual_seed(2), actions=actions)
    g = torch.Generator().manual_seed(2)
    sub, lengths, acts = act.draw_targets(clip, g, actions)
    noise = torch.randn(sub[:, 1:].shape, generator=g)
    t = act.sample_time(8, g).view(2, 4)
    x_t = (1 - t[..., None, None, None]) * noise + t[..., None, None, None] * sub[:, 1:]
    torch.testing.assert_close(loss, _windows_loss(act, sub, lengths, x_t, t, sub[:, 1:] - noise, acts))
    assert float(act.loss(clip, torch.Generator().manual_seed(2), actions=actions + 1)) != float(loss)


def test_draw_targets_lengths_strides_and_dropout():
    fc = FlowForecaster(_random_causal(3), max_stride=3)
    clip = torch.arange(9.0).view(1, 9, 1, 1, 1).expand(2, 9, H, W, C).contiguous()
    strides, seen = set(), set()
    for seed in range(40):
        sub, lengths, _ = fc.draw_targets(clip, torch.Generator().manual_seed(seed))
        steps = (sub[0, 1:, 0, 0, 0] - sub[0, :-1, 0, 0, 0]).unique()
        assert steps.numel() == 1 and len(lengths) == sub.shape[1] - 1
        strides.add(int(steps))
        assert all(1 <= m <= min(j, 3) for j, m in enumerate(lengths, 1))
        seen.update(lengths)
    assert strides == {1, 2, 3} and seen == {1, 2, 3}
    _, lengths, _ = fc.draw_targets(clip, torch.Generator().manual_seed(0), dropout=0.999999)
    assert set(lengths) == {0}
    with pytest.raises(ValueError, match="at least min_context"):
        fc.draw_targets(clip[:, :1])


def test_teacher_forcing_off_and_vfmf_fall_back_to_one_window():
    off = FlowForecaster(_random_causal(2), max_stride=1, teacher_forcing=False)
    assert off.teacher_forcing is False and off.config["teacher_forcing"] is False
    clip = torch.randn(2, 4, H, W, C)
    g = torch.Generator().manual_seed(0)
    ctx, data = draw_window(clip, min_context=1, max_context=2, max_stride=1, generator=g)
    noise, t = torch.randn(data.shape, generator=g), torch.rand(2, generator=g)
    x_t = (1 - t.view(-1, 1, 1, 1)) * noise + t.view(-1, 1, 1, 1) * data
    expected = F.mse_loss(off.denoiser.velocity(ctx, x_t, t), data - noise)
    torch.testing.assert_close(off.loss(clip, torch.Generator().manual_seed(0)), expected)
    assert FlowForecaster(real_vfmf(2)).teacher_forcing is False
    with pytest.raises(NotImplementedError, match="causal"):
        real_vfmf(2).teacher_forced(clip, clip[:, 1:], torch.rand(2, 3), [1, 1, 1])


def test_residual_scale_round_trip_and_sampling_inverse():
    fc = FlowForecaster(_random_causal(2), residual=True)
    clip = torch.randn(4, 5, H, W, C) * torch.tensor([0.1, 1.0, 3.0])
    scale = fc.fit_residual_scale(clip)
    diff = (clip[:, 1:] - clip[:, :-1]).reshape(-1, C)
    torch.testing.assert_close(scale, diff.pow(2).mean(0).sqrt())
    last, nxt = clip[:, 0], clip[:, 1]
    torch.testing.assert_close(fc.from_target(fc.to_target(nxt, last), last), nxt)
    rebuilt = build_component(fc.describe())
    torch.testing.assert_close(rebuilt.residual_scale, scale, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="positive finite"):
        fc.set_residual_scale(torch.zeros(C))
    with pytest.raises(ValueError, match="residual=True"):
        FlowForecaster(_random_causal(2)).set_residual_scale(torch.ones(C))
    # a zero network samples the source noise scaled back: x = noise * scale + last
    ctx = torch.randn(2, 2, H, W, C)

    def first(scale):
        zero = FlowForecaster(_zeroed(_random_causal(2)), residual=True, residual_scale=scale)
        return zero.rollout(ctx, 1, steps=2, generator=torch.Generator().manual_seed(0)).latents[:, 0, 0]

    unit = first([1.0] * C)
    torch.testing.assert_close(first(scale.tolist()) - ctx[:, -1], (unit - ctx[:, -1]) * scale, atol=1e-5, rtol=1e-5)


def test_context_noise_perturbs_context_only_and_round_trips_in_the_config():
    from featureflow.forecast import Denoiser, FlowForecaster, RegressionForecaster

    torch.manual_seed(0)
    den = Denoiser(latent_dim=4, width=16, depth=1, heads=2, max_context=2)
    fc = RegressionForecaster(den, residual=True, residual_scale=[0.5, 1.0, 2.0, 4.0], context_noise=0.8)
    assert fc.config["context_noise"] == 0.8
    x = torch.zeros(64, 3, 2, 2, 4)
    y = fc.perturb_context(x, torch.Generator().manual_seed(1))
    # one noise level per clip, scaled per channel by the residual scale: std ratio 1:2:4:8
    std = y.std(dim=(0, 1, 2, 3))
    ratios = (std / std[0]).tolist()
    assert ratios == pytest.approx([1.0, 2.0, 4.0, 8.0], rel=0.15)
    # sigma = 0.8 * U(0, 1): the overall std is 0.8 * sqrt(1/3) times the scale
    assert float(std[0]) == pytest.approx(0.5 * 0.8 * (1 / 3) ** 0.5, rel=0.2)
    # off by default: untouched frames, no RNG drawn, nothing in the config
    plain = FlowForecaster(den)
    g = torch.Generator().manual_seed(3)
    assert plain.perturb_context(x, g) is x and torch.equal(g.get_state(), torch.Generator().manual_seed(3).get_state())
    assert "context_noise" not in plain.config
    rebuilt = RegressionForecaster(**fc.config)
    assert rebuilt.context_noise == 0.8
    with pytest.raises(ValueError, match="context_noise"):
        FlowForecaster(den, context_noise=-1.0)


def test_context_noise_trains_on_the_noisy_context_with_residuals_from_it():
    from featureflow.forecast import Denoiser, RegressionForecaster

    torch.manual_seed(0)
    den = Denoiser(latent_dim=4, width=16, depth=1, heads=2, max_context=2)
    fc = RegressionForecaster(den, residual=True, context_noise=0.5, max_stride=1)
    clip = torch.randn(2, 3, 2, 2, 4)
    # the loss equals the teacher-forced loss computed by hand from the same draws
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    loss = fc.loss(clip, g1)
    c, lengths, _ = fc.draw_targets(clip, g2)
    ctx = fc.perturb_context(c, g2)
    target = fc.to_target(c[:, 1:], ctx[:, :-1])
    zeros = torch.zeros_like(target)
    pred = den.teacher_forced(ctx, zeros, zeros.new_zeros(target.shape[:2]), lengths)
    keep = fc.trained_targets(lengths)
    assert float(loss) == pytest.approx(float(((pred[:, keep] - target[:, keep]) ** 2).mean()), rel=1e-5)
