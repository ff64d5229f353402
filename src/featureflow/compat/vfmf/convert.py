"""`convert_vfmf`: the paper's released files → a featureflow ``WorldModel`` directory.

Mapping (every released key is used once; anything left over is an error):

* ``transformer.*`` → ``forecaster.denoiser`` (``Denoiser(arch="vfmf")``)
* ``vae.vae.*`` → ``compressor`` (``FeatureVAE`` network)
* ``latent_dist_mean`` / ``latent_dist_std`` → ``compressor.latent_norm`` statistics
* ``vae.dino_v2.*`` (torch.hub names) → ``encoder.model`` (Hugging Face DINOv2)
* feature statistics ``.npz`` → ``compressor.feature_norm`` (``std + 1e-8``, as released)
* head ``.ckpt`` ``state_dict`` ``head.*`` → ``probes[task].head`` (``DPTHead``)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from featureflow.compat.vfmf.dinov2_keys import dinov2_hf_config, load_hub_dinov2_state_dict
from featureflow.compat.vfmf.heads import HEAD_TASKS, find_head_checkpoints, load_head
from featureflow.compat.vfmf.ledger import KeyLedger, LeftoverKeysError
from featureflow.compat.vfmf.readers import read_feature_stats, read_forecaster_state_dict, read_vae_state_dict
from featureflow.compat.vfmf.recipe import RECIPE_KEY, ReleasedRecipe

__all__ = [
    "DINO_HUB_ID",
    "DINO_BLOCKS",
    "FEATURE_STD_EPS",
    "vae_from_released_state_dict",
    "encoder_from_hub_state_dict",
    "convert_forecaster_state_dict",
    "convert_vfmf",
    "load_converted",
]

#: The DINOv2 the paper used, on the Hugging Face Hub.
DINO_HUB_ID = "facebook/dinov2-with-registers-base"
#: The DINOv2 blocks whose patch tokens VFMF forecasts.
DINO_BLOCKS = (2, 5, 8, 11)
#: The released feature standardisation divides by ``std + 1e-8``.
FEATURE_STD_EPS = 1e-8
_DINO_CHOICES = ("checkpoint", "hub")


def vae_from_released_state_dict(state_dict: Mapping[str, Tensor], kl_weight: float = 0.01) -> nn.Module:
    """A ``FeatureVAE`` sized from a released ConvNeXt VAE state dict, weights loaded strictly.

    Example:
        >>> from featureflow.compressors import FeatureVAE
        >>> src = FeatureVAE(feature_dim=12, latent_dim=4, dim=8, depth=2)
        >>> vae = vae_from_released_state_dict(src.network_state_dict())
        >>> vae.config["depth"], vae.feature_dim, vae.latent_dim
        (2, 12, 4)

        ConvNeXt layer scale (``*.gamma`` keys) is recognised:

        >>> scaled = FeatureVAE(feature_dim=12, latent_dim=4, dim=8, depth=2, layer_scale_init_value=1e-6)
        >>> vae_from_released_state_dict(scaled.network_state_dict()).config["layer_scale_init_value"] > 0
        True
    """
    from featureflow.compressors import FeatureVAE

    try:
        stem = state_dict["encoder_backbone.stem.weight"]
        from_latents = state_dict["from_latents.weight"]
    except KeyError as err:
        raise LeftoverKeysError(f"not a released ConvNeXt VAE state dict: missing {err.args[0]!r}") from None
    depth = len({m.group(1) for k in state_dict if (m := re.match(r"encoder_backbone\.blocks\.(\d+)\.", k))})
    # ConvNeXt layer scale (``blocks.N.gamma``): off in the released VAE; any non-zero init
    # creates the parameters, whose values then come from the state dict.
    layer_scale = any(re.fullmatch(r"(en|de)coder_backbone\.blocks\.\d+\.gamma", k) for k in state_dict)
    vae = FeatureVAE(
        feature_dim=int(stem.shape[1]), latent_dim=int(from_latents.shape[1]), dim=int(stem.shape[0]), depth=depth,
        kl_weight=kl_weight, layer_scale_init_value=1.0 if layer_scale else 0.0,
    )
    vae.load_network_state_dict(state_dict)
    return vae.eval()


def encoder_from_hub_state_dict(
    state_dict: Mapping[str, Tensor], blocks: tuple[int, ...] = DINO_BLOCKS, num_heads: int | None = None,
    source: str = "vae.dino_v2", name: str = DINO_HUB_ID,
) -> nn.Module:
    """A self-contained ``DINOv2Encoder`` holding hub-format DINOv2 weights (no download).

    Example:
        >>> import torch, transformers
        >>> from featureflow.compat.vfmf import hf_to_hub_dinov2_state_dict
        >>> cfg = transformers.Dinov2WithRegistersConfig(hidden_size=8, num_hidden_layers=2,
        ...     num_attention_heads=2, patch_size=2, image_size=4, num_register_tokens=1)
        >>> hub = hf_to_hub_dinov2_state_dict(transformers.Dinov2WithRegistersModel(cfg).state_dict())
        >>> enc = encoder_from_hub_state_dict(hub, blocks=(0, 1), num_heads=2)
        >>> enc(torch.rand(1, 3, 4, 6)).shape, enc.is_reference
        (torch.Size([1, 2, 3, 16]), False)
    """
    from featureflow.encoders import DINOv2Encoder

    config = dinov2_hf_config(state_dict, num_heads).to_dict()
    encoder = DINOv2Encoder(name, blocks=blocks, reference=False, hf_config=config)
    load_hub_dinov2_state_dict(encoder.model, state_dict, source)
    return encoder.eval()


def _same(a: Mapping[str, Tensor], b: Mapping[str, Tensor], what: str, files: str) -> None:
    if set(a) != set(b):
        raise ValueError(f"{what}: the key sets of {files} differ ({len(set(a) ^ set(b))} keys)")
    diff = [k for k in a if a[k].shape != b[k].shape or not torch.equal(a[k], b[k])]
    if diff:
        raise ValueError(f"{what}: {files} hold different weights (e.g. {diff[:3]}); are they from the same run?")


def _split_standalone_vae(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(ConvNeXt VAE keys, DINOv2 keys) of a standalone VAE ``model_state_dict``."""
    led = KeyLedger(state_dict, "standalone VAE [model_state_dict]")
    if led.has_prefix("vae."):
        net = led.take_prefix("vae.")
        dino = led.take_prefix("dino_v2.", required=False)
    else:  # a bare ConvNeXtIsotropicVAE state dict
        net = {k: led.take(k) for k in led.keys() if not k.startswith("dino_v2.")}
        dino = led.take_prefix("dino_v2.", required=False)
    led.check_consumed()
    return net, dino


