"""Triton kernels of the fused adaLN: LayerNorm (no affine) + ``* (1 + scale) + shift``.

Rows of ``x`` (R, D), contiguous. ``shift``/``scale`` are addressed per row through two
row strides: row ``r`` is ``(g, l) = (r // L, r % L)`` and its modulation vector starts at
``g * s_g + l * s_l`` (stride 0 on a broadcast axis), so a (b, n, 1, d) modulation of
(b, n, hw, d) tokens is read in place, never expanded. Statistics in float32.

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

__all__ = ["adaln_forward", "adaln_backward"]


def _adaln_fwd_kernel(
    X, SHIFT, SCALE, Y, RSTD,
    R, L, D,
    sh_g, sh_l, sh_d, sc_g, sc_l, sc_d,
    eps,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_D)
    rmask = rows < R
    mask = rmask[:, None] & (cols < D)[None, :]
    offs = rows[:, None] * D + cols[None, :]
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1) / D
    xc = tl.where(mask, x - mean[:, None], 0.0)
    var = tl.sum(xc * xc, axis=1) / D
    rstd = 1.0 / tl.sqrt(var + eps)
    g = rows // L
    l_ = rows % L
    sh = tl.load(SHIFT + (g * sh_g + l_ * sh_l)[:, None] + cols[None, :] * sh_d, mask=mask, other=0.0)
    sc = tl.load(SCALE + (g * sc_g + l_ * sc_l)[:, None] + cols[None, :] * sc_d, mask=mask, other=0.0)
    y = xc * rstd[:, None] * (1.0 + sc.to(tl.float32)) + sh.to(tl.float32)
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + rows, rstd, mask=rmask)


def _adaln_bwd_kernel(
    X, SCALE, DY, RSTD, DX, DYXHAT,
    R, L, D,
    sc_g, sc_l, sc_d,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_D)
    rmask = rows < R
    mask = rmask[:, None] & (cols < D)[None, :]
    offs = rows[:, None] * D + cols[None, :]
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.load(RSTD + rows, mask=rmask, other=0.0)
    mean = tl.sum(x, axis=1) / D
    xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
    g = rows // L
    l_ = rows % L
    sc = tl.load(SCALE + (g * sc_g + l_ * sc_l)[:, None] + cols[None, :] * sc_d, mask=mask, other=0.0)
    dxhat = dy * (1.0 + sc.to(tl.float32))
    c1 = tl.sum(dxhat, axis=1) / D
    c2 = tl.sum(dxhat * xhat, axis=1) / D
    dx = (dxhat - c1[:, None] - xhat * c2[:, None]) * rstd[:, None]
    tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)
    tl.store(DYXHAT + offs, dy * xhat, mask=mask)


def adaln_forward(
    x: Tensor, shift: Tensor, shift_strides: tuple[int, int, int], scale: Tensor,
    scale_strides: tuple[int, int, int], rows_per_group: int, eps: float, out_dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """``x`` (R, D) contiguous -> (y (R, D) in ``out_dtype``, rstd (R,) float32)."""
    R, D = x.shape
    y = torch.empty((R, D), device=x.device, dtype=out_dtype)
    rstd = torch.empty((R,), device=x.device, dtype=torch.float32)
    br, bd = block_rows(D)
    jit(_adaln_fwd_kernel)[(triton.cdiv(R, br),)](
        x, shift, scale, y, rstd, R, rows_per_group, D, *shift_strides, *scale_strides, float(eps),
        BLOCK_R=br, BLOCK_D=bd,
    )  # fmt: skip
    return y, rstd


def adaln_backward(
    x: Tensor, scale: Tensor, scale_strides: tuple[int, int, int], dy: Tensor, rstd: Tensor, rows_per_group: int
) -> tuple[Tensor, Tensor]:
    """Gradients per row: (dx (R, D) in ``x.dtype``, dy * xhat (R, D) float32, for d scale)."""
    R, D = x.shape
    dx = torch.empty_like(x)
    dyxhat = torch.empty((R, D), device=x.device, dtype=torch.float32)
    br, bd = block_rows(D)
    jit(_adaln_bwd_kernel)[(triton.cdiv(R, br),)](
        x, scale, dy, rstd, dx, dyxhat, R, rows_per_group, D, *scale_strides, BLOCK_R=br, BLOCK_D=bd
    )
    return dx, dyxhat
