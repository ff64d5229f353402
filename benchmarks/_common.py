"""Shared helpers of the benchmark scripts: model + data loading, per-image metrics,
95 % intervals, JSON / Markdown writers and a small PNG line plot (PIL, no matplotlib)."""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

REPO = Path(__file__).resolve().parents[1]
DOCS_OUT = REPO / "docs" / "benchmarks"

#: metric → (modality, label, higher is better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "miou": ("segmentation", "mIoU %", True),
    "abs_rel": ("depth", "AbsRel", False),
    "delta1": ("depth", "δ<1.25 %", True),
    "normal_err": ("normals", "normal err °", False),
    "psnr": ("rgb", "PSNR dB", True),
}


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default="toyworld", help="bundled name, directory or Hub id of a WorldModel")
    p.add_argument("--quick", action="store_true", help="tiny clip counts: a smoke run")
    p.add_argument("--out", type=Path, default=DOCS_OUT, help="directory for JSON / Markdown / PNG outputs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    return p


def setup(threads: int = 1) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(max(1, int(threads)))


def load(model: str) -> tuple[Any, Any, dict[str, int]]:
    """(WorldModel, ToyWorld with the model's training settings, {"stride", "warmup"})."""
    from featureflow.data import ToyWorld
    from featureflow.world import WorldModel

    wm = WorldModel.from_pretrained(model)
    data = wm.metadata.get("data", {})
    world = ToyWorld(resolution=int(data.get("resolution", 64)))
    return wm, world, {"stride": int(data.get("stride", 1)), "warmup": int(data.get("warmup", 0))}


def test_clips(world: Any, n: int, length: int, stride: int, start: int) -> list[Any]:
    """The first ``n`` held-out test clips (seeds ``ToyWorld.split_seeds("test")``)."""
    seeds = world.split_seeds("test")
    return [world.clip(seeds[i], length, stride=stride, start=start) for i in range(n)]


def stack(clips: Sequence[Any], key: str, sl: slice) -> Tensor:
    return torch.stack([getattr(c, key)[sl] for c in clips])


@torch.no_grad()
def image_scores(preds: dict[str, Tensor], targets: dict[str, Tensor], *, num_classes: int,
                 background: int | None = 0) -> dict[str, Tensor]:
    """Per-image metrics (b, s, k) float64 of decoded predictions (b, s, k, ...) vs targets (b, k, ...).

    Depth and normal metrics leave out the truth's ``background`` pixels (as
    `featureflow.world.evaluate.score_decoded` does); mIoU ignores classes absent from both maps.
    """
    from featureflow.metrics import abs_rel, angular_error, delta_accuracy, miou, psnr

    seg_t = targets.get("segmentation")
    out: dict[str, Tensor] = {}
    for name, (modality, _, _) in METRICS.items():
        if modality not in preds or modality not in targets:
            continue
        pred, tgt = preds[modality].float() if modality != "segmentation" else preds[modality], targets[modality]
        b, s, k = pred.shape[:3]
        vals = torch.zeros(b, s, k, dtype=torch.float64)
        for i in range(b):
            for j in range(k):
                valid = None
                if background is not None and seg_t is not None and modality in ("depth", "normals"):
                    valid = seg_t[i, j] != background
                    if not bool(valid.any()):
                        valid = None
                for n in range(s):
                    p, t = pred[i, n, j], tgt[i, j]
                    if name == "miou":
                        v = 100.0 * miou(p, t, num_classes=num_classes)
                    elif name == "abs_rel":
                        v = abs_rel(p, t.float(), valid)
                    elif name == "delta1":
                        v = 100.0 * delta_accuracy(p, t.float(), valid=valid)
                    elif name == "normal_err":
                        err = angular_error(p, t.float())
                        v = float(err[valid].mean() if valid is not None else err.mean())
                    else:
                        v = float(psnr(p.clamp(0, 1), t.float()))
                    vals[i, n, j] = v
        out[name] = vals
    return out


def interval(values: Tensor | Sequence[float]) -> dict[str, float]:
    """Mean and the half-width of its 95 % normal interval (1.96 · standard error)."""
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    n = x.numel()
    se = float(x.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean": float(x.mean()), "ci95": 1.96 * se, "n": n}


def fmt(v: dict[str, float] | float | None, digits: int = 2) -> str:
    if v is None:
        return "—"
    if isinstance(v, dict):
        m, e = v["mean"], v.get("ci95", float("nan"))
        return f"{m:.{digits}f} ± {e:.{digits}f}" if math.isfinite(e) else f"{m:.{digits}f}"
    return f"{v:.{digits}f}"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_json(path: Path, obj: Any) -> Path:
    from featureflow.utils import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, allow_nan=True) + "\n")
    return path


def line_plot(path: Path, series: Sequence[tuple[str, Sequence[float], Sequence[float]]], **kw: Any) -> Path:
    """Write a PNG line plot (see :func:`featureflow.viz.line_plot`)."""
    from featureflow.viz import line_plot as plot

    plot(series, path=path, **kw)
    return path
