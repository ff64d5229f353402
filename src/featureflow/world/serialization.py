"""Saving and loading `WorldModel` directories: ``config.json`` + ``model.safetensors``.

Layout of ``config.json``::

    {"format_version": 1, "featureflow_version": "...",
     "components": {"encoder": {"type": ..., "config": {...}, "weights": "included"|"reference"},
                    "compressor": {...}, "forecaster": {...}},
     "probes": {"depth": {...}, ...}, "baselines": {"regression": {...}},
     "tensors": {"compressor.feature_mean": [3072], ...},
     "weights_sha256": "<sha256 of model.safetensors>"}

Nothing is ever unpickled: weights are safetensors, the rest is JSON.

Crash safety: `save_world_model` writes the whole model into a temporary directory
beside the target and swaps it in with renames (`featureflow.utils.atomic_dir`), so a
model directory always holds either the old model or the new one, never a mix, and no
temporary file survives an exception. A save killed between the two renames leaves the
old model as ``.<name>.backup``; the next load (or save) renames it back.

Integrity: ``weights_sha256`` (written unless ``checksum=False``) is verified on load,
so a changed or corrupted ``model.safetensors`` is an error naming the file instead of
a silently different model. Loading also refuses an unknown ``format_version`` and
weights whose dtype kind (floating point or not) differs from the model's.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from featureflow.utils.atomic_dir import atomic_directory, recover_directory
from featureflow.utils.config import build_component
from featureflow.utils.io import load_safetensors, save_json, save_safetensors
from featureflow.version import FORMAT_VERSION, __version__
from featureflow.world.recipe import RECIPE_KEY, SamplingRecipe

if TYPE_CHECKING:  # pragma: no cover
    from featureflow.world.model import WorldModel

__all__ = ["save_world_model", "load_world_model", "push_world_model", "bundled_models", "CONFIG_NAME", "WEIGHTS_NAME"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_ASSETS = Path(__file__).resolve().parent.parent / "assets" / "models"


def bundled_models() -> dict[str, Path]:
    """Names of the models shipped inside the package and their directories.

    Example:
        >>> isinstance(bundled_models(), dict)
        True
    """
    if not _ASSETS.is_dir():
        return {}
    return {p.name: p for p in sorted(_ASSETS.iterdir()) if (p / CONFIG_NAME).is_file()}


def _describe(module: Any) -> dict[str, Any]:
    if not hasattr(module, "describe"):
        raise TypeError(
            f"{type(module).__name__} cannot be saved: components must derive from "
            "featureflow.utils.Configurable and be @register_component'ed"
        )
    return module.describe()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_complete(directory: Path) -> bool:
    return (directory / CONFIG_NAME).is_file() and (directory / WEIGHTS_NAME).is_file()


def save_world_model(model: "WorldModel", save_directory: str | os.PathLike, *,
                     include_encoder: bool | None = None, dtype: torch.dtype | None = None,
                     checksum: bool = True) -> Path:
    """Write ``model`` to ``save_directory`` (see module docstring); returns the directory.

    The directory is replaced as a whole (other files in it are kept): it holds the old
    model or the new one at every moment, never a mix. ``checksum`` records the SHA-256
    of ``model.safetensors`` in ``config.json``, verified on load.
    """
    out = Path(save_directory)
    if include_encoder is None:
        include_encoder = not bool(getattr(model.encoder, "is_reference", False))
    components = {name: _describe(getattr(model, name)) for name in ("encoder", "compressor", "forecaster")}
    components["encoder"]["weights"] = "included" if include_encoder else "reference"
    state = model.state_dict()
    if not include_encoder:
        state = {k: v for k, v in state.items() if not k.startswith("encoder.")}
    if dtype is not None:
        state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    config = {
        "format_version": FORMAT_VERSION,
        "featureflow_version": __version__,
        "components": components,
        "probes": {k: _describe(v) for k, v in model.probes.items()},
        "baselines": {k: _describe(v) for k, v in model.baselines.items()},
        "tensors": {k: list(v.shape) for k, v in state.items()},
    }
    if getattr(model, "metadata", None):
        config["metadata"] = model.metadata
    recipe = getattr(model, "recipe", None)
    if recipe is not None:
        config[RECIPE_KEY] = recipe.to_dict()
    with atomic_directory(out) as tmp:  # the whole model, then one swap of directories
        save_safetensors(state, tmp / WEIGHTS_NAME, metadata={"format": "pt", "featureflow_version": __version__})
        if checksum:
            config["weights_sha256"] = _sha256(tmp / WEIGHTS_NAME)
        save_json(config, tmp / CONFIG_NAME)
    return out


def _resolve(name_or_path: str | os.PathLike, revision: str | None, local_files_only: bool) -> Path:
    bundled = bundled_models()
    if isinstance(name_or_path, str) and name_or_path in bundled:
        return bundled[name_or_path]
    path = Path(name_or_path)
    recover_directory(path, _is_complete)  # a save killed mid-swap left the old model as a backup
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{path} is a directory but has no {CONFIG_NAME}; is it a featureflow model?")
        return path
    name = str(name_or_path)
    if name.count("/") != 1 or path.exists():
        raise FileNotFoundError(
            f"{name!r} is not a bundled model ({sorted(bundled) or 'none installed'}), "
            "not a local model directory, and not a Hub repo id of the form 'owner/name'"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = local_files_only or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    try:
        local = snapshot_download(name, revision=revision, local_files_only=offline,
                                  allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, "*.md"])
    except LocalEntryNotFoundError:
        raise FileNotFoundError(
            f"model {name!r} is not in the local Hugging Face cache and downloading is off "
            f"({'local_files_only=True' if local_files_only else 'HF_HUB_OFFLINE is set'})"
        ) from None
    except Exception as err:  # network / auth / missing repo
        raise FileNotFoundError(f"could not fetch model {name!r} from the Hugging Face Hub: {err}") from None
    return Path(local)


def _read_config(path: Path) -> dict[str, Any]:
    """``config.json`` as a dict, checked for what loading needs; errors name the file."""
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON (truncated?): {err}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object with 'format_version' and 'components', "
                         f"got a JSON {type(config).__name__}; not a featureflow model config?")
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{path} has no integer 'format_version'; not a featureflow model?")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path.parent} was written with format version {version} by featureflow "
            f"{config.get('featureflow_version', '?')}; this featureflow ({__version__}) reads format "
            f"<= {FORMAT_VERSION}. Upgrade featureflow to load it."
        )
    if version < 1:
        raise ValueError(f"{path}: format_version {version} is not a known format version "
                         f"(expected an integer in 1..{FORMAT_VERSION})")
    comps = config.get("components")
    needed = ("encoder", "compressor", "forecaster")
    if not isinstance(comps, dict) or any(not isinstance(comps.get(n), dict) for n in needed):
        got = sorted(comps) if isinstance(comps, dict) else type(comps).__name__ if comps is not None else "nothing"
        raise ValueError(f"{path}: expected 'components' to be an object with {', '.join(needed)} component specs "
                         f"(each {{'type': ..., 'config': ...}}), got {got}")
    for key in ("probes", "baselines"):
        if not isinstance(config.get(key, {}), dict):
            raise ValueError(f"{path}: expected {key!r} to be an object mapping names to component specs, "
                             f"got a JSON {type(config[key]).__name__}")
    digest = config.get("weights_sha256")
    if digest is not None and not (isinstance(digest, str) and len(digest) == 64):
        raise ValueError(f"{path}: 'weights_sha256' must be a 64-character hex string, got {digest!r}")
    return config


def load_world_model(name_or_path: str | os.PathLike, *, revision: str | None = None,
                     local_files_only: bool = False, map_location: str | torch.device = "cpu",
                     verify: bool = True) -> "WorldModel":
    """Load a `WorldModel` saved by `save_world_model` (bundled name, directory or Hub id).

    ``verify`` checks ``model.safetensors`` against the SHA-256 in ``config.json`` (when
    the model was saved with one).
    """
    from featureflow.world.model import WorldModel  # components are found by type (find_component)

    directory = _resolve(name_or_path, revision, local_files_only)
    config = _read_config(directory / CONFIG_NAME)
    comps = config["components"]
    parts = {name: build_component(spec) for name, spec in comps.items()}
    probes = {k: build_component(v) for k, v in config.get("probes", {}).items()}
    baselines = {k: build_component(v) for k, v in config.get("baselines", {}).items()}
    model = WorldModel(parts["encoder"], parts["compressor"], parts["forecaster"], probes, baselines)
    weights = directory / WEIGHTS_NAME
    if verify and "weights_sha256" in config and weights.is_file():
        if _sha256(weights) != config["weights_sha256"]:
            raise ValueError(
                f"{weights} does not match the SHA-256 recorded in {directory / CONFIG_NAME} "
                "(the weights file is corrupted or was changed after saving); re-download or re-save the model, "
                "or pass verify=False to load it anyway"
            )
    state = load_safetensors(weights)
    expected = model.state_dict()
    skip_encoder = comps["encoder"].get("weights") == "reference"
    if skip_encoder:
        expected = {k: v for k, v in expected.items() if not k.startswith("encoder.")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    kind = sorted(k for k in set(expected) & set(state)
                  if expected[k].is_floating_point() != state[k].is_floating_point())
    if missing or unexpected or wrong or kind:
        def _few(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
        problems = []
        if missing:
            problems.append(f"missing from weights: {_few(missing)}")
        if unexpected:
            problems.append(f"not expected by config: {_few(unexpected)}")
        if wrong:
            problems.append("shape mismatch: " + _few(
                [f"{k} config {tuple(expected[k].shape)} vs weights {tuple(state[k].shape)}" for k in wrong]))
        if kind:
            problems.append("dtype mismatch: " + _few(
                [f"{k} expected {'floating-point' if expected[k].is_floating_point() else str(expected[k].dtype)} "
                 f"vs weights {state[k].dtype}" for k in kind]))
        raise ValueError(f"{directory}: config.json does not match model.safetensors; " + "; ".join(problems))
    model.load_state_dict(state, strict=not skip_encoder)
    model.source = str(name_or_path)
    model.metadata = dict(config.get("metadata", {}))
    if RECIPE_KEY in config:
        model.recipe = SamplingRecipe.from_dict(config[RECIPE_KEY])
    return model.to(map_location).eval()


def push_world_model(model: "WorldModel", repo_id: str, *, private: bool = False, token: str | None = None,
                     commit_message: str = "Upload featureflow WorldModel", **save_kwargs: Any) -> str:
    """Save ``model`` to a temporary directory and upload it to ``repo_id`` on the Hub."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_world_model(model, tmp, **save_kwargs)
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)
    return str(getattr(info, "commit_url", info))
