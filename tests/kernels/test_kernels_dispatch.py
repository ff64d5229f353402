"""Kernel dispatch (modes, env variable, context manager), the references' parity with the
denoiser/solver code they replace, and the compile / autocast helpers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from featureflow import kernels as K
from featureflow.kernels import dispatch


@pytest.fixture(autouse=True)
def _clean_mode(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    monkeypatch.delenv(K.COMPILE_ENV_VAR, raising=False)
    K.set_mode(None)
    yield
    K.set_mode(None)


# ------------------------------------------------------------------ modes
def test_default_mode_is_auto_and_env_variable_selects(monkeypatch):
    assert K.get_mode() == "auto"
    monkeypatch.setenv(dispatch.ENV_VAR, "torch")
    assert K.get_mode() == "torch"
    monkeypatch.setenv(dispatch.ENV_VAR, " Triton ")
    assert K.get_mode() == "triton"
    monkeypatch.setenv(dispatch.ENV_VAR, "cuda")
    with pytest.raises(ValueError, match="FEATUREFLOW_KERNELS"):
        K.get_mode()


def test_context_manager_nests_and_overrides_setter_and_env(monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, "auto")
    K.set_mode("torch")
    assert K.get_mode() == "torch"
    with K.use("auto"):
        assert K.get_mode() == "auto"
        with K.use("torch"):
            assert K.get_mode() == "torch"
        assert K.get_mode() == "auto"
    assert K.get_mode() == "torch"
    K.set_mode(None)
    assert K.get_mode() == "auto"
    with pytest.raises(ValueError, match="one of"):
        K.set_mode("fast")
    with pytest.raises(ValueError, match="one of"), K.use("gpu"):
        pass


def test_auto_runs_the_reference_on_cpu(monkeypatch):
    def no_import():
        raise AssertionError("auto mode must not import Triton for CPU tensors")

    monkeypatch.setattr(dispatch, "triton_available", no_import)
    x, shift, scale = torch.randn(2, 3, 8), torch.randn(2, 1, 8), torch.randn(2, 1, 8)
    assert not K.use_triton("adaln_modulate", x, shift, scale)
    y = K.adaln_modulate(x, shift, scale)
    assert torch.equal(y, K.adaln_modulate_ref(x, shift, scale))
    x.requires_grad_(True)
    assert "AdaLN" not in type(K.adaln_modulate(x, shift, scale).grad_fn).__name__


def test_torch_mode_never_uses_triton():
    with K.use("torch"):
        assert not K.use_triton("axpy", torch.zeros(2))


def test_forcing_triton_without_triton_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)
    with pytest.raises(K.KernelUnavailableError, match="not importable"):
        with K.use("triton"):
            pass
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    with pytest.raises(K.KernelUnavailableError, match="FEATUREFLOW_KERNELS"):
        K.axpy(torch.zeros(2), torch.zeros(2), 0.1)
    monkeypatch.setenv(dispatch.ENV_VAR, "auto")  # auto quietly uses the reference
    assert K.axpy(torch.zeros(2), torch.ones(2), 0.5).tolist() == [0.5, 0.5]


def test_bad_inputs_name_what_was_expected():
    with pytest.raises(ValueError, match="shift must broadcast"):
        K.adaln_modulate(torch.zeros(2, 8), torch.zeros(4), torch.zeros(8))
    with pytest.raises(ValueError, match="even head_dim"):
        K.rmsnorm_rope(torch.zeros(2, 3, 7), None, torch.zeros(3, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="q_weight"):
        K.qk_rmsnorm_rope(torch.zeros(3, 8), torch.zeros(3, 8), torch.ones(4), None, torch.ones(3, 4), torch.ones(3, 4))
    with pytest.raises(ValueError, match="head_dim/2"):
        K.rmsnorm_rope(torch.zeros(3, 8), None, torch.ones(3, 3), torch.ones(3, 3))
    with pytest.raises(ValueError, match="dt: expected a scalar"):
        K.axpy(torch.zeros(2), torch.zeros(2), torch.zeros(2))


# ----------------------------------------------- parity with the model code
def test_adaln_reference_is_the_trunks_layernorm_plus_modulate():
    from featureflow.forecast.layers import modulate

    z, shift, scale = torch.randn(2, 3, 4, 16), torch.randn(2, 3, 1, 16), torch.randn(2, 3, 1, 16)
    assert torch.equal(K.adaln_modulate(z, shift, scale), modulate(F.layer_norm(z, (16,)), shift, scale))
    assert torch.equal(
        K.adaln_modulate(z, shift, scale, eps=1e-6), modulate(F.layer_norm(z, (16,), eps=1e-6), shift, scale)
    )


@pytest.mark.parametrize("eps", [1e-6, None])
def test_qk_reference_is_the_causal_arch_qk_norm_and_rope(eps):
    from featureflow.forecast.layers import Attention
    from featureflow.forecast.rope import apply_rope, grid_angles, rope_angles

    att = Attention(16, 2, qk_norm_eps=eps)
    with torch.no_grad():
        att.q_norm.weight.uniform_(0.5, 1.5)
        att.k_norm.weight.uniform_(0.5, 1.5)
    y = torch.randn(2, 3, 6, 16)  # (b, n, hw, d)
    q, k, _ = (u.permute(0, 2, 3, 1, 4) for u in att.qkv(y))  # temporal layout (b, hw, H, n, hd)
    cos, sin = rope_angles(torch.arange(3.0), 8)
    raw_q, raw_k, _ = att.qkv_proj(y).split(16, dim=-1)
    raw_q = raw_q.reshape(2, 3, 6, 2, 8).permute(0, 2, 3, 1, 4)
    raw_k = raw_k.reshape(2, 3, 6, 2, 8).permute(0, 2, 3, 1, 4)
    qr, kr, kn = K.qk_rmsnorm_rope(raw_q, raw_k, att.q_norm.weight, att.k_norm.weight, cos, sin, eps, True)
    assert torch.equal(qr, apply_rope(q, cos, sin)) and torch.equal(kr, apply_rope(k, cos, sin))
    assert torch.equal(kn, k)
    # spatial layout (b, n, H, hw, hd) with 2-D angles
    cos2, sin2 = grid_angles(2, 3, 8)
    qs, ks, _ = (u.transpose(-3, -2) for u in att.qkv(y))
    rq, rk = (u.reshape(2, 3, 6, 2, 8).transpose(-3, -2) for u in att.qkv_proj(y).split(16, dim=-1)[:2])
    qr2, kr2 = K.qk_rmsnorm_rope(rq, rk, att.q_norm.weight, att.k_norm.weight, cos2, sin2, eps)
    assert torch.equal(qr2, apply_rope(qs, cos2, sin2)) and torch.equal(kr2, apply_rope(ks, cos2, sin2))


def test_solver_references_are_the_fixed_step_updates():
    from featureflow.solvers import Euler, Heun

    x, dt, t = torch.randn(2, 3, 3, 4), torch.tensor(0.25), torch.tensor(0.5)

    def fn(tt, xx):
        return torch.sin(xx) * (1 + tt)

    assert torch.equal(Euler(steps=1)._step(fn, t, dt, x), K.axpy(x, fn(t, x), dt))
    k1 = fn(t, x)
    k2 = fn(t + dt, x + dt * k1)
    assert torch.equal(Heun(steps=2)._step(fn, t, dt, x), K.heun_combine(x, k1, k2, dt))
    assert torch.equal(K.axpy(x, k1, dt), x + dt * k1)


# ------------------------------------------------------- compile / autocast
def test_compile_step_is_off_by_default_and_on_by_flag_or_env(monkeypatch):
    def f(x):
        return x + 1

    assert K.compile_step(f) is f
    assert K.compile_step(f, enabled=False) is f
    assert K.compile_step(f, enabled=True, backend="eager") is not f
    monkeypatch.setenv(K.COMPILE_ENV_VAR, "1")
    assert K.compile_step(f, backend="eager") is not f
    monkeypatch.setenv(K.COMPILE_ENV_VAR, "maybe")
    with pytest.raises(ValueError, match="FEATUREFLOW_COMPILE"):
        K.compile_step(f)


def test_graph_breaks_counts_breaks():
    def clean(x):
        return torch.relu(x) * 2

    def broken(x):
        y = x * 2
        torch._dynamo.graph_break()
        return y + 1

    assert K.graph_breaks(clean, torch.randn(3)).graph_break_count == 0
    report = K.graph_breaks(broken, torch.randn(3))
    assert report.graph_break_count == 1 and report.graph_count == 2 and len(report.break_reasons) == 1


def test_sampling_autocast_runs_matmuls_in_bfloat16_and_restores():
    lin = torch.nn.Linear(4, 4)
    with K.sampling_autocast("cpu"):
        assert lin(torch.zeros(1, 4)).dtype == torch.bfloat16
    assert lin(torch.zeros(1, 4)).dtype == torch.float32
    with K.sampling_autocast(torch.device("cpu"), enabled=False):
        assert lin(torch.zeros(1, 4)).dtype == torch.float32


# ------------------------------------------------------------------ sdpa
@pytest.mark.parametrize("mask", [None, "bool"])
def test_sdpa_folds_leading_axes_and_matches_sdpa(mask):
    q = torch.randn(2, 3, 2, 4, 8, requires_grad=True)
    k = torch.randn(2, 3, 2, 4, 8, requires_grad=True)
    v = torch.randn(2, 3, 2, 4, 8, requires_grad=True)
    m = None if mask is None else torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    got = K.sdpa(q, k, v, m)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad(got, (q, k, v), g), torch.autograd.grad(want, (q, k, v), g)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="same number of axes"):
        K.sdpa(q, k[0], v)
