"""Fast paths of the denoiser step: fused Triton kernels, ``torch.compile``, bf16 autocast.

Every kernel has a PyTorch reference that computes the same numbers; which one runs is
decided per call (:mod:`featureflow.kernels.dispatch`): Triton on CUDA tensors when it is
importable, the reference otherwise. Force either with ``use("triton"|"torch"|"auto")``
(context manager), :func:`set_mode`, or ``FEATUREFLOW_KERNELS=triton|torch|auto``.

Example:
    >>> import torch
    >>> from featureflow import kernels
    >>> x, shift, scale = torch.randn(1, 4, 8), torch.zeros(1, 1, 8), torch.zeros(1, 1, 8)
    >>> with kernels.use("torch"):
    ...     kernels.adaln_modulate(x, shift, scale).shape
    torch.Size([1, 4, 8])
"""

from featureflow.kernels.adaln import adaln_modulate
from featureflow.kernels.attention import SMALL_ATTENTION_ELEMENTS, sdpa, window_attention
from featureflow.kernels.compile import COMPILE_ENV_VAR, CompileReport, compile_step, graph_breaks, sampling_autocast
from featureflow.kernels.dispatch import (
    ENV_VAR,
    MODES,
    KernelUnavailableError,
    get_mode,
    interpreter_enabled,
    set_mode,
    triton_available,
    use,
    use_triton,
)
from featureflow.kernels.qk_norm_rope import qk_rmsnorm_rope, rmsnorm_rope
from featureflow.kernels.reference import (
    adaln_modulate_ref,
    axpy_ref,
    heun_combine_ref,
    rmsnorm_ref,
    rmsnorm_rope_ref,
    rope_ref,
)
from featureflow.kernels.solver_update import axpy, heun_combine

__all__ = [
    "adaln_modulate",
    "rmsnorm_rope",
    "qk_rmsnorm_rope",
    "axpy",
    "heun_combine",
    "sdpa",
    "window_attention",
    "SMALL_ATTENTION_ELEMENTS",
    "adaln_modulate_ref",
    "rmsnorm_ref",
    "rope_ref",
    "rmsnorm_rope_ref",
    "axpy_ref",
    "heun_combine_ref",
    "use",
    "set_mode",
    "get_mode",
    "use_triton",
    "triton_available",
    "interpreter_enabled",
    "KernelUnavailableError",
    "ENV_VAR",
    "MODES",
    "compile_step",
    "graph_breaks",
    "CompileReport",
    "COMPILE_ENV_VAR",
    "sampling_autocast",
]
