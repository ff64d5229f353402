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


COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (23, 190, 207),
           (140, 86, 75), (127, 127, 127)]


def line_plot(path: Path, series: Sequence[tuple[str, Sequence[float], Sequence[float]]], *, xlabel: str,
              ylabel: str, title: str, logx: bool = False, diagonal: bool = False,
              size: tuple[int, int] = (560, 400)) -> Path:
    """Write a PNG line plot of ``series`` = [(label, xs, ys), ...] with axes, ticks and a legend."""
    from PIL import Image, ImageDraw, ImageFont

    W, H = size
    left, right, top, bottom = 64, 16, 40, 48
    img = Image.new("RGB", size, (255, 255, 255))
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    tx = (lambda v: math.log10(v)) if logx else (lambda v: v)
    pts = [(tx(x), y) for _, xs, ys in series for x, y in zip(xs, ys)
           if math.isfinite(y) and math.isfinite(x) and (x > 0 or not logx)]
    if not pts:
        pts = [(0.0, 0.0), (1.0, 1.0)]
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if diagonal:
        x0 = y0 = min(x0, y0)
        x1 = y1 = max(x1, y1)
    if x1 - x0 < 1e-12:
        x0, x1 = x0 - 0.5, x1 + 0.5
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad, xpad = 0.05 * (y1 - y0), 0.03 * (x1 - x0)
    y0, y1 = y0 - pad, y1 + pad
    x0, x1 = x0 - xpad, x1 + xpad

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (W - left - right),
                H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom))

    d.rectangle([left, top, W - right, H - bottom], outline=(0, 0, 0))
    for i in range(5):
        xv, yv = x0 + i * (x1 - x0) / 4, y0 + i * (y1 - y0) / 4
        X, _ = px(xv, y0)
        _, Y = px(x0, yv)
        d.line([X, H - bottom, X, H - bottom + 4], fill=(0, 0, 0))
        d.line([left - 4, Y, left, Y], fill=(0, 0, 0))
        d.text((X - 12, H - bottom + 6), f"{10 ** xv:.3g}" if logx else f"{xv:.3g}", fill=(0, 0, 0), font=font)
        d.text((4, Y - 6), f"{yv:.3g}", fill=(0, 0, 0), font=font)
    d.text((left, 4), title, fill=(0, 0, 0), font=font)
    d.text(((W - len(xlabel) * 6) // 2, H - 18), xlabel + (" (log scale)" if logx else ""), fill=(0, 0, 0), font=font)
    d.text((4, top - 14), ylabel, fill=(0, 0, 0), font=font)
    if diagonal:
        d.line([px(x0, x0), px(x1, x1)], fill=(160, 160, 160), width=1)
    for i, (label, xs, ys) in enumerate(series):
        c = COLOURS[i % len(COLOURS)]
        p = [px(tx(x), y) for x, y in zip(xs, ys) if math.isfinite(y) and (x > 0 or not logx)]
        if len(p) > 1:
            d.line(p, fill=c, width=2)
        for X, Y in p:
            d.ellipse([X - 3, Y - 3, X + 3, Y + 3], fill=c)
        d.rectangle([left + 8, top + 8 + 14 * i, left + 18, top + 16 + 14 * i], fill=c)
        d.text((left + 22, top + 6 + 14 * i), label, fill=(0, 0, 0), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
