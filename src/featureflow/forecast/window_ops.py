"""Eager CPU helpers of the causal trunk's sampling fast path
(:func:`~featureflow.forecast.causal_fast.window_step` and
:func:`~featureflow.forecast.causal_fast.frame_step`): fewer elementwise passes, and with
bfloat16 weights the elementwise work in float32 around bfloat16 matmuls.

On this CPU a bfloat16 matmul runs about 6x faster than a float32 one, but bfloat16
elementwise ops run 1.5-2.5x *slower* than float32 ones (no native bf16 arithmetic:
every element is widened and narrowed), and the fused CPU SDPA kernel is no faster in
bfloat16 than in float32. So with a bf16 sampling copy the queries and keys are normalised
and rotated in float32, the MLP's GELU runs in float32, spatial attention is two bf16
matmuls around a softmax, the temporal window attention is two small batched bf16
matmuls around a float32 softmax, and the projections run through oneDNN with prepacked
weights (:func:`linear`). In float32 the temporal window attention runs elementwise
(faster than the fused kernel for one query over m <= 5 keys). ``docs/speed.md``, section
"Overheads of the cached step and append", has the measurements.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["gelu_tanh_", "linear", "modulated_norm", "norm_rotate", "qk_tables", "rms_eps", "spatial_attention",
           "temporal_attention"]

# nn.Linear -> {row range: ((weight ptr, version), prepacked weight)}; not in the module (an
# opaque oneDNN tensor cannot be deep-copied or saved), dropped with the module
_PACKED: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
_PACKING = {"ok": torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")}


def linear(x: Tensor, lin: nn.Linear, start: int = 0) -> Tensor:
    """``F.linear(x, lin.weight[start:], lin.bias[start:])``; for bfloat16 weights on CPU
    through oneDNN with a prepacked copy of the weight (made on first use, remade when the
    weight changes, as ``torch.compile``'s CPU freezing does): 5-25 % faster at the
    denoiser's sizes on this CPU, bit for bit the same output. Anything else (other
    dtypes, weights made under ``torch.inference_mode()``, which have no version counter,
    a PyTorch without oneDNN) takes ``F.linear``."""
    w = lin.weight[start:] if start else lin.weight
    bias = None if lin.bias is None else (lin.bias[start:] if start else lin.bias)
    if w.dtype != torch.bfloat16 or w.device.type != "cpu" or w.is_inference() or not _PACKING["ok"]:
        return F.linear(x, w, bias)
    key = (w.data_ptr(), w._version)
    parts = _PACKED.setdefault(lin, {})
    entry = parts.get(start)
    try:
        if entry is None or entry[0] != key:
            with torch.inference_mode(False), torch.no_grad():
                entry = parts[start] = (key, torch.ops.mkldnn._reorder_linear_weight(w.detach(), x.numel() // x.shape[-1]))
        return torch.ops.mkldnn._linear_pointwise(x, entry[1], bias, "none", [], "")
    except (RuntimeError, NotImplementedError):  # pragma: no cover - a build without these kernels
        _PACKING["ok"] = False
        return F.linear(x, w, bias)


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
    if qk.dtype == torch.float32:
        x = qk * rms_factor(qk, eps)  # contiguous
    else:  # widen first: mixed-dtype products and reductions take slow paths on CPU
        x = qk.float()
        x.mul_(rms_factor(x, eps))
    half = x.shape[-1] // 2
    swapped = torch.cat([x[..., half:], x[..., :half]], dim=-1).mul_(tables[1])
    return swapped.addcmul_(x, tables[0])


def temporal_attention(q: Tensor, keys: Tensor, values: Tensor) -> Tensor:
    """One pre-scaled query per row over a short window; returns (..., H, hd) float32.

    ``q`` (..., H, hd) float32 (softmax scale already applied), ``keys``/``values``
    (..., H, m, hd). Float32 windows: elementwise products and sums. Lower-precision
    windows: batched matmuls in their dtype around a float32 softmax (no widened copy of
    the window). With m <= 5 both beat the fused SDPA kernel on this CPU.
    """
    if keys.dtype != torch.float32:
        scores = torch.matmul(keys, q.to(keys.dtype).unsqueeze(-1)).float()  # (..., H, m, 1)
        weights = torch.softmax(scores, dim=-2).to(values.dtype)
        return torch.matmul(weights.transpose(-1, -2), values).squeeze(-2).float()
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


def modulated_norm(z: Tensor, shift: Tensor, scale1: Tensor) -> Tensor:
    """``layer_norm(z) * scale1 + shift`` (no affine weights of its own, eps 1e-5); one
    fused pass when a single modulation serves every row (LayerNorm's own affine)."""
    d = z.shape[-1]
    if shift.numel() == d and scale1.numel() == d:
        return F.layer_norm(z, (d,), scale1.reshape(d), shift.reshape(d), eps=1e-5)
    return F.layer_norm(z, (d,), eps=1e-5).mul_(scale1).add_(shift)


def rms_eps(attention: nn.Module, like: Tensor) -> float:
    """The RMSNorm epsilon of an attention's queries and keys (``None``: the dtype's eps)."""
    eps = attention.q_norm.eps
    return torch.finfo(like.dtype).eps if eps is None else eps


def gelu_tanh_(x: Tensor) -> Tensor:
    """``F.gelu(x, approximate="tanh")`` computed in place in ``x``, as ``x * sigmoid(2 u)``.

    ``u = sqrt(2/pi) (x + 0.044715 x^3)`` and ``0.5 (1 + tanh(u)) = sigmoid(2 u)``: the
    same function, equal to float rounding (max abs. difference about 5e-7 on unit-scale
    inputs). One temporary instead of PyTorch's output tensor, and about 2x faster on
    this CPU, whose vectorised ``tanh`` is slow (``docs/speed.md``). ``x`` must not be
    needed afterwards (nor require grad). ``2 u = x (a + b x^2)`` takes four passes over
    the data (one ``addcmul``, two products, the sigmoid).

    Example:
        >>> import torch
        >>> x = torch.linspace(-6, 6, 101)
        >>> bool(torch.allclose(gelu_tanh_(x.clone()), F.gelu(x, approximate="tanh"), atol=2e-6))
        True
    """
    a = 1.5957691216057308  # 2 sqrt(2 / pi)
    u = torch.addcmul(x.new_full((), a), x, x, value=a * 0.044715)
    return x.mul_(u.mul_(x).sigmoid_())
