"""Rotary position embeddings: 1-D over frames (temporal) and axial 2-D over the patch grid.

Rotary embeddings rotate pairs of query/key channels by an angle proportional to the
position, so a query-key score depends only on the *difference* of positions. That makes
them work for any patch grid and any context length (no learned tables), and it is what
lets the causal denoiser reuse cached keys when its window slides.

Channel layout: a head's ``head_dim`` channels are split into two halves ``(x1, x2)`` and
pair ``i`` is ``(x1[i], x2[i])`` (the "rotate-half" convention). In 2-D, the first half of
the pairs rotates with the row index and the second half with the column index.
"""

from __future__ import annotations

import torch
from torch import Tensor

from featureflow.typing import Float, typechecked

__all__ = ["rope_angles", "apply_rope", "grid_angles"]


@typechecked
def rope_angles(
    positions: Float[Tensor, "n"], dim: int, base: float = 100.0
) -> tuple[Float[Tensor, "n half"], Float[Tensor, "n half"]]:
    """Cosines and sines of the rotary angles for ``positions`` over ``dim`` channels.

    Args:
        positions: (n,) positions (integers stored as float; fractional values work too).
        dim: channels to rotate; must be even. Returns ``dim // 2`` angles per position.
        base: the wavelength base; frequency ``i`` is ``base ** (-2 i / dim)``.

    Returns:
        ``(cos, sin)``, each (n, dim // 2).

    Example:
        >>> import torch
        >>> cos, sin = rope_angles(torch.arange(3.0), 8)
        >>> cos.shape, float(cos[0, 0]), float(sin[0, 0])
        (torch.Size([3, 4]), 1.0, 0.0)
    """
    if dim % 2 != 0 or dim <= 0:
        raise ValueError(f"rotary dim must be a positive even number, got {dim}")
    idx = torch.arange(dim // 2, device=positions.device, dtype=torch.float32)
    freqs = base ** (-2.0 * idx / dim)
    ang = positions.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cos(ang), torch.sin(ang)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the last dimension of ``x`` (rotate-half pairs) by the given angles.

    ``cos``/``sin`` have last dimension ``x.shape[-1] // 2`` and broadcast against
    ``x[..., :half]`` (e.g. (n, half) for ``x`` of shape (..., n, d)).

    Example:
        >>> import torch
        >>> x = torch.tensor([[1.0, 0.0]])
        >>> cos, sin = rope_angles(torch.tensor([1.0]), 2, base=1.0)
        >>> [round(v, 4) for v in apply_rope(x, cos, sin)[0].tolist()]   # rotated by 1 rad
        [0.5403, 0.8415]
    """
    half = x.shape[-1] // 2
    if cos.shape[-1] != half:
        raise ValueError(f"rotary angles cover {cos.shape[-1]} pairs, but x has {half} pairs")
    x1, x2 = x[..., :half], x[..., half:]
    cos = cos.to(x.dtype)
    sin = sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def grid_angles(h: int, w: int, head_dim: int, base: float = 100.0, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """Axial 2-D rotary angles for an ``h x w`` patch grid, tokens in row-major order.

    The first ``head_dim // 2`` channels rotate with the row, the rest with the column;
    ``head_dim`` must be divisible by 4. Returns ``(cos, sin)``, each (h*w, head_dim // 2),
    for use with :func:`apply_rope`.

    Example:
        >>> cos, sin = grid_angles(2, 3, 8)
        >>> cos.shape
        torch.Size([6, 4])
    """
    if head_dim % 4 != 0:
        raise ValueError(f"2-D rotary embeddings need head_dim divisible by 4, got {head_dim}")
    rows = torch.arange(h, device=device, dtype=torch.float32).repeat_interleave(w)
    cols = torch.arange(w, device=device, dtype=torch.float32).repeat(h)
    cr, sr = rope_angles(rows, head_dim // 2, base)
    cc, sc = rope_angles(cols, head_dim // 2, base)
    # apply_rope pairs channel i with channel i + head_dim/2. Row pairs: the first quarter
    # of each half; column pairs: the second quarter of each half.
    return torch.cat([cr, cc], dim=-1), torch.cat([sr, sc], dim=-1)
