"""The full-size released key/shape manifest converts key by key (on the meta device)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from featureflow.compat.vfmf import (  # noqa: E402
    LeftoverKeysError,
    convert_forecaster_state_dict,
    head_from_state_dict,
    hf_to_hub_dinov2_state_dict,
)

OFFICIAL = Path(__file__).parents[1] / "fixtures" / "vfmf_official"
MANIFEST = json.loads((OFFICIAL / "released_state_dict_shapes.json").read_text())


def meta(shapes: dict[str, list[int]], prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: torch.empty(s, device="meta") for k, s in shapes.items()}


@pytest.fixture(scope="module")
def dino_hub():
    """Full-size DINOv2 ViT-B/14 with 4 registers, hub key format, on the meta device."""
    with torch.device("meta"):
        hf = transformers.Dinov2WithRegistersModel(
            transformers.Dinov2WithRegistersConfig(patch_size=14, image_size=518, num_register_tokens=4))
    return hf_to_hub_dinov2_state_dict(hf.state_dict())


def released_forecaster(dataset: str, vae: str, dino_hub) -> dict[str, torch.Tensor]:
    sd = meta(MANIFEST[f"denoiser_{dataset}"]["state_dict_shapes"], "transformer.")
    sd.update(meta(MANIFEST[f"vae_{vae}"]["state_dict_shapes"], "vae.vae."))
    sd.update({"vae.dino_v2." + k: v for k, v in dino_hub.items()})
    sd["latent_dist_mean"], sd["latent_dist_std"] = torch.zeros(16), torch.ones(16)
    return sd


@pytest.mark.parametrize("dataset, vae", [("kubric", "kubric_base"), ("cityscapes", "cityscapes_large")])
def test_full_size_forecaster_checkpoint_converts_key_by_key(dataset, vae, dino_hub):
    sd = released_forecaster(dataset, vae, dino_hub)
    encoder, compressor, denoiser = convert_forecaster_state_dict(sd, device="meta")
    den_cfg, vae_cfg = MANIFEST[f"denoiser_{dataset}"]["config"], MANIFEST[f"vae_{vae}"]["config"]
    assert denoiser.grid == tuple(den_cfg["shape"][1:]) and denoiser.max_context == den_cfg["shape"][0] - 1
    assert denoiser.config["width"] == den_cfg["hidden_dim"] and denoiser.config["depth"] == den_cfg["depth"]
    assert denoiser.config["heads"] == den_cfg["heads"] and denoiser.latent_dim == den_cfg["embedding_dim"]
    assert compressor.config["dim"] == vae_cfg["dim"] and compressor.config["depth"] == vae_cfg["depth"]
    assert compressor.feature_dim == 3072 and compressor.latent_dim == 16 and encoder.feature_dim == 3072
    # every released tensor landed somewhere: parameter counts agree exactly
    released = {k: v.numel() for k, v in sd.items()}
    n_trunk = sum(n for k, n in released.items() if k.startswith("transformer."))
    n_vae = sum(n for k, n in released.items() if k.startswith("vae.vae."))
    n_dino = sum(n for k, n in released.items() if k.startswith("vae.dino_v2."))
    assert sum(v.numel() for v in denoiser.state_dict().values()) == n_trunk
    assert sum(v.numel() for v in compressor.network_state_dict().values()) == n_vae
    assert sum(v.numel() for v in encoder.model.state_dict().values()) == n_dino


def test_full_size_leftover_key_is_reported(dino_hub):
    sd = released_forecaster("kubric", "kubric_base", dino_hub)
    sd["vae.vae.encoder_backbone.blocks.18.dwconv.weight"] = torch.empty(768, 1, 7, 7, device="meta")
    with pytest.raises((LeftoverKeysError, ValueError), match="blocks.18"):
        convert_forecaster_state_dict(sd, device="meta")
    sd = released_forecaster("kubric", "kubric_base", dino_hub)
    sd["ema_step"] = torch.zeros(())
    with pytest.raises(LeftoverKeysError, match="'ema_step'"):
        convert_forecaster_state_dict(sd, device="meta")


def test_missing_dino_key_is_reported(dino_hub):
    sd = released_forecaster("cityscapes", "cityscapes_large", dino_hub)
    del sd["vae.dino_v2.cls_token"]
    with pytest.raises(LeftoverKeysError, match="cls_token"):
        convert_forecaster_state_dict(sd, device="meta")


@pytest.mark.parametrize("name, task, outputs", [
    ("dpt_kubric_segmentation_fgbg", "segmentation", 2), ("dpt_cityscapes_segmentation", "segmentation", 19),
    ("dpt_depth_256_bins", "depth", 256), ("dpt_normals", "normals", 3),
])
def test_full_size_heads_convert_key_by_key(name, task, outputs):
    shapes = MANIFEST[name]["state_dict_shapes"]
    with torch.device("meta"):
        head = head_from_state_dict(task, meta(shapes))
    assert head.out_channels == outputs and head.head.feature_dim == 4 * 768
    own = {k[len("head."):]: tuple(v.shape) for k, v in head.state_dict().items()}
    assert own == {k: tuple(s) for k, s in shapes.items()}
