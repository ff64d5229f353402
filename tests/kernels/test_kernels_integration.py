"""The denoiser and solvers routed through ``featureflow.kernels``: same numbers on every path.

* the PyTorch path (``use("torch")``, and ``"auto"`` on CPU) is bit-identical to the
  unfused expressions the call sites used before (LayerNorm + modulate, RMSNorm + rotary,
  ``x + dt * v``);
* the Triton kernels, forced on CPU tensors through Triton's interpreter, agree with it
  to float32 tolerance (skipped with a reason when Triton or its interpreter is missing).
"""

from __future__ import annotations

import os

# Triton's interpreter must be chosen before Triton is first imported (see test_kernels_triton.py).
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from featureflow import kernels as K  # noqa: E402
from featureflow.forecast.causal_trunk import CausalBlock, context_mask  # noqa: E402
from featureflow.forecast.denoiser import Denoiser  # noqa: E402
from featureflow.forecast.layers import Attention, modulate  # noqa: E402
from featureflow.forecast.rope import apply_rope, grid_angles, rope_angles  # noqa: E402
from featureflow.kernels import dispatch  # noqa: E402
from featureflow.solvers import Euler, Heun, Midpoint  # noqa: E402

C = 4


@pytest.fixture(autouse=True)
def _default_kernels(monkeypatch: pytest.MonkeyPatch):
    """The kernel choice of the environment does not leak in (one thread: conftest)."""
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)


def _randomised(seed: int = 0) -> Denoiser:
    """A tiny causal denoiser whose adaLN-zero layers get random values (else v == 0)."""
    torch.manual_seed(seed)
    den = Denoiser(latent_dim=C, width=16, depth=2, heads=2, max_context=3)
    with torch.no_grad():
        for p in den.parameters():
            if bool((p == 0).all()):
                p.normal_(std=0.2)
    return den.eval()


def _inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randn(2, 2, 2, 3, C, generator=g)
    x_t = torch.randn(2, 2, 3, C, generator=g)
    return ctx, x_t, torch.tensor([0.3, 0.7])


def _velocity_and_step(den: Denoiser) -> tuple[torch.Tensor, torch.Tensor]:
    ctx, x_t, t = _inputs()
    with torch.no_grad():
        return den.velocity(ctx, x_t, t), den.step(den.prefill(ctx), x_t, t)


def _unfused_block(block: CausalBlock, z, c, t_rope, s_rope, mask):
    """``CausalBlock.forward`` as written before the kernels: LayerNorm + modulate, qkv(), apply_rope."""
    d = z.shape[-1]
    mods = block.ada(F.silu(c)).unsqueeze(2).chunk(9, dim=-1)
    t_shift, t_scale, t_gate, s_shift, s_scale, s_gate, m_shift, m_scale, m_gate = mods
    y = modulate(F.layer_norm(z, (d,)), t_shift, t_scale)
    q, k, v = (u.permute(0, 2, 3, 1, 4) for u in block.temporal.qkv(y))
    att = block.temporal.attend(apply_rope(q, *t_rope), apply_rope(k, *t_rope), v, mask)
    z = z + t_gate * block.temporal.out(att.permute(0, 3, 1, 2, 4))
    y = modulate(F.layer_norm(z, (d,)), s_shift, s_scale)
    qs, ks, vs = (u.transpose(-3, -2) for u in block.spatial.qkv(y))
    att = block.spatial.attend(apply_rope(qs, *s_rope), apply_rope(ks, *s_rope), vs)
    z = z + s_gate * block.spatial.out(att.transpose(-3, -2))
    y = modulate(F.layer_norm(z, (d,)), m_shift, m_scale)
    return z + m_gate * block.mlp(y), k, v


