"""Training checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint is a directory ``<ckpt_dir>/step-<N>/`` holding ``model.safetensors``,
``ema.safetensors``, ``optimizer.safetensors``, ``rng.safetensors`` and ``state.json``.
It is written to a temporary directory and renamed into place; only then is the
``latest`` pointer file rewritten (atomically), so a crash at any moment leaves the
previous checkpoint intact and discoverable.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from featureflow.utils import atomic_write, load_safetensors, save_safetensors

__all__ = [
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "flatten_optimizer_state",
    "unflatten_optimizer_state",
    "capture_rng",
    "restore_rng",
]


def flatten_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into flat tensors and a JSON-able remainder.

    Example:
        >>> import torch
        >>> p = torch.nn.Parameter(torch.ones(2))
        >>> opt = torch.optim.AdamW([p]); p.grad = torch.ones(2); opt.step()
        >>> tensors, meta = flatten_optimizer_state(opt.state_dict())
        >>> sorted(tensors)
        ['state.0.exp_avg', 'state.0.exp_avg_sq', 'state.0.step']
    """
    tensors: dict[str, Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"state.{idx}.{key}"] = value
            else:
                plain.setdefault(str(idx), {})[key] = value
    meta = {"param_groups": state["param_groups"], "plain_state": plain}
    json.dumps(meta)  # fail early on anything not JSON-able
    return tensors, meta


def unflatten_optimizer_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state` (tuples such as ``betas`` restored).

    Example:
        >>> import torch
        >>> p = torch.nn.Parameter(torch.ones(2))
        >>> opt = torch.optim.AdamW([p]); p.grad = torch.ones(2); opt.step()
        >>> sd = unflatten_optimizer_state(*flatten_optimizer_state(opt.state_dict()))
        >>> group, = sd["param_groups"]
        >>> group["betas"], sorted(sd["state"].get(0))
        ((0.9, 0.999), ['exp_avg', 'exp_avg_sq', 'step'])
    """
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for idx, entry in meta.get("plain_state", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        for key, value in group.items():
            if key != "params" and isinstance(value, list):
                group[key] = tuple(value)
        groups.append(group)
    return {"state": state, "param_groups": groups}


def capture_rng() -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The global RNG states: torch CPU/CUDA as tensors, Python ``random`` and NumPy as JSON.

    Example:
        >>> tensors, meta = capture_rng()
        >>> "torch_cpu" in tensors and "python" in meta
        True
    """
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    version, internal, gauss = random.getstate()
    meta: dict[str, Any] = {"python": [version, list(internal), gauss]}
    try:
        import numpy as np

        name, keys, pos, has_gauss, cached = np.random.get_state()
        meta["numpy"] = [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]
    except ImportError:  # pragma: no cover
        pass
    return tensors, meta


def restore_rng(tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng` captured."""
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    if "python" in meta:
        version, internal, gauss = meta["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in meta:
        import numpy as np

        name, keys, pos, has_gauss, cached = meta["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``step``, tensors of each part, and the JSON ``state``."""

    step: int
    model: dict[str, Tensor]
    ema: dict[str, Tensor] | None
    optimizer: dict[str, Any] | None
    rng: dict[str, Tensor]
    state: dict[str, Any] = field(default_factory=dict)


def _step_dir(ckpt_dir: Path, step: int) -> Path:
    return ckpt_dir / f"step-{step:08d}"


