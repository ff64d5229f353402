"""Fused adaLN: ``LayerNorm(x) * (1 + scale) + shift`` in one pass over ``x``.

The Triton path reads ``x`` once, keeps the row statistics in registers and reads the
modulation vectors in place (a (b, n, 1, d) shift of (b, n, hw, d) tokens is never
expanded). Its backward is a Triton kernel too (``dx`` in one pass; the shift and scale
gradients are reduced over the broadcast axes with ``sum_to_size``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from featureflow.kernels.dispatch import use_triton
from featureflow.kernels.reference import adaln_modulate_ref
from featureflow.typing import Float

__all__ = ["adaln_modulate"]


def _modulation_views(x_shape: torch.Size, params: tuple[Tensor, ...]) -> tuple[int, list[tuple[Tensor, tuple[int, int, int]]]]:
    """Find a split of the rows into (G, L) such that every param expands to a (G, L, D) *view*.

    Returns ``L`` and, per param, the view's base tensor with its (g, l, d) strides. If no
    split gives views (unusual strides), the params are materialised (a copy).
    """
    lead, d = tuple(x_shape[:-1]), x_shape[-1]
    expanded = [p.expand(x_shape) for p in params]
    for k in range(len(lead) + 1):
        g, l_ = math.prod(lead[:k]), math.prod(lead[k:])
        try:
            views = [e.view(g, l_, d) for e in expanded]
        except RuntimeError:
            continue
        return l_, [(v, (v.stride(0), v.stride(1), v.stride(2))) for v in views]
    rows = math.prod(lead)
    out = []
    for e in expanded:
        v = e.contiguous().view(1, rows, d)
        out.append((v, (v.stride(0), v.stride(1), v.stride(2))))
    return rows, out


class _AdaLNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, shift: Tensor, scale: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        from featureflow.kernels import triton_adaln

        shape = x.shape
        ln_dtype = torch.float32 if (x.is_cuda and torch.is_autocast_enabled("cuda")) else x.dtype
        out_dtype = torch.promote_types(torch.promote_types(ln_dtype, shift.dtype), scale.dtype)
        x2 = x.contiguous().view(-1, shape[-1])
        rows_per_group, ((sh, sh_st), (sc, sc_st)) = _modulation_views(shape, (shift, scale))
        y, rstd = triton_adaln.adaln_forward(x2, sh, sh_st, sc, sc_st, rows_per_group, eps, out_dtype)
        ctx.save_for_backward(x2, sc, rstd)
        ctx.meta = (shape, sc_st, rows_per_group, shift.shape, scale.shape, x.dtype, shift.dtype, scale.dtype)
        return y.view(shape)

    @staticmethod
    def backward(ctx, dy: Tensor):  # type: ignore[override]
        from featureflow.kernels import triton_adaln

        x2, sc, rstd = ctx.saved_tensors
        shape, sc_st, rows_per_group, shift_shape, scale_shape, x_dtype, shift_dtype, scale_dtype = ctx.meta
        dy2 = dy.contiguous().view(x2.shape)
        dx, dyxhat = triton_adaln.adaln_backward(x2, sc, sc_st, dy2, rstd, rows_per_group)
        g_shift = dy.sum_to_size(shift_shape).to(shift_dtype) if ctx.needs_input_grad[1] else None
        g_scale = dyxhat.view(shape).sum_to_size(scale_shape).to(scale_dtype) if ctx.needs_input_grad[2] else None
        g_x = dx.view(shape).to(x_dtype) if ctx.needs_input_grad[0] else None
        return g_x, g_shift, g_scale, None


def adaln_modulate(
    x: Float[Tensor, "*batch d"],
    shift: Float[Tensor, "*#batch d"],
    scale: Float[Tensor, "*#batch d"],
    eps: float = 1e-5,
) -> Float[Tensor, "*batch d"]:
    """LayerNorm over the last axis without affine, then adaLN modulation ``* (1 + scale) + shift``.

    Computes exactly ``modulate(F.layer_norm(x, (d,), eps=eps), shift, scale)``; on CUDA
    with Triton (see :mod:`featureflow.kernels.dispatch`) it runs as one fused kernel,
    forward and backward.

    Args:
        x: (..., d) tokens.
        shift: modulation shift, broadcastable to ``x`` (e.g. (b, n, 1, d) for (b, n, hw, d)).
        scale: modulation scale, broadcastable to ``x``.
        eps: LayerNorm epsilon (the trunks' blocks use 1e-5, their final layers 1e-6).

    Returns:
        (..., d), ``x``'s shape.

    Example:
        >>> import torch
        >>> x, shift, scale = torch.randn(2, 3, 8), torch.zeros(2, 1, 8), torch.zeros(2, 1, 8)
        >>> y = adaln_modulate(x, shift, scale)
        >>> bool(torch.allclose(y, torch.nn.functional.layer_norm(x, (8,))))
        True
    """
    d = x.shape[-1] if x.ndim else 0
    for name, p in (("shift", shift), ("scale", scale)):
        if x.ndim == 0 or p.shape[-1:] != (d,) or p.ndim > x.ndim:
            raise ValueError(
                f"adaln_modulate: {name} must broadcast to x {tuple(x.shape)} with the same last axis; "
                f"got {name} of shape {tuple(p.shape)}"
            )
    try:
        out_shape = torch.broadcast_shapes(x.shape, shift.shape, scale.shape)
    except RuntimeError:
        raise ValueError(
            f"adaln_modulate: shift {tuple(shift.shape)} and scale {tuple(scale.shape)} must broadcast to x "
            f"{tuple(x.shape)}"
        ) from None
    bad = None if out_shape == x.shape else f"shift/scale broadcast x {tuple(x.shape)} up to {tuple(out_shape)}"
    if use_triton("adaln_modulate", x, shift, scale, supported=bad):
        return _AdaLNFunction.apply(x, shift, scale, float(eps))
    return adaln_modulate_ref(x, shift, scale, eps)
