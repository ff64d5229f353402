"""`VFMFDenoiser` (``arch="vfmf"``): the released VFMF trunk, so released weights load and give
the same numbers.

Spatio-temporal DiT with learned factorised t/h/w position tables for one patch grid;
clean context latents are concatenated with the noisy target along time and the output
is sliced to the target. There is no cache: every step recomputes the window (see
:mod:`featureflow.forecast.vfmf_trunk`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from featureflow.forecast.denoiser import Denoiser, register_arch
from featureflow.forecast.kv_cache import DenoiserState
from featureflow.forecast.vfmf_trunk import VFMFTrunk, convert_released_state_dict
from featureflow.typing import Float, typechecked

__all__ = ["VFMFDenoiser"]


@register_arch
class VFMFDenoiser(Denoiser):
    """The released denoiser (``Denoiser(arch="vfmf", ...)``; arguments as in `Denoiser`;
    ``grid`` is required, ``cond_dim`` must stay None, ``rope_base`` is recorded and unused).

    Example:
        >>> import torch
        >>> den = VFMFDenoiser(latent_dim=4, width=24, depth=1, heads=2, grid=(2, 2), max_context=2)
        >>> s = den.prefill(torch.randn(1, 2, 2, 2, 4))
        >>> x, t = torch.randn(1, 2, 2, 4), torch.tensor(0.5)
        >>> bool(torch.equal(den.step(s, x, t), den.velocity(s.frames, x, t)))
        True
    """

    arch = "vfmf"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        c = self.config
        if self.grid is None:
            raise ValueError("arch='vfmf' has learned spatial position tables: pass grid=(h, w)")
        if c["cond_dim"] is not None:
            raise ValueError("arch='vfmf' does not support cond_dim (the released trunk has no extra conditioning)")
        self.trunk: nn.Module = VFMFTrunk(
            c["latent_dim"], c["width"], c["depth"], c["heads"], self.hidden, max_frames=c["max_context"] + 1,
            grid=self.grid, dropout=c["dropout"], frequency_dim=c["frequency_dim"],
        )  # fmt: skip

    def _check_cond(self, cond: Tensor | None, b: int) -> None:
        if cond is not None:
            raise ValueError("arch='vfmf' does not take cond")

    def _window_velocity(self, frames: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        return self.trunk(frames, t)[:, -1]

    # --------------------------------------------------------------- cached
    @typechecked
    def prefill(self, context: Float[Tensor, "b t h w C"] | None) -> DenoiserState:
        """The sampling state of a context window: the raw window (``None``: empty).

        Example:
            >>> import torch
            >>> den = Denoiser("vfmf", latent_dim=4, width=24, depth=1, heads=2, grid=(2, 2))
            >>> den.prefill(torch.randn(1, 3, 2, 2, 4)).num_frames
            3
        """
        if context is None:
            return DenoiserState(frames=None)
        self._check("context", context, context.shape[1])
        return DenoiserState(frames=context)

    @typechecked
    def step(
        self,
        state: DenoiserState,
        x_t: Float[Tensor, "b h w C"],
        t: Float[Tensor, "b"] | Float[Tensor, ""],
        cond: Float[Tensor, "b d"] | None = None,
    ) -> Float[Tensor, "b h w C"]:
        """Velocity of ``x_t`` given the state's window (recomputes the whole window).

        Example:
            >>> import torch
            >>> den = Denoiser("vfmf", latent_dim=4, width=24, depth=1, heads=2, grid=(3, 3))
            >>> s = den.prefill(torch.randn(2, 1, 3, 3, 4))
            >>> den.step(s, torch.randn(2, 3, 3, 4), torch.tensor(0.5)).shape
            torch.Size([2, 3, 3, 4])
        """
        t = self._check_step(state, x_t, t, cond)
        return self.velocity(state.frames if state.num_frames else None, x_t, t, cond)

    @typechecked
    def append(self, state: DenoiserState, frame: Float[Tensor, "b h w C"]) -> DenoiserState:
        """Add a clean ``frame`` to the window, keeping the last ``max_context`` frames
        (a new state; the old one stays valid).

        Example:
            >>> import torch
            >>> den = Denoiser("vfmf", latent_dim=4, width=24, depth=1, heads=2, grid=(3, 3), max_context=2)
            >>> s = den.prefill(torch.randn(1, 2, 3, 3, 4))
            >>> den.append(s, torch.randn(1, 3, 3, 4)).num_frames
            2
        """
        return DenoiserState(frames=self._slide(state, frame))

    # ------------------------------------------------------ released weights
    @typechecked
    def load_released_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        """Load a released VFMF ``MaskTransformer`` state dict.

        Keys are renamed by :func:`featureflow.forecast.vfmf_trunk.convert_released_state_dict`
        (complete and strict: every released key used, every parameter filled). Strip any
        outer prefix (the released checkpoints store the trunk under ``transformer.``) first.

        Example:
            >>> den = Denoiser("vfmf", latent_dim=4, width=24, depth=1, heads=2, grid=(2, 2), max_context=1)
            >>> from featureflow.forecast.vfmf_trunk import vfmf_key_map
            >>> inverse = {v: k for k, v in vfmf_key_map(1).items()}
            >>> den.load_released_state_dict({inverse[k]: v for k, v in den.trunk.state_dict().items()})
        """
        self.load_state_dict(convert_released_state_dict(state_dict, prefix="trunk."), strict=True)
