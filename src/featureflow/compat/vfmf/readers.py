"""Safe readers for the released VFMF files: ``.pt`` / ``.ckpt`` (weights-only) and ``.npz``.

Every PyTorch file is read with ``torch.load(path, map_location="cpu", weights_only=True)``
and every ``.npz`` with ``numpy.load(path, allow_pickle=False)``. A file that needs more
than plain tensors and containers to unpickle raises :class:`UnsafeCheckpointError`
naming the file and the refused object; nothing ever falls back to unsafe loading.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "UnsafeCheckpointError",
    "FORECASTER_WEIGHTS",
    "load_torch_file",
    "read_forecaster_state_dict",
    "read_vae_state_dict",
    "read_head_state_dict",
    "read_feature_stats",
]

#: Which state dict of the released forecaster checkpoint to convert.
FORECASTER_WEIGHTS = ("ema", "model")
_FORECASTER_ENTRIES = ("model_state_dict", "ema_state_dict", "optimizer_state_dict", "scheduler_state_dict")

_RESAVE_HINT = (
    "featureflow never unpickles arbitrary objects. To convert it anyway, allow-list just the "
    "refused class with PyTorch's weights-only loader (`torch.serialization.add_safe_globals`) "
    "in a session where that class is importable, save the state dict's tensors with "
    "`safetensors.torch.save_file`, and convert that file."
)


class UnsafeCheckpointError(ValueError):
    """A checkpoint cannot be read with ``torch.load(weights_only=True)``.

    Raised instead of falling back to unsafe unpickling; the message names the file
    and the object the safe unpickler refused.
    """


def _reason(err: Exception) -> str:
    text = str(err)
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, flags=re.S)
    reason = (match.group(1) if match else text).strip().splitlines()
    return (reason[0] if reason else type(err).__name__)[:300]


def load_torch_file(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """Read a PyTorch ``.pt`` / ``.ckpt`` file safely (weights only, on the CPU).

    Zip-format files (everything ``torch.save`` writes since PyTorch 1.6) are
    memory-mapped, so only the tensors the conversion uses are read from disk.

    Args:
        path: the file.
        what: what the file should be, for error messages (e.g. "forecaster checkpoint").

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafeCheckpointError: the file needs unsafe unpickling (names the refused global).
        ValueError: the file is not a readable PyTorch checkpoint.

    Example:
        >>> import tempfile, pathlib, torch
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.pt"
        >>> torch.save({"model_state_dict": {"w": torch.ones(2)}}, p)
        >>> sd = load_torch_file(p)["model_state_dict"]
        >>> sd["w"].tolist()
        [1.0, 1.0]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        try:  # memory-map zip-format files: a released forecaster file holds several GB
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"{what} {path} cannot be read safely: torch.load(weights_only=True) refused it "
            f"({_reason(err)}). The file needs pickle beyond plain tensors and containers, or is "
            f"not a PyTorch checkpoint. {_RESAVE_HINT}"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise ValueError(f"{what} {path} is not a readable PyTorch checkpoint (truncated or corrupt?): {err}") from None


def _as_state_dict(obj: Any, where: str) -> dict[str, Tensor]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{where}: expected a flat mapping of str -> Tensor; offending entries: {bad[:5]}")
    return dict(obj)


