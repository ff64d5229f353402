"""The causal spatio-temporal trunk (``arch="causal"``) with an exact context K/V cache.

Tokens are laid out (b, n, h*w, width) for n frames. Per layer:

1. temporal attention at each patch over the frames, with 1-D rotary positions (the
   frame's index in the window) and a *context-local causal* mask: a context frame attends
   only to itself, the target (last) frame attends to every context frame and itself;
2. spatial attention within each frame, with axial 2-D rotary positions (any grid);
3. an MLP.

Queries and keys are RMS-normalised per head. Every sub-block is adaLN-zero modulated by
its own frame's conditioning (the embedding of that frame's flow time, context frames at
t = 1, plus an optional ``cond`` vector on the target), with a per-layer modulation
projection initialised to zero, so an untrained trunk outputs exactly zero.

Why context frames do not attend to earlier context frames: a rollout keeps a sliding
window and must never recompute cached keys/values. A cached frame's deeper-layer keys
are fixed when the frame is appended; once the window has slid, the *oldest* frame of the
window is all an uncached call sees of the past, so for cached and uncached paths to agree
its representation can depend on nothing but itself. Every frame becomes the oldest one
eventually, hence each context frame's representation is a function of that frame alone,
and all temporal mixing happens in the target frame's queries, at every layer.

The sampling window step and its eager CPU fast path live in
:mod:`~featureflow.forecast.causal_fast`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featureflow.forecast.causal_fast import context_windows, fast_window, frame_layers, step_window
from featureflow.forecast.layers import MLP, Attention, CondEmbedding, TimeEmbedding
from featureflow.forecast.rope import apply_rope, grid_angles, rope_angles
from featureflow.kernels import adaln_modulate, qk_rmsnorm_rope, window_attention

__all__ = ["CausalTrunk", "context_mask", "teacher_mask"]


def teacher_mask(lengths: Tensor | list[int], device: torch.device | None = None) -> Tensor:
    """Temporal mask of a teacher-forced clip of T frames (T clean, then T - 1 targets).

    ``lengths[j - 1]`` is the number of clean frames target ``j`` (1..T-1) sees: frames
    ``j - m .. j - 1`` (0 = none, an unconditional target). Clean frames attend only to
    themselves, every target to itself. True = may attend; (2T - 1, 2T - 1).

    Example:
        >>> teacher_mask([1, 1]).int().tolist()
        [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [1, 0, 0, 1, 0], [0, 1, 0, 0, 1]]
    """
    lengths = [int(m) for m in lengths]
    T = len(lengths) + 1
    mask = torch.eye(2 * T - 1, dtype=torch.bool, device=device)
    for j, m in enumerate(lengths, start=1):
        if not 0 <= m <= j:
            raise ValueError(f"target {j} can see at most {j} earlier frames, got a context length of {m}")
        mask[T + j - 1, j - m : j] = True
    return mask


def context_mask(n: int, device: torch.device | None = None) -> Tensor:
    """Temporal attention mask for ``n`` frames (n-1 context + 1 target); True = may attend.

    Example:
        >>> context_mask(3).int().tolist()
        [[1, 0, 0], [0, 1, 0], [1, 1, 1]]
    """
    mask = torch.eye(n, dtype=torch.bool, device=device)
    mask[-1] = True
    return mask


class CausalBlock(nn.Module):
    """One layer: temporal attention, spatial attention, MLP, each adaLN-zero modulated."""

    def __init__(self, width: int, heads: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.width = width
        self.ada = nn.Linear(width, 9 * width)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)
        self.temporal = Attention(width, heads, qk_norm_eps=1e-6, dropout=dropout)
        self.spatial = Attention(width, heads, qk_norm_eps=1e-6, dropout=dropout)
        self.mlp = MLP(width, mlp_dim, dropout=dropout, approximate="tanh")

    def temporal_kv(self, z: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """Only the temporal keys and values (b, hw, H, n, hd) of ``z`` (b, n, hw, d), unrotated."""
        t_shift, t_scale = self.ada(F.silu(c)).unsqueeze(2).chunk(9, dim=-1)[:2]
        y = adaln_modulate(z, t_shift, t_scale)
        _, k, v = self.temporal.qkv(y)
        return k.permute(0, 2, 3, 1, 4), v.permute(0, 2, 3, 1, 4)

    def forward(
        self,
        z: Tensor,
        c: Tensor,
        t_rope: tuple[Tensor, Tensor],
        s_rope: tuple[Tensor, Tensor],
        mask: Tensor | None = None,
        past: tuple[Tensor, Tensor] | None = None,
        window: tuple[Tensor, Tensor] | None = None,
        c_act: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Run the layer on ``z`` (b, n, hw, d) with conditioning ``c`` (b, n, d).

        ``t_rope`` holds the temporal angles of the n frames, ``mask`` (n, n) the temporal
        mask, ``past`` optional cached (rotated keys, values) (b, hw, H, m, hd) that the
        frames' queries also attend to. ``window`` (one target frame, n = 1, no mask) is
        the same cache held in (b, hw, H, m + 1, hd) buffers whose last slot is scratch:
        the frame's rotated key and value are written there in place (no concatenation).
        ``c_act`` is ``F.silu(c)`` when the caller computed it once for every layer.
        Returns the new tokens and the frames' own (unrotated) temporal keys and values,
        each (b, hw, H, n, hd).
        """
        b, n, hw, d = z.shape
        mods = self.ada(F.silu(c) if c_act is None else c_act).unsqueeze(2).chunk(9, dim=-1)  # each (b, n, 1, d)
        t_shift, t_scale, t_gate, s_shift, s_scale, s_gate, m_shift, m_scale, m_gate = mods
        # temporal attention, tokens (b, hw, H, n, hd)
        y = adaln_modulate(z, t_shift, t_scale)
        q, k, v = (u.permute(0, 2, 3, 1, 4) for u in self.temporal.project(y))
        tq, tk = self.temporal.q_norm, self.temporal.k_norm
        # k: the normalised, un-rotated keys (what the cache stores)
        qr, kr, k = qk_rmsnorm_rope(q, k, tq.weight, tk.weight, *t_rope, eps=tq.eps, return_normed_k=True)
        if window is not None:  # one query per patch over the cached keys + its own key
            window[0][..., -1:, :] = kr
            window[1][..., -1:, :] = v
            att = window_attention(qr, window[0], window[1])
        else:
            if past is not None:
                kr = torch.cat([past[0], kr], dim=-2)
                vv = torch.cat([past[1], v], dim=-2)
            else:
                vv = v
            att = self.temporal.attend(qr, kr, vv, mask)
        z = z + t_gate * self.temporal.out(att.permute(0, 3, 1, 2, 4))
        # spatial attention within each frame, tokens (b, n, H, hw, hd)
        y = adaln_modulate(z, s_shift, s_scale)
        qs, ks, vs = (u.transpose(-3, -2) for u in self.spatial.project(y))
        sq, sk = self.spatial.q_norm, self.spatial.k_norm
        qs, ks = qk_rmsnorm_rope(qs, ks, sq.weight, sk.weight, *s_rope, eps=sq.eps)
        att = self.spatial.attend(qs, ks, vs)
        z = z + s_gate * self.spatial.out(att.transpose(-3, -2))
        # MLP
        y = adaln_modulate(z, m_shift, m_scale)
        z = z + m_gate * self.mlp(y)
        return z, k, v


