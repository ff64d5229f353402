"""Triton kernels vs their PyTorch references, run by Triton's interpreter on CPU tensors.

Tolerances (the kernels accumulate statistics in float32 in a different order than
PyTorch): float32 outputs ``atol = rtol = 1e-5``, float32 gradients ``atol = 1e-4,
rtol = 1e-4``; bfloat16 outputs ``atol = 3e-2, rtol = 2e-2`` (bf16 has an 8-bit mantissa;
the kernels round once, the references after every op). Sizes are tiny: the interpreter
runs each program in Python.
"""

from __future__ import annotations

import os

# Triton's interpreter must be chosen before Triton is first imported (its own library
# functions are built then). Collection imports this module before any test runs.
os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton", reason="Triton is not installed (pip install featureflow[triton]); kernel tests skipped")

from featureflow import kernels as K  # noqa: E402
from featureflow.kernels import dispatch  # noqa: E402

F32 = dict(atol=1e-5, rtol=1e-5)
F32_GRAD = dict(atol=1e-4, rtol=1e-4)
BF16 = dict(atol=3e-2, rtol=2e-2)


@pytest.fixture(autouse=True)
def _interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    if not K.interpreter_enabled():
        pytest.skip(
            "Triton was imported in this process before TRITON_INTERPRET=1 was set, so its interpreter is off; "
            "run `TRITON_INTERPRET=1 pytest tests/test_kernels_triton.py`"
        )


def _grads(out, inputs, seed=1):
    outs = out if isinstance(out, tuple) else (out,)
    g = torch.Generator().manual_seed(seed)
    gouts = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outs]
    return torch.autograd.grad(outs, inputs, gouts, allow_unused=True)


def _leaf(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype).requires_grad_(True)


# ------------------------------------------------------------------ adaLN
@pytest.mark.parametrize(
    "x_shape, mod_shape, eps",
    [
        ((2, 3, 5, 16), (2, 3, 1, 16), 1e-5),  # causal block: (b, n, hw, d), per-frame modulation
        ((2, 6, 24), (2, 1, 24), 1e-6),  # final layer, d not a power of two
        ((1, 2, 2, 3, 8), (1, 1, 1, 1, 8), 1e-5),  # vfmf block: (b, n, h, w, d), one vector per sample
        ((4, 8), (8,), 1e-5),  # plain broadcast over rows
    ],
)
def test_adaln_forward_backward_matches_reference(x_shape, mod_shape, eps):
    x, shift, scale = _leaf(*x_shape), _leaf(*mod_shape), _leaf(*mod_shape)
    with K.use("triton"):
        y = K.adaln_modulate(x, shift, scale, eps)
    assert "AdaLN" in type(y.grad_fn).__name__  # the kernel ran, not the reference
    y_ref = K.adaln_modulate_ref(x, shift, scale, eps)
    torch.testing.assert_close(y, y_ref, **F32)
    for got, want in zip(_grads(y, (x, shift, scale)), _grads(y_ref, (x, shift, scale))):
        torch.testing.assert_close(got, want, **F32_GRAD)


def test_adaln_reads_chunked_modulation_in_place():
    # the trunks slice shift/scale out of one (b, n, 1, 9d) projection: strided, non-contiguous
    x = _leaf(2, 2, 3, 8)
    mods = _leaf(2, 2, 1, 9 * 8)
    shift, scale = mods.chunk(9, dim=-1)[:2]
    assert not shift.is_contiguous()
    with K.use("triton"):
        y = K.adaln_modulate(x, shift, scale)
    y_ref = K.adaln_modulate_ref(x, shift, scale)
    torch.testing.assert_close(y, y_ref, **F32)
    torch.testing.assert_close(_grads(y, (x, mods))[1], _grads(y_ref, (x, mods))[1], **F32_GRAD)


def test_adaln_bfloat16_forward():
    x, shift, scale = (torch.randn(2, 4, 16).bfloat16() for _ in range(3))
    with K.use("triton"):
        y = K.adaln_modulate(x, shift, scale)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), K.adaln_modulate_ref(x.float(), shift.float(), scale.float()), **BF16)


# ------------------------------------------------------- QK RMSNorm + rope
def _angles(n, half):
    ang = torch.randn(n, half)
    return torch.cos(ang), torch.sin(ang)


