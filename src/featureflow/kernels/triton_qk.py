"""Triton kernels of the fused RMSNorm (learned weight) + rotary embedding of queries/keys.

Rows of ``x`` (R, head_dim), contiguous; row ``r`` sits at rotary position ``r % npos``
(``x`` is (..., n, head_dim) with the angles (n, head_dim / 2) broadcast over the leading
axes; ``cos_rs = 0`` when one angle row serves every position). Pairs are rotate-half:
``(x[i], x[i + half])``. Statistics and rotation in float32.

Only imported once the dispatcher picked the Triton path (this module imports Triton).
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the dispatcher never selects this module without Triton
    triton = tl = None

from featureflow.kernels._triton_util import block_rows, jit

__all__ = ["rmsnorm_rope_forward", "rmsnorm_rope_backward"]


def _fwd_kernel(
    X, W, COS, SIN, Y, NORMED, RSTD,
    R, NPOS, cos_rs, HALF, eps,
    HAS_W: tl.constexpr, STORE_NORMED: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_H)
    rmask = rows < R
    cmask = cols < HALF
    mask = rmask[:, None] & cmask[None, :]
    o1 = rows[:, None] * (2 * HALF) + cols[None, :]
    x1 = tl.load(X + o1, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(X + o1 + HALF, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt((tl.sum(x1 * x1, axis=1) + tl.sum(x2 * x2, axis=1)) / (2 * HALF) + eps)
    n1 = x1 * rstd[:, None]
    n2 = x2 * rstd[:, None]
    if HAS_W:
        n1 = n1 * tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
        n2 = n2 * tl.load(W + HALF + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    co = ((rows % NPOS) * cos_rs)[:, None] + cols[None, :]
    c = tl.load(COS + co, mask=mask, other=0.0)
    s = tl.load(SIN + co, mask=mask, other=0.0)
    tl.store(Y + o1, (n1 * c - n2 * s).to(Y.dtype.element_ty), mask=mask)
    tl.store(Y + o1 + HALF, (n1 * s + n2 * c).to(Y.dtype.element_ty), mask=mask)
    if STORE_NORMED:
        tl.store(NORMED + o1, n1.to(NORMED.dtype.element_ty), mask=mask)
        tl.store(NORMED + o1 + HALF, n2.to(NORMED.dtype.element_ty), mask=mask)
    tl.store(RSTD + rows, rstd, mask=rmask)


def _bwd_kernel(
    X, W, COS, SIN, DY, DN, RSTD, DX, DWROW,
    R, NPOS, cos_rs, HALF,
    HAS_W: tl.constexpr, HAS_DY: tl.constexpr, HAS_DN: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_H)
    rmask = rows < R
    cmask = cols < HALF
    mask = rmask[:, None] & cmask[None, :]
    o1 = rows[:, None] * (2 * HALF) + cols[None, :]
    x1 = tl.load(X + o1, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(X + o1 + HALF, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.load(RSTD + rows, mask=rmask, other=0.0)
    dn1 = tl.zeros((BLOCK_R, BLOCK_H), dtype=tl.float32)
    dn2 = tl.zeros((BLOCK_R, BLOCK_H), dtype=tl.float32)
    if HAS_DY:  # the rotation's transpose: rotate back by the same angle
        co = ((rows % NPOS) * cos_rs)[:, None] + cols[None, :]
        c = tl.load(COS + co, mask=mask, other=0.0)
        s = tl.load(SIN + co, mask=mask, other=0.0)
        dy1 = tl.load(DY + o1, mask=mask, other=0.0).to(tl.float32)
        dy2 = tl.load(DY + o1 + HALF, mask=mask, other=0.0).to(tl.float32)
        dn1 += dy1 * c + dy2 * s
        dn2 += dy2 * c - dy1 * s
    if HAS_DN:  # gradient reaching the un-rotated normalised output directly
        dn1 += tl.load(DN + o1, mask=mask, other=0.0).to(tl.float32)
        dn2 += tl.load(DN + o1 + HALF, mask=mask, other=0.0).to(tl.float32)
    xh1 = x1 * rstd[:, None]
    xh2 = x2 * rstd[:, None]
    if HAS_W:
        tl.store(DWROW + o1, dn1 * xh1, mask=mask)
        tl.store(DWROW + o1 + HALF, dn2 * xh2, mask=mask)
        dn1 = dn1 * tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
        dn2 = dn2 * tl.load(W + HALF + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    proj = (tl.sum(dn1 * xh1, axis=1) + tl.sum(dn2 * xh2, axis=1)) / (2 * HALF)
    tl.store(DX + o1, ((dn1 - xh1 * proj[:, None]) * rstd[:, None]).to(DX.dtype.element_ty), mask=mask)
    tl.store(DX + o1 + HALF, ((dn2 - xh2 * proj[:, None]) * rstd[:, None]).to(DX.dtype.element_ty), mask=mask)


def rmsnorm_rope_forward(
    x: Tensor, weight: Tensor | None, cos: Tensor, sin: Tensor, npos: int, eps: float, store_normed: bool
) -> tuple[Tensor, Tensor | None, Tensor]:
    """``x`` (R, hd) contiguous, ``cos``/``sin`` (1 or npos, hd/2) float32 contiguous -> (y, normed, rstd)."""
    R, hd = x.shape
    half = hd // 2
    y = torch.empty_like(x)
    normed = torch.empty_like(x) if store_normed else None
    rstd = torch.empty((R,), device=x.device, dtype=torch.float32)
    br, bh = block_rows(half)
    cos_rs = 0 if cos.shape[0] == 1 else cos.stride(0)
    jit(_fwd_kernel)[(triton.cdiv(R, br),)](
        x, x if weight is None else weight, cos, sin, y, y if normed is None else normed, rstd,
        R, npos, cos_rs, half, float(eps),
        HAS_W=weight is not None, STORE_NORMED=store_normed, BLOCK_R=br, BLOCK_H=bh,
    )  # fmt: skip
    return y, normed, rstd


def rmsnorm_rope_backward(
    x: Tensor, weight: Tensor | None, cos: Tensor, sin: Tensor, npos: int, rstd: Tensor,
    dy: Tensor | None, dn: Tensor | None,
) -> tuple[Tensor, Tensor | None]:  # fmt: skip
    """Gradients (dx (R, hd), per-row d weight (R, hd) float32 or None) from d y and/or d normed."""
    R, hd = x.shape
    half = hd // 2
    dx = torch.empty_like(x)
    dwrow = torch.empty((R, hd), device=x.device, dtype=torch.float32) if weight is not None else None
    br, bh = block_rows(half)
    cos_rs = 0 if cos.shape[0] == 1 else cos.stride(0)
    jit(_bwd_kernel)[(triton.cdiv(R, br),)](
        x, x if weight is None else weight, cos, sin, x if dy is None else dy, x if dn is None else dn, rstd,
        dx, dx if dwrow is None else dwrow, R, npos, cos_rs, half,
        HAS_W=weight is not None, HAS_DY=dy is not None, HAS_DN=dn is not None, BLOCK_R=br, BLOCK_H=bh,
    )  # fmt: skip
    return dx, dwrow
