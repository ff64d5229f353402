"""Sampling-speed helpers of `Denoiser`: weights in another dtype, ``torch.compile`` of the cached step.

Kept out of :mod:`featureflow.forecast.denoiser` so that file stays about the network.
"""

from __future__ import annotations

import copy
import weakref
from typing import Any, Callable

import torch
from torch import Tensor, nn

__all__ = ["FastSampling", "COMPILED_STEPS", "writable"]

# Denoiser -> its torch.compile'd causal step (kept outside the module so that copying,
# saving or pickling a denoiser never meets a compiled function)
COMPILED_STEPS: "weakref.WeakKeyDictionary[nn.Module, Callable[..., Tensor]]" = weakref.WeakKeyDictionary()


def writable(window: Tensor) -> bool:
    """True when a step may write the window's scratch slot in place (not an inference
    tensor outside inference mode, not part of an autograd graph)."""
    if window.is_inference() and not torch.is_inference_mode_enabled():
        return False
    return not (window.requires_grad and torch.is_grad_enabled())


class FastSampling:
    """Mixin of :class:`~featureflow.forecast.Denoiser`: :meth:`sampling_copy` (bf16 weight
    copies, fp32 in and out) and :meth:`compile_sampling` (``torch.compile`` of the cached step)."""

    trunk: nn.Module
    arch: str
    training: bool

    # ------------------------------------------------------ sampling speed
    @property
    def weight_dtype(self) -> torch.dtype:
        """The dtype of the network's weights (inputs are cast to it, outputs cast back)."""
        for p in self.trunk.parameters():
            return p.dtype
        return torch.float32

    def _cast_call(self, dtype: torch.dtype, fn: Callable[..., Tensor], context: Tensor | None, x_t: Tensor,
                   t: Tensor, cond: Tensor | None) -> Tensor:
        dt = self.weight_dtype
        cast = (lambda x: None if x is None else x.to(dt))  # noqa: E731
        return fn(cast(context), cast(x_t), cast(t), cast(cond)).to(dtype)

    def sampling_copy(self, dtype: torch.dtype = torch.bfloat16) -> Any:
        """A copy of this denoiser with its weights in ``dtype``, for sampling.

        The copy takes and returns the caller's dtype (fp32 latents in, fp32 velocities
        out), so a solver's state stays fp32 while every matmul runs on ``dtype``
        weights. Casting once beats ``torch.autocast``, which re-casts the fp32 weights
        in every region (see ``docs/speed.md``). The original is not changed.

        Example:
            >>> import torch
            >>> from featureflow.forecast import Denoiser
            >>> den = Denoiser(latent_dim=4, width=32, depth=1, heads=2)
            >>> fast = den.sampling_copy(torch.bfloat16)
            >>> s = fast.prefill(torch.randn(1, 2, 3, 3, 4))
            >>> fast.step(s, torch.randn(1, 3, 3, 4), torch.tensor(0.5)).dtype
            torch.float32
        """
        with torch.inference_mode(False):  # ordinary tensors even when made under inference_mode: the
            clone = copy.deepcopy(self).to(dtype)  # fast path caches derived weights by version counter
        return clone.eval() if not self.training else clone

    def compile_sampling(self, enabled: bool = True, **compile_kwargs: Any) -> Any:
        """Run the cached causal step (:meth:`step` on a prefilled state) through ``torch.compile``.

        Compilation happens on the first step with each new shape: a rollout compiles once
        per window length (1..``max_context`` context frames) and batch size, which costs
        seconds to a minute on a CPU (measured in ``docs/speed.md``); later steps reuse the
        compiled code. ``compile_kwargs`` go to :func:`torch.compile` (default
        ``dynamic=False``). ``enabled=False`` goes back to eager. Returns ``self``.

        Example:
            >>> from featureflow.forecast import Denoiser
            >>> den = Denoiser(latent_dim=4, width=32, depth=1, heads=2)
            >>> den.compile_sampling().sampling_compiled, den.compile_sampling(False).sampling_compiled
            (True, False)
        """
        if not callable(getattr(self.trunk, "step_window", None)):
            raise ValueError(f"compile_sampling applies to arch='causal' (the cached step), not arch={self.arch!r}")
        if not enabled:
            COMPILED_STEPS.pop(self, None)
        elif self not in COMPILED_STEPS:
            compile_kwargs.setdefault("dynamic", False)
            COMPILED_STEPS[self] = torch.compile(self.trunk.step_window, **compile_kwargs)
        return self

    @property
    def sampling_compiled(self) -> bool:
        """True after :meth:`compile_sampling` (and until it is called with ``enabled=False``)."""
        return self in COMPILED_STEPS
