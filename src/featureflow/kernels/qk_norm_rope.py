"""Fused QK RMSNorm + rotary embedding (the causal arch's query/key path).

The causal trunk normalises each head's queries and keys with a learned-weight RMSNorm
and then rotates them (rotate-half pairs). Fused, ``q``/``k`` are read once and written
once; the backward is a Triton kernel as well (rotate back, then the RMSNorm gradient;
the weight gradient is reduced over rows with a sum). The rotary tables are constants:
no gradient flows to ``cos``/``sin``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from featureflow.kernels.dispatch import use_triton
from featureflow.kernels.reference import rmsnorm_ref, rope_ref
from featureflow.typing import Float

__all__ = ["rmsnorm_rope", "qk_rmsnorm_rope"]


class _RMSNormRopeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, cos, sin, eps, store_normed):  # type: ignore[override]
        from featureflow.kernels import triton_qk

        ctx.set_materialize_grads(False)
        shape = x.shape
        npos = shape[-2] if x.ndim >= 2 else 1
        x2 = x.contiguous().view(-1, shape[-1])
        c = cos.detach().to(torch.float32).reshape(-1, cos.shape[-1]).contiguous()
        s = sin.detach().to(torch.float32).reshape(-1, sin.shape[-1]).contiguous()
        w = None if weight is None else weight.contiguous()
        y, normed, rstd = triton_qk.rmsnorm_rope_forward(x2, w, c, s, npos, eps, store_normed)
        ctx.save_for_backward(x2, w, c, s, rstd)
        ctx.meta = (shape, npos, None if weight is None else weight.dtype)
        if normed is None:
            normed = y.new_empty(0)
            ctx.mark_non_differentiable(normed)
        return y.view(shape), normed.view(shape) if normed.numel() else normed

    @staticmethod
    def backward(ctx, dy, dn):  # type: ignore[override]
        from featureflow.kernels import triton_qk

        x2, w, c, s, rstd = ctx.saved_tensors
        shape, npos, w_dtype = ctx.meta
        if dy is None and (dn is None or dn.numel() == 0):
            return None, None, None, None, None, None
        dy2 = None if dy is None else dy.contiguous().view(x2.shape)
        dn2 = None if dn is None or dn.numel() == 0 else dn.contiguous().view(x2.shape)
        dx, dwrow = triton_qk.rmsnorm_rope_backward(x2, w, c, s, npos, rstd, dy2, dn2)
        g_w = dwrow.sum(0).to(w_dtype) if (dwrow is not None and ctx.needs_input_grad[1]) else None
        return dx.view(shape), g_w, None, None, None, None


def _unsupported(x: Tensor, cos: Tensor, sin: Tensor) -> str | None:
    n = x.shape[-2] if x.ndim >= 2 else 1
    rows = cos.reshape(-1, cos.shape[-1]).shape[0]
    if cos.shape != sin.shape:
        return f"cos {tuple(cos.shape)} and sin {tuple(sin.shape)} differ in shape"
    if any(sz != 1 for sz in cos.shape[:-2]) or rows not in (1, n):
        return f"angles must be (n, head_dim/2) or (1, head_dim/2) for x (..., n={n}, head_dim); got {tuple(cos.shape)}"
    if cos.requires_grad or sin.requires_grad:
        return "rotary angles that require grad (the kernel treats them as constants)"
    return None


def rmsnorm_rope(
    x: Float[Tensor, "*batch n hd"],
    weight: Float[Tensor, "hd"] | None,
    cos: Float[Tensor, "*#batch half"],
    sin: Float[Tensor, "*#batch half"],
    eps: float | None = 1e-6,
) -> Float[Tensor, "*batch n hd"]:
    """``apply_rope(F.rms_norm(x, (hd,), weight, eps), cos, sin)`` as one fused kernel where possible.

    Args:
        x: (..., n, head_dim) queries or keys, one head's vector on the last axis.
        weight: the RMSNorm weight (head_dim,) or ``None``.
        cos: rotary cosines (n, head_dim / 2), or (1, head_dim / 2) for one position.
        sin: rotary sines, same shape as ``cos``.
        eps: RMSNorm epsilon; ``None`` means ``torch.finfo(x.dtype).eps`` (as ``nn.RMSNorm``).

    Returns:
        (..., n, head_dim) normalised and rotated.

    Example:
        >>> import torch
        >>> x, w = torch.randn(2, 3, 8), torch.ones(8)
        >>> cos, sin = torch.ones(3, 4), torch.zeros(3, 4)   # angle 0
        >>> bool(torch.allclose(rmsnorm_rope(x, w, cos, sin), torch.nn.functional.rms_norm(x, (8,), w, 1e-6)))
        True
    """
    _check(x, weight, cos, "x", "weight")
    if use_triton("rmsnorm_rope", x, cos, sin, *([] if weight is None else [weight]), supported=_unsupported(x, cos, sin)):
        e = torch.finfo(x.dtype).eps if eps is None else float(eps)
        return _RMSNormRopeFunction.apply(x, weight, cos, sin, e, False)[0]
    return rope_ref(rmsnorm_ref(x, weight, eps), cos, sin)


def qk_rmsnorm_rope(
    q: Float[Tensor, "*batch n hd"],
    k: Float[Tensor, "*kbatch m hd"],
    q_weight: Float[Tensor, "hd"] | None,
    k_weight: Float[Tensor, "hd"] | None,
    cos: Float[Tensor, "*#batch half"],
    sin: Float[Tensor, "*#batch half"],
    eps: float | None = 1e-6,
    return_normed_k: bool = False,
) -> tuple[Tensor, ...]:
    """Normalise and rotate queries and keys: the causal trunk's QK-norm + rotary step.

    Equals ``(apply_rope(q_norm(q), cos, sin), apply_rope(k_norm(k), cos, sin))`` with
    ``q_norm = nn.RMSNorm(head_dim, eps)`` holding ``q_weight`` (same for keys).

    Args:
        q: (..., n, head_dim) queries (e.g. (b, hw, heads, n, head_dim) for temporal
            attention, (b, n, heads, hw, head_dim) for spatial attention).
        k: keys, same layout and positions as ``q``.
        q_weight: the queries' RMSNorm weight (head_dim,) (``None``: no weight).
        k_weight: the keys' RMSNorm weight (head_dim,) (``None``: no weight).
        cos: rotary cosines (n, head_dim / 2) or (1, head_dim / 2).
        sin: rotary sines, same shape as ``cos``.
        eps: RMSNorm epsilon (the causal arch uses 1e-6).
        return_normed_k: also return the normalised keys *before* rotation (what the
            causal arch caches as raw keys).

    Returns:
        ``(q_rot, k_rot)``, or ``(q_rot, k_rot, k_normed)`` with ``return_normed_k``.

    Example:
        >>> import torch
        >>> q, k = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8)
        >>> cos, sin = torch.ones(3, 4), torch.zeros(3, 4)
        >>> qr, kr, kn = qk_rmsnorm_rope(q, k, torch.ones(8), torch.ones(8), cos, sin, return_normed_k=True)
        >>> bool(torch.equal(kr, kn))   # angle 0: rotation is the identity
        True
    """
    _check(q, q_weight, cos, "q", "q_weight")
    _check(k, k_weight, cos, "k", "k_weight")
    tensors = [t for t in (q, k, q_weight, k_weight, cos, sin) if t is not None]
    reason = _unsupported(q, cos, sin) or _unsupported(k, cos, sin)
    if use_triton("qk_rmsnorm_rope", *tensors, supported=reason):
        eq = torch.finfo(q.dtype).eps if eps is None else float(eps)
        ek = torch.finfo(k.dtype).eps if eps is None else float(eps)
        qr = _RMSNormRopeFunction.apply(q, q_weight, cos, sin, eq, False)[0]
        kr, kn = _RMSNormRopeFunction.apply(k, k_weight, cos, sin, ek, return_normed_k)
        return (qr, kr, kn) if return_normed_k else (qr, kr)
    qn, kn = rmsnorm_ref(q, q_weight, eps), rmsnorm_ref(k, k_weight, eps)
    qr, kr = rope_ref(qn, cos, sin), rope_ref(kn, cos, sin)
    return (qr, kr, kn) if return_normed_k else (qr, kr)


def _check(x: Tensor, weight: Tensor | None, cos: Tensor, name: str, wname: str) -> None:
    if x.ndim < 1 or x.shape[-1] % 2:
        raise ValueError(f"{name}: expected (..., n, head_dim) with an even head_dim, got shape {tuple(x.shape)}")
    if weight is not None and tuple(weight.shape) != (x.shape[-1],):
        raise ValueError(f"{wname}: expected shape ({x.shape[-1]},) (head_dim), got {tuple(weight.shape)}")
    if cos.shape[-1] != x.shape[-1] // 2:
        raise ValueError(
            f"cos/sin: expected last axis head_dim/2 = {x.shape[-1] // 2} for {name} {tuple(x.shape)}, got {tuple(cos.shape)}"
        )
