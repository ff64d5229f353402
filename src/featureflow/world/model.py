"""`WorldModel`: encoder → compressor → forecaster → probe heads, in one module."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from featureflow.compressors import Compressor
from featureflow.encoders import Encoder, encode_frames
from featureflow.forecast import CopyLastForecaster, Forecaster
from featureflow.probes import Probe
from featureflow.solvers import DEFAULT_SOLVER, ODESolver
from featureflow.typing import Float, FrameFeatures, Frames, Latents, ShapeError, check_finite, typechecked
from featureflow.world.checks import (
    MAX_HORIZON,
    MAX_SAMPLES,
    MAX_STEPS,
    check_count,
    check_forecast_size,
    check_generator,
    check_guidance,
    check_output,
    fit_frames,
    trained_size,
)
from featureflow.world.forecast_result import Forecast
from featureflow.world.recipe import SamplingRecipe, recipe_rollout
from featureflow.world.sampling_speed import sampling_forecaster

__all__ = ["WorldModel", "prepare_frames", "COPY_LAST"]

#: Name of the built-in copy-last-frame baseline of every model (``forecast(baseline=COPY_LAST)``).
COPY_LAST = "copy-last"


@typechecked
def prepare_frames(frames: Tensor) -> Frames:
    """Validate a clip batch and return it as float in [0, 1], shape (b, t, 3, H, W).

    uint8 frames are divided by 255; a single clip (t, 3, H, W) is given a batch axis.

    Example:
        >>> import torch
        >>> prepare_frames(torch.full((2, 3, 8, 8), 255, dtype=torch.uint8)).shape
        torch.Size([1, 2, 3, 8, 8])
    """
    if not isinstance(frames, Tensor):
        raise TypeError(f"frames: expected a torch.Tensor (b, t, 3, H, W), got {type(frames).__name__}")
    if frames.ndim == 4:
        frames = frames.unsqueeze(0)
    if frames.ndim != 5 or frames.shape[2] != 3:
        raise ShapeError(
            f"frames: expected shape (b, t, 3, H, W) (or (t, 3, H, W)), got {tuple(frames.shape)}"
        )
    if frames.numel() == 0:
        b, t, _, h, w = frames.shape
        empty = [name for name, n in (("b (clips)", b), ("t (frames)", t), ("H", h), ("W", w)) if n == 0]
        raise ShapeError(
            f"frames: expected at least one clip of at least one frame of at least 1x1 pixels, got shape "
            f"{tuple(frames.shape)} (empty: {', '.join(empty)})"
        )
    if frames.dtype == torch.uint8:
        return frames.float() / 255.0
    if not frames.is_floating_point():
        raise ShapeError(f"frames: expected float in [0, 1] or uint8, got dtype {frames.dtype}")
    check_finite("frames", frames)
    lo, hi = float(frames.min()), float(frames.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(
            f"frames: expected float values in [0, 1] (or uint8), got range [{lo:.3g}, {hi:.3g}]"
        )
    return frames


class WorldModel(nn.Module):
    """A stochastic world model in VFM feature space.

    Args:
        encoder: frames (b, 3, H, W) → features (b, h, w, D) (`featureflow.encoders`).
        compressor: features ↔ latents (`featureflow.compressors`).
        forecaster: samples future latents (`featureflow.forecast.FlowForecaster`).
        probes: modality name → task head (`featureflow.probes`), e.g. {"depth": DepthHead(...)}.
        baselines: optional extra forecasters selectable by name in `forecast(baseline=...)`,
            e.g. {"regression": RegressionForecaster(...)}; ``"copy-last"``
            (`featureflow.forecast.CopyLastForecaster`) is always available.

    Example:
        >>> import featureflow as ff  # doctest: +SKIP
        >>> wm = ff.WorldModel.from_pretrained("toyworld")  # doctest: +SKIP
        >>> fc = wm.forecast(frames, horizon=4, num_samples=8, solver="heun", steps=4)  # doctest: +SKIP
        >>> fc.decode("segmentation").shape  # doctest: +SKIP
        torch.Size([1, 8, 4, 64, 64])
    """

    def __init__(
        self,
        encoder: Encoder,
        compressor: Compressor,
        forecaster: Forecaster,
        probes: Mapping[str, Probe] | None = None,
        baselines: Mapping[str, Forecaster] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.compressor = compressor
        self.forecaster = forecaster
        self.probes = nn.ModuleDict(dict(probes or {}))
        self.baselines = nn.ModuleDict(dict(baselines or {}))
        #: What `from_pretrained` loaded this model from (None when built in code).
        self.source: str | None = None
        #: How `forecast(solver=None)` samples (a `SamplingRecipe`, saved in ``config.json``;
        #: e.g. the paper's released recipe for a converted checkpoint). None: the default
        #: solver in latent space.
        self.recipe: SamplingRecipe | None = None
        #: Free-form JSON metadata saved with the model (e.g. the training data settings).
        self.metadata: dict[str, Any] = {}
        self.eval()

    # ------------------------------------------------------------------ properties
    @property
    def vfmf_recipe(self) -> SamplingRecipe | None:
        """The former name of :attr:`recipe` (kept so existing code keeps working)."""
        return self.recipe

    @vfmf_recipe.setter
    def vfmf_recipe(self, recipe: SamplingRecipe | None) -> None:
        self.recipe = recipe

    @property
    def max_context(self) -> int:
        return int(self.forecaster.max_context)

    @property
    def action_dim(self) -> int | None:
        """Size of the action the forecaster is conditioned on (None: not action-conditioned)."""
        return getattr(self.forecaster, "action_dim", None)

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    # ------------------------------------------------------------------ pipeline
    @property
    def trained_size(self) -> tuple[int, int] | None:
        """The frame size (H, W) the model was trained at, from :attr:`metadata`
        (``image_size``, ``data.resolution`` or ``resolution``); None if it does not say."""
        return trained_size(self.metadata)

    @torch.no_grad()
    @typechecked
    def encode(self, frames: Tensor, *, progress: bool = False, resize: str = "warn") -> Latents:
        """Frames (b, t, 3, H, W) float in [0, 1] or uint8 → latents (b, t, h, w, C).

        ``resize``: what to do with frames of another size than :attr:`trained_size`
        (``"warn"``, ``"silent"``, ``"error"``, ``"none"``; see :meth:`forecast`).
        """
        return self._encode_checked(fit_frames(prepare_frames(frames), self.trained_size, resize), progress)

    def _features(self, frames: Tensor, progress: bool = False) -> Tensor:
        """Features (b, t, h, w, D) of frames already checked by `prepare_frames`."""
        return check_output(f"the encoder ({type(self.encoder).__name__})",
                            encode_frames(self.encoder, frames.to(self.device), progress=progress))

    def _encode_checked(self, frames: Tensor, progress: bool = False) -> Tensor:
        """Latents of frames already checked by `prepare_frames` (they are not checked again)."""
        feats = self._features(frames, progress)
        b, t = feats.shape[:2]
        lat = self.compressor.encode(feats.reshape(b * t, *feats.shape[2:]))
        check_output(f"compressor.encode ({type(self.compressor).__name__})", lat)
        return lat.reshape(b, t, *lat.shape[1:])

    @torch.no_grad()
    def forecast(
        self,
        frames: Tensor,
        horizon: int = 1,
        num_samples: int = 1,
        solver: str | ODESolver | None = None,
        steps: int | None = None,
        guidance: float = 1.0,
        generator: torch.Generator | None = None,
        *,
        baseline: str | None = None,
        recipe: SamplingRecipe | None = None,
        autocast: bool = False,
        precision: str = "fp32",
        compile: bool = False,
        progress: bool = False,
        actions: Tensor | None = None,
        resize: str = "warn",
    ) -> Forecast:
        """Sample ``num_samples`` futures of ``horizon`` frames after the given context.

        Args:
            frames: (b, t, 3, H, W) context clip, float in [0, 1] or uint8; 1 ≤ t; only the
                last ``max_context`` frames are used.
            horizon: number of future frames k (autoregressive, sliding window).
            num_samples: number of sampled futures s per clip.
            solver: ODE solver name ("euler", "heun", "midpoint", "rk4", "dopri5") or an
                `featureflow.solvers.ODESolver` instance. None = the model's :attr:`recipe`
                when it has one (e.g. the paper's released recipe for a converted checkpoint:
                Euler, 9 NFE, features re-encoded before every frame), else
                `featureflow.solvers.DEFAULT_SOLVER` ("euler").
            steps: network evaluations per forecast frame for fixed-step solvers (None = the
                recipe's, else the solver's default: `featureflow.solvers.DEFAULT_STEPS`, 8);
                the spent count is ``Forecast.nfe``.
            guidance: classifier-free guidance scale on the context (1 = off).
            generator: torch.Generator for reproducible sampling.
            baseline: name of a baseline forecaster (e.g. "regression", "copy-last") to use
                instead; it receives ``solver``/``steps``/``guidance`` and refuses those it
                has no use for (see `featureflow.forecast.CopyLastForecaster`).
            recipe: sample with this `SamplingRecipe` (default :attr:`recipe` when ``solver``
                is None); ``solver`` and ``steps`` override its own.
            autocast: run the forecaster under bf16 autocast (slower than ``precision="bf16"``:
                autocast re-casts the fp32 weights in every region).
            precision: ``"fp32"`` (default) or ``"bf16"``: sample with a bfloat16 copy of the
                denoiser's weights (made on first use and kept while the weights do not
                change); the solver state, noise and returned latents stay float32. Faster
                where bf16 matmuls are (CPUs with AMX, recent GPUs): about 1.7x per forecast
                frame at the bundle's size, 3-5x at sizes (b) and (c) on this CPU
                (docs/speed.md); velocities differ from fp32 by ~1 %.
            compile: run the denoiser's cached step through ``torch.compile`` (causal arch).
                The first forecast pays the compilation, once per window length (1 to
                ``max_context`` frames) and batch size: 9 s (bundle size) to 40 s per shape
                on an idle CPU core here, many minutes on a busy one (docs/speed.md); the
                model stays compiled for later calls.
            progress: show a progress bar over forecast steps.
            actions: for an action-conditioned model (:attr:`action_dim` set, e.g. the
                bundled ``"toyworld-agent"``), the action taken before each forecast
                frame: (b, k, A) shared by the samples, or (b, s, k, A) per sample.
            resize: frames of another size than the model was trained at
                (:attr:`trained_size`) are resized to it: ``"warn"`` (default) warns once
                per size with a `featureflow.world.checks.ResizeWarning`, ``"silent"``
                does not, ``"error"`` refuses them, ``"none"`` encodes them as they are.
                Decoded outputs keep the size of the given frames.

        Returns:
            A `Forecast` with ``latents`` (b, s, k, h, w, C), ``features``, ``decode(...)``, ``nfe``.

        Raises:
            TypeError: ``horizon``, ``num_samples`` or ``steps`` not an int (2.0 and True
                are refused), ``generator`` not a ``torch.Generator``.
            ValueError: counts out of range (horizon and steps up to 10 000, num_samples up
                to 10 000, latents up to 16 GiB), non-finite ``guidance``, and any
                component (encoder, compressor.encode, forecaster) producing NaN or Inf.
        """
        horizon = check_count("horizon", horizon, MAX_HORIZON)
        num_samples = check_count("num_samples", num_samples, MAX_SAMPLES)
        steps = None if steps is None else check_count("steps", steps, MAX_STEPS)
        guidance = check_guidance(guidance)
        check_generator(generator)
        frames = prepare_frames(frames)  # the one check of the frames on the way to the denoiser
        H, W = frames.shape[-2:]
        frames = fit_frames(frames, self.trained_size, resize)
        if recipe is None and solver is None and baseline is None:
            recipe = self.recipe
        ctx = (
            torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
            if autocast
            else contextlib.nullcontext()
        )
        if recipe is not None:
            if baseline is not None:
                raise ValueError(f"baseline={baseline!r} and a sampling recipe exclude each other; pass one of them")
            if actions is not None:
                raise ValueError("sampling with a recipe is not action-conditioned; pass actions=None")
            if guidance != 1.0:
                raise ValueError("sampling with a recipe has no guidance; pass a solver to sample without the recipe")
            if solver is not None and not isinstance(solver, str):
                raise TypeError(f"a sampling recipe takes a solver name, got {type(solver).__name__}")
            forecaster = sampling_forecaster(self.forecaster, precision, bool(compile))
            feats = self._features(frames[:, -(recipe.max_context or self.max_context) :])
            latent_numel = int(feats.shape[2] * feats.shape[3]) * int(self.forecaster.latent_dim)
            check_forecast_size(int(feats.shape[0]), num_samples, horizon, latent_numel)
            with ctx:
                roll = recipe_rollout(forecaster, self.compressor, feats, horizon, num_samples, recipe, solver, steps,
                                      generator, progress)
        else:
            forecaster = self.forecaster if baseline is None else self._baseline(baseline)
            latents = self._encode_checked(frames[:, -self.max_context :])
            check_forecast_size(int(latents.shape[0]), num_samples, horizon, latents[0, 0].numel())
            forecaster = sampling_forecaster(forecaster, precision, bool(compile))
            kwargs: dict[str, Any] = dict(num_samples=num_samples, generator=generator, progress=progress)
            if actions is not None:  # an action-conditioned forecaster refuses a missing one itself
                kwargs["actions"] = torch.as_tensor(actions, dtype=torch.float32, device=latents.device)
            if baseline is None:
                kwargs.update(solver=DEFAULT_SOLVER if solver is None else solver, steps=steps, guidance=guidance)
            else:  # a baseline gets only the options the caller set, and refuses (or documents) them itself
                kwargs.update({k: v for k, v, unset in (("solver", solver, None), ("steps", steps, None),
                                                        ("guidance", guidance, 1.0)) if v != unset})
            with ctx:
                roll = forecaster.rollout(latents, horizon, **kwargs)
        check_output(f"the forecaster ({type(forecaster).__name__})", roll.latents)
        return Forecast(latents=roll.latents.float(), nfe=int(roll.nfe), image_size=(int(H), int(W)), model=self)

    def _baseline(self, name: str) -> Forecaster:
        """The baseline forecaster ``name``: one of :attr:`baselines`, or the built-in
        ``"copy-last"`` (`featureflow.forecast.CopyLastForecaster`)."""
        if name in self.baselines:
            return self.baselines[name]
        if name == COPY_LAST:
            return CopyLastForecaster()
        raise ValueError(f"unknown baseline {name!r}; this model has {sorted({*self.baselines, COPY_LAST})}")

    @torch.no_grad()
    @typechecked
    def decode_features(self, features: FrameFeatures, modality: str, size: tuple[int, int]) -> Tensor:
        """Decode features (b, h, w, D) with the probe for ``modality`` at image ``size``."""
        if modality not in self.probes:
            raise ValueError(f"no probe head for {modality!r}; this model has {sorted(self.probes)}")
        return self.probes[modality].predict(features, size=size)

    @torch.no_grad()
    @typechecked
    def decode_latents(self, latents: Float[Tensor, "*batch h w C"], modality: str,
                       size: tuple[int, int] | None = None, chunk: int = 256) -> Tensor:
        """Decode latents (*batch, h, w, C) to ``modality`` (*batch, ...) at image ``size``
        (default: the patch grid times the encoder's patch size), in chunks of ``chunk`` frames.

        Example:
            >>> from featureflow.compressors import Identity
            >>> from featureflow.encoders import PixelPatchEncoder
            >>> from featureflow.forecast import Denoiser, FlowForecaster
            >>> from featureflow.probes import PixelPatchRGBHead
            >>> fc = FlowForecaster(Denoiser(latent_dim=48, width=16, depth=1, heads=2))
            >>> wm = WorldModel(PixelPatchEncoder(4), Identity(48), fc, {"rgb": PixelPatchRGBHead(4)})
            >>> frames = torch.rand(1, 2, 3, 16, 16)
            >>> z = wm.encode(frames)
            >>> bool(torch.allclose(wm.decode_latents(z, "rgb"), frames, atol=1e-6))
            True
        """
        if latents.dim() < 3:
            raise ShapeError(f"latents: expected (*batch, h, w, C), got shape {tuple(latents.shape)}")
        lead, (h, w) = latents.shape[:-3], latents.shape[-3:-1]
        if size is None:
            p = int(getattr(self.encoder, "patch_size", 1))
            size = (h * p, w * p)
        flat = latents.reshape(-1, *latents.shape[-3:])
        out = torch.cat([self.decode_features(self.compressor.decode(part), modality, size) for part in flat.split(chunk)])
        return out.reshape(*lead, *out.shape[1:])

    # ------------------------------------------------------------------ I/O
    def save_pretrained(self, save_directory: str | os.PathLike, *, include_encoder: bool | None = None,
                        dtype: torch.dtype | None = None, checksum: bool = True) -> Path:
        """Write ``config.json`` + ``model.safetensors`` to ``save_directory`` (atomically:
        the directory holds the old model or the new one, never a mix).

        Args:
            include_encoder: store the encoder's weights (self-contained). Default: True
                unless the encoder can be re-fetched by reference (e.g. a DINOv2 hub id).
            dtype: store floating tensors in this dtype (e.g. torch.bfloat16 to halve size).
            checksum: record the SHA-256 of the weights in ``config.json`` (verified on load).
        """
        from featureflow.world.serialization import save_world_model

        return save_world_model(self, save_directory, include_encoder=include_encoder, dtype=dtype,
                                checksum=checksum)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        local_files_only: bool = False,
        map_location: str | torch.device = "cpu",
        verify: bool = True,
    ) -> "WorldModel":
        """Load a bundled model by name (e.g. "toyworld"), a local directory, or a Hub repo id.

        ``verify`` checks the weights against the SHA-256 recorded in ``config.json``.
        """
        from featureflow.world.serialization import load_world_model

        return load_world_model(
            name_or_path, revision=revision, local_files_only=local_files_only, map_location=map_location,
            verify=verify,
        )

    def push_to_hub(self, repo_id: str, *, private: bool = False, token: str | None = None,
                    commit_message: str = "Upload featureflow WorldModel", **save_kwargs: Any) -> str:
        """Save to a temporary directory and upload it to the Hugging Face Hub; returns the commit URL."""
        from featureflow.world.serialization import push_world_model

        return push_world_model(self, repo_id, private=private, token=token,
                                commit_message=commit_message, **save_kwargs)
