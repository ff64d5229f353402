"""Triton kernels of the fused solver updates over the latent tensor (flattened, contiguous).

``dt`` is read from a one-element device tensor (no host synchronisation in the loop).
Arithmetic in float32. Only imported once the dispatcher picked the Triton path.
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the dispatcher never selects this module without Triton
    triton = tl = None

from featureflow.kernels._triton_util import jit

__all__ = ["axpy_forward", "heun_forward"]

_BLOCK = 1024


def _axpy_kernel(X, V, DT, OUT, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    dt = tl.load(DT).to(tl.float32)
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    v = tl.load(V + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(OUT + offs, (x + dt * v).to(OUT.dtype.element_ty), mask=mask)


def _heun_kernel(X, K1, K2, DT, OUT, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    half_dt = tl.load(DT).to(tl.float32) * 0.5
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    k1 = tl.load(K1 + offs, mask=mask, other=0.0).to(tl.float32)
    k2 = tl.load(K2 + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(OUT + offs, (x + half_dt * (k1 + k2)).to(OUT.dtype.element_ty), mask=mask)


def axpy_forward(x: Tensor, v: Tensor, dt: Tensor, out_dtype: torch.dtype) -> Tensor:
    """``x + dt * v`` over contiguous same-shape tensors; ``dt`` a one-element tensor on their device."""
    out = torch.empty(x.shape, device=x.device, dtype=out_dtype)
    n = x.numel()
    jit(_axpy_kernel)[(triton.cdiv(n, _BLOCK),)](x, v, dt, out, n, BLOCK=_BLOCK)
    return out


def heun_forward(x: Tensor, k1: Tensor, k2: Tensor, dt: Tensor, out_dtype: torch.dtype) -> Tensor:
    """``x + dt * 0.5 * (k1 + k2)`` over contiguous same-shape tensors."""
    out = torch.empty(x.shape, device=x.device, dtype=out_dtype)
    n = x.numel()
    jit(_heun_kernel)[(triton.cdiv(n, _BLOCK),)](x, k1, k2, dt, out, n, BLOCK=_BLOCK)
    return out
