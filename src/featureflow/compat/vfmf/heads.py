"""Find and convert the released DPT probe heads (Lightning ``.ckpt``) into task heads."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from featureflow.compat.vfmf.readers import read_head_state_dict

__all__ = ["HEAD_TASKS", "find_head_checkpoints", "head_from_state_dict", "load_head"]

#: Task name in featureflow -> words that identify its released checkpoint's path.
HEAD_TASKS: dict[str, tuple[str, ...]] = {
    "segmentation": ("segm", "seg", "fgbg", "fg_bg", "segmentation"),
    "depth": ("depth",),
    "normals": ("normals", "normal"),
}


def _task_of(path: Path, root: Path) -> str | None:
    text = str(path.relative_to(root)).lower()
    words = set(re.split(r"[^a-z0-9]+", text)) | {w for w in re.split(r"[^a-z0-9_]+", text)}
    hits = [task for task, keys in HEAD_TASKS.items() if any(k in words for k in keys)]
    return hits[0] if len(hits) == 1 else None


def find_head_checkpoints(heads_dir: str | os.PathLike) -> dict[str, Path]:
    """Map each task to its ``.ckpt`` under ``heads_dir`` (searched recursively).

    A file's task is read from its path relative to ``heads_dir`` (the released names
    contain ``segm_head`` / ``fgbg_seg_head``, ``depth_head``, ``normals_head``). Two
    files for one task, or a ``.ckpt`` whose path names no task, raise ``ValueError``
    (pass the files explicitly with ``heads={task: path}`` instead).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for n in ("x_depth_head/e=1.ckpt", "x_normals_head/e=9.ckpt", "x_segm_head/e=2.ckpt"):
        ...     (d / n).parent.mkdir(parents=True); (d / n).touch()
        >>> sorted(find_head_checkpoints(d))
        ['depth', 'normals', 'segmentation']
    """
    root = Path(heads_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"heads directory not found: {root}")
    found: dict[str, list[Path]] = {}
    unknown: list[str] = []
    for path in sorted(root.rglob("*.ckpt")):
        task = _task_of(path, root)
        if task is None:
            unknown.append(str(path.relative_to(root)))
        else:
            found.setdefault(task, []).append(path)
    if unknown:
        raise ValueError(
            f"cannot tell which task these head checkpoints belong to: {unknown}; their paths should contain "
            f"one of {dict(HEAD_TASKS)}, or pass heads={{task: path}} explicitly"
        )
    double = {t: [str(p.relative_to(root)) for p in ps] for t, ps in found.items() if len(ps) > 1}
    if double:
        raise ValueError(f"more than one head checkpoint per task under {root}: {double}; pass heads={{task: path}}")
    if not found:
        raise ValueError(f"no .ckpt head checkpoints under {root}")
    return {t: ps[0] for t, ps in found.items()}


def head_from_state_dict(
    task: str, state_dict: Mapping[str, Tensor], depth_range: tuple[float, float] = (0.0, 1.0)
) -> nn.Module:
    """A featureflow task head holding a released DPT head (keys without ``head.``).

    ``segmentation`` → ``SegmentationHead`` (classes from the weights), ``depth`` →
    ``DepthHead(mode="bins")`` over ``depth_range`` (the released bins are 256 levels of
    depth normalised per scene, hence the default (0, 1)), ``normals`` → ``NormalsHead``.

    Example:
        >>> from featureflow.probes import DPTHead
        >>> sd = DPTHead(nclass=3, in_channels=8, features=8, out_channels=[4, 4, 8, 8]).state_dict()
        >>> type(head_from_state_dict("normals", sd)).__name__
        'NormalsHead'
    """
    from featureflow.probes import DepthHead, DPTHead, NormalsHead, SegmentationHead

    dpt = DPTHead.from_released(dict(state_dict))
    if task == "segmentation":
        return SegmentationHead(dpt, num_classes=dpt.out_channels).eval()
    if task == "depth":
        lo, hi = (float(v) for v in depth_range)
        return DepthHead(dpt, min_depth=lo, max_depth=hi, mode="bins", num_bins=dpt.out_channels).eval()
    if task == "normals":
        if dpt.out_channels != 3:
            raise ValueError(f"normals head must have 3 outputs, the checkpoint has {dpt.out_channels}")
        return NormalsHead(dpt).eval()
    raise ValueError(f"unknown head task {task!r}; expected one of {sorted(HEAD_TASKS)}")


def load_head(task: str, path: str | os.PathLike, depth_range: tuple[float, float] = (0.0, 1.0)) -> nn.Module:
    """Read a released head ``.ckpt`` and build its task head (see :func:`head_from_state_dict`).

    Example:
        >>> import tempfile, pathlib, torch
        >>> from featureflow.probes import DPTHead
        >>> dpt = DPTHead(nclass=256, in_channels=8, features=8, out_channels=[4, 4, 8, 8])
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "depth.ckpt"
        >>> torch.save({"state_dict": {"head." + k: v for k, v in dpt.state_dict().items()}}, p)
        >>> head = load_head("depth", p, depth_range=(0.5, 80.0))
        >>> head.predict(torch.randn(1, 2, 3, 32), size=(4, 6)).shape
        torch.Size([1, 4, 6])
    """
    try:
        return head_from_state_dict(task, read_head_state_dict(path), depth_range)
    except (ValueError, RuntimeError) as err:
        if str(path) in str(err):
            raise
        raise ValueError(f"head checkpoint {path} ({task}): {err}") from None
