"""The DPT probe head released with VFMF, loading the released weights unchanged."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from featureflow.probes._common import ImageSize, check_head_input, check_resize_mode, resize, split_blocks
from featureflow.probes.dpt_blocks import FusionBlock, make_output_conv
from featureflow.typing import Float, FrameFeatures, typechecked
from featureflow.utils import Configurable, int_list, load_safetensors, record_config, register_component

__all__ = ["DPTHead", "strip_prefix", "released_dpt_config"]

NUM_BLOCKS = 4


@register_component
class DPTHead(nn.Module, Configurable):
    """Dense Prediction Transformer head over four ViT blocks, as released with VFMF.

    Input: features (b, h, w, 4·in_channels) channels-last: the patch tokens of four
    blocks concatenated on channels, as the encoders produce them (DINOv2 ViT-B with
    blocks (2, 5, 8, 11): 4 × 768 = 3072). They are split back into the four blocks in
    order. Each block is projected (1×1 conv to ``out_channels[i]``) and brought to a
    pyramid at 4×, 2×, 1× and ½× the patch grid (transposed convs, identity, strided
    conv), mapped to ``features`` channels, fused top-down by four RefineNet blocks
    and decoded by the output stage.

    Resolution convention (from the released code and its fixture): the head's native
    output is **8× the patch grid** (a 16×16 grid from 224×224 DINOv2/14 frames gives
    128×128). The released decoder then resizes to the image size with **bicubic**
    interpolation (``align_corners=False``); ``resize_mode`` selects that (default) or
    bilinear/nearest. ``head(features)`` without ``size`` returns the native output.

    Parameter names equal the released state dict (``projects.*``, ``resize_layers.*``,
    ``scratch.*``), so ``head.load_state_dict(released)`` works directly; the released
    Lightning checkpoints prefix every key with ``head.`` (see :func:`strip_prefix` and
    :meth:`from_released`; a task head wrapping a ``DPTHead`` has exactly the
    checkpoint's ``head.*`` layout). ``use_clstoken=True`` is not supported: featureflow
    features carry no CLS token.

    Args:
        nclass: output channels (classes, depth bins, 3 for normals...).
        in_channels: channels of one block (768 for ViT-B).
        features: width of the fusion path (256 released).
        use_bn: BatchNorm inside the residual units.
        out_channels: per-block projection widths (released: [128, 256, 512, 512]).
        use_clstoken: must be False (kept for config compatibility).
        resize_mode: interpolation used when ``size`` is given.

    Example:
        >>> import torch
        >>> head = DPTHead(nclass=5, in_channels=8, features=8, out_channels=[4, 4, 8, 8]).eval()
        >>> head(torch.randn(2, 3, 4, 32)).shape           # native: 8x the 3x4 grid
        torch.Size([2, 5, 24, 32])
        >>> head(torch.randn(2, 3, 4, 32), size=(42, 56)).shape
        torch.Size([2, 5, 42, 56])
    """

    @record_config(nclass=int, in_channels=int, features=int, use_bn=bool, out_channels=int_list, use_clstoken=bool)
    def __init__(
        self,
        nclass: int,
        in_channels: int,
        features: int = 256,
        use_bn: bool = False,
        out_channels: list[int] | tuple[int, ...] = (256, 512, 1024, 1024),
        use_clstoken: bool = False,
        resize_mode: str = "bicubic",
    ) -> None:
        super().__init__()
        out_channels = [int(c) for c in out_channels]
        if use_clstoken:
            raise ValueError("DPTHead(use_clstoken=True) is not supported: featureflow features carry no CLS token")
        if len(out_channels) != NUM_BLOCKS:
            raise ValueError(f"DPTHead needs exactly {NUM_BLOCKS} out_channels (one per block), got {out_channels}")
        if nclass < 1 or in_channels < 1 or features < 2 or min(out_channels) < 1:
            raise ValueError(
                f"DPTHead sizes must be positive (features >= 2); got nclass={nclass}, "
                f"in_channels={in_channels}, features={features}, out_channels={out_channels}"
            )
        check_resize_mode(resize_mode)
        self.nclass = int(nclass)
        self.in_channels = int(in_channels)
        self.resize_mode = resize_mode
        self.projects = nn.ModuleList([nn.Conv2d(in_channels, c, kernel_size=1) for c in out_channels])
        c0, c1, _, c3 = out_channels
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(c0, c0, kernel_size=4, stride=4),
                nn.ConvTranspose2d(c1, c1, kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(c3, c3, kernel_size=3, stride=2, padding=1),
            ]
        )
        self.scratch = nn.Module()
        for i, c in enumerate(out_channels, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(c, features, kernel_size=3, padding=1, bias=False))
        for i in range(1, NUM_BLOCKS + 1):
            setattr(self.scratch, f"refinenet{i}", FusionBlock(features, use_bn))
        self.scratch.output_conv = make_output_conv(features, nclass, use_bn)

    @property
    def feature_dim(self) -> int:
        """Expected input channels: 4 × ``in_channels``."""
        return NUM_BLOCKS * self.in_channels

    @property
    def out_channels(self) -> int:
        """Output channels (``nclass``)."""
        return self.nclass

    #: Native output resolution = patch grid × this factor.
    upsample_factor = 8

    @typechecked
    def forward(self, features: FrameFeatures, size: ImageSize = None) -> Float[Tensor, "b c H W"]:
        """Raw output (b, nclass, H, W); native 8× grid when ``size`` is None."""
        check_head_input(
            "DPTHead",
            features,
            self.feature_dim,
            f"{NUM_BLOCKS} blocks x in_channels={self.in_channels}, concatenated on channels",
        )
        levels = []
        for i, x in enumerate(split_blocks(features, NUM_BLOCKS)):
            levels.append(self.resize_layers[i](self.projects[i](x)))
        s = self.scratch
        l1, l2, l3, l4 = s.layer1_rn(levels[0]), s.layer2_rn(levels[1]), s.layer3_rn(levels[2]), s.layer4_rn(levels[3])
        path = s.refinenet4(l4, size=l3.shape[-2:])
        path = s.refinenet3(path, l3, size=l2.shape[-2:])
        path = s.refinenet2(path, l2, size=l1.shape[-2:])
        path = s.refinenet1(path, l1)
        out = s.output_conv(path)
        return resize(out, size, self.resize_mode)

    @classmethod
    def from_released(cls, source: str | os.PathLike | Mapping[str, Tensor], **overrides: Any) -> "DPTHead":
        """Build a head from a released state dict / checkpoint and load it strictly.

        ``source``: a state dict (keys with or without the Lightning ``head.`` prefix),
        a ``.safetensors`` file, or a Lightning ``.ckpt`` / ``.pt`` file (read with
        ``torch.load(weights_only=True)``; its ``state_dict`` entry is used). The
        constructor arguments are inferred from the parameter shapes
        (:func:`released_dpt_config`); ``overrides`` (e.g. ``resize_mode``) are applied
        on top. The head is returned in eval mode.

        Example:
            >>> import torch
            >>> src = DPTHead(nclass=3, in_channels=8, features=8, out_channels=[4, 4, 8, 8])
            >>> sd = {"head." + k: v for k, v in src.state_dict().items()}
            >>> DPTHead.from_released(sd).config["out_channels"] == [4, 4, 8, 8]
            True
        """
        state = _read_state_dict(source)
        state = strip_prefix(state, "head.")
        config = released_dpt_config(state)
        config.update(overrides)
        head = cls(**config)
        head.load_state_dict(state, strict=True)
        return head.eval()


def strip_prefix(state_dict: Mapping[str, Tensor], prefix: str = "head.") -> dict[str, Tensor]:
    """Drop ``prefix`` from every key that has it (the released heads use ``head.``).

    Example:
        >>> import torch
        >>> sorted(strip_prefix({"head.a": torch.zeros(1), "b": torch.zeros(1)}))
        ['a', 'b']
    """
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def released_dpt_config(state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    """Infer ``DPTHead`` constructor arguments from an (unprefixed) released state dict.

    Example:
        >>> head = DPTHead(nclass=2, in_channels=8, features=8, use_bn=True, out_channels=[4, 4, 8, 8])
        >>> cfg = released_dpt_config(head.state_dict())
        >>> cfg["nclass"], cfg["in_channels"], cfg["use_bn"]
        (2, 8, True)
    """
    try:
        out_channels = [int(state_dict[f"projects.{i}.weight"].shape[0]) for i in range(NUM_BLOCKS)]
        in_channels = int(state_dict["projects.0.weight"].shape[1])
        features = int(state_dict["scratch.layer1_rn.weight"].shape[0])
    except KeyError as err:
        raise ValueError(
            f"not a released DPT head state dict: missing {err.args[0]!r} "
            "(expected keys like 'projects.0.weight', 'scratch.layer1_rn.weight', optionally prefixed 'head.')"
        ) from None
    if "scratch.output_conv.4.weight" not in state_dict:
        raise ValueError("not a released DPT head state dict: missing 'scratch.output_conv.4.weight'")
    nclass = int(state_dict["scratch.output_conv.4.weight"].shape[0])
    use_bn = "scratch.refinenet1.resConfUnit1.bn1.weight" in state_dict
    return {
        "nclass": nclass,
        "in_channels": in_channels,
        "features": features,
        "use_bn": use_bn,
        "out_channels": out_channels,
        "use_clstoken": False,
    }


def _read_state_dict(source: str | os.PathLike | Mapping[str, Tensor]) -> dict[str, Tensor]:
    if isinstance(source, Mapping):
        state: Any = dict(source)
    else:
        path = Path(source)
        if path.suffix == ".safetensors":
            state = load_safetensors(path)
        else:
            if not path.is_file():
                raise FileNotFoundError(f"checkpoint not found: {path}")
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # pickle.UnpicklingError and friends
                raise ValueError(
                    f"could not read {path} with torch.load(weights_only=True) (featureflow never unpickles "
                    f"arbitrary objects): {str(err)[:300]}. Load its 'state_dict' yourself in a trusted "
                    "environment and pass that mapping (or a .safetensors copy) instead."
                ) from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    return {k: v for k, v in state.items() if isinstance(v, Tensor)}
