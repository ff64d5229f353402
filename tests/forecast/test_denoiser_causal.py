"""arch="causal": cache equivalence, causality, any grid, init, gradients, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from featureflow.forecast.causal_trunk import context_mask
from featureflow.forecast.denoiser import Denoiser, DenoiserState
from featureflow.typing import ShapeError
from featureflow.utils import build_component

C = 8


def randomised(**kw) -> Denoiser:
    """A small causal denoiser whose zero-initialised layers are given random values."""
    den = Denoiser(latent_dim=C, width=32, depth=2, heads=2, max_context=4, **kw)
    with torch.no_grad():
        for p in den.parameters():
            if bool((p == 0).all()):
                p.normal_(std=0.2)
    return den.eval()


@pytest.fixture(scope="module")
def den() -> Denoiser:
    torch.manual_seed(1)
    return randomised()


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    return float((a - b).abs().max()) <= tol


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_cached_matches_uncached(den, m):
    ctx = torch.randn(2, m, 4, 6, C)
    x, t = torch.randn(2, 4, 6, C), torch.rand(2)
    with torch.no_grad():
        v = den.velocity(ctx, x, t)
        state = den.prefill(ctx)
        assert state.num_frames == m and len(state.keys) == 2
        assert close(den.step(state, x, t), v)
    assert v.abs().mean() > 1e-2  # not trivially zero


def test_cache_after_window_slides(den):
    frames = torch.randn(2, 11, 4, 6, C)
    x = torch.randn(2, 4, 6, C)
    with torch.no_grad():
        state = den.prefill(frames[:, :1])
        for i in range(1, 11):
            state = den.append(state, frames[:, i])
            window = frames[:, max(0, i + 1 - 4) : i + 1]
            assert state.num_frames == window.shape[1] == min(i + 1, 4)
            assert torch.equal(state.frames, window)
            t = torch.rand(2)
            assert close(den.step(state, x, t), den.velocity(window, x, t))
        # the slid cache equals a fresh prefill of the same window (nothing was recomputed)
        fresh = den.prefill(frames[:, -4:])
        for a, b in zip(state.keys + state.values, fresh.keys + fresh.values):
            assert close(a, b, 1e-6)


def test_append_does_not_mutate_old_state(den):
    ctx = torch.randn(1, 4, 3, 3, C)
    with torch.no_grad():
        s0 = den.prefill(ctx)
        keys0 = [k.clone() for k in s0.keys]
        den.append(s0, torch.randn(1, 3, 3, C))
    assert s0.num_frames == 4 and all(torch.equal(a, b) for a, b in zip(s0.keys, keys0))


def test_expand_for_samples(den):
    ctx = torch.randn(2, 3, 4, 4, C)
    x, t = torch.randn(6, 4, 4, C), torch.rand(6)
    with torch.no_grad():
        state = den.prefill(ctx).expand(3)
        assert state.batch_size == 6
        ref = den.velocity(ctx.repeat_interleave(3, dim=0), x, t)
        assert close(den.step(state, x, t), ref)
    with pytest.raises(ShapeError, match="state.expand"):
        den.step(den.prefill(ctx), x, t)


def test_unconditional(den):
    x, t = torch.randn(2, 4, 4, C), torch.rand(2)
    with torch.no_grad():
        v = den.velocity(None, x, t)
        assert close(den.step(den.prefill(None), x, t), v)
        assert close(den.velocity(torch.zeros(2, 0, 4, 4, C), x, t), v)
        assert not close(den.velocity(torch.randn(2, 2, 4, 4, C), x, t), v, 1e-3)
        empty = den.append(den.prefill(None), torch.randn(2, 4, 4, C))
        assert empty.num_frames == 1


def test_temporal_mask_is_causal_and_context_local():
    assert context_mask(4).int().tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 1, 1, 1]]


def test_changing_a_later_frame_leaves_earlier_frames_unchanged(den):
    """Run the blocks on a full window; perturbing frame k changes no frame before it."""
    trunk = den.trunk
    frames = torch.randn(1, 4, 3, 5, C)
    times = torch.tensor([[1.0, 1.0, 1.0, 0.4]])

    def hidden(fr: torch.Tensor) -> list[torch.Tensor]:
        b, n, h, w, _ = fr.shape
        z = trunk.embed_in(fr).reshape(b, n, h * w, -1)
        c = trunk.time_embed(times)
        rope_t, rope_s = trunk._time_rope(n, fr.device), trunk._space_rope(h, w, fr.device)
        out = []
        for block in trunk.blocks:
            z, _, _ = block(z, c, rope_t, rope_s, context_mask(n))
            out.append(z)
        return out

    with torch.no_grad():
        base = hidden(frames)
        for k in range(4):
            changed = frames.clone()
            changed[:, k] += 1.0
            for z0, z1 in zip(base, hidden(changed)):
                assert torch.equal(z0[:, :k], z1[:, :k])
                assert not torch.equal(z0[:, k], z1[:, k])
                assert not torch.equal(z0[:, -1], z1[:, -1])  # the target sees every frame


@pytest.mark.parametrize("grid", [(4, 6), (8, 8), (1, 1), (3, 7)])
def test_any_grid_same_weights(den, grid):
    ctx = torch.randn(1, 3, *grid, C)
    x, t = torch.randn(1, *grid, C), torch.rand(1)
    with torch.no_grad():
        v = den.velocity(ctx, x, t)
        assert v.shape == (1, *grid, C) and bool(torch.isfinite(v).all())
        assert close(den.step(den.prefill(ctx), x, t), v)


def test_adaln_zero_init_outputs_zero_and_gradients_flow():
    den = Denoiser(latent_dim=C, width=32, depth=2, heads=2, cond_dim=3)
    ctx, x, t = torch.randn(2, 2, 3, 3, C), torch.randn(2, 3, 3, C), torch.rand(2)
    cond = torch.randn(2, 3)
    v = den.velocity(ctx, x, t, cond)
    assert torch.equal(v, torch.zeros_like(v))  # adaLN-zero: exact zero at init
    ((v - x) ** 2).mean().backward()
    with_grad = {n for n, p in den.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == {"trunk.final_linear.weight", "trunk.final_linear.bias"}
    # once the zero layers have moved, every parameter receives a gradient
    den = randomised(cond_dim=3).train()
    ((den.velocity(ctx, x, t, cond) - x) ** 2).mean().backward()
    no_grad = [n for n, p in den.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []


def test_cond_changes_only_with_cond_and_is_cached():
    den = randomised(cond_dim=3)
    ctx, x, t = torch.randn(2, 2, 3, 3, C), torch.randn(2, 3, 3, C), torch.rand(2)
    c1, c2 = torch.randn(2, 3), torch.randn(2, 3)
    with torch.no_grad():
        v1 = den.velocity(ctx, x, t, c1)
        assert not close(v1, den.velocity(ctx, x, t, c2), 1e-4)
        assert close(den.step(den.prefill(ctx), x, t, c1), v1)


def test_scalar_time_broadcasts(den):
    ctx, x = torch.randn(2, 2, 3, 3, C), torch.randn(2, 3, 3, C)
    with torch.no_grad():
        assert torch.equal(den.velocity(ctx, x, torch.tensor(0.3)), den.velocity(ctx, x, torch.full((2,), 0.3)))


def test_config_round_trip(den, tmp_path):
    spec = den.describe()
    json.dumps(spec)
    clone = build_component(json.loads(json.dumps(spec)))
    clone.load_state_dict(den.state_dict())
    clone.eval()
    ctx, x, t = torch.randn(1, 2, 3, 3, C), torch.randn(1, 3, 3, C), torch.rand(1)
    with torch.no_grad():
        assert torch.equal(clone.velocity(ctx, x, t), den.velocity(ctx, x, t))
    assert (clone.arch, clone.latent_dim, clone.max_context) == ("causal", C, 4)


def test_bad_input(den):
    x, t = torch.randn(1, 3, 3, C), torch.rand(1)
    with pytest.raises(ShapeError, match=f"latent_dim={C}"):
        den.velocity(None, torch.randn(1, 3, 3, C + 1), t)
    with pytest.raises(ValueError, match="max_context=4"):
        den.velocity(torch.randn(1, 5, 3, 3, C), x, t)
    with pytest.raises(ValueError, match="max_context=4"):
        den.prefill(torch.randn(1, 5, 3, 3, C))
    with pytest.raises(ShapeError, match="expected"):
        den.velocity(torch.randn(1, 3, 3, C), x, t)  # context missing its time axis
    with pytest.raises(ShapeError, match="patch grid"):
        den.step(den.prefill(torch.randn(1, 2, 3, 3, C)), torch.randn(1, 4, 4, C), t)
    with pytest.raises(ValueError, match="without cond_dim"):
        den.velocity(None, x, t, cond=torch.zeros(1, 2))
    with pytest.raises(TypeError, match="Denoiser.step"):
        den.step("state", x, t)
    with pytest.raises(ValueError, match="arch must be one of"):
        Denoiser("dit")
    with pytest.raises(ValueError, match="divisible by 4"):
        Denoiser(width=24, heads=4)
    with pytest.raises(ValueError, match="num_samples"):
        DenoiserState(frames=torch.zeros(1, 1, 1, 1, 1)).expand(0)


def test_inference_mode_then_training():
    """Rotary tables cached under inference_mode must still work with autograd later."""
    den = randomised()
    ctx, x, t = torch.randn(1, 2, 3, 3, C), torch.randn(1, 3, 3, C), torch.rand(1)
    with torch.inference_mode():
        den.step(den.prefill(ctx), x, t)
    den.train()
    den.velocity(ctx, x, t).square().mean().backward()
    assert den.trunk.embed_in.weight.grad is not None
