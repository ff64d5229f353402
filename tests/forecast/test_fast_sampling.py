"""The sampling fast path: K/V windows with a scratch slot, bf16 weight copies, compile."""

from __future__ import annotations

import pytest
import torch

from featureflow.forecast import Denoiser, FlowForecaster
from featureflow.kernels import window_attention
from featureflow.world.sampling_speed import sampling_forecaster

C = 8


def randomised() -> Denoiser:
    torch.manual_seed(3)
    den = Denoiser(latent_dim=C, width=32, depth=2, heads=2, max_context=3)
    with torch.no_grad():
        for p in den.parameters():
            if bool((p == 0).all()):
                p.normal_(std=0.2)
    return den.eval()


def test_window_step_equals_concatenating_step_and_keeps_the_cache():
    den = randomised()
    ctx, x, t = torch.randn(2, 3, 4, 5, C), torch.randn(2, 4, 5, C), torch.rand(2)
    with torch.no_grad():
        state = den.prefill(ctx)
        keys = [k.clone() for k in state.keys]
        assert state.key_window[0].shape[-2] == 4 and state.keys[0].data_ptr() == state.key_window[0].data_ptr()
        fast = den.step(state, x, t)
        slow = den.trunk.step(state.keys, state.values, x, t)
        torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(fast, den.velocity(ctx, x, t), atol=1e-5, rtol=1e-5)
        assert all(torch.equal(a, b) for a, b in zip(keys, state.keys))  # only the scratch slot is written
        big = state.expand(3)
        assert big.keys[0].data_ptr() == big.key_window[0].data_ptr()
        torch.testing.assert_close(den.step(big, x.repeat_interleave(3, 0), t.repeat_interleave(3, 0))[::3], fast,
                                   atol=1e-6, rtol=1e-6)


def test_inference_state_used_outside_inference_mode_falls_back():
    den = randomised()
    ctx, x, t = torch.randn(1, 2, 3, 3, C), torch.randn(1, 3, 3, C), torch.rand(1)
    with torch.inference_mode():
        state = den.prefill(ctx)
        want = den.step(state, x, t)
    with torch.no_grad():
        torch.testing.assert_close(den.step(state, x, t), want, atol=1e-6, rtol=1e-6)


def test_window_attention_matches_sdpa_and_rejects_many_queries():
    q, k, v = torch.randn(3, 2, 1, 8), torch.randn(3, 2, 5, 8), torch.randn(3, 2, 5, 8)
    import featureflow.kernels.attention as attention

    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    old = attention.SMALL_ATTENTION_ELEMENTS
    try:
        attention.SMALL_ATTENTION_ELEMENTS = 1 << 30  # the elementwise form
        torch.testing.assert_close(window_attention(q, k, v), ref, atol=1e-6, rtol=1e-5)
    finally:
        attention.SMALL_ATTENTION_ELEMENTS = old
    with pytest.raises(ValueError, match="q \\(..., heads, 1, hd\\)"):
        window_attention(torch.randn(3, 2, 2, 8), k, v)


def test_bf16_sampling_copy_is_fp32_in_and_out_and_close():
    den = randomised()
    fast = den.sampling_copy(torch.bfloat16)
    assert den.weight_dtype == torch.float32 and fast.weight_dtype == torch.bfloat16
    ctx, x, t = torch.randn(2, 3, 4, 4, C), torch.randn(2, 4, 4, C), torch.rand(2)
    with torch.no_grad():
        want = den.velocity(ctx, x, t)
        state = fast.append(fast.prefill(ctx[:, :2]), ctx[:, 2])
        got = fast.step(state, x, t)
        assert got.dtype == torch.float32 and state.frames.dtype == torch.float32
        assert float((got - want).norm() / want.norm()) < 0.05
        assert fast.velocity(ctx, x, t).dtype == torch.float32


