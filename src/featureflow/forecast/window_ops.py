"""Eager CPU helpers of the causal trunk's sampling fast path (:meth:`CausalBlock.window_step`
and :meth:`CausalBlock.frame_step`): fewer elementwise passes, and with bfloat16 weights the
elementwise work in float32 around bfloat16 matmuls.

On this CPU a bfloat16 matmul runs about 6x faster than a float32 one, but bfloat16
elementwise ops run 1.5-2.5x *slower* than float32 ones (no native bf16 arithmetic:
every element is widened and narrowed), and the fused CPU SDPA kernel is no faster in
bfloat16 than in float32. So with a bf16 sampling copy the queries and keys are normalised
and rotated in float32, the MLP's GELU runs in float32, spatial attention is two bf16
matmuls around a softmax, and the temporal window attention runs elementwise in float32
(``docs/speed.md``, "bf16 step").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["norm_rotate", "qk_tables", "spatial_attention", "temporal_attention"]


def qk_tables(q_weight: Tensor | None, k_weight: Tensor | None, cos_full: Tensor, sin_signed: Tensor,
              q_scale: float) -> tuple[Tensor, Tensor]:
    """Float32 rotary tables with the RMSNorm weights (and the queries' softmax scale) folded in.

    ``rotate(norm(x) * w)`` with full-width tables ``c = cos | cos``, ``s = -sin | sin`` is
    ``n x (w c) + swap(n x) (swap(w) s)`` (``n`` the RMS factor, ``swap`` the half swap), so
    one table pair serves both queries and keys: ``(2, 1, hd)`` weights broadcast against
    the tables' leading axes. Returns ``(w c, swap(w) s)``.
    """
    hd = cos_full.shape[-1]
    ones = torch.ones(hd, dtype=torch.float32, device=cos_full.device)
    wq = ones if q_weight is None else q_weight.float()
    wk = ones if k_weight is None else k_weight.float()
    w = torch.stack([wq * q_scale, wk])[:, None]  # (2, 1, hd)
    half = hd // 2
    w_swapped = torch.cat([w[..., half:], w[..., :half]], dim=-1)
    # temporal tables (1, hd) -> (2, 1, hd); spatial tables (hw, 1, 1, hd) -> (hw, 2, 1, hd)
    return cos_full.float() * w, sin_signed.float() * w_swapped


def rms_factor(x: Tensor, eps: float) -> Tensor:
    """``rsqrt(mean(x^2, -1) + eps)`` in float32, (..., 1): one pass over ``x`` (a vector norm)."""
    r = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32)
    return r.square_().div_(x.shape[-1]).add_(eps).rsqrt_()


def norm_rotate(qk: Tensor, eps: float, tables: tuple[Tensor, Tensor]) -> Tensor:
    """RMS-normalised, weighted and rotated queries and keys ``qk`` (..., 2, H, hd), in float32.

    Same value as ``rotate(rms_norm(qk) * weight)`` up to float rounding, in five passes
    over the data (norm, scale, swap, two products) instead of about eleven; ``tables``
    from :func:`qk_tables`. ``qk`` may be a strided view and any floating dtype.
    """
    x = qk * rms_factor(qk, eps)  # float32, contiguous
    half = x.shape[-1] // 2
    swapped = torch.cat([x[..., half:], x[..., :half]], dim=-1).mul_(tables[1])
    return swapped.addcmul_(x, tables[0])


def temporal_attention(q: Tensor, keys: Tensor, values: Tensor) -> Tensor:
    """One pre-scaled query per row over a short window, elementwise in float32.

    ``q`` (..., H, hd) float32 (softmax scale already applied), ``keys``/``values``
    (..., H, m, hd) in any dtype. Returns (..., H, hd) float32. With m <= 5 this beats the
    fused SDPA kernel on this CPU (which in bfloat16 is slower still).
    """
    if keys.dtype != torch.float32:
        keys, values = keys.float(), values.float()
    scores = (keys * q.unsqueeze(-2)).sum(-1, keepdim=True)  # (..., H, m, 1)
    weights = torch.softmax(scores, dim=-2)
    return (values * weights).sum(-2)


def spatial_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Attention of pre-scaled queries ``q`` (b, H, n, hd) over ``k``, ``v`` (b, H, n, hd).

    Float32: the fused SDPA kernel. Lower precision: two matmuls around a softmax (the
    CPU's fused kernel is no faster in bfloat16 than in float32; the matmuls are 6x faster).
    """
    if q.dtype == torch.float32:
        return F.scaled_dot_product_attention(q, k, v, scale=1.0)
    return torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
