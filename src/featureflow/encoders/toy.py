"""`ToyEncoder`: a small ViT for ToyWorld frames with DINOv2-style multi-block output."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featureflow.encoders.base import grid_size, prepare_images
from featureflow.typing import FrameFeatures, Images, ImagesU8, typechecked
from featureflow.utils import Configurable, int_list, record_config, register_component

__all__ = ["ToyEncoder"]


class _Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)); x + mlp(norm(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        hidden = int(round(width * mlp_ratio))
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, c))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


@register_component
class ToyEncoder(nn.Module, Configurable):
    """A small Vision Transformer that plays the role of DINOv2 on ToyWorld frames.

    Patch embedding (a ``patch_size`` stride convolution) + learned position
    embeddings (bicubically interpolated for other frame sizes, as in DINOv2) + a CLS
    token + ``depth`` pre-norm transformer blocks. The output, like `DINOv2Encoder`,
    is the patch tokens of each block in ``blocks``, each passed through the one final
    LayerNorm, concatenated on channels: ``feature_dim = len(blocks) * width``. Pixels
    in [0, 1] are mapped to [-1, 1] inside.

    With the defaults (64² frames, patch 8, width 96, depth 6, blocks (2, 3, 4, 5)) the
    grid is 8×8, ``feature_dim`` is 384 and the weights take about 2.7 MB (float32).
    Train it with `featureflow.training.toy_encoder.train_toy_encoder`.

    Args:
        image_size: frame side the position table is laid out for (grid
            ``image_size // patch_size``); other sizes are interpolated.
        patch_size: pixels per patch side.
        width: token channels.
        depth: number of transformer blocks.
        heads: attention heads (must divide ``width``).
        blocks: indices (0-based, negatives count from the end) of the blocks whose
            tokens are returned, in this order.
        mlp_ratio: MLP hidden width / ``width``.
        resize: sizing policy for frames that are not a multiple of ``patch_size``.

    Example:
        >>> import torch
        >>> enc = ToyEncoder(image_size=16, patch_size=8, width=16, depth=2, heads=2, blocks=(0, 1))
        >>> enc(torch.rand(3, 3, 16, 16)).shape
        torch.Size([3, 2, 2, 32])
    """

    @record_config(blocks=int_list)
    def __init__(
        self,
        image_size: int = 64,
        patch_size: int = 8,
        width: int = 96,
        depth: int = 6,
        heads: int = 4,
        blocks: Sequence[int] = (2, 3, 4, 5),
        mlp_ratio: float = 4.0,
        resize: str = "resize",
    ) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"heads ({heads}) must divide width ({width})")
        if image_size % patch_size:
            raise ValueError(f"image_size ({image_size}) must be a multiple of patch_size ({patch_size})")
        blocks = [int(i) for i in blocks]
        if not blocks or any(not -depth <= i < depth for i in blocks):
            raise ValueError(f"blocks must be a non-empty list of indices in [-{depth}, {depth}); got {blocks}")
        grid_size(patch_size, patch_size, patch_size, resize)  # validates the policy
        self.patch_size = patch_size
        self.resize = resize
        self.blocks = [i % depth for i in blocks]
        self.feature_dim = len(blocks) * width
        self.grid = image_size // patch_size
        self.patch_embed = nn.Conv2d(3, width, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.grid**2, width) * 0.02)
        self.layers = nn.ModuleList(_Block(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def _positions(self, h: int, w: int) -> Tensor:
        if (h, w) == (self.grid, self.grid):
            return self.pos_embed
        cls, patches = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        table = patches.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        table = F.interpolate(table, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([cls, table.permute(0, 2, 3, 1).reshape(1, h * w, -1)], dim=1)

    @typechecked
    def forward(self, images: Images | ImagesU8) -> FrameFeatures:
        """Images ``(b, 3, H, W)`` in [0, 1] (or uint8) → features ``(b, H/p, W/p, feature_dim)``."""
        x = prepare_images(images, self.patch_size, self.resize)
        x = x.to(self.patch_embed.weight.dtype) * 2.0 - 1.0
        tokens = self.patch_embed(x)
        b, _, h, w = tokens.shape
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), tokens.flatten(2).transpose(1, 2)], dim=1)
        tokens = tokens + self._positions(h, w)
        wanted = set(self.blocks)
        outputs: dict[int, Tensor] = {}
        for i, layer in enumerate(self.layers[: max(wanted) + 1]):
            tokens = layer(tokens)
            if i in wanted:
                outputs[i] = self.norm(tokens[:, 1:])
        feats = torch.cat([outputs[i] for i in self.blocks], dim=-1)
        return feats.reshape(b, h, w, self.feature_dim)

    def num_parameters(self) -> int:
        """Number of weights (``sum(p.numel())``).

        Example:
            >>> ToyEncoder().num_parameters() < 1_000_000
            True
        """
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, feature_dim={self.feature_dim}, blocks={self.blocks}"