def test_forecaster_options_bf16_copy_is_cached_and_refreshed():
    fc = FlowForecaster(randomised())
    assert sampling_forecaster(fc) is fc
    a = sampling_forecaster(fc, "bf16")
    assert a is sampling_forecaster(fc, "bf16") and a.denoiser.weight_dtype == torch.bfloat16
    with torch.no_grad():
        next(fc.parameters()).add_(1.0)  # new weights: a new copy
    assert sampling_forecaster(fc, "bf16") is not a
    with pytest.raises(ValueError, match="precision must be one of"):
        sampling_forecaster(fc, "fp8")
    g = torch.Generator().manual_seed(0)
    ctx = torch.randn(1, 2, 3, 3, C)
    r32 = fc.rollout(ctx, 2, 2, "heun", 2, generator=torch.Generator().manual_seed(0))
    r16 = sampling_forecaster(fc, "bf16").rollout(ctx, 2, 2, "heun", 2, generator=g)
    assert r16.latents.dtype == torch.float32
    assert float((r16.latents - r32.latents).norm() / r32.latents.norm()) < 0.05


def test_compiled_step_matches_eager():
    den = randomised()
    ctx, x, t = torch.randn(1, 2, 3, 3, C), torch.randn(1, 3, 3, C), torch.rand(1)
    with torch.no_grad():
        state = den.prefill(ctx)
        want = den.step(state, x, t)
        den.compile_sampling(backend="eager")  # traced by Dynamo, run without code generation
        try:
            assert den.sampling_compiled
            torch.testing.assert_close(den.step(state, x, t), want, atol=1e-6, rtol=1e-6)
        finally:
            den.compile_sampling(False)
    assert not den.sampling_compiled


def test_forecast_decodes_in_chunks_without_keeping_large_outputs(monkeypatch):
    from featureflow.compressors import Identity
    from featureflow.encoders import PixelPatchEncoder
    from featureflow.probes import PixelPatchRGBHead
    from featureflow.world import Forecast, WorldModel

    fc = FlowForecaster(Denoiser(latent_dim=48, width=16, depth=1, heads=2))
    wm = WorldModel(PixelPatchEncoder(4), Identity(48), fc, {"rgb": PixelPatchRGBHead(4)})
    f = wm.forecast(torch.rand(1, 2, 3, 16, 16), horizon=5, num_samples=3, generator=torch.Generator().manual_seed(0))
    want = wm.decode_latents(f.latents, "rgb")
    monkeypatch.setattr(Forecast, "chunk", 4)  # 15 images in chunks of 4
    monkeypatch.setattr(Forecast, "cache_bytes", 0)  # keep nothing
    rgb = f.decode("rgb")
    torch.testing.assert_close(rgb, want)
    assert "decode:rgb" not in f._cache and "features" not in f._cache
    torch.testing.assert_close(f.decode("rgb", steps=[1, 3]), want[:, :, [1, 3]])
    torch.testing.assert_close(f.decode("rgb", steps=-1), want[:, :, -1:])
    unc = f.uncertainty("rgb")
    torch.testing.assert_close(unc["mean"], want.mean(dim=1))
    with pytest.raises(IndexError, match="out of range"):
        f.decode("rgb", steps=5)
    monkeypatch.setattr(Forecast, "cache_bytes", 8 * 2**20)
    assert f.decode("rgb") is f.decode("rgb")  # small outputs are kept


def test_world_model_forecast_precision_and_compile_options():
    from featureflow.compressors import Identity
    from featureflow.encoders import PixelPatchEncoder
    from featureflow.probes import PixelPatchRGBHead
    from featureflow.world import WorldModel

    torch.manual_seed(0)
    fc = FlowForecaster(Denoiser(latent_dim=48, width=16, depth=1, heads=2))
    wm = WorldModel(PixelPatchEncoder(4), Identity(48), fc, {"rgb": PixelPatchRGBHead(4)})
    frames = torch.rand(1, 2, 3, 16, 16)
    a = wm.forecast(frames, 2, 2, generator=torch.Generator().manual_seed(0))
    b = wm.forecast(frames, 2, 2, generator=torch.Generator().manual_seed(0), precision="bf16")
    assert b.latents.dtype == torch.float32 and wm.forecaster.denoiser.weight_dtype == torch.float32
    torch.testing.assert_close(b.latents, a.latents, atol=0.05, rtol=0.05)
    with pytest.raises(ValueError, match="precision must be one of"):
        wm.forecast(frames, 1, precision="half")
    try:
        assert sampling_forecaster(fc, compile=True) is fc and fc.denoiser.sampling_compiled
    finally:
        fc.denoiser.compile_sampling(False)