class CausalTrunk(nn.Module):
    """Causal spatio-temporal DiT with per-frame flow times and relative positions.

    Args:
        latent_dim: channels C of the latents.
        width: hidden size (``width / heads`` divisible by 4, for 2-D rotary positions).
        depth: number of layers.
        heads: attention heads.
        mlp_dim: hidden size of each MLP.
        dropout: attention/MLP dropout (training mode only).
        frequency_dim: size of the sinusoidal time features.
        rope_base: rotary wavelength base for both the temporal and the spatial axes.
        cond_dim: size of an optional extra conditioning vector for the target frame
            (embedded by :class:`~featureflow.forecast.layers.CondEmbedding`).
        interval_cond: a second time input for the target frame, the interval length
            ``h`` of an average velocity (MeanFlow): its embedding (a
            :class:`~featureflow.forecast.layers.TimeEmbedding` whose last layer starts at
            zero) is added to the target's conditioning, so a plain flow trunk's weights
            load into it with the same outputs at any ``h``. ``h`` = None means 0.

    Example:
        >>> import torch
        >>> trunk = CausalTrunk(4, 16, 1, 2, 32)
        >>> trunk(torch.randn(1, 3, 2, 3, 4), torch.ones(1, 3)).shape
        torch.Size([1, 2, 3, 4])
    """

    def __init__(
        self,
        latent_dim: int,
        width: int,
        depth: int,
        heads: int,
        mlp_dim: int,
        dropout: float = 0.0,
        frequency_dim: int = 256,
        rope_base: float = 100.0,
        cond_dim: int | None = None,
        interval_cond: bool = False,
    ) -> None:
        super().__init__()
        if width % heads != 0 or (width // heads) % 4 != 0:
            raise ValueError(f"arch='causal' needs width/heads divisible by 4 (2-D rotary), got {width}/{heads}")
        self.width, self.heads, self.head_dim, self.rope_base = width, heads, width // heads, rope_base
        # rotary cos/sin tables by (axis, sizes, device): constants, not state (never saved)
        self._rope_cache: dict[tuple, tuple[Tensor, Tensor]] = {}
        self.embed_in = nn.Linear(latent_dim, width)
        self.time_embed = TimeEmbedding(width, frequency_dim)
        self.cond_embed = CondEmbedding(cond_dim, width) if cond_dim else None
        self.blocks = nn.ModuleList(CausalBlock(width, heads, mlp_dim, dropout) for _ in range(depth))
        self.final_ada = nn.Linear(width, 2 * width)
        self.final_linear = nn.Linear(width, latent_dim)
        for lin in (self.final_ada, self.final_linear):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        # built last, so the other modules draw the same initial weights with or without it
        self.interval_embed: TimeEmbedding | None = None
        if interval_cond:
            self.interval_embed = TimeEmbedding(width, frequency_dim)
            nn.init.zeros_(self.interval_embed.mlp.fc2.weight)  # zero at the start: a plain flow's outputs
            nn.init.zeros_(self.interval_embed.mlp.fc2.bias)

    # ----------------------------------------------------------------- helpers
    def _time_rope(self, n: int, device: torch.device, start: int = 0) -> tuple[Tensor, Tensor]:
        key = ("t", n, start, str(device))
        if key not in self._rope_cache:
            with torch.inference_mode(False):  # ordinary tensors, usable later with autograd
                pos = torch.arange(start, start + n, device=device, dtype=torch.float32)
                self._rope_cache[key] = rope_angles(pos, self.head_dim, self.rope_base)
        return self._rope_cache[key]

    def _space_rope(self, h: int, w: int, device: torch.device) -> tuple[Tensor, Tensor]:
        key = ("s", h, w, str(device))
        if key not in self._rope_cache:
            if len(self._rope_cache) > 64:  # many different grids: keep the table cache small
                self._rope_cache.clear()
            with torch.inference_mode(False):
                self._rope_cache[key] = grid_angles(h, w, self.head_dim, self.rope_base, device=device)
        return self._rope_cache[key]

    def _interval(self, h: Tensor | None, like: Tensor) -> Tensor | None:
        """The embedding of interval lengths ``h`` (shaped like the target times ``like``;
        None = 0), or None for a trunk without ``interval_cond``."""
        if self.interval_embed is None:
            if h is not None:
                raise ValueError("this denoiser was built without interval_cond; pass h=None or set interval_cond=True")
            return None
        return self.interval_embed(like.new_zeros(like.shape) if h is None else h.to(like.dtype))

    def _conditioning(self, times: Tensor, cond: Tensor | None, h: Tensor | None = None) -> Tensor:
        c = self.time_embed(times)  # (b, n, d)
        extra = self._interval(h, times[:, -1])
        if cond is not None:
            if self.cond_embed is None:
                raise ValueError("this denoiser was built without cond_dim; pass cond=None or set cond_dim")
            extra = self.cond_embed(cond) if extra is None else extra + self.cond_embed(cond)
        if extra is not None:
            c = torch.cat([c[:, :-1], c[:, -1:] + extra[:, None]], dim=1)
        return c

    def _final(self, z: Tensor, c: Tensor, h: int, w: int) -> Tensor:
        shift, scale = self.final_ada(F.silu(c)).unsqueeze(1).chunk(2, dim=-1)  # c (b, d)
        z = adaln_modulate(z, shift, scale, eps=1e-6)
        return self.final_linear(z).reshape(z.shape[0], h, w, -1)

    # ------------------------------------------------------------- uncached
    def forward(self, frames: Tensor, times: Tensor, cond: Tensor | None = None, interval: Tensor | None = None) -> Tensor:
        """Velocity of the last of ``frames`` (b, n, h, w, C) given flow times (b, n) (and,
        with ``interval_cond``, the target's interval lengths ``interval`` (b,))."""
        b, n, h, w, _ = frames.shape
        z = self.embed_in(frames).reshape(b, n, h * w, self.width)
        c = self._conditioning(times, cond, interval)
        t_rope = self._time_rope(n, frames.device)
        s_rope = self._space_rope(h, w, frames.device)
        mask = context_mask(n, frames.device)
        for block in self.blocks:
            z, _, _ = block(z, c, t_rope, s_rope, mask)
        return self._final(z[:, -1], c[:, -1], h, w)

    # -------------------------------------------------------- teacher forcing
    def teacher_forced(
        self, clean: Tensor, noisy: Tensor, times: Tensor, mask: Tensor, cond: Tensor | None = None,
        interval: Tensor | None = None,
    ) -> Tensor:
        """Velocities of every target of a clip in one pass (training with clean context).

        ``clean`` (b, T, h, w, C) holds the clean frames, ``noisy`` (b, T - 1, h, w, C) the
        noisy targets of frames 1..T-1 at flow times ``times`` (b, T - 1). The 2T - 1 frames
        run as one sequence: clean frame ``i`` sits at temporal position ``i`` and attends
        only to itself, target ``j`` sits at position ``j`` and attends to itself and the
        clean frames that ``mask`` allows (see :func:`teacher_mask`). Rotary positions are
        relative, so target ``j`` with context frames ``j - m .. j - 1`` gets exactly the
        velocity that :meth:`forward` gives for that window. ``cond`` (b, T - 1, A) is the
        conditioning of each target, ``interval`` (b, T - 1) the interval lengths of each
        target (``interval_cond`` trunks). Returns (b, T - 1, h, w, C).
        """
        b, T, h, w, _ = clean.shape
        n = 2 * T - 1
        frames = torch.cat([clean, noisy], dim=1)
        z = self.embed_in(frames).reshape(b, n, h * w, self.width)
        c = self.time_embed(torch.cat([times.new_ones(b, T), times], dim=1))  # (b, n, d)
        if cond is not None:
            if self.cond_embed is None:
                raise ValueError("this denoiser was built without cond_dim; pass cond=None or set cond_dim")
            c = torch.cat([c[:, :T], c[:, T:] + self.cond_embed(cond)], dim=1)
        extra = self._interval(interval, times)
        if extra is not None:
            c = torch.cat([c[:, :T], c[:, T:] + extra], dim=1)
        t_rope = self._teacher_rope(T, frames.device)
        s_rope = self._space_rope(h, w, frames.device)
        for block in self.blocks:
            z, _, _ = block(z, c, t_rope, s_rope, mask)
        out = self._final(z[:, T:].reshape(b * (T - 1), h * w, self.width), c[:, T:].reshape(b * (T - 1), -1), h, w)
        return out.reshape(b, T - 1, h, w, -1)

    def _teacher_rope(self, T: int, device: torch.device) -> tuple[Tensor, Tensor]:
        key = ("teacher", T, str(device))
        if key not in self._rope_cache:
            with torch.inference_mode(False):
                pos = torch.cat([torch.arange(T), torch.arange(1, T)]).to(device, torch.float32)
                self._rope_cache[key] = rope_angles(pos, self.head_dim, self.rope_base)
        return self._rope_cache[key]

    # --------------------------------------------------------------- cached
    def encode_frames(self, frames: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Per-layer raw temporal keys and values of clean context ``frames`` (b, m, h, w, C).

        Each frame is encoded on its own (it attends only to itself), so this is exact for
        any window. Returns two lists (one entry per layer) of (b, hw, H, m, hd) tensors.
        """
        b, m, h, w, _ = frames.shape
        z = self.embed_in(frames).reshape(b * m, 1, h * w, self.width)
        c = self.time_embed(frames.new_ones(b * m, 1))
        t_rope = self._time_rope(1, frames.device)
        s_rope = self._space_rope(h, w, frames.device)
        keys, values = [], []
        last = len(self.blocks) - 1
        if self._fast_window(frames):  # eager sampling: causal_fast.frame_step
            return frame_layers(self, z, c, b, m, h, w)
        for i, block in enumerate(self.blocks):
            if i < last:
                z, k, v = block(z, c, t_rope, s_rope)
            else:  # the last layer's outputs are never needed, only its keys/values
                k, v = block.temporal_kv(z, c)
            # (b*m, hw, H, 1, hd) -> (b, hw, H, m, hd)
            keys.append(k.reshape(b, m, h * w, self.heads, self.head_dim).permute(0, 2, 3, 1, 4))
            values.append(v.reshape(b, m, h * w, self.heads, self.head_dim).permute(0, 2, 3, 1, 4))
        return keys, values

    def rotate_keys(self, raw_keys: tuple[Tensor, ...] | list[Tensor]) -> tuple[Tensor, ...]:
        """Rotate cached raw keys (b, hw, H, m, hd) for window positions 0..m-1."""
        if not raw_keys:
            return ()
        m = raw_keys[0].shape[-2]
        cos, sin = self._time_rope(m, raw_keys[0].device)
        return tuple(apply_rope(k, cos, sin) for k in raw_keys)

    def context_windows(
        self, raw_keys: tuple[Tensor, ...], values: tuple[Tensor | tuple[Tensor, ...], ...]
    ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """Key and value windows (b, hw, H, m + 1, hd) of cached raw keys (rotated for window
        positions 0..m-1, as :meth:`rotate_keys`) and values, the last slot scratch for the
        target frame (:func:`~featureflow.forecast.causal_fast.context_windows`)."""
        return context_windows(self, raw_keys, values)

    def step(
        self,
        keys: tuple[Tensor, ...],
        values: tuple[Tensor, ...],
        x_t: Tensor,
        t: Tensor,
        cond: Tensor | None = None,
        interval: Tensor | None = None,
    ) -> Tensor:
        """Velocity of the target ``x_t`` (b, h, w, C) at flow time ``t`` (b,) over a cached window.

        ``keys``/``values`` are per-layer (b, hw, H, m, hd) caches, concatenated with the
        target's own key/value in every layer; :meth:`step_window` avoids that copy.
        """
        b, h, w, _ = x_t.shape
        m = keys[0].shape[-2] if keys else 0
        z = self.embed_in(x_t).reshape(b, 1, h * w, self.width)
        c = self._conditioning(t[:, None], cond, interval)
        t_rope = self._time_rope(1, x_t.device, start=m)
        s_rope = self._space_rope(h, w, x_t.device)
        for i, block in enumerate(self.blocks):
            past = (keys[i], values[i]) if m else None
            z, _, _ = block(z, c, t_rope, s_rope, past=past)
        return self._final(z[:, 0], c[:, 0], h, w)

    def step_window(
        self,
        key_window: tuple[Tensor, ...],
        value_window: tuple[Tensor, ...],
        x_t: Tensor,
        t: Tensor,
        cond: Tensor | None = None,
        interval: Tensor | None = None,
    ) -> Tensor:
        """:meth:`step` over preallocated (b, hw, H, m + 1, hd) windows (m >= 1 context frames),
        with no cache copied per network evaluation (:func:`~featureflow.forecast.causal_fast.step_window`)."""
        return step_window(self, key_window, value_window, x_t, t, cond, interval)

    # ----------------------------------------------------- the eager fast path
    def _fast_window(self, x: Tensor, *others: Tensor | None) -> bool:
        """True when :meth:`step_window` and :meth:`encode_frames` may take the eager fast path
        (:func:`~featureflow.forecast.causal_fast.fast_window`; ``x``, ``others``: the inputs)."""
        return fast_window(self, x, *others)