def convert_forecaster_state_dict(
    state_dict: Mapping[str, Tensor],
    *,
    source: str = "forecaster state dict",
    vae_state_dict: Mapping[str, Tensor] | None = None,
    dino: str = "checkpoint",
    dino_model: str = DINO_HUB_ID,
    dino_blocks: tuple[int, ...] = DINO_BLOCKS,
    dino_heads: int | None = None,
    device: str | torch.device | None = None,
) -> tuple[nn.Module, nn.Module, nn.Module]:
    """Convert one released forecaster state dict (in memory) into featureflow modules.

    Returns ``(encoder, compressor, denoiser)``: a ``DINOv2Encoder``, a ``FeatureVAE``
    with the latent statistics set (feature statistics are not in the checkpoint) and a
    ``Denoiser(arch="vfmf")``. Every key must be used (``transformer.*``, ``vae.vae.*``,
    ``vae.dino_v2.*``, ``latent_dist_mean``, ``latent_dist_std``). With
    ``device="meta"`` (and meta tensors in ``state_dict``) a full-size checkpoint is
    checked key by key and shape by shape without allocating memory.

    Args:
        state_dict: the ``ema_state_dict`` / ``model_state_dict`` of the checkpoint.
        source: description for error messages.
        vae_state_dict: the standalone VAE's ``model_state_dict`` (cross-checked against
            ``vae.vae.*`` / ``vae.dino_v2.*``, or used when those are absent).
        dino: ``"checkpoint"`` or ``"hub"``, see :func:`convert_vfmf`.
        dino_model: hub id or directory for ``dino="hub"``.
        dino_blocks: DINOv2 blocks whose features are concatenated.
        dino_heads: DINOv2 attention heads for non-released widths.
        device: create the modules on this device (``None``: the default device).

    Example:
        >>> import torch
        >>> from featureflow.forecast import Denoiser
        >>> from featureflow.forecast.vfmf_trunk import vfmf_key_map
        >>> from featureflow.compressors import FeatureVAE
        >>> den = Denoiser("vfmf", latent_dim=2, width=12, depth=1, heads=2, grid=(2, 2), max_context=1)
        >>> inverse = {v: k for k, v in vfmf_key_map(1).items()}
        >>> sd = {"transformer." + inverse[k]: v for k, v in den.trunk.state_dict().items()}
        >>> vae = FeatureVAE(feature_dim=8, latent_dim=2, dim=4, depth=1)
        >>> sd.update({"vae.vae." + k: v for k, v in vae.network_state_dict().items()})
        >>> sd.update(latent_dist_mean=torch.zeros(2), latent_dist_std=torch.ones(2))
        >>> import transformers
        >>> from featureflow.compat.vfmf import hf_to_hub_dinov2_state_dict
        >>> cfg = transformers.Dinov2WithRegistersConfig(hidden_size=4, num_hidden_layers=2,
        ...     num_attention_heads=2, patch_size=2, image_size=4, num_register_tokens=1)
        >>> hub = hf_to_hub_dinov2_state_dict(transformers.Dinov2WithRegistersModel(cfg).state_dict())
        >>> sd.update({"vae.dino_v2." + k: v for k, v in hub.items()})
        >>> enc, comp, d = convert_forecaster_state_dict(sd, dino_blocks=(0, 1), dino_heads=2)
        >>> enc.feature_dim, comp.latent_dim, d.arch
        (8, 2, 'vfmf')
    """
    from featureflow.encoders import DINOv2Encoder
    from featureflow.forecast import Denoiser

    if dino not in _DINO_CHOICES:
        raise ValueError(f"dino must be one of {_DINO_CHOICES}, got {dino!r}")
    build = torch.device(device) if device is not None else contextlib.nullcontext()
    led = KeyLedger(state_dict, source)
    trunk = led.take_prefix("transformer.")
    try:
        with build:
            denoiser = Denoiser.from_released_state_dict(trunk)
    except (ValueError, KeyError, RuntimeError) as err:
        raise LeftoverKeysError(f"{source}: the 'transformer.*' trunk does not convert: {err}") from None
    vae_sd = led.take_prefix("vae.vae.", required=False)
    dino_sd = led.take_prefix("vae.dino_v2.", required=False)
    if vae_state_dict is not None:
        solo_vae, solo_dino = _split_standalone_vae(vae_state_dict)
        if vae_sd:
            _same(vae_sd, solo_vae, "VAE weights", "the forecaster (vae.vae.*) and the standalone VAE")
        if solo_dino and dino_sd:
            _same(dino_sd, solo_dino, "DINOv2 weights", "the forecaster (vae.dino_v2.*) and the standalone VAE")
        vae_sd, dino_sd = vae_sd or solo_vae, dino_sd or solo_dino
    if not vae_sd:
        raise LeftoverKeysError(f"{source}: no 'vae.vae.*' keys; pass the standalone VAE checkpoint (vae=...)")
    with build:
        compressor = vae_from_released_state_dict(vae_sd)
    if compressor.latent_dim != denoiser.latent_dim:
        raise ValueError(
            f"{source}: VAE latent channels {compressor.latent_dim} != denoiser latent channels {denoiser.latent_dim}"
        )
    compressor.set_latent_stats(led.take("latent_dist_mean").float(), led.take("latent_dist_std").float())
    if dino == "checkpoint":
        if not dino_sd:
            raise LeftoverKeysError(f"{source}: no 'vae.dino_v2.*' keys; use dino='hub' to reference {dino_model}")
        with build:
            encoder = encoder_from_hub_state_dict(dino_sd, tuple(dino_blocks), dino_heads, f"{source} vae.dino_v2.*")
    else:
        if dino_sd:  # check the checkpoint's copy against the architecture it claims, then drop it
            import transformers

            with torch.device("meta"):
                shell = transformers.AutoModel.from_config(dinov2_hf_config(dino_sd, dino_heads))
            load_hub_dinov2_state_dict(shell, dino_sd, f"{source} vae.dino_v2.*")
        encoder = DINOv2Encoder(dino_model, blocks=tuple(dino_blocks))
    if encoder.feature_dim != compressor.feature_dim:
        raise ValueError(
            f"{source}: DINOv2 gives {encoder.feature_dim} channels but the VAE expects {compressor.feature_dim}"
        )
    led.check_consumed()
    return encoder, compressor, denoiser


