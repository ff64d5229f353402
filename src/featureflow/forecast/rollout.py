"""`Rollout`: the result of an autoregressive forecast, and the noise / window helpers it uses."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from featureflow.typing import typechecked

__all__ = ["Rollout", "SampleStreams", "randn", "draw_window", "check_rollout_size"]


@dataclass(frozen=True)
class Rollout:
    """Forecast latents and the network evaluations spent on them.

    Attributes:
        latents: (b, s, k, h, w, C): batch, samples, forecast steps.
        nfe_per_frame: network evaluations spent on each forecast frame, exact
            (with classifier-free guidance each ODE step costs two evaluations).

    Example:
        >>> import torch
        >>> r = Rollout(torch.zeros(1, 2, 3, 4, 4, 8), (8, 8, 8))
        >>> r.nfe, r.horizon, r.num_samples
        (8, 3, 2)
    """

    latents: Tensor
    nfe_per_frame: tuple[int, ...]

    @property
    def nfe(self) -> int:
        """Network evaluations per forecast frame (rounded-up mean when they vary, e.g. dopri5)."""
        if not self.nfe_per_frame:
            return 0
        return math.ceil(sum(self.nfe_per_frame) / len(self.nfe_per_frame))

    @property
    def horizon(self) -> int:
        """Forecast steps k."""
        return int(self.latents.shape[2])

    @property
    def num_samples(self) -> int:
        """Samples s per batch element."""
        return int(self.latents.shape[1])


_GOLDEN = 0x9E3779B97F4A7C15  # spreads the per-clip seeds apart


class SampleStreams:
    """One noise stream per sample, so sample j of clip i does not depend on how many
    samples (or frames) are drawn: growing an ensemble from K to K' keeps the first K.

    The first draw takes one seed from ``generator`` (or the global RNG); the stream of
    row ``i * samples + j`` (sample j of clip i) is a generator seeded with the j-th seed
    drawn from a generator seeded with ``seed + i * golden``. Each forecast frame then
    draws every row's noise from its own stream, times ``scale`` (the forecaster's
    ``noise_scale``; 1 leaves the draws untouched).

    Example:
        >>> a = SampleStreams(torch.Generator().manual_seed(0), batch=1, samples=2)
        >>> b = SampleStreams(torch.Generator().manual_seed(0), batch=1, samples=4)
        >>> x, y = a.randn((2, 3), torch.device("cpu"), torch.float32), b.randn((4, 3), torch.device("cpu"), torch.float32)
        >>> bool(torch.equal(x, y[:2]))
        True
    """

    def __init__(self, generator: torch.Generator | None, batch: int, samples: int, scale: float = 1.0) -> None:
        self.source, self.batch, self.samples, self.scale = generator, int(batch), int(samples), float(scale)
        self.device = generator.device if generator is not None else torch.device("cpu")
        self.streams: list[torch.Generator] | None = None

    def _make(self) -> list[torch.Generator]:
        seed = int(torch.randint(0, 2**62, (1,), generator=self.source, device=self.device))
        streams = []
        for i in range(self.batch):
            per_clip = torch.Generator().manual_seed((seed + i * _GOLDEN) % 2**63)
            for s in torch.randint(0, 2**62, (self.samples,), generator=per_clip).tolist():
                streams.append(torch.Generator(device=self.device).manual_seed(int(s)))
        return streams

    def randn(self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
        """Noise (rows, *rest) with row r from stream r (rows = batch * samples)."""
        if shape[0] != self.batch * self.samples:
            raise ValueError(f"expected noise for {self.batch * self.samples} rows, asked for shape {shape}")
        if self.streams is None:
            self.streams = self._make()
        rows = [torch.randn(shape[1:], generator=g, device=self.device, dtype=torch.float32) for g in self.streams]
        noise = torch.stack(rows)
        if self.scale != 1.0:  # the forecaster's noise_scale (a sampling temperature)
            noise.mul_(self.scale)
        return noise.to(device, dtype)


def check_rollout_size(horizon: object, num_samples: object) -> None:
    """Raise ``ValueError`` unless ``horizon`` and ``num_samples`` are positive ints (bools are not).

    The one check of a rollout's size, shared by every forecaster and the world model's recipes.

    Example:
        >>> check_rollout_size(3, 2)
        >>> check_rollout_size(0, 2)
        Traceback (most recent call last):
        ...
        ValueError: horizon and num_samples must be positive ints, got 0 and 2
    """
    for value in (horizon, num_samples):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"horizon and num_samples must be positive ints, got {horizon!r} and {num_samples!r}")


@typechecked
def randn(
    shape: tuple[int, ...], generator: torch.Generator | SampleStreams | None, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Standard normal noise drawn from ``generator`` (on the generator's device), moved to ``device``;
    from `SampleStreams`, one stream per row.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> randn((2,), g, torch.device("cpu"), torch.float32).shape
        torch.Size([2])
    """
    if isinstance(generator, SampleStreams):
        return generator.randn(shape, device, dtype)
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32).to(device, dtype)


