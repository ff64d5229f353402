"""Load the paper's released VFMF checkpoints (gboduljak/vfmf) into featureflow.

* :func:`convert_vfmf` — forecaster ``.pt`` + feature statistics ``.npz`` + head ``.ckpt``
  files (+ optional standalone VAE) → a ``WorldModel`` (and a model directory).
* :func:`forecast_released` / :func:`released_rollout` — sample as the released code
  does (:class:`ReleasedRecipe`: Euler, 9 evaluations, window 4, features re-encoded
  before every frame).
* Readers that never unpickle unsafely, the DINOv2 torch.hub → Hugging Face key
  mapping, and :class:`KeyLedger` (every released key used exactly once).

CLI: ``featureflow convert-vfmf`` (:mod:`featureflow.compat.vfmf.cli`).

Example:
    >>> from featureflow.compat.vfmf import ReleasedRecipe
    >>> ReleasedRecipe().steps
    9
"""

from featureflow.compat.vfmf.convert import (
    DINO_BLOCKS,
    DINO_HUB_ID,
    FEATURE_STD_EPS,
    convert_forecaster_state_dict,
    convert_vfmf,
    encoder_from_hub_state_dict,
    load_converted,
    vae_from_released_state_dict,
)
from featureflow.compat.vfmf.dinov2_keys import (
    convert_hub_dinov2_state_dict,
    dinov2_hf_config,
    dinov2_model_from_hub_state_dict,
    hf_to_hub_dinov2_state_dict,
    hub_dinov2_info,
    load_hub_dinov2_state_dict,
)
from featureflow.compat.vfmf.heads import HEAD_TASKS, find_head_checkpoints, head_from_state_dict, load_head
from featureflow.compat.vfmf.ledger import KeyLedger, LeftoverKeysError
from featureflow.compat.vfmf.readers import (
    UnsafeCheckpointError,
    load_torch_file,
    read_feature_stats,
    read_forecaster_state_dict,
    read_head_state_dict,
    read_vae_state_dict,
)
from featureflow.compat.vfmf.recipe import RECIPE_KEY, ReleasedRecipe, forecast_released, read_recipe, released_rollout

__all__ = [
    "convert_vfmf",
    "convert_forecaster_state_dict",
    "load_converted",
    "forecast_released",
    "released_rollout",
    "ReleasedRecipe",
    "RECIPE_KEY",
    "read_recipe",
    "UnsafeCheckpointError",
    "LeftoverKeysError",
    "KeyLedger",
    "load_torch_file",
    "read_forecaster_state_dict",
    "read_vae_state_dict",
    "read_head_state_dict",
    "read_feature_stats",
    "convert_hub_dinov2_state_dict",
    "load_hub_dinov2_state_dict",
    "hf_to_hub_dinov2_state_dict",
    "dinov2_hf_config",
    "dinov2_model_from_hub_state_dict",
    "hub_dinov2_info",
    "encoder_from_hub_state_dict",
    "vae_from_released_state_dict",
    "find_head_checkpoints",
    "head_from_state_dict",
    "load_head",
    "HEAD_TASKS",
    "DINO_HUB_ID",
    "DINO_BLOCKS",
    "FEATURE_STD_EPS",
]
