"""Building blocks shared by both denoiser trunks: time embedding, MLP, QK-normed attention."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from featureflow.kernels import sdpa

__all__ = ["timestep_embedding", "TimeEmbedding", "CondEmbedding", "MLP", "Attention", "modulate"]


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of flow times: ``[cos(t f_i), sin(t f_i)]`` (cosines first).

    Args:
        t: flow times of any shape ``(...)``.
        dim: embedding size (an odd ``dim`` gets one zero channel at the end).

    Returns:
        (..., dim) float32 embedding.

    Example:
        >>> import torch
        >>> timestep_embedding(torch.zeros(2), 4).tolist()
        [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]]
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[..., None] * freqs
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[..., :1])], dim=-1)
    return emb


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation ``x * (1 + scale) + shift``.

    Example:
        >>> import torch
        >>> modulate(torch.ones(2), torch.ones(2), torch.ones(2)).tolist()
        [3.0, 3.0]
    """
    return x * (1 + scale) + shift


class MLP(nn.Module):
    """Two linear layers with a GELU between them (``fc1 -> GELU -> dropout -> fc2 -> dropout``).

    Example:
        >>> import torch
        >>> MLP(4, 8)(torch.zeros(3, 4)).shape
        torch.Size([3, 4])
    """

    def __init__(
        self, dim: int, hidden: int, out_dim: int | None = None, dropout: float = 0.0, approximate: str = "none"
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate=approximate)
        self.fc2 = nn.Linear(hidden, out_dim or dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class TimeEmbedding(nn.Module):
    """Flow time ``t`` -> ``width`` vector: sinusoidal features then an MLP (GELU, 4x hidden).

    Example:
        >>> import torch
        >>> TimeEmbedding(8)(torch.rand(2, 3)).shape
        torch.Size([2, 3, 8])
    """

    def __init__(self, width: int, frequency_dim: int = 256) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = MLP(frequency_dim, 4 * width, out_dim=width)
        nn.init.normal_(self.mlp.fc1.weight, std=0.02)
        nn.init.normal_(self.mlp.fc2.weight, std=0.02)

    def forward(self, t: Tensor) -> Tensor:
        emb = timestep_embedding(t, self.frequency_dim)
        return self.mlp(emb.to(self.mlp.fc1.weight.dtype))  # float32 unless the weights were cast (bf16 sampling)


class CondEmbedding(nn.Module):
    """A conditioning vector (e.g. an action) -> ``width`` vector: the raw values and their
    sinusoidal features at ``num_frequencies`` octaves (π·2^j, j = 0..), then an MLP.

    Sinusoidal features let the trunk map a continuous command to the rotary phase that
    selects a spatial offset in attention (moving an object by an action-dependent
    distance), which a single linear layer could only approximate.

    Example:
        >>> import torch
        >>> CondEmbedding(2, 8)(torch.rand(5, 2)).shape
        torch.Size([5, 8])
    """

    def __init__(self, cond_dim: int, width: int, num_frequencies: int = 6) -> None:
        super().__init__()
        self.register_buffer("frequencies", math.pi * 2.0 ** torch.arange(num_frequencies, dtype=torch.float32), persistent=False)
        self.mlp = MLP(cond_dim * (1 + 2 * num_frequencies), 4 * width, out_dim=width)
        nn.init.normal_(self.mlp.fc1.weight, std=0.02)
        nn.init.normal_(self.mlp.fc2.weight, std=0.02)

    def forward(self, cond: Tensor) -> Tensor:
        ang = (cond.unsqueeze(-1) * self.frequencies.to(cond.dtype)).flatten(-2)
        return self.mlp(torch.cat([cond, ang.sin(), ang.cos()], dim=-1))


class Attention(nn.Module):
    """Multi-head attention projections with RMS-normalised queries and keys (QK-norm).

    The module only holds the weights; callers split the work into :meth:`qkv` (project,
    split heads, normalise q and k) and :meth:`out` (merge heads, project), so the same
    weights serve full, masked and cached attention.

    Example:
        >>> import torch
        >>> att = Attention(8, 2)
        >>> q, k, v = att.qkv(torch.zeros(3, 5, 8))
        >>> q.shape
        torch.Size([3, 5, 2, 4])
    """

    def __init__(self, dim: int, heads: int, qk_norm_eps: float | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"width {dim} must be divisible by heads {heads}")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.dropout = dropout
        self.qkv_proj = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=qk_norm_eps)
        self.k_norm = nn.RMSNorm(self.head_dim, eps=qk_norm_eps)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(..., n, dim) -> raw q, k, v each (..., n, heads, head_dim), *before* the QK-norm.

        Callers that fuse the norm with the rotary embedding
        (:func:`featureflow.kernels.qk_rmsnorm_rope`) start from these.
        """
        q, k, v = self.qkv_proj(x).split(self.dim, dim=-1)
        shape = (*x.shape[:-1], self.heads, self.head_dim)
        return q.reshape(shape), k.reshape(shape), v.reshape(shape)

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(..., n, dim) -> q, k, v each (..., n, heads, head_dim); q and k RMS-normalised."""
        q, k, v = self.project(x)
        return self.q_norm(q), self.k_norm(k), v

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """Scaled dot-product attention on (..., heads, n, head_dim) tensors; dropout only in training.

        Runs :func:`featureflow.kernels.sdpa`, which folds the leading axes into one batch
        axis so PyTorch's fused SDPA kernel is used for the trunks' 5-D layouts.
        """
        p = self.dropout if self.training else 0.0
        return sdpa(q, k, v, mask, p)

    def out(self, y: Tensor) -> Tensor:
        """(..., n, heads, head_dim) -> (..., n, dim) through the output projection."""
        return self.proj(y.reshape(*y.shape[:-2], self.dim))

    def forward(self, x: Tensor) -> Tensor:
        """Plain (unmasked) self-attention over the second-to-last axis of (B, n, dim)."""
        q, k, v = self.qkv(x)
        y = self.attend(q.transpose(-3, -2), k.transpose(-3, -2), v.transpose(-3, -2))
        return self.out(y.transpose(-3, -2))
