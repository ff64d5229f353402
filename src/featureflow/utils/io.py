"""Atomic file writing and safe tensor I/O (safetensors only; never pickle)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

__all__ = ["atomic_write", "save_safetensors", "load_safetensors", "save_json"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success.

    Nothing half-written is ever left at ``path``: on an exception the temporary file
    is removed and ``path`` keeps its previous content (or stays absent).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> with atomic_write(d / "a.txt") as tmp:
        ...     _ = tmp.write_text("hi")
        >>> (d / "a.txt").read_text()
        'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Atomically save a flat dict of tensors as safetensors (contiguous copies are made).

    Example:
        >>> import tempfile, pathlib, torch
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.safetensors"
        >>> save_safetensors({"a": torch.ones(2)}, p)
        >>> load_safetensors(p)["a"].tolist()
        [1.0, 1.0]
    """
    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_write(path) as tmp:
        save_file(clean, str(tmp), metadata=metadata)


def load_safetensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file, with a clear error for missing or corrupt files.

    Example:
        >>> import tempfile, pathlib, torch
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.safetensors"
        >>> save_safetensors({"a": torch.zeros(1)}, p)
        >>> sorted(load_safetensors(p))
        ['a']
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path} (expected a .safetensors file)")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(
            f"could not read {path} as safetensors (truncated or not a safetensors file?): {err}"
        ) from None


def save_json(obj: Any, path: str | os.PathLike) -> None:
    """Atomically write ``obj`` as indented JSON.

    Example:
        >>> import tempfile, pathlib, json
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.json"
        >>> save_json({"a": 1}, p)
        >>> json.loads(p.read_text())
        {'a': 1}
    """
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
