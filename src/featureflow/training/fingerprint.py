"""Fingerprints: short JSON descriptions of what a run trains, so a resume can refuse a different run.

A fingerprint is stored in every checkpoint (``state.json``) and beside every finished
pipeline stage; comparing two with :func:`~featureflow.training.loop.fingerprint_diff`
names each difference (model type, architecture, objective, data, precision, ...).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["model_fingerprint", "data_fingerprint", "config_hash", "jsonable"]


def jsonable(value: Any) -> Any:
    """``value`` with tuples as lists, tensors as lists and anything else unknown as its ``repr``.

    Example:
        >>> jsonable({"a": (1, 2), "b": torch.tensor([0.5])})
        {'a': [1, 2], 'b': [0.5]}
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Tensor):
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def config_hash(value: Any) -> str:
    """A 16-hex-digit hash of a JSON-able value (key order does not matter).

    Example:
        >>> config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
        True
    """
    text = json.dumps(jsonable(value), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """``{"type": class name, "config": constructor config, "parameters": {name: shape}}``.

    The parameter shapes catch an architecture change even for modules without a
    ``config`` attribute.

    Example:
        >>> fp = model_fingerprint(torch.nn.Linear(2, 3))
        >>> fp["type"], fp["parameters"].get("weight")
        ('Linear', [3, 2])
    """
    config = getattr(model, "config", None)
    return {
        "type": type(model).__name__,
        "config": jsonable(config) if isinstance(config, dict) else None,
        "parameters": {k: list(v.shape) for k, v in model.state_dict().items()},
    }


def data_fingerprint(data: Any) -> dict[str, Any]:
    """The data's kind and size; for a tensor also its shape, dtype and a content hash.

    Example:
        >>> tuple(data_fingerprint(torch.zeros(2, 3)).get("shape"))
        (2, 3)
    """
    if isinstance(data, Tensor):
        flat = data.detach().to("cpu").contiguous()
        digest = hashlib.sha256(flat.reshape(-1).view(torch.uint8).numpy().tobytes() if flat.numel() else b"").hexdigest()[:16]
        return {"kind": "tensor", "shape": list(data.shape), "dtype": str(data.dtype).replace("torch.", ""),
                "sha256": digest}
    out: dict[str, Any] = {"kind": type(data).__name__}
    if hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        out["size"] = len(data)
    config = getattr(data, "config", None)
    if isinstance(config, dict):
        out["config"] = jsonable(config)
    return out