def test_eager_fast_window_step_matches_the_blockwise_step_and_falls_back_with_grad(monkeypatch):
    from featureflow.forecast.causal_trunk import CausalTrunk
    from featureflow.forecast.window_ops import gelu_tanh_

    x = torch.linspace(-8, 8, 401)
    want = torch.nn.functional.gelu(x, approximate="tanh")
    torch.testing.assert_close(gelu_tanh_(x.clone()), want, atol=2e-6, rtol=0)
    den = randomised()
    ctx, x, t = torch.randn(2, 3, 4, 5, C), torch.randn(2, 4, 5, C), torch.rand(2)
    with torch.no_grad():
        state = den.prefill(ctx)
        assert den.trunk._fast_window(x, t)
        fast = den.step(state, x, t)
        fast_kv = [w[..., -1, :].clone() for w in state.key_window + state.value_window]
        monkeypatch.setattr(CausalTrunk, "_fast_window", lambda self, *a: False)
        slow = den.step(state, x, t)
        slow_kv = [w[..., -1, :].clone() for w in state.key_window + state.value_window]
        monkeypatch.undo()
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-6)
    for a, b in zip(fast_kv, slow_kv):  # the scratch slots hold the same rotated keys and values
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    # the stacked modulation follows weight updates
    with torch.no_grad():
        den.trunk.blocks[1].ada.bias.add_(0.1)
        want = den.velocity(ctx, x, t)
        torch.testing.assert_close(den.step(den.prefill(ctx), x, t), want, atol=1e-5, rtol=1e-5)
    # with grad (training, or inputs that require grad) the blockwise step runs
    assert not den.trunk._fast_window(x.requires_grad_(), t)
    assert not den.trunk._fast_window(x.detach(), t)  # the weights require grad
    den.train()  # no dropout: train mode samples the same way
    with torch.no_grad():
        assert den.trunk._fast_window(x.detach(), t)
    dropped = Denoiser(latent_dim=C, width=32, depth=1, heads=2, dropout=0.1).train()
    with torch.no_grad():
        assert not dropped.trunk._fast_window(x.detach(), t)


def test_window_step_accepts_weights_made_under_inference_mode():
    """Weights created under torch.inference_mode() carry no version counter: the stacked
    adaLN weights are rebuilt every call instead of cached, with the same result."""
    from featureflow.forecast import Denoiser

    torch.manual_seed(0)
    ref = Denoiser(latent_dim=4, width=32, depth=2, heads=2, max_context=2).eval()
    with torch.inference_mode():
        inf = Denoiser(latent_dim=4, width=32, depth=2, heads=2, max_context=2).eval()
        inf.load_state_dict(ref.state_dict())
        ctx, x, t = torch.randn(2, 2, 2, 2, 4), torch.randn(2, 2, 2, 4), torch.rand(2)
        got = inf.step(inf.prefill(ctx), x, t)
    with torch.no_grad():
        want = ref.step(ref.prefill(ctx.clone()), x.clone(), t.clone())
    assert torch.allclose(got, want, atol=1e-5)


def test_packed_bf16_linear_equals_f_linear_and_follows_weight_updates():
    from featureflow.forecast.window_ops import linear

    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 48).to(torch.bfloat16)
    x = torch.randn(2, 5, 32).to(torch.bfloat16)
    with torch.no_grad():
        for start in (0, 16):
            want = torch.nn.functional.linear(x, lin.weight[start:], lin.bias[start:])
            torch.testing.assert_close(linear(x, lin, start), want, atol=0, rtol=0)
        lin.weight.add_(1.0)  # a changed weight is packed again
        torch.testing.assert_close(linear(x, lin), lin(x), atol=0, rtol=0)
        fp32 = torch.nn.Linear(32, 48)
        torch.testing.assert_close(linear(x.float(), fp32), fp32(x.float()), atol=0, rtol=0)


def test_bf16_copy_made_under_inference_mode_holds_ordinary_tensors():
    den = randomised()
    with torch.inference_mode():
        fast = den.sampling_copy(torch.bfloat16)
    assert not any(p.is_inference() for p in fast.parameters())
    ctx, x, t = torch.randn(1, 3, 4, 4, C), torch.randn(1, 4, 4, C), torch.rand(1)
    with torch.no_grad():
        want = den.velocity(ctx, x, t)
        got = fast.step(fast.prefill(ctx), x, t)
    assert float((got - want).norm() / want.norm()) < 0.05