def _holds_tensor(obj: Any) -> bool:
    if isinstance(obj, Tensor):
        return True
    if isinstance(obj, Mapping):
        return any(_holds_tensor(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_holds_tensor(v) for v in obj)
    return False


def read_forecaster_state_dict(path: str | os.PathLike, weights: str = "ema") -> dict[str, Tensor]:
    """The chosen state dict of a released forecaster checkpoint.

    The released file is a dict with ``model_state_dict``, ``ema_state_dict`` (what
    the authors sample with, the default), ``optimizer_state_dict`` and
    ``scheduler_state_dict`` and bookkeeping (``epoch``, ``step``, ``wandb``); the
    optimizer and scheduler states are training state, not weights, and are not
    converted. Any other top-level entry holding tensors is an error.

    Args:
        path: the forecaster ``.pt``.
        weights: ``"ema"`` (default) or ``"model"``.

    Example:
        >>> import tempfile, pathlib, torch
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "f.pt"
        >>> torch.save({"model_state_dict": {"a": torch.zeros(1)}, "ema_state_dict": {"a": torch.ones(1)}}, p)
        >>> read_forecaster_state_dict(p)["a"].item()
        1.0
    """
    if weights not in FORECASTER_WEIGHTS:
        raise ValueError(f"weights must be one of {FORECASTER_WEIGHTS}, got {weights!r}")
    ckpt = load_torch_file(path, "forecaster checkpoint")
    if not isinstance(ckpt, Mapping):
        raise ValueError(
            f"forecaster checkpoint {path}: expected a dict with {_FORECASTER_ENTRIES}, got {type(ckpt).__name__}"
        )
    entry = f"{weights}_state_dict"
    if entry not in ckpt:
        present = sorted(str(k) for k in ckpt)
        raise ValueError(
            f"forecaster checkpoint {path} has no {entry!r} (it has {present}); "
            f"expected a released VFMF forecaster checkpoint with {_FORECASTER_ENTRIES}"
        )
    # bookkeeping (epoch, step, wandb run info, ...) is fine; unknown tensors would be silently dropped
    stray = sorted(str(k) for k, v in ckpt.items() if k not in _FORECASTER_ENTRIES and _holds_tensor(v))
    if stray:
        raise ValueError(
            f"forecaster checkpoint {path}: top-level entries {stray} hold tensors that the conversion would drop; "
            f"expected weights only in {_FORECASTER_ENTRIES}"
        )
    return _as_state_dict(ckpt[entry], f"{path} [{entry}]")


def read_vae_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """The ``model_state_dict`` of a released standalone VAE ``.pt``.

    Example:
        >>> import tempfile, pathlib, torch
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "v.pt"
        >>> torch.save({"model_state_dict": {"vae.out_proj.bias": torch.zeros(2)}}, p)
        >>> list(read_vae_state_dict(p))
        ['vae.out_proj.bias']
    """
    ckpt = load_torch_file(path, "VAE checkpoint")
    if not isinstance(ckpt, Mapping) or "model_state_dict" not in ckpt:
        have = sorted(str(k) for k in ckpt) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(f"VAE checkpoint {path}: expected a dict with 'model_state_dict', got {have}")
    return _as_state_dict(ckpt["model_state_dict"], f"{path} [model_state_dict]")


def read_head_state_dict(path: str | os.PathLike, prefix: str = "head.") -> dict[str, Tensor]:
    """A released Lightning head ``.ckpt``: its ``state_dict`` with the ``head.`` prefix removed.

    A ``.safetensors`` file holding that ``state_dict`` (re-exported as the
    `UnsafeCheckpointError` message describes) is read the same way.

    Every key must carry the prefix (the released loader strips it and loads strictly);
    other keys are reported as an error. Lightning's bookkeeping entries (epoch,
    optimizer states, ...) are not weights and are not read.

    Example:
        >>> import tempfile, pathlib, torch
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "h.ckpt"
        >>> torch.save({"epoch": 3, "state_dict": {"head.projects.0.bias": torch.zeros(2)}}, p)
        >>> list(read_head_state_dict(p))
        ['projects.0.bias']
    """
    if Path(path).suffix == ".safetensors":
        from featureflow.utils.io import load_safetensors

        ckpt: Any = {"state_dict": load_safetensors(path)}
    else:
        ckpt = load_torch_file(path, "head checkpoint")
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        have = sorted(str(k) for k in ckpt) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(f"head checkpoint {path}: expected a Lightning checkpoint with 'state_dict', got {have}")
    state = _as_state_dict(ckpt["state_dict"], f"{path} [state_dict]")
    stray = sorted(k for k in state if not k.startswith(prefix))
    if stray:
        raise ValueError(
            f"head checkpoint {path}: {len(stray)} key(s) do not start with {prefix!r} and would be left over: "
            f"{stray[:8]}"
        )
    return {k[len(prefix):]: v for k, v in state.items()}


def read_feature_stats(path: str | os.PathLike, channels: int | None = None) -> tuple[Tensor, Tensor]:
    """Per-channel feature ``mean`` and ``std`` from a released ``.npz`` (no pickle).

    Args:
        path: the ``.npz`` with arrays ``mean`` and ``std`` (one value per channel).
        channels: expected number of channels (3072 for the released DINOv2-B features).

    Returns:
        ``(mean, std)`` float tensors of shape ``(channels,)``, in the file's dtype.

    Example:
        >>> import tempfile, pathlib, numpy as np
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "dino.npz"
        >>> np.savez(p, mean=np.zeros(4, np.float32), std=np.ones(4, np.float32))
        >>> mean, std = read_feature_stats(p, channels=4)
        >>> mean.shape, float(std.sum())
        (torch.Size([4]), 4.0)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature statistics not found: {path} (expected an .npz with 'mean' and 'std')")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("mean", "std") if k not in data.files]
            if missing:
                raise ValueError(f"feature statistics {path}: missing array(s) {missing}; it has {sorted(data.files)}")
            unknown = sorted(set(data.files) - {"mean", "std"})
            if unknown:
                raise ValueError(
                    f"feature statistics {path}: unexpected array(s) {unknown}; expected only 'mean' and 'std'"
                )
            mean, std = np.asarray(data["mean"]), np.asarray(data["std"])
    except (OSError, zipfile.BadZipFile) as err:
        raise ValueError(f"feature statistics {path} is not a readable .npz file: {err}") from None
    except ValueError as err:
        if "allow_pickle" in str(err) or "pickle" in str(err).lower():
            raise UnsafeCheckpointError(
                f"feature statistics {path} hold pickled objects; numpy.load(allow_pickle=False) refused them. "
                "Expected plain float arrays 'mean' and 'std'."
            ) from None
        raise
    out = []
    for name, arr in (("mean", mean), ("std", std)):
        arr = arr.reshape(-1) if arr.ndim > 1 and arr.size == arr.shape[-1] else arr
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(
                f"feature statistics {path}: {name!r} must be a 1-D float array, got {arr.dtype} {arr.shape}"
            )
        if channels is not None and arr.shape[0] != channels:
            raise ValueError(f"feature statistics {path}: {name!r} has {arr.shape[0]} channels, expected {channels}")
        out.append(torch.from_numpy(arr.copy()))
    if not bool(torch.isfinite(out[0]).all() and torch.isfinite(out[1]).all()) or bool((out[1] < 0).any()):
        raise ValueError(f"feature statistics {path}: mean/std must be finite and std non-negative")
    return out[0], out[1]
