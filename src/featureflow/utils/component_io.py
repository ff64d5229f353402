"""Save one registered component to a directory and load it back (safetensors + JSON)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from featureflow.utils.config import build_component
from featureflow.utils.io import load_safetensors, save_json, save_safetensors

__all__ = ["save_component", "load_component"]


def save_component(module: Any, out_dir: str | os.PathLike, name: str) -> Path:
    """Write ``<name>.safetensors`` (state dict) and then ``<name>.json`` (component spec +
    versions) into ``out_dir``; the JSON is written last, so its presence marks a complete save.

    Example:
        >>> import tempfile
        >>> from featureflow.compressors import Identity
        >>> d = save_component(Identity(4), tempfile.mkdtemp(), "compressor")
        >>> type(load_component(d, "compressor")).__name__
        'Identity'
    """
    from featureflow.version import FORMAT_VERSION, __version__

    out = Path(out_dir)
    save_safetensors(module.state_dict(), out / f"{name}.safetensors")
    save_json({**module.describe(), "featureflow_version": __version__, "format_version": FORMAT_VERSION},
              out / f"{name}.json")
    return out


def load_component(out_dir: str | os.PathLike, name: str) -> Any:
    """Rebuild a component saved by `save_component` (in eval mode)."""
    directory = Path(out_dir)
    spec_path = directory / f"{name}.json"
    if not spec_path.is_file():
        raise FileNotFoundError(f"{spec_path} not found: no complete {name!r} component saved in {directory}")
    spec = json.loads(spec_path.read_text())
    module = build_component(spec)
    module.load_state_dict(load_safetensors(directory / f"{name}.safetensors"))
    return module.eval()