def convert_vfmf(
    forecaster: str | os.PathLike,
    *,
    feature_stats: str | os.PathLike,
    heads_dir: str | os.PathLike | None = None,
    heads: Mapping[str, str | os.PathLike] | None = None,
    vae: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    weights: str = "ema",
    dino: str = "checkpoint",
    dino_model: str = DINO_HUB_ID,
    dino_blocks: tuple[int, ...] = DINO_BLOCKS,
    dino_heads: int | None = None,
    depth_range: tuple[float, float] = (0.0, 1.0),
    recipe: ReleasedRecipe | None = None,
) -> nn.Module:
    """Convert the paper's released checkpoints into a featureflow ``WorldModel``.

    Args:
        forecaster: the released forecaster ``.pt`` (``model_state_dict``,
            ``ema_state_dict``, ``optimizer_state_dict``, ``scheduler_state_dict``).
        feature_stats: the DINOv2 feature statistics ``.npz`` (``mean``, ``std``).
        heads_dir: directory searched recursively for the head ``.ckpt`` files
            (segmentation, 256-bin depth, normals); see :func:`find_head_checkpoints`.
        heads: explicit ``{task: path}`` head files (override ``heads_dir`` per task).
        vae: optional standalone VAE ``.pt``; its weights must equal the forecaster's
            embedded ``vae.vae.*`` copy (checked), or supply them when it has none.
        out: write the model here (``config.json`` + ``model.safetensors``).
        weights: ``"ema"`` (default, what the authors sample with) or ``"model"``.
        dino: ``"checkpoint"`` (DINOv2 from ``vae.dino_v2.*``, mapped to the Hugging Face
            layout and stored in the model: self-contained) or ``"hub"`` (reference
            ``dino_model`` by id or local directory; the checkpoint's copy is still
            checked key by key, then dropped).
        dino_model: hub id or directory of the DINOv2 for ``dino="hub"``.
        dino_blocks: blocks whose features are concatenated (released: 2, 5, 8, 11).
        dino_heads: DINOv2 attention heads when the width is not a released one.
        depth_range: values of the first and last depth bin (released bins are
            normalised depth, so (0, 1)).
        recipe: sampling recipe recorded with the model (default :class:`ReleasedRecipe`;
            its ``max_context`` follows the denoiser).

    Returns:
        The ``WorldModel`` (eval mode) with attribute ``vfmf_recipe``.

    Raises:
        UnsafeCheckpointError: a file needs unsafe unpickling.
        LeftoverKeysError: a released key was not used, or a needed one is missing.
        ValueError: inconsistent files (shapes, statistics, duplicate heads, ...).
    """
    from featureflow.forecast import FlowForecaster
    from featureflow.world import WorldModel

    if dino not in _DINO_CHOICES:
        raise ValueError(f"dino must be one of {_DINO_CHOICES}, got {dino!r}")
    where = f"forecaster checkpoint {forecaster} [{weights}_state_dict]"
    encoder, compressor, denoiser = convert_forecaster_state_dict(
        read_forecaster_state_dict(forecaster, weights), source=where,
        vae_state_dict=read_vae_state_dict(vae) if vae is not None else None,
        dino=dino, dino_model=dino_model, dino_blocks=dino_blocks, dino_heads=dino_heads,
    )  # fmt: skip
    mean, std = read_feature_stats(feature_stats, channels=compressor.feature_dim)
    compressor.set_feature_stats(mean.float(), (std + FEATURE_STD_EPS).float())

    paths: dict[str, Any] = dict(find_head_checkpoints(heads_dir)) if heads_dir is not None else {}
    for task, path in (heads or {}).items():
        if task not in HEAD_TASKS:
            raise ValueError(f"unknown head task {task!r}; expected one of {sorted(HEAD_TASKS)}")
        paths[task] = Path(path)
    probes = {task: load_head(task, path, depth_range) for task, path in sorted(paths.items())}
    for task, head in probes.items():
        if head.head.feature_dim != compressor.feature_dim:
            raise ValueError(
                f"{task} head {paths[task]} expects {head.head.feature_dim} feature channels, "
                f"the model gives {compressor.feature_dim}"
            )
    recipe = recipe or ReleasedRecipe()
    if recipe.max_context != denoiser.max_context:
        recipe = ReleasedRecipe(**{**recipe.to_dict(), "max_context": int(denoiser.max_context)})
    model = WorldModel(encoder, compressor, FlowForecaster(denoiser), probes)
    model.vfmf_recipe = recipe
    if out is not None:
        model.save_pretrained(out)
        _record(Path(out), recipe, forecaster=forecaster, weights=weights, dino=dino, heads=paths)
    return model.eval()


def _record(out: Path, recipe: ReleasedRecipe, **sources: Any) -> None:
    """Add the recipe and the conversion's sources to ``config.json`` (atomically)."""
    from featureflow.utils import save_json

    path = out / "config.json"
    config = json.loads(path.read_text())
    config[RECIPE_KEY] = recipe.to_dict()
    config["converted_from"] = {
        "format": "vfmf",
        "forecaster": Path(sources["forecaster"]).name,
        "weights": sources["weights"],
        "dino": sources["dino"],
        "heads": {t: Path(p).name for t, p in sources["heads"].items()},
    }
    save_json(config, path)


def load_converted(path: str | os.PathLike, **kwargs: Any) -> nn.Module:
    """``WorldModel.from_pretrained(path)`` plus its stored ``vfmf_recipe`` attribute.

    Use with :func:`featureflow.compat.vfmf.forecast_released` to sample as released.
    """
    from featureflow.compat.vfmf.recipe import read_recipe
    from featureflow.world import WorldModel

    model = WorldModel.from_pretrained(path, **kwargs)
    model.vfmf_recipe = read_recipe(path) if Path(path).is_dir() else None
    return model
