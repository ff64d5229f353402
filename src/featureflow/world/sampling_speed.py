"""Sampling-speed options of `WorldModel.forecast`: bf16 weight copies and ``torch.compile``.

``precision="bf16"`` samples with a copy of the forecaster whose denoiser weights are
bfloat16 (made once and kept while the weights do not change); the solver's state, the
noise and the returned latents stay float32. ``compile=True`` runs the denoiser's cached
causal step through ``torch.compile`` (:meth:`featureflow.forecast.Denoiser.compile_sampling`).
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

import torch
from torch import nn

__all__ = ["PRECISIONS", "sampling_forecaster"]

#: Accepted ``precision`` values of `WorldModel.forecast`.
PRECISIONS = ("fp32", "bf16")

# forecaster -> (weights version, its bf16 sampling copy)
_COPIES: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]]" = weakref.WeakKeyDictionary()


def _version(module: nn.Module) -> tuple:
    return tuple((p.data_ptr(), p._version, p.dtype, str(p.device)) for p in module.parameters())


def sampling_forecaster(forecaster: nn.Module, precision: str = "fp32", compile: bool = False) -> nn.Module:
    """The forecaster to sample with for the given ``precision`` and ``compile`` options.

    ``"fp32"`` returns ``forecaster`` itself; ``"bf16"`` a cached copy whose denoiser
    holds bfloat16 weights (rebuilt when the original's weights change). With
    ``compile=True`` the chosen forecaster's denoiser is compiled in place (it stays
    compiled for later calls; ``denoiser.compile_sampling(False)`` undoes it).

    Example:
        >>> from featureflow.forecast import Denoiser, FlowForecaster
        >>> fc = FlowForecaster(Denoiser(latent_dim=4, width=16, depth=1, heads=2))
        >>> sampling_forecaster(fc) is fc
        True
        >>> fast = sampling_forecaster(fc, "bf16")
        >>> fast.denoiser.weight_dtype, fast is sampling_forecaster(fc, "bf16")
        (torch.bfloat16, True)
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    denoiser: Any = getattr(forecaster, "denoiser", None)
    if (precision != "fp32" or compile) and not callable(getattr(denoiser, "sampling_copy", None)):
        raise ValueError(
            f"precision={precision!r}/compile={compile} need a forecaster with a featureflow Denoiser; "
            f"{type(forecaster).__name__} has {type(denoiser).__name__}"
        )
    chosen = forecaster
    if precision == "bf16":
        version = _version(forecaster)
        cached = _COPIES.get(forecaster)
        if cached is None or cached[0] != version:
            clone = copy.deepcopy(forecaster)
            clone.denoiser = forecaster.denoiser.sampling_copy(torch.bfloat16)
            _COPIES[forecaster] = (version, clone.eval())
        chosen = _COPIES[forecaster][1]
    if compile:
        if getattr(chosen.denoiser, "arch", None) != "causal":
            raise ValueError("compile=True applies to arch='causal' denoisers (the cached step)")
        chosen.denoiser.compile_sampling()
    return chosen