# ------------------------------------------------------------ PyTorch path
def test_attention_project_then_norms_is_qkv():
    att = Attention(16, 2, qk_norm_eps=1e-6)
    with torch.no_grad():
        att.q_norm.weight.uniform_(0.5, 1.5)
        att.k_norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 5, 16)
    q, k, v = att.project(x)
    assert q.shape == k.shape == v.shape == (2, 5, 2, 8)
    q2, k2, v2 = att.qkv(x)
    assert torch.equal(att.q_norm(q), q2) and torch.equal(att.k_norm(k), k2) and torch.equal(v, v2)
    assert not torch.equal(q, q2)  # project() really skips the norm


def test_causal_block_is_bit_identical_to_the_unfused_expressions():
    block = CausalBlock(16, 2, 32, 0.0).eval()
    with torch.no_grad():
        for prm in block.parameters():
            prm.normal_(0.0, 0.2)
    z, c = torch.randn(1, 3, 6, 16), torch.randn(1, 3, 16)
    t_rope, s_rope = rope_angles(torch.arange(3.0), 8), grid_angles(2, 3, 8)
    want = _unfused_block(block, z, c, t_rope, s_rope, context_mask(3))
    got = block(z, c, t_rope, s_rope, context_mask(3))
    for a, b in zip(got, want):
        assert torch.equal(a, b)


def test_denoiser_default_mode_on_cpu_is_bitwise_the_torch_path():
    den = _randomised()
    assert K.get_mode() == "auto"
    v_auto, s_auto = _velocity_and_step(den)
    with K.use("torch"):
        v_torch, s_torch = _velocity_and_step(den)
    assert float(v_auto.abs().max()) > 0  # a non-trivial velocity
    assert torch.equal(v_auto, v_torch) and torch.equal(s_auto, s_torch)
    torch.testing.assert_close(s_auto, v_auto, atol=1e-5, rtol=1e-5)  # cached == uncached


@pytest.mark.parametrize("solver", [Euler(steps=3, shift=2.0), Heun(steps=5), Midpoint(steps=4)])
def test_solvers_through_the_kernels_match_the_plain_updates(solver):
    def fn(t, x):
        return torch.sin(x) * (1 + t)

    x0 = torch.randn(2, 3, 4)
    ts = torch.linspace(0, 1, 3)  # a reference Heun interval written out by hand
    dt = ts[1] - ts[0]
    k1 = fn(ts[0], x0)
    k2 = fn(ts[0] + dt, x0 + dt * k1)
    assert torch.equal(Heun(grid=[0.0, 0.5, 1.0])._step(fn, ts[0], dt, x0), x0 + dt * 0.5 * (k1 + k2))
    with K.use("torch"):
        ref = solver.integrate(fn, x0)
    got = solver.integrate(fn, x0)
    assert got.nfe == ref.nfe == solver.steps
    assert torch.equal(got.x, ref.x)


# ------------------------------------------- Triton kernels (interpreter, CPU)
def _need_interpreter() -> None:
    pytest.importorskip("triton", reason="Triton is not installed; forced-Triton integration checks skipped")
    if not K.interpreter_enabled():
        pytest.skip(
            "Triton was imported before TRITON_INTERPRET=1 was set, so its interpreter is off; "
            "run `TRITON_INTERPRET=1 pytest tests/test_kernels_integration.py`"
        )


def test_denoiser_through_forced_triton_kernels_matches_torch():
    _need_interpreter()
    den = _randomised()
    with K.use("torch"):
        v_ref, s_ref = _velocity_and_step(den)
    with K.use("triton"):  # adaLN and QK-norm + rotary kernels, interpreted on CPU tensors
        v_tri, s_tri = _velocity_and_step(den)
    torch.testing.assert_close(v_tri, v_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s_tri, s_ref, atol=1e-5, rtol=1e-5)


def test_heun_through_forced_triton_kernels_matches_torch():
    _need_interpreter()

    def fn(t, x):
        return torch.cos(x) * (1 + t)

    x0 = torch.randn(2, 3, 4)
    with K.use("torch"):
        ref = Heun(steps=3).integrate(fn, x0).x
    with K.use("triton"):
        got = Heun(steps=3).integrate(fn, x0).x
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)
