"""The causal trunk's sampling window step and its eager CPU fast path.

:func:`context_windows` and :func:`step_window` are the bodies of the methods of
:class:`~featureflow.forecast.causal_trunk.CausalTrunk` of the same names: the cached
context in preallocated (b, hw, H, m + 1, hd) windows whose last slot each step overwrites
with the target's key and value. When :func:`fast_window` allows it (eager sampling with
the PyTorch kernels, nothing that requires grad; asked through
``CausalTrunk._fast_window``), :func:`step_window` runs :func:`window_step` and
``CausalTrunk.encode_frames`` :func:`frame_layers` / :func:`frame_step` instead of
``CausalBlock.forward``: the same layer in fewer small ops (helpers in
:mod:`~featureflow.forecast.window_ops`). Every layer's adaLN modulation comes from one
matmul with the stacked ``ada`` weights (:func:`all_mods`); the rotary tables with the
QK-norm weights folded in are cached per window position and grid (:func:`layer_tables`),
both rebuilt when a weight changes (:func:`weight_cached`). The functions take the block
or trunk as their first argument; no parameter lives here (the caches sit on the trunk).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featureflow.forecast.window_ops import (
    gelu_tanh_, linear, modulated_norm, norm_rotate, qk_tables, rms_eps, rms_factor, spatial_attention,
    temporal_attention,
)
from featureflow.kernels.dispatch import get_mode

__all__ = ["all_mods", "context_windows", "fast_window", "frame_layers", "frame_step", "full_rope", "layer_tables",
           "spatial_mlp", "stacked_ada", "step_window", "weight_cached", "window_step"]


# ----------------------------------------------------------------- one layer
def window_step(
    block: nn.Module,
    z: Tensor,
    mods: tuple[Tensor, ...],
    t_tables: tuple[Tensor, Tensor],
    s_tables: tuple[Tensor, Tensor],
    key_window: Tensor,
    value_window: Tensor,
) -> Tensor:
    """:meth:`CausalBlock.forward` of ``block`` for one target frame over a K/V window, in fewer small ops.

    Same value as ``block(z, c, ..., window=(key_window, value_window))`` up to
    float rounding: the adaLN modulations come precomputed (``mods``: the nine
    (b, 1, 1, d) chunks of this layer's ``ada``, the scales already ``1 + scale``),
    queries and keys are normalised and rotated together in float32, in the
    projection's own layout, with the norm weights (and the queries' softmax scale)
    folded into the rotary tables (:func:`~featureflow.forecast.window_ops.norm_rotate`),
    the temporal attention of one query over the window avoids the fused kernel, the
    MLP's tanh-GELU is computed through a sigmoid
    (:func:`~featureflow.forecast.window_ops.gelu_tanh_`; this CPU's ``tanh`` is slow), a modulation shared by all rows goes into LayerNorm's own
    affine, the gated residual adds are one ``addcmul_`` each, and every elementwise
    step after a projection or norm runs in place on that fresh output. With bfloat16
    weights the matmuls run in bfloat16 (prepacked oneDNN weights) and the elementwise
    work in float32 (:mod:`~featureflow.forecast.window_ops`). Only for inference
    (nothing may require grad).

    Args:
        block: the layer, a :class:`~featureflow.forecast.causal_trunk.CausalBlock`.
        z: (b, 1, hw, d) tokens of the target frame (overwritten: the residual adds run in place).
        mods: the layer's nine modulation tensors (shift, 1 + scale, gate) x (temporal,
            spatial, MLP), each broadcastable to ``z``.
        t_tables: this layer's temporal rotary tables for the target's position, from
            :func:`~featureflow.forecast.window_ops.qk_tables`, each (2, 1, head_dim).
        s_tables: this layer's spatial tables, each (hw, 2, 1, head_dim).
        key_window: (b, hw, H, m + 1, hd) rotated keys; the last slot is written.
        value_window: (b, hw, H, m + 1, hd) values; the last slot is written.

    Returns:
        The layer's output tokens (b, 1, hw, d).
    """
    b, _, hw, d = z.shape
    heads, hd = block.temporal.heads, block.temporal.head_dim
    t_shift, t_scale1, t_gate = mods[:3]
    # temporal attention: one query per patch over the window's keys
    y = modulated_norm(z, t_shift, t_scale1)
    qkv = linear(y, block.temporal.qkv_proj).view(b, hw, 3, heads, hd)
    qk = norm_rotate(qkv[:, :, :2], rms_eps(block.temporal, z), t_tables)  # float32 (b, hw, 2, H, hd)
    key_window[..., -1, :] = qk[:, :, 1]
    value_window[..., -1, :] = qkv[:, :, 2]
    att = temporal_attention(qk[:, :, 0], key_window, value_window)  # float32 (b, hw, H, hd)
    z = z.addcmul_(linear(att.view(b, 1, hw, d).to(z.dtype), block.temporal.proj), t_gate)
    return spatial_mlp(block, z, mods, s_tables)


def frame_step(
    block: nn.Module, z: Tensor, mods: tuple[Tensor, ...], s_tables: tuple[Tensor, Tensor], last: bool = False
) -> tuple[Tensor | None, Tensor, Tensor]:
    """:meth:`CausalBlock.forward` of ``block`` for clean frames that attend only to themselves.

    A frame's temporal attention over itself alone returns its value exactly (the
    softmax of one score is 1), so no query is projected. ``z`` (b, 1, hw, d), ``mods``
    and ``s_tables`` as in :func:`window_step`. Returns the new tokens (None with
    ``last``: only the keys and values are wanted) and the frame's normalised,
    unrotated temporal keys and values, each (b, hw, H, hd) in the weights' dtype.
    """
    b, _, hw, d = z.shape
    heads, hd = block.temporal.heads, block.temporal.head_dim
    t_shift, t_scale1, t_gate = mods[:3]
    y = modulated_norm(z, t_shift, t_scale1)
    kv = linear(y, block.temporal.qkv_proj, start=d).view(b, hw, 2, heads, hd)
    k_raw, v = kv[:, :, 0], kv[:, :, 1]
    k = k_raw * rms_factor(k_raw, rms_eps(block.temporal, z))
    if block.temporal.k_norm.weight is not None:
        k.mul_(block.temporal.k_norm.weight)
    k = k.to(z.dtype)
    if last:
        return None, k, v
    z = z.addcmul_(linear(v.reshape(b, 1, hw, d), block.temporal.proj), t_gate)
    return spatial_mlp(block, z, mods, s_tables), k, v


def spatial_mlp(block: nn.Module, z: Tensor, mods: tuple[Tensor, ...], s_tables: tuple[Tensor, Tensor]) -> Tensor:
    """The spatial attention and MLP sub-blocks of :func:`window_step` / :func:`frame_step`."""
    b, _, hw, d = z.shape
    heads, hd = block.spatial.heads, block.spatial.head_dim
    s_shift, s_scale1, s_gate, m_shift, m_scale1, m_gate = mods[3:]
    y = modulated_norm(z, s_shift, s_scale1)
    qkv = linear(y, block.spatial.qkv_proj).view(b, hw, 3, heads, hd)
    qk = norm_rotate(qkv[:, :, :2], rms_eps(block.spatial, z), s_tables).to(z.dtype).transpose(1, 3)  # (b, H, 2, hw, hd)
    att = spatial_attention(qk[:, :, 0], qk[:, :, 1], qkv[:, :, 2].transpose(1, 2))
    z = z.addcmul_(linear(att.transpose(1, 2).reshape(b, 1, hw, d), block.spatial.proj), s_gate)
    # MLP; with bf16 weights the GELU runs in float32 (faster elementwise on this CPU)
    y = modulated_norm(z, m_shift, m_scale1)
    hidden = linear(y, block.mlp.fc1)
    hidden = gelu_tanh_(hidden) if hidden.dtype == torch.float32 else gelu_tanh_(hidden.float()).to(hidden.dtype)
    return z.addcmul_(linear(hidden, block.mlp.fc2), m_gate)


# --------------------------------------------------- the trunk's window step
def fast_window(trunk: nn.Module, x: Tensor, *others: Tensor | None) -> bool:
    """True when :meth:`CausalTrunk.step_window` may take :func:`window_step` (and
    :meth:`CausalTrunk.encode_frames` :func:`frame_step`): eager sampling with the PyTorch
    kernels (no Triton path, not under ``torch.compile``, which fuses the blockwise step
    itself, no active dropout, nothing that requires grad among the weights of ``trunk``
    and the inputs ``x``, ``others``). Called through ``CausalTrunk._fast_window``."""
    if x.is_cuda or get_mode() == "triton" or trunk.blocks[0].ada.weight.dtype != x.dtype:
        return False
    if (trunk.training and trunk.blocks[0].temporal.dropout > 0) or torch.compiler.is_compiling():
        return False
    if not torch.is_grad_enabled():
        return True
    inputs = [x, *(u for u in others if u is not None)]
    return not any(p.requires_grad for p in trunk.parameters()) and not any(u.requires_grad for u in inputs)


def context_windows(
    trunk: nn.Module, raw_keys: tuple[Tensor, ...], values: tuple[Tensor | tuple[Tensor, ...], ...]
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """:meth:`CausalTrunk.context_windows`: key and value windows (b, hw, H, m + 1, hd) of
    cached raw keys and values: the keys rotated for window positions 0..m-1 (as
    :meth:`CausalTrunk.rotate_keys`), written straight into the new buffers (no rotated copy
    in between), whose last slot is scratch for the target frame. Same values as
    :meth:`CausalTrunk.rotate_keys` up to float rounding. Each entry of ``values`` is a
    (b, hw, H, m, hd) tensor or a tuple of tensors whose concatenation along the window axis
    it is (copied straight into the window).
    """
    if not raw_keys:
        return (), ()
    k0 = raw_keys[0]
    m, hd, dev = k0.shape[-2], k0.shape[-1], k0.device
    cos, sin = (u.to(k0.dtype) for u in full_rope(trunk, ("t", m, 0, str(dev)), lambda: trunk._time_rope(m, dev)))
    half = hd // 2
    keys, vals = [], []
    for k, v in zip(raw_keys, values):
        window = k.new_empty(*k.shape[:-2], m + 1, hd)
        swapped = torch.cat([k[..., half:], k[..., :half]], dim=-1)
        if k.requires_grad and torch.is_grad_enabled():  # out= is not differentiable
            window[..., :m, :] = torch.addcmul(k * cos, swapped, sin)
        else:
            torch.mul(k, cos, out=window[..., :m, :])
            window[..., :m, :].addcmul_(swapped, sin)
        keys.append(window)
        parts = v if isinstance(v, tuple) else (v,)
        window = parts[-1].new_empty(*parts[-1].shape[:-2], m + 1, parts[-1].shape[-1])
        at = 0
        for part in parts:
            window[..., at : at + part.shape[-2], :] = part
            at += part.shape[-2]
        vals.append(window)
    return tuple(keys), tuple(vals)


def step_window(
    trunk: nn.Module,
    key_window: tuple[Tensor, ...],
    value_window: tuple[Tensor, ...],
    x_t: Tensor,
    t: Tensor,
    cond: Tensor | None = None,
    interval: Tensor | None = None,
) -> Tensor:
    """:meth:`CausalTrunk.step_window`: :meth:`CausalTrunk.step` over preallocated
    (b, hw, H, m + 1, hd) windows (m >= 1 context frames).

    Each layer writes the target's rotated key and value into the windows' last slot
    in place and attends over the whole window (:func:`featureflow.kernels.window_attention`,
    or :func:`window_step` on the eager fast path), so no cache is copied per network
    evaluation. Same value as :meth:`CausalTrunk.step`.
    """
    b, h, w, _ = x_t.shape
    m = key_window[0].shape[-2] - 1
    z = trunk.embed_in(x_t).reshape(b, 1, h * w, trunk.width)
    c = trunk._conditioning(t[:, None], cond, interval)
    c_act = F.silu(c)
    if trunk._fast_window(x_t, t, cond, interval):
        # one modulation for all rows when they share it (the usual: one flow time per step)
        mods = all_mods(trunk, c_act[:1] if b > 1 and bool((c_act == c_act[:1]).all()) else c_act)
        tables = layer_tables(trunk, m, h, w, x_t.device)
        for i, (block, kw, vw) in enumerate(zip(trunk.blocks, key_window, value_window)):
            z = window_step(block, z, tuple(u.select(-2, i) for u in mods), *tables[i], kw, vw)
        return trunk._final(z[:, 0], c[:, 0], h, w)
    t_rope = trunk._time_rope(1, x_t.device, start=m)
    s_rope = trunk._space_rope(h, w, x_t.device)
    for block, kw, vw in zip(trunk.blocks, key_window, value_window):
        z, _, _ = block(z, c, t_rope, s_rope, window=(kw, vw), c_act=c_act)
    return trunk._final(z[:, 0], c[:, 0], h, w)


def frame_layers(trunk: nn.Module, z: Tensor, c: Tensor, b: int, m: int, h: int, w: int) -> tuple[list[Tensor], list[Tensor]]:
    """:meth:`CausalTrunk.encode_frames` of ``trunk`` through :func:`frame_step`: ``z``
    (b * m, 1, hw, d) the embedded clean frames, ``c`` their (equal) conditioning; returns
    the per-layer keys and values, each (b, hw, H, m, hd)."""
    mods = all_mods(trunk, F.silu(c[:1]))  # every clean frame has t = 1: one modulation for all
    tables = layer_tables(trunk, 0, h, w, z.device)
    keys, values = [], []
    last = len(trunk.blocks) - 1
    for i, block in enumerate(trunk.blocks):
        z, k, v = frame_step(block, z, tuple(u.select(-2, i) for u in mods), tables[i][1], last=i == last)
        keys.append(k.view(b, m, h * w, trunk.heads, trunk.head_dim).permute(0, 2, 3, 1, 4))
        values.append(v.reshape(b, m, h * w, trunk.heads, trunk.head_dim).permute(0, 2, 3, 1, 4))
    return keys, values


# --------------------------------------------------- cached per-trunk tables
def weight_cached(trunk: nn.Module, name: tuple, params: list[Tensor], build: Callable[[], object]) -> object:
    """``build()`` cached on ``trunk`` under ``name`` until one of ``params`` changes (tensor
    version counters); weights made under ``torch.inference_mode()`` have no version counter
    (and may change in place unseen): built afresh every call."""
    if any(p.is_inference() for p in params):
        return build()
    key = tuple((p.data_ptr(), p._version, p.dtype, str(p.device)) for p in params)
    cache = trunk.__dict__.setdefault("_weight_cache", {})
    if name not in cache and len(cache) > 64:  # many windows or grids: keep the cache small
        cache.clear()
    cached = cache.get(name)
    if cached is None or cached[0] != key:
        with torch.inference_mode(False):
            cached = cache[name] = (key, build())
    return cached[1]


def all_mods(trunk: nn.Module, c_act: Tensor) -> tuple[Tensor, ...]:
    """Every layer's adaLN modulation of ``c_act`` (b, 1, d) in one matmul: nine
    (b, 1, 1, depth, d) tensors, the scales already ``1 + scale``."""
    weight, bias = stacked_ada(trunk)
    b = c_act.shape[0]
    return F.linear(c_act, weight, bias).view(b, 1, 1, len(trunk.blocks), 9, trunk.width).unbind(-2)


def layer_tables(trunk: nn.Module, m: int, h: int, w: int, device: torch.device) -> list[tuple[tuple[Tensor, Tensor], ...]]:
    """Per layer, the temporal (target at position ``m``) and spatial (``h`` x ``w``)
    rotary tables with the QK-norm weights and the queries' softmax scale folded in
    (:func:`~featureflow.forecast.window_ops.qk_tables`); cached until a weight changes."""
    t_rope = full_rope(trunk, ("t", 1, m, str(device)), lambda: trunk._time_rope(1, device, start=m))
    s_rope = full_rope(trunk, ("s", h, w, str(device)), lambda: trunk._space_rope(h, w, device), True)
    scale = trunk.head_dim**-0.5
    atts = [(blk.temporal, blk.spatial) for blk in trunk.blocks]
    params = [p for pair in atts for a in pair for p in (a.q_norm.weight, a.k_norm.weight) if p is not None]

    def build() -> list[tuple[tuple[Tensor, Tensor], ...]]:
        with torch.no_grad():
            return [(qk_tables(tp.q_norm.weight, tp.k_norm.weight, *t_rope, scale),
                     qk_tables(sp.q_norm.weight, sp.k_norm.weight, *s_rope, scale)) for tp, sp in atts]

    return weight_cached(trunk, ("tables", m, h, w, str(device)), params, build)  # type: ignore[return-value]


def stacked_ada(trunk: nn.Module) -> tuple[Tensor, Tensor]:
    """All layers' ``ada`` weights (depth * 9 * d, d) and biases stacked, the scale
    biases plus one; rebuilt whenever a weight changes (tensor version counters)."""
    params = [p for blk in trunk.blocks for p in (blk.ada.weight, blk.ada.bias)]

    def build() -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            weight = torch.cat(params[0::2])
            bias = torch.cat(params[1::2]).view(len(trunk.blocks), 9, trunk.width).clone()
            bias[:, 1::3] += 1.0  # t_scale, s_scale, m_scale -> 1 + scale
        return weight, bias.view(-1)

    return weight_cached(trunk, ("ada",), params, build)  # type: ignore[return-value]


def full_rope(
    trunk: nn.Module, key: tuple, tables: Callable[[], tuple[Tensor, Tensor]], per_token: bool = False
) -> tuple[Tensor, Tensor]:
    """Full-width rotary tables ``(cos | cos, -sin | sin)`` of ``tables()`` (cached in the
    trunk's rotary cache); ``per_token``: (hw, 1, 1, head_dim), broadcasting over (q/k, heads)."""
    key = ("full", *key)
    if key not in trunk._rope_cache:
        cos, sin = tables()
        with torch.inference_mode(False):
            full = torch.cat([cos, cos], dim=-1), torch.cat([-sin, sin], dim=-1)
            trunk._rope_cache[key] = tuple(u[:, None, None] for u in full) if per_token else full
    return trunk._rope_cache[key]
