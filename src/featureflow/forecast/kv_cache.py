"""`DenoiserState`: the sliding context window of a rollout, with the causal arch's K/V cache
(held in preallocated windows with one scratch slot for the frame being sampled)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import Tensor

__all__ = ["DenoiserState", "with_scratch_slot", "context_views"]


@dataclass(frozen=True)
class DenoiserState:
    """What :meth:`Denoiser.prefill` returns and :meth:`Denoiser.step` / :meth:`Denoiser.append` consume.

    States are immutable: :meth:`Denoiser.append` returns a new state and leaves the old
    one usable (handy for branching rollouts and for a separate unconditional state in
    classifier-free guidance).

    Attributes:
        frames: the clean context window, (b, m, h, w, C), ``1 <= m <= max_context``, or
            ``None`` for an empty window (``prefill(None)``: unconditional).
        keys: causal arch only: per layer, the temporal-attention keys of the window,
            rotated for window positions ``0..m-1``, each (b, h*w, heads, m, head_dim).
        raw_keys: the same keys before the rotary embedding (re-rotated when the window
            slides; rotation is an elementwise product, no network evaluation).
        values: per layer, the temporal-attention values, same shape as ``keys``.
        key_window: causal arch only: per layer, a preallocated (b, h*w, heads, m + 1,
            head_dim) buffer whose first ``m`` slots hold ``keys`` (``keys`` is a view of
            it) and whose last slot is scratch: each :meth:`Denoiser.step` writes the
            target frame's key there in place instead of concatenating it to the cache
            (``()``: no buffer; the step then concatenates).
        value_window: the same for ``values``.

    ``keys``/``raw_keys``/``values`` are empty tuples for ``arch="vfmf"`` (no cache: each
    step recomputes the whole window). Only the scratch slot of a window is ever written
    after the state is built, so ``keys``/``values`` never change; two steps on the same
    state must not run concurrently (they share the scratch slot).

    Example:
        >>> import torch
        >>> s = DenoiserState(frames=torch.zeros(2, 3, 4, 4, 8))
        >>> s.batch_size, s.num_frames, s.grid
        (2, 3, (4, 4))
        >>> s.expand(5).batch_size
        10
    """

    frames: Tensor | None
    keys: tuple[Tensor, ...] = ()
    raw_keys: tuple[Tensor, ...] = ()
    values: tuple[Tensor, ...] = ()
    key_window: tuple[Tensor, ...] = ()
    value_window: tuple[Tensor, ...] = ()

    @property
    def batch_size(self) -> int | None:
        """Rows b of the state (after :meth:`expand`, b * num_samples); None if empty."""
        return None if self.frames is None else int(self.frames.shape[0])

    @property
    def num_frames(self) -> int:
        """Context frames m currently in the window."""
        return 0 if self.frames is None else int(self.frames.shape[1])

    @property
    def grid(self) -> tuple[int, int] | None:
        """The (h, w) patch grid; None if empty."""
        return None if self.frames is None else (int(self.frames.shape[2]), int(self.frames.shape[3]))

    def expand(self, num_samples: int) -> DenoiserState:
        """Repeat every batch row ``num_samples`` times (``repeat_interleave`` on dim 0).

        Row ``i * num_samples + j`` is sample ``j`` of batch element ``i``, so a result of
        shape (b * s, ...) reshapes to (b, s, ...). The cache is copied, not recomputed:
        prefill once on (b, ...) context, then expand for the samples.

        Example:
            >>> import torch
            >>> s = DenoiserState(frames=torch.arange(2.0).reshape(2, 1, 1, 1, 1))
            >>> s.expand(3).frames.flatten().tolist()
            [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
        """
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        if num_samples == 1 or self.frames is None:
            return self

        def rep(ts: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            return tuple(x.repeat_interleave(num_samples, dim=0) for x in ts)

        if self.key_window:  # repeat the buffers; keys/values stay views of them
            key_window, value_window = rep(self.key_window), rep(self.value_window)
            keys, values = context_views(key_window), context_views(value_window)
        else:
            key_window, value_window, keys, values = (), (), rep(self.keys), rep(self.values)
        return replace(
            self,
            frames=self.frames.repeat_interleave(num_samples, dim=0),
            keys=keys,
            raw_keys=rep(self.raw_keys),
            values=values,
            key_window=key_window,
            value_window=value_window,
        )


def with_scratch_slot(x: Tensor) -> Tensor:
    """``x`` (..., m, d) copied into a new (..., m + 1, d) buffer whose last slot is uninitialised.

    Example:
        >>> import torch
        >>> with_scratch_slot(torch.ones(2, 3, 4))[..., :3, :].sum().item()
        24.0
    """
    buf = x.new_empty(*x.shape[:-2], x.shape[-2] + 1, x.shape[-1])
    buf[..., :-1, :] = x
    return buf


def context_views(windows: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The context slots (..., :m, :) of (..., m + 1, d) window buffers, as views.

    Example:
        >>> import torch
        >>> context_views((torch.zeros(1, 5, 2),))[0].shape
        torch.Size([1, 4, 2])
    """
    return tuple(w[..., :-1, :] for w in windows)
