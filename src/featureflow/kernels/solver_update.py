"""Fused solver updates: the Euler step ``x + dt * v`` and Heun's combine ``x + dt/2 (k1 + k2)``.

Unfused, Heun's combine makes three passes over the latent tensor (``k1 + k2``, the
scaling, the add) and allocates two temporaries; fused it is one read of each input and
one write. Gradients (rarely needed when sampling) are the closed-form elementwise ones,
computed with PyTorch ops in the autograd Function's backward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from featureflow.kernels.dispatch import use_triton
from featureflow.kernels.reference import axpy_ref, heun_combine_ref
from featureflow.typing import Float

__all__ = ["axpy", "heun_combine"]


def _dt_tensor(dt: Tensor | float, like: Tensor) -> Tensor:
    if isinstance(dt, Tensor):
        if dt.numel() != 1:
            raise ValueError(f"dt: expected a scalar (0-d or one-element tensor, or a float), got shape {tuple(dt.shape)}")
        return dt.reshape(1).to(device=like.device)
    return torch.tensor([float(dt)], device=like.device, dtype=torch.float32)


def _out_dtype(x: Tensor, dt: Tensor | float, *vs: Tensor) -> torch.dtype:
    # dtype of the reference ``x + dt * v``: a 0-d dt does not promote v's dtype
    dt0 = dt if isinstance(dt, Tensor) else torch.tensor(float(dt))
    prod = torch.result_type(dt0.reshape(()), vs[0])
    for v in vs[1:]:
        prod = torch.promote_types(prod, v.dtype)
    return torch.promote_types(x.dtype, prod)


def _unsupported(x: Tensor, *vs: Tensor) -> str | None:
    for v in vs:
        if v.shape != x.shape:
            return f"shapes differ ({tuple(x.shape)} vs {tuple(v.shape)}); the kernel does not broadcast"
    return None


class _AxpyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, v, dt, dt_is_tensor):  # type: ignore[override]
        from featureflow.kernels import triton_solver

        d = _dt_tensor(dt, x)
        out = triton_solver.axpy_forward(x.contiguous(), v.contiguous(), d, _out_dtype(x, dt, v))
        ctx.save_for_backward(v, d)
        ctx.dt_shape = dt.shape if dt_is_tensor else None
        return out

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        v, d = ctx.saved_tensors
        gx = g if ctx.needs_input_grad[0] else None
        gv = (g * d.reshape(())).to(v.dtype) if ctx.needs_input_grad[1] else None
        gdt = (g * v).sum().reshape(ctx.dt_shape) if ctx.needs_input_grad[2] else None
        return gx, gv, gdt, None


class _HeunFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, k1, k2, dt, dt_is_tensor):  # type: ignore[override]
        from featureflow.kernels import triton_solver

        d = _dt_tensor(dt, x)
        out = triton_solver.heun_forward(x.contiguous(), k1.contiguous(), k2.contiguous(), d, _out_dtype(x, dt, k1, k2))
        ctx.save_for_backward(k1, k2, d)
        ctx.dt_shape = dt.shape if dt_is_tensor else None
        return out

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        k1, k2, d = ctx.saved_tensors
        gk = g * (0.5 * d.reshape(()))
        gx = g if ctx.needs_input_grad[0] else None
        g1 = gk.to(k1.dtype) if ctx.needs_input_grad[1] else None
        g2 = gk.to(k2.dtype) if ctx.needs_input_grad[2] else None
        gdt = (0.5 * g * (k1 + k2)).sum().reshape(ctx.dt_shape) if ctx.needs_input_grad[3] else None
        return gx, g1, g2, gdt, None


def axpy(x: Float[Tensor, "*shape"], v: Float[Tensor, "*shape"], dt: Tensor | float) -> Float[Tensor, "*shape"]:
    """The Euler update ``x + dt * v`` (fused on CUDA with Triton).

    Args:
        x: the state, e.g. latents (b, h, w, C).
        v: the velocity, same shape.
        dt: the step, a float or a one-element tensor (kept on the device: no sync).

    Returns:
        ``x + dt * v``, with the reference's dtype.

    Example:
        >>> import torch
        >>> axpy(torch.zeros(2, 2), torch.ones(2, 2), torch.tensor(0.5)).sum().item()
        2.0
    """
    if isinstance(dt, Tensor) and dt.numel() != 1:
        raise ValueError(f"dt: expected a scalar (0-d or one-element tensor, or a float), got shape {tuple(dt.shape)}")
    if use_triton("axpy", x, v, supported=_unsupported(x, v)):
        return _AxpyFunction.apply(x, v, dt, isinstance(dt, Tensor))
    return axpy_ref(x, v, dt)


def heun_combine(
    x: Float[Tensor, "*shape"], k1: Float[Tensor, "*shape"], k2: Float[Tensor, "*shape"], dt: Tensor | float
) -> Float[Tensor, "*shape"]:
    """Heun's two-stage combine ``x + dt * 0.5 * (k1 + k2)`` (fused on CUDA with Triton).

    Args:
        x: the state at the start of the interval.
        k1: the velocity at ``(t, x)``.
        k2: the velocity at ``(t + dt, x + dt * k1)``.
        dt: the interval, a float or a one-element tensor.

    Returns:
        The state at the end of the interval.

    Example:
        >>> import torch
        >>> heun_combine(torch.zeros(3), torch.ones(3), torch.full((3,), 3.0), 0.5).sum().item()
        3.0
    """
    if isinstance(dt, Tensor) and dt.numel() != 1:
        raise ValueError(f"dt: expected a scalar (0-d or one-element tensor, or a float), got shape {tuple(dt.shape)}")
    if use_triton("heun_combine", x, k1, k2, supported=_unsupported(x, k1, k2)):
        return _HeunFunction.apply(x, k1, k2, dt, isinstance(dt, Tensor))
    return heun_combine_ref(x, k1, k2, dt)