def save_checkpoint(
    ckpt_dir: str | os.PathLike,
    step: int,
    *,
    model: dict[str, Tensor],
    optimizer: dict[str, Any] | None = None,
    ema: dict[str, Tensor] | None = None,
    rng: dict[str, Tensor] | None = None,
    state: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write a checkpoint directory atomically and point ``latest`` at it; keep the newest ``keep``.

    Args:
        ckpt_dir: folder of checkpoints.
        step: optimizer steps taken.
        model: model state dict (tensors; tied/shared tensors are copied apart).
        optimizer: ``optimizer.state_dict()``.
        ema: EMA state dict, or None.
        rng: extra RNG state tensors (e.g. ``{"data": generator.get_state()}``); the
            global RNGs are captured too.
        state: JSON-able run state (loss history, settings, ...).
        keep: how many step directories to keep.

    Example:
        >>> import tempfile, torch
        >>> d = tempfile.mkdtemp()
        >>> _ = save_checkpoint(d, 3, model={"w": torch.ones(2)}, state={"note": "hi"})
        >>> ck = load_checkpoint(d)
        >>> ck.step, ck.model["w"].tolist(), ck.state["note"]
        (3, [1.0, 1.0], 'hi')
    """
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    _prune_temporaries(ckpt_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".step-{step:08d}.", dir=ckpt_dir))
    try:
        save_safetensors({k: v.detach().clone() for k, v in model.items()}, tmp / "model.safetensors")
        if ema is not None:
            save_safetensors({k: v.detach().clone() for k, v in ema.items()}, tmp / "ema.safetensors")
        opt_meta = None
        if optimizer is not None:
            tensors, opt_meta = flatten_optimizer_state(optimizer)
            save_safetensors(tensors, tmp / "optimizer.safetensors")
        rng_tensors, rng_meta = capture_rng()
        rng_tensors.update({f"extra.{k}": v for k, v in (rng or {}).items()})
        save_safetensors(rng_tensors, tmp / "rng.safetensors")
        doc = {"step": step, "optimizer": opt_meta, "rng": rng_meta, "state": state or {}}
        (tmp / "state.json").write_text(json.dumps(doc))  # written last: marks the directory complete
        final = _step_dir(ckpt_dir, step)
        old = None
        if final.exists():
            # Re-saving a step: move the old copy aside (not deleted yet), swap the new one in.
            # A crash in between leaves ``latest`` naming a missing directory, and
            # load_checkpoint falls back to the newest intact one.
            old = Path(tempfile.mkdtemp(prefix=f".old-{final.name}.", dir=ckpt_dir))
            os.replace(final, old / final.name)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with atomic_write(ckpt_dir / "latest") as p:
        p.write_text(final.name + "\n")
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    older = sorted(p for p in ckpt_dir.glob("step-*") if p.is_dir() and p != final)
    for p in older[: max(0, len(older) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def _prune_temporaries(ckpt_dir: Path) -> None:
    """Remove what a killed writer left behind: ``.step-*`` / ``.old-*`` directories and ``.latest.*`` files."""
    for p in list(ckpt_dir.glob(".step-*")) + list(ckpt_dir.glob(".old-*")):
        shutil.rmtree(p, ignore_errors=True)
    for p in ckpt_dir.glob(".latest.*"):
        p.unlink(missing_ok=True)


def _intact(path: Path) -> bool:
    return path.is_dir() and (path / "state.json").is_file()


def _step_of(path: Path) -> int:
    try:
        return int(path.name.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def load_checkpoint(ckpt_dir: str | os.PathLike, *, restore_global_rng: bool = False) -> Checkpoint | None:
    """The checkpoint ``latest`` points to (``None`` if there is none).

    If ``latest`` names a directory that is missing or incomplete (a writer killed while
    swapping a re-saved step), the newest intact ``step-*`` directory is used instead,
    with a warning. With ``restore_global_rng`` the global torch/Python/NumPy RNGs are
    restored too.

    Example:
        >>> import tempfile, torch
        >>> d = tempfile.mkdtemp()
        >>> load_checkpoint(d) is None
        True
    """
    ckpt_dir = Path(ckpt_dir)
    pointer = ckpt_dir / "latest"
    named = ckpt_dir / pointer.read_text().strip() if pointer.is_file() else None
    if named is not None and _intact(named):
        path = named
    else:
        # No pointer, or it names a directory a crash left missing: the newest intact step.
        found = sorted((p for p in ckpt_dir.glob("step-*") if _intact(p)), key=_step_of) if ckpt_dir.is_dir() else []
        if not found:
            return None
        path = found[-1]
        if named is not None:
            warnings.warn(f"checkpoint pointer {pointer} names {named.name}, which is missing or incomplete; "
                          f"resuming from {path.name}", stacklevel=2)
    doc = json.loads((path / "state.json").read_text())
    rng_all = load_safetensors(path / "rng.safetensors")
    if restore_global_rng:
        restore_rng({k: v for k, v in rng_all.items() if not k.startswith("extra.")}, doc["rng"])
    optimizer = None
    if doc.get("optimizer") is not None:
        optimizer = unflatten_optimizer_state(load_safetensors(path / "optimizer.safetensors"), doc["optimizer"])
    ema_path = path / "ema.safetensors"
    return Checkpoint(
        step=int(doc["step"]),
        model=load_safetensors(path / "model.safetensors"),
        ema=load_safetensors(ema_path) if ema_path.is_file() else None,
        optimizer=optimizer,
        rng={k[len("extra."):]: v for k, v in rng_all.items() if k.startswith("extra.")},
        state=doc.get("state", {}),
    )
