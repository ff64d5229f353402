"""Attention on (..., heads, n, head_dim) tensors through PyTorch's fused SDPA kernels.

``F.scaled_dot_product_attention`` only takes its fused (flash) CPU kernel for 4-D
inputs; the trunks call it on 5-D tensors ((b, hw, heads, n, hd) for temporal attention,
(b, n, heads, hw, hd) for spatial attention), which silently selects the unfused math
path (``bmm`` + ``_safe_softmax`` + masks). Folding the leading axes into one batch axis
gives the same result through the fused kernel: 4-8x faster on this CPU at denoiser
sizes (see ``docs/kernels.md``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

import torch

from featureflow.typing import Float

__all__ = ["sdpa", "window_attention", "SMALL_ATTENTION_ELEMENTS"]

#: At or below this many key elements, eager :func:`window_attention` computes the scores
#: and the weighted sum elementwise; above, it calls SDPA. 0 (SDPA always in eager):
#: on this CPU the elementwise form was no faster in the causal step at sizes (a)/(b)
#: (docs/speed.md). Under ``torch.compile`` the elementwise form is always used (it fuses).
SMALL_ATTENTION_ELEMENTS = 0


def _compiling() -> bool:
    try:
        return bool(torch.compiler.is_compiling())
    except Exception:  # pragma: no cover - very old torch
        return False


def sdpa(
    q: Float[Tensor, "*batch heads n hd"],
    k: Float[Tensor, "*batch heads m hd"],
    v: Float[Tensor, "*batch heads m hdv"],
    mask: Tensor | None = None,
    dropout_p: float = 0.0,
) -> Float[Tensor, "*batch heads n hdv"]:
    """``F.scaled_dot_product_attention`` with the leading axes folded to one batch axis.

    Args:
        q: queries (..., heads, n, head_dim).
        k: keys (..., heads, m, head_dim), the same leading axes as ``q``.
        v: values (..., heads, m, head_dim_v).
        mask: ``None`` or an (n, m) mask (bool: True = may attend; float: added to scores).
            Other mask shapes are passed to SDPA unfolded.
        dropout_p: attention dropout probability (pass 0 outside training).

    Returns:
        (..., heads, n, head_dim_v), as ``F.scaled_dot_product_attention(q, k, v, mask)``.

    Example:
        >>> import torch
        >>> q, k = torch.randn(2, 3, 2, 1, 8), torch.randn(2, 3, 2, 4, 8)
        >>> out = sdpa(q, k, k)
        >>> bool(torch.allclose(out, torch.nn.functional.scaled_dot_product_attention(q, k, k), atol=1e-6))
        True
    """
    if q.ndim < 3 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ValueError(
            f"sdpa: expected q, k, v with the same number of axes (..., heads, n, head_dim); got shapes "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    foldable = q.ndim > 4 and q.shape[:-2] == k.shape[:-2] == v.shape[:-2] and (mask is None or mask.ndim <= 2)
    if not foldable:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    lead = q.shape[:-3]
    out = F.scaled_dot_product_attention(
        q.reshape(-1, *q.shape[-3:]), k.reshape(-1, *k.shape[-3:]), v.reshape(-1, *v.shape[-3:]),
        attn_mask=mask, dropout_p=dropout_p,
    )  # fmt: skip
    return out.reshape(*lead, *out.shape[-3:])


def window_attention(
    q: Float[Tensor, "*batch heads 1 hd"],
    k: Float[Tensor, "*batch heads m hd"],
    v: Float[Tensor, "*batch heads m hdv"],
) -> Float[Tensor, "*batch heads 1 hdv"]:
    """Unmasked attention of one query per row over a few keys (the causal step's temporal attention).

    With few keys per query (m <= 5 in a rollout) the scores ``(q k) / sqrt(hd)``, their
    softmax over the m keys and the weighted sum of values can be computed elementwise
    (same value, float rounding aside), which ``torch.compile`` fuses into one loop; in
    eager mode inputs with more than :data:`SMALL_ATTENTION_ELEMENTS` key elements go
    through :func:`sdpa` (the default threshold 0 sends all of them there).

    Args:
        q: queries (..., heads, 1, head_dim).
        k: keys (..., heads, m, head_dim), the same leading axes as ``q``.
        v: values (..., heads, m, head_dim_v).

    Returns:
        (..., heads, 1, head_dim_v).

    Example:
        >>> import torch
        >>> q, k, v = torch.randn(2, 3, 1, 8), torch.randn(2, 3, 4, 8), torch.randn(2, 3, 4, 8)
        >>> ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        >>> bool(torch.allclose(window_attention(q, k, v), ref, atol=1e-6))
        True
    """
    if q.shape[-2] != 1 or q.ndim != k.ndim or k.shape[:-1] != v.shape[:-1]:
        raise ValueError(
            f"window_attention: expected q (..., heads, 1, hd), k (..., heads, m, hd), v (..., heads, m, hdv); got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.numel() > SMALL_ATTENTION_ELEMENTS and not _compiling():
        return sdpa(q, k, v)
    scores = (q * k).sum(-1, keepdim=True) * (q.shape[-1] ** -0.5)  # (..., m, 1)
    weights = torch.softmax(scores, dim=-2)
    return (weights * v).sum(-2, keepdim=True)
