"""The released VFMF denoiser trunk (``arch="vfmf"``), rebuilt from its description.

A spatio-temporal DiT over a window of frames ``(b, n, h, w, C)`` with one flow time per
sample. Per layer: temporal attention over the ``n`` frames at each patch (bidirectional,
the context sees the noisy target), spatial attention within each frame, then an MLP;
queries and keys RMS-normalised per head. A single adaLN modulation (9 vectors: shift,
scale, gate for each of the three sub-blocks) is computed once from the time embedding and
shared by every layer. Positions are learned factorised tables ``t``, ``h``, ``w`` (each
``width / 3`` channels, concatenated). The output covers every frame; the caller slices
the target.

Facts reproduced from the released code (they matter for parity):

* With the 9 chunks ordered ``(t_shift, t_scale, t_gate, s_shift, s_scale, s_gate,
  m_shift, m_scale, m_gate)``, both attention sub-blocks use their shift and scale
  chunks swapped (``LN(x) * (1 + t_shift) + t_scale``), while the MLP uses them in their
  nominal roles (``LN(x) * (1 + m_scale) + m_shift``).
* The final layer is modulated by ``GELU -> Linear`` of the time embedding (not of the
  shared modulation), LayerNorm eps 1e-6; the blocks' LayerNorms use eps 1e-5.
* QK RMSNorm uses ``eps=None`` (the dtype's machine epsilon).
* The released code applies attention dropout even in eval mode; this trunk applies
  dropout only in training mode (released checkpoints use 0.1).

:func:`convert_released_state_dict` maps the released key names onto this module.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featureflow.forecast.layers import MLP, Attention, TimeEmbedding
from featureflow.kernels import adaln_modulate
from featureflow.typing import typechecked

__all__ = ["VFMFTrunk", "vfmf_key_map", "convert_released_state_dict", "released_config"]


class VFMFBlock(nn.Module):
    """Temporal attention, spatial attention, MLP; modulated by the shared adaLN chunks."""

    def __init__(self, width: int, heads: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.temporal = Attention(width, heads, qk_norm_eps=None, dropout=dropout)
        self.spatial = Attention(width, heads, qk_norm_eps=None, dropout=dropout)
        self.mlp = MLP(width, mlp_dim, dropout=dropout)

    def forward(self, z: Tensor, mods: list[Tensor]) -> Tensor:
        b, n, h, w, d = z.shape
        t_shift, t_scale, t_gate, s_shift, s_scale, s_gate, m_shift, m_scale, m_gate = mods
        # temporal attention: each patch attends over the n frames (shift/scale swapped, as released)
        y = adaln_modulate(z, t_scale, t_shift).permute(0, 2, 3, 1, 4)
        q, k, v = self.temporal.qkv(y)  # (b, h, w, n, H, hd)
        y = self.temporal.attend(q.transpose(-3, -2), k.transpose(-3, -2), v.transpose(-3, -2))
        z = z + t_gate * self.temporal.out(y.transpose(-3, -2)).permute(0, 3, 1, 2, 4)
        # spatial attention within each frame (shift/scale swapped, as released)
        y = adaln_modulate(z, s_scale, s_shift).reshape(b, n, h * w, d)
        z = z + s_gate * self.spatial(y).reshape(b, n, h, w, d)
        # MLP (chunks in their nominal roles)
        y = adaln_modulate(z, m_shift, m_scale)
        return z + m_gate * self.mlp(y)


class VFMFTrunk(nn.Module):
    """The released spatio-temporal DiT: ``(x (b,n,h,w,C), time (b,)) -> (b,n,h,w,C)``.

    Args:
        latent_dim: channels C of the latents.
        width: hidden size (divisible by 3 for the position tables, and by ``heads``).
        depth: number of layers.
        heads: attention heads.
        mlp_dim: hidden size of each MLP.
        max_frames: rows of the temporal position table (context + target frames).
        grid: (h, w) patch grid of the spatial position tables.
        dropout: dropout in attention and MLP (training mode only).
        frequency_dim: size of the sinusoidal time features.

    Example:
        >>> import torch
        >>> trunk = VFMFTrunk(4, 24, 1, 2, 48, max_frames=3, grid=(2, 3))
        >>> trunk(torch.randn(1, 3, 2, 3, 4), torch.rand(1)).shape
        torch.Size([1, 3, 2, 3, 4])
    """

    def __init__(
        self,
        latent_dim: int,
        width: int,
        depth: int,
        heads: int,
        mlp_dim: int,
        max_frames: int,
        grid: tuple[int, int],
        dropout: float = 0.0,
        frequency_dim: int = 256,
    ) -> None:
        super().__init__()
        if width % 3 != 0:
            raise ValueError(f"arch='vfmf' needs width divisible by 3 (t/h/w position tables), got {width}")
        self.width, self.max_frames, self.grid = width, max_frames, tuple(grid)
        self.embed_in = nn.Linear(latent_dim, width, bias=False)
        nn.init.normal_(self.embed_in.weight, std=0.02)
        part = width // 3
        self.pos_t = nn.Parameter(nn.init.trunc_normal_(torch.empty(max_frames, part), std=0.02))
        self.pos_h = nn.Parameter(nn.init.trunc_normal_(torch.empty(grid[0], part), std=0.02))
        self.pos_w = nn.Parameter(nn.init.trunc_normal_(torch.empty(grid[1], part), std=0.02))
        self.time_embed = TimeEmbedding(width, frequency_dim)
        self.modulation = MLP(width, 4 * width, out_dim=9 * width)
        self.mod_bias = nn.Parameter(torch.randn(9, width) / width**0.5)
        self.blocks = nn.ModuleList(VFMFBlock(width, heads, mlp_dim, dropout) for _ in range(depth))
        self.final_mod = nn.Linear(width, 2 * width)
        self.final_linear = nn.Linear(width, latent_dim)
        for lin in (self.modulation.fc2, self.final_mod, self.final_linear):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: Tensor, time: Tensor) -> Tensor:
        b, n, h, w, _ = x.shape
        if n > self.max_frames:
            raise ValueError(f"arch='vfmf' takes at most {self.max_frames} frames (context + target), got {n}")
        if (h, w) != self.grid:
            raise ValueError(
                f"arch='vfmf' has learned position tables for a {self.grid[0]}x{self.grid[1]} patch grid, got {h}x{w}"
            )
        part = self.width // 3
        pos = torch.cat(
            [
                self.pos_t[:n, None, None, :].expand(n, h, w, part),
                self.pos_h[None, :, None, :].expand(n, h, w, part),
                self.pos_w[None, None, :, :].expand(n, h, w, part),
            ],
            dim=-1,
        )
        z = self.embed_in(x) + pos
        temb = self.time_embed(time)  # (b, d)
        mod = self.mod_bias + self.modulation(temb).reshape(b, 9, self.width)
        mods = [m[:, None, None, None, :] for m in mod.unbind(1)]
        for block in self.blocks:
            z = block(z, mods)
        shift, scale = self.final_mod(F.gelu(temb)).chunk(2, dim=-1)
        z = adaln_modulate(z, shift[:, None, None, None], scale[:, None, None, None], eps=1e-6)
        return self.final_linear(z)


_TOP = {
    "fc_in.weight": "embed_in.weight",
    "pos_embd.emb.d_0": "pos_t",
    "pos_embd.emb.d_1": "pos_h",
    "pos_embd.emb.d_2": "pos_w",
    "time_embd.mlp.net.0.weight": "time_embed.mlp.fc1.weight",
    "time_embd.mlp.net.0.bias": "time_embed.mlp.fc1.bias",
    "time_embd.mlp.net.3.weight": "time_embed.mlp.fc2.weight",
    "time_embd.mlp.net.3.bias": "time_embed.mlp.fc2.bias",
    "modulation.net.0.weight": "modulation.fc1.weight",
    "modulation.net.0.bias": "modulation.fc1.bias",
    "modulation.net.3.weight": "modulation.fc2.weight",
    "modulation.net.3.bias": "modulation.fc2.bias",
    "transformer.scale_shift": "mod_bias",
    "fc_out.linear.weight": "final_linear.weight",
    "fc_out.linear.bias": "final_linear.bias",
    "fc_out.adaLN_modulation.1.weight": "final_mod.weight",
    "fc_out.adaLN_modulation.1.bias": "final_mod.bias",
}


def vfmf_key_map(depth: int) -> dict[str, str]:
    """Released key -> :class:`VFMFTrunk` key, for a trunk of ``depth`` layers (complete, 1:1).

    Example:
        >>> m = vfmf_key_map(2)
        >>> m["transformer.layers.1.2.fn.net.3.bias"], len(m)
        ('blocks.1.mlp.fc2.bias', 49)
    """
    mapping = dict(_TOP)
    templates = {
        "0.fn.qkv_attn": "temporal.qkv_proj", "0.fn.project": "temporal.proj",
        "1.fn.qkv_attn": "spatial.qkv_proj", "1.fn.project": "spatial.proj",
        "2.fn.net.0": "mlp.fc1", "2.fn.net.3": "mlp.fc2",
    }  # fmt: skip
    for i in range(depth):
        for src, dst in templates.items():
            for p in ("weight", "bias"):
                mapping[f"transformer.layers.{i}.{src}.{p}"] = f"blocks.{i}.{dst}.{p}"
        for sub, name in (("0", "temporal"), ("1", "spatial")):
            for norm in ("q_norm", "k_norm"):
                mapping[f"transformer.layers.{i}.{sub}.fn.{norm}.weight"] = f"blocks.{i}.{name}.{norm}.weight"
    return mapping


def _released_depth(keys: list[str]) -> int:
    layers = {int(m.group(1)) for k in keys if (m := re.match(r"transformer\.layers\.(\d+)\.", k))}
    if not layers:
        raise ValueError("not a released VFMF denoiser state dict: no 'transformer.layers.*' keys")
    if layers != set(range(len(layers))):
        raise ValueError(f"released state dict has non-contiguous layer indices {sorted(layers)}")
    return len(layers)


@typechecked
def convert_released_state_dict(state_dict: dict[str, Tensor], prefix: str = "trunk.") -> dict[str, Tensor]:
    """Rename a released ``MaskTransformer`` state dict to featureflow names.

    Every released key must be consumed and every trunk key produced; anything else is an
    error (a strict, complete mapping). ``prefix`` is prepended to the new names
    (``"trunk."`` gives :class:`featureflow.forecast.denoiser.Denoiser` keys).

    Raises:
        ValueError: on unexpected or missing keys (both are listed).

    Example:
        >>> import torch
        >>> sd = {k: torch.zeros(1) for k in vfmf_key_map(1)}
        >>> new = convert_released_state_dict(sd)
        >>> len(new), "trunk.blocks.0.mlp.fc1.bias" in new
        (33, True)
    """
    keys = list(state_dict)
    mapping = vfmf_key_map(_released_depth(keys))
    unexpected = sorted(set(keys) - set(mapping))
    missing = sorted(set(mapping) - set(keys))
    if unexpected or missing:
        raise ValueError(
            "released VFMF denoiser state dict does not match the expected key set: "
            f"unexpected keys {unexpected[:10]}{'...' if len(unexpected) > 10 else ''}, "
            f"missing keys {missing[:10]}{'...' if len(missing) > 10 else ''}"
        )
    return {prefix + mapping[k]: v for k, v in state_dict.items()}


@typechecked
def released_config(state_dict: dict[str, Tensor]) -> dict[str, object]:
    """Infer the :class:`Denoiser` constructor arguments from a released state dict.

    Heads come from the per-head QK-norm size; ``max_context`` is the temporal table
    length minus the target frame.

    Example:
        >>> import torch
        >>> sd = {k: torch.zeros(1) for k in vfmf_key_map(1)}
        >>> sd.update({"fc_in.weight": torch.zeros(24, 4), "pos_embd.emb.d_0": torch.zeros(3, 8),
        ...            "pos_embd.emb.d_1": torch.zeros(2, 8), "pos_embd.emb.d_2": torch.zeros(3, 8),
        ...            "transformer.layers.0.0.fn.q_norm.weight": torch.zeros(12),
        ...            "transformer.layers.0.2.fn.net.0.weight": torch.zeros(48, 24)})
        >>> cfg = released_config(sd)
        >>> cfg["heads"], cfg["grid"] == [2, 3]
        (2, True)
    """
    width, latent_dim = state_dict["fc_in.weight"].shape
    head_dim = state_dict["transformer.layers.0.0.fn.q_norm.weight"].shape[0]
    return {
        "arch": "vfmf",
        "latent_dim": int(latent_dim),
        "width": int(width),
        "depth": _released_depth(list(state_dict)),
        "heads": int(width // head_dim),
        "mlp_dim": int(state_dict["transformer.layers.0.2.fn.net.0.weight"].shape[0]),
        "max_context": int(state_dict["pos_embd.emb.d_0"].shape[0]) - 1,
        "grid": [int(state_dict["pos_embd.emb.d_1"].shape[0]), int(state_dict["pos_embd.emb.d_2"].shape[0])],
    }