def _randint(lo: int, hi: int, generator: torch.Generator | None, size: tuple[int, ...] = ()) -> Tensor:
    """Uniform integers in [lo, hi] (inclusive), drawn from ``generator`` and returned on the CPU."""
    device = generator.device if generator is not None else "cpu"
    return torch.randint(lo, hi + 1, size or (1,), generator=generator, device=device).cpu()


@typechecked
def draw_window(
    clip: Tensor,
    *,
    min_context: int,
    max_context: int,
    max_stride: int,
    generator: torch.Generator | None = None,
    actions: Tensor | None = None,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
    """Draw a training window from clips: ``(context (b, c, h, w, C), target (b, h, w, C))``.

    As in the paper's variable-length recipe, one context length ``c`` (uniform in
    ``min_context..min(max_context, T - 1)``) and one frame stride (uniform in
    ``1..min(max_stride, (T - 1) // c)``) are drawn per batch, and a start offset per
    clip; frames ``start, start + stride, ..., start + c * stride`` are taken, the last
    being the target. Draws come from ``generator`` or the global CPU RNG.

    With ``actions`` (b, T - 1, A) (``actions[:, i]`` leads from frame ``i`` to ``i + 1``)
    the stride is always 1 and the action leading to the target, (b, A), is returned as
    a third element.

    Example:
        >>> clip = torch.arange(6.0).reshape(1, 6, 1, 1, 1).expand(2, 6, 1, 1, 1)
        >>> ctx, tgt = draw_window(clip, min_context=2, max_context=2, max_stride=1,
        ...                        generator=torch.Generator().manual_seed(0))
        >>> ctx.shape[1], bool((tgt.flatten() - ctx[:, -1].flatten() == 1).all())
        (2, True)
    """
    if clip.dim() != 5:
        raise ValueError(f"expected latent clips of shape (b, T, h, w, C), got shape {tuple(clip.shape)}")
    b, T = int(clip.shape[0]), int(clip.shape[1])
    if T < min_context + 1:
        raise ValueError(
            f"clips have {T} frames but a training window needs at least min_context + 1 = {min_context + 1}"
        )
    if actions is not None and (actions.dim() != 3 or tuple(actions.shape[:2]) != (b, T - 1)):
        raise ValueError(f"actions: expected shape ({b}, {T - 1}, A) for clips of {T} frames, got {tuple(actions.shape)}")
    hi = min(max_context, T - 1)
    c = int(_randint(min_context, hi, generator))
    stride = 1 if actions is not None else int(_randint(1, max(1, min(max_stride, (T - 1) // c)), generator))
    span = c * stride
    start = _randint(0, T - 1 - span, generator, (b,))
    idx = (start[:, None] + torch.arange(c + 1)[None] * stride).to(clip.device)
    rows = torch.arange(b, device=clip.device)
    frames = clip[rows[:, None], idx]
    if actions is not None:
        return frames[:, :c], frames[:, c], actions[rows, idx[:, c - 1].to(actions.device)]
    return frames[:, :c], frames[:, c]
