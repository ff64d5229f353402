"""`DenoiserState`: the sliding context window of a rollout, with the causal arch's K/V cache."""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import Tensor

__all__ = ["DenoiserState"]


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

    ``keys``/``raw_keys``/``values`` are empty tuples for ``arch="vfmf"`` (no cache: each
    step recomputes the whole window).

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

        return replace(
            self,
            frames=self.frames.repeat_interleave(num_samples, dim=0),
            keys=rep(self.keys),
            raw_keys=rep(self.raw_keys),
            values=rep(self.values),
        )
