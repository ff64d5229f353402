"""Building blocks of the DPT probe head, laid out so the released parameter names load as-is.

The attribute names (``conv1``, ``bn1``, ``resConfUnit1``, ``out_conv``, ``layer1_rn``,
``output_conv``...) are part of the checkpoint format of the released VFMF heads and are
kept verbatim; the code is featureflow's own.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from featureflow.probes._common import ImageSize

__all__ = ["ResidualConvUnit", "FusionBlock", "make_output_conv"]


class ResidualConvUnit(nn.Module):
    """``x + [BN] conv2(relu([BN] conv1(relu(x))))`` with 3×3 convolutions (bias on).

    Example:
        >>> import torch
        >>> ResidualConvUnit(4, use_bn=True)(torch.zeros(1, 4, 3, 3)).shape
        torch.Size([1, 4, 3, 3])
    """

    def __init__(self, features: int, use_bn: bool) -> None:
        super().__init__()
        self.use_bn = use_bn
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=True)
        if use_bn:
            self.bn1 = nn.BatchNorm2d(features)
            self.bn2 = nn.BatchNorm2d(features)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(F.relu(x))
        if self.use_bn:
            y = self.bn1(y)
        y = self.conv2(F.relu(y))
        if self.use_bn:
            y = self.bn2(y)
        return y + x


class FusionBlock(nn.Module):
    """RefineNet-style fusion: add the refined skip, refine, upsample, 1×1 conv.

    ``forward(x, skip=None, size=None)``: ``out = x (+ resConfUnit1(skip))``, then
    ``resConfUnit2``, then bilinear resize (``align_corners=True``) to ``size`` or by 2×,
    then ``out_conv``. ``resConfUnit1`` exists even when no skip is ever passed (the
    deepest block), so the released parameter set loads unchanged.

    Example:
        >>> import torch
        >>> FusionBlock(4, use_bn=False)(torch.zeros(1, 4, 3, 5)).shape
        torch.Size([1, 4, 6, 10])
    """

    def __init__(self, features: int, use_bn: bool) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, kernel_size=1, bias=True)
        self.resConfUnit1 = ResidualConvUnit(features, use_bn)
        self.resConfUnit2 = ResidualConvUnit(features, use_bn)

    def forward(self, x: Tensor, skip: Tensor | None = None, size: ImageSize = None) -> Tensor:
        out = x if skip is None else x + self.resConfUnit1(skip)
        out = self.resConfUnit2(out)
        if size is None:
            size = (out.shape[-2] * 2, out.shape[-1] * 2)
        out = F.interpolate(out, size=tuple(size), mode="bilinear", align_corners=True)
        return self.out_conv(out)


def make_output_conv(features: int, nclass: int, use_bn: bool) -> nn.Sequential:
    """The released output stage (indices matter: they are checkpoint keys).

    ``nclass > 1``: conv3×3 (no bias) → BatchNorm → ReLU → Dropout(0.1) → conv1×1 to nclass
    (the BatchNorm is there whatever ``use_bn`` says). ``nclass == 1`` (Depth-Anything
    style): conv3×3 to features/2 → conv3×3 to 32 → BatchNorm (if ``use_bn``) → ReLU →
    conv1×1 to 1 → ReLU, so that output is non-negative.
    """
    if nclass > 1:
        return nn.Sequential(
            nn.Conv2d(features, features, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(features),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Conv2d(features, nclass, kernel_size=1),
        )
    return nn.Sequential(
        nn.Conv2d(features, features // 2, kernel_size=3, padding=1),
        nn.Conv2d(features // 2, 32, kernel_size=3, padding=1),
        nn.BatchNorm2d(32) if use_bn else nn.Identity(),
        nn.ReLU(),
        nn.Conv2d(32, nclass, kernel_size=1),
        nn.ReLU(),
        nn.Identity(),
    )