@pytest.mark.parametrize(
    "shape, n_angles",
    [
        ((2, 6, 2, 1, 8), 1),  # cached temporal step: (b, hw, heads, 1, hd), one position
        ((1, 2, 2, 6, 8), 6),  # spatial: (b, n, heads, hw, hd), one position per token
        ((2, 3, 12), 3),  # no head axis, head_dim 12 (half 6: not a power of two)
    ],
)
def test_qk_rmsnorm_rope_forward_backward_matches_reference(shape, n_angles):
    q, k = _leaf(*shape), _leaf(*shape)
    qw, kw = _leaf(shape[-1]), _leaf(shape[-1])
    cos, sin = _angles(n_angles, shape[-1] // 2)
    with K.use("triton"):
        out = K.qk_rmsnorm_rope(q, k, qw, kw, cos, sin, 1e-6, return_normed_k=True)
    with K.use("torch"):
        ref = K.qk_rmsnorm_rope(q, k, qw, kw, cos, sin, 1e-6, return_normed_k=True)
    assert "RMSNormRope" in type(out[0].grad_fn).__name__
    for got, want in zip(out, ref):
        torch.testing.assert_close(got, want, **F32)
    for got, want in zip(_grads(out, (q, k, qw, kw)), _grads(ref, (q, k, qw, kw))):
        torch.testing.assert_close(got, want, **F32_GRAD)


def test_rmsnorm_rope_permuted_input_no_weight_machine_eps():
    # the causal trunk permutes (b, n, hw, H, hd) -> (b, hw, H, n, hd): a non-contiguous view
    x = _leaf(1, 2, 3, 2, 8)
    xp = x.permute(0, 2, 3, 1, 4)
    cos, sin = _angles(2, 4)
    with K.use("triton"):
        y = K.rmsnorm_rope(xp, None, cos, sin, eps=None)
    y_ref = K.rmsnorm_rope_ref(xp, None, cos, sin, None)
    torch.testing.assert_close(y, y_ref, **F32)
    torch.testing.assert_close(_grads(y, (x,))[0], _grads(y_ref, (x,))[0], **F32_GRAD)


def test_rmsnorm_rope_gradient_through_normed_keys_only():
    k, kw = _leaf(2, 3, 8), _leaf(8)
    q = torch.randn(2, 3, 8)
    cos, sin = _angles(3, 4)
    with K.use("triton"):
        _, _, kn = K.qk_rmsnorm_rope(q, k, None, kw, cos, sin, return_normed_k=True)
    kn_ref = K.rmsnorm_ref(k, kw, 1e-6)
    torch.testing.assert_close(kn, kn_ref, **F32)
    for got, want in zip(_grads(kn, (k, kw)), _grads(kn_ref, (k, kw))):
        torch.testing.assert_close(got, want, **F32_GRAD)


def test_qk_rmsnorm_rope_bfloat16_forward():
    q, k = torch.randn(2, 4, 8).bfloat16(), torch.randn(2, 4, 8).bfloat16()
    w = torch.rand(8).bfloat16() + 0.5
    cos, sin = _angles(4, 4)
    with K.use("triton"):
        qr, kr = K.qk_rmsnorm_rope(q, k, w, w, cos, sin)
    assert qr.dtype == torch.bfloat16
    qr_ref, kr_ref = (K.rmsnorm_rope_ref(t.float(), w.float(), cos, sin, 1e-6) for t in (q, k))
    torch.testing.assert_close(qr.float(), qr_ref, **BF16)
    torch.testing.assert_close(kr.float(), kr_ref, **BF16)


# ------------------------------------------------------------ solver update
@pytest.mark.parametrize("dt", [0.25, "tensor"])
def test_axpy_and_heun_forward_backward_match_reference(dt):
    x, k1, k2 = _leaf(2, 3, 3, 4), _leaf(2, 3, 3, 4), _leaf(2, 3, 3, 4)
    d = torch.tensor(0.3, requires_grad=True) if dt == "tensor" else dt
    inputs = (x, k1, k2) + ((d,) if dt == "tensor" else ())
    with K.use("triton"):
        a, h = K.axpy(x, k1, d), K.heun_combine(x, k1, k2, d)
    assert "Axpy" in type(a.grad_fn).__name__ and "Heun" in type(h.grad_fn).__name__
    a_ref, h_ref = K.axpy_ref(x, k1, d), K.heun_combine_ref(x, k1, k2, d)
    torch.testing.assert_close(a, a_ref, **F32)
    torch.testing.assert_close(h, h_ref, **F32)
    for got, want in zip(_grads((a, h), inputs), _grads((a_ref, h_ref), inputs)):
        torch.testing.assert_close(got, want, **F32_GRAD)


def test_axpy_mixed_precision_keeps_reference_dtype():
    x, v = torch.randn(3, 5), torch.randn(3, 5).bfloat16()  # float32 state, bf16 velocity (autocast)
    with K.use("triton"):
        y = K.axpy(x, v, torch.tensor(0.1))
    y_ref = K.axpy_ref(x, v, torch.tensor(0.1))
    assert y.dtype == y_ref.dtype == torch.float32
    torch.testing.assert_close(y, y_ref, atol=1e-3, rtol=1e-3)


# ----------------------------------------------------------- forced errors
def test_forced_triton_rejects_unsupported_inputs():
    with K.use("triton"), pytest.raises(ValueError, match="does not broadcast"):
        K.axpy(torch.zeros(2, 3), torch.zeros(3), 0.1)
    with K.use("auto"):  # auto falls back to the reference instead
        assert K.axpy(torch.zeros(2, 3), torch.ones(3), 0.5).sum().item() == 3.0


def test_forced_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with K.use("triton"), pytest.raises(K.KernelUnavailableError, match="TRITON_INTERPRET=1"):
        K.adaln_modulate(torch.zeros(2, 4), torch.zeros(4), torch.zeros(4))


# ------------------------------------------- a causal block through the kernels
def _block_with_kernels(block, z, c, t_rope, s_rope, mask=None, past=None):
    """``CausalBlock.forward`` written with the kernel hooks (the proposed call-site swaps)."""
    import torch.nn.functional as F

    b, n, hw, d = z.shape
    mods = block.ada(F.silu(c)).unsqueeze(2).chunk(9, dim=-1)
    t_shift, t_scale, t_gate, s_shift, s_scale, s_gate, m_shift, m_scale, m_gate = mods

    def project(att, y):
        q, k, v = att.qkv_proj(y).split(att.dim, dim=-1)
        shape = (*y.shape[:-1], att.heads, att.head_dim)
        return q.reshape(shape), k.reshape(shape), v.reshape(shape)

    y = K.adaln_modulate(z, t_shift, t_scale)
    q, k, v = (u.permute(0, 2, 3, 1, 4) for u in project(block.temporal, y))
    qr, kr, k = K.qk_rmsnorm_rope(
        q, k, block.temporal.q_norm.weight, block.temporal.k_norm.weight, *t_rope, eps=1e-6, return_normed_k=True
    )
    if past is not None:
        kr, vv = torch.cat([past[0], kr], dim=-2), torch.cat([past[1], v], dim=-2)
    else:
        vv = v
    att = block.temporal.attend(qr, kr, vv, mask)
    z = z + t_gate * block.temporal.out(att.permute(0, 3, 1, 2, 4))
    y = K.adaln_modulate(z, s_shift, s_scale)
    qs, ks, vs = (u.transpose(-3, -2) for u in project(block.spatial, y))
    qs, ks = K.qk_rmsnorm_rope(qs, ks, block.spatial.q_norm.weight, block.spatial.k_norm.weight, *s_rope, eps=1e-6)
    z = z + s_gate * block.spatial.out(block.spatial.attend(qs, ks, vs).transpose(-3, -2))
    y = K.adaln_modulate(z, m_shift, m_scale)
    return z + m_gate * block.mlp(y), k, v


def test_causal_block_through_the_kernels_matches_the_block():
    from featureflow.forecast.causal_trunk import CausalBlock, context_mask
    from featureflow.forecast.rope import grid_angles, rope_angles

    block = CausalBlock(16, 2, 32, 0.0).eval()
    with torch.no_grad():  # adaLN-zero init would make every sub-block the identity
        for prm in block.parameters():
            prm.normal_(0.0, 0.2)
    z, c = torch.randn(1, 3, 4, 16), torch.randn(1, 3, 16)
    t_rope = rope_angles(torch.arange(3.0), 8)
    s_rope = grid_angles(2, 2, 8)
    want = block(z, c, t_rope, s_rope, context_mask(3))
    with K.use("torch"):
        same = _block_with_kernels(block, z, c, t_rope, s_rope, context_mask(3))
    for got, ref in zip(same, want):
        assert torch.equal(got, ref)  # the reference path is bit-identical
    with K.use("triton"):
        fused = _block_with_kernels(block, z, c, t_rope, s_rope, context_mask(3))
    for got, ref in zip(fused, want):
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
