"""PyTorch references of the fused kernels: the exact computations of the denoiser and solvers.

These are what runs on CPU, under ``torch.compile`` and whenever the Triton path is off.
Each one is written op for op like the code it replaces, so swapping it in changes no
number:

* :func:`adaln_modulate_ref`: ``modulate(F.layer_norm(x, (d,), eps=eps), shift, scale)``
  of :mod:`featureflow.forecast.causal_trunk` / ``vfmf_trunk``;
* :func:`rmsnorm_rope_ref`: ``apply_rope(nn.RMSNorm(head_dim, eps)(x), cos, sin)`` of the
  causal trunk (rotate-half pairs ``(i, i + head_dim / 2)``, angles broadcast over
  ``x[..., :half]``);
* :func:`axpy_ref`, :func:`heun_combine_ref`: the Euler update ``x + dt * v`` and Heun's
  combine ``x + dt * 0.5 * (k1 + k2)`` of :mod:`featureflow.solvers.fixed`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["adaln_modulate_ref", "rmsnorm_ref", "rope_ref", "rmsnorm_rope_ref", "axpy_ref", "heun_combine_ref"]


def adaln_modulate_ref(x: Tensor, shift: Tensor, scale: Tensor, eps: float = 1e-5) -> Tensor:
    """LayerNorm over the last axis (no affine) then ``* (1 + scale) + shift``.

    Example:
        >>> import torch
        >>> y = adaln_modulate_ref(torch.tensor([[1.0, 3.0]]), torch.zeros(2), torch.ones(2))
        >>> tuple(round(v, 3) for v in y[0].tolist())
        (-2.0, 2.0)
    """
    return F.layer_norm(x, (x.shape[-1],), eps=eps) * (1 + scale) + shift


def rmsnorm_ref(x: Tensor, weight: Tensor | None, eps: float | None) -> Tensor:
    """``nn.RMSNorm``: ``x / sqrt(mean(x**2) + eps) * weight`` (``eps=None``: the dtype's epsilon).

    Example:
        >>> import torch
        >>> tuple(round(v, 4) for v in rmsnorm_ref(torch.tensor([3.0, 4.0]), None, 0.0).tolist())
        (0.8485, 1.1314)
    """
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def rope_ref(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate-half rotary embedding: pair ``(x[i], x[i + d/2])`` turned by the angle of ``(cos, sin)[..., i]``.

    Example:
        >>> import torch
        >>> rope_ref(torch.tensor([1.0, 0.0]), torch.tensor([0.0]), torch.tensor([1.0])).tolist() == [0.0, 1.0]
        True
    """
    half = x.shape[-1] // 2
    if cos.shape[-1] != half or sin.shape[-1] != half:
        raise ValueError(f"rotary angles cover {cos.shape[-1]} pairs, but x has {half} pairs")
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def rmsnorm_rope_ref(x: Tensor, weight: Tensor | None, cos: Tensor, sin: Tensor, eps: float | None) -> Tensor:
    """RMSNorm with a learned weight, then the rotary embedding (the causal arch's q/k path).

    Example:
        >>> import torch
        >>> x = torch.randn(2, 3, 4)
        >>> cos, sin = torch.ones(3, 2), torch.zeros(3, 2)   # angle 0: rotation is the identity
        >>> bool(torch.allclose(rmsnorm_rope_ref(x, None, cos, sin, 1e-6), rmsnorm_ref(x, None, 1e-6)))
        True
    """
    return rope_ref(rmsnorm_ref(x, weight, eps), cos, sin)


def axpy_ref(x: Tensor, v: Tensor, dt: Tensor | float) -> Tensor:
    """The Euler update ``x + dt * v``.

    Example:
        >>> import torch
        >>> axpy_ref(torch.ones(2), torch.ones(2), 0.25).tolist() == [1.25, 1.25]
        True
    """
    return x + dt * v


def heun_combine_ref(x: Tensor, k1: Tensor, k2: Tensor, dt: Tensor | float) -> Tensor:
    """Heun's (trapezoid) combine ``x + dt * 0.5 * (k1 + k2)``.

    Example:
        >>> import torch
        >>> heun_combine_ref(torch.zeros(1), torch.ones(1), 3 * torch.ones(1), 0.5).item()
        1.0
    """
    return x + dt * 0.5 * (k1 + k2)
