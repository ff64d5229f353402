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
    "miou_obj": ("segmentation", "mIoU objects %", True),
    "miou": ("segmentation", "mIoU all %", True),
    "abs_rel": ("depth", "AbsRel", False),
    "delta1": ("depth", "δ<1.25 %", True),
    "normal_err": ("normals", "normal err °", False),
    "psnr": ("rgb", "PSNR dB", True),
}


#: The sampler of the quality, distribution and calibration protocol (solver, network
#: evaluations per frame), chosen on the ToyWorld **val** split by
#: ``benchmarks/sampler_choice.py`` (stored in ``docs/benchmarks/sampler_val.json``);
#: ``--solver``/``--steps`` override it. ``nfe.py`` and ``speed.py`` sweep the others.
PROTOCOL_SOLVER, PROTOCOL_STEPS = "euler", 3


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default="toyworld", help="bundled name, directory or Hub id of a WorldModel")
    p.add_argument("--quick", action="store_true", help="tiny clip counts: a smoke run")
    p.add_argument("--out", type=Path, default=DOCS_OUT, help="directory for JSON / Markdown / PNG outputs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="ToyWorld seeds: test (reported) or val (for tuning)")
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


def test_clips(world: Any, n: int, length: int, stride: int, start: int, split: str = "test") -> list[Any]:
    """The first ``n`` held-out clips of ``split`` (seeds ``ToyWorld.split_seeds(split)``)."""
    seeds = world.split_seeds(split)
    return [world.clip(seeds[i], length, stride=stride, start=start) for i in range(n)]


def object_classes(classes: Sequence[str]) -> list[int]:
    """Ids of the object classes (every class but background and floor)."""
    return [i for i, c in enumerate(classes) if c not in ("background", "floor")]


@torch.no_grad()
def seg_scores(pred: Tensor, target: Tensor, num_classes: int, objects: Sequence[int]) -> dict[str, Tensor]:
    """Per-image mIoU % over all classes and over ``objects`` (float64, NaN where no class
    of the set is in either map) of class maps pred, target (N, H, W); a class absent from
    both maps of an image does not count (as `featureflow.metrics.miou`)."""
    n = pred.shape[0]
    idx = (torch.arange(n).view(n, 1) * num_classes * num_classes
           + target.reshape(n, -1).long() * num_classes + pred.reshape(n, -1).long())
    conf = torch.bincount(idx.flatten(), minlength=n * num_classes**2).reshape(n, num_classes, num_classes).double()
    tp = conf.diagonal(dim1=1, dim2=2)
    union = conf.sum(1) + conf.sum(2) - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    return {"miou": 100 * iou.nanmean(1), "miou_obj": 100 * iou[:, list(objects)].nanmean(1)}


@torch.no_grad()
def dense_scores(preds: dict[str, Tensor], targets: dict[str, Tensor], *, num_classes: int,
                 objects: Sequence[int], background: int = 0) -> dict[str, Tensor]:
    """Vectorised per-image metrics (N,) float64 of decoded predictions vs targets, both (N, ...).

    mIoU (all classes / object classes, see `seg_scores`); depth AbsRel and δ<1.25 and the
    normals' mean angular error on the truth's foreground pixels (segmentation ≠
    ``background``; all pixels of an image without foreground); RGB PSNR.
    """
    out: dict[str, Tensor] = {}
    seg_t = targets["segmentation"]
    if "segmentation" in preds:
        out.update(seg_scores(preds["segmentation"], seg_t, num_classes, objects))
    fg = (seg_t != background).double()
    fg = torch.where(fg.flatten(1).sum(1).view(-1, 1, 1) > 0, fg, torch.ones_like(fg))
    if "depth" in preds:
        p, t = preds["depth"].double(), targets["depth"].double()
        m = fg * (t > 0)
        den = m.flatten(1).sum(1).clamp_min(1)
        out["abs_rel"] = ((p - t).abs() / t.clamp_min(1e-12) * m).flatten(1).sum(1) / den
        ratio = torch.maximum(p / t.clamp_min(1e-12), t / p.clamp_min(1e-12))
        out["delta1"] = 100 * ((ratio < 1.25).double() * m).flatten(1).sum(1) / den
    if "normals" in preds:
        p = torch.nn.functional.normalize(preds["normals"].double(), dim=1, eps=1e-12)
        t = torch.nn.functional.normalize(targets["normals"].double(), dim=1, eps=1e-12)
        err = torch.rad2deg(torch.acos((p * t).sum(1).clamp(-1, 1)))
        out["normal_err"] = (err * fg).flatten(1).sum(1) / fg.flatten(1).sum(1)
    if "rgb" in preds:
        mse = (preds["rgb"].double().clamp(0, 1) - targets["rgb"].double()).pow(2).flatten(1).mean(1)
        out["psnr"] = 10 * torch.log10(1 / mse.clamp_min(1e-12))
    return out


def bootstrap_ratio(num: Tensor, den: Tensor, reps: int = 1000, seed: int = 0) -> dict[str, float]:
    """mean(num) / mean(den) over clips with 1.96 × its bootstrap standard error (clips resampled)."""
    num, den = torch.as_tensor(num, dtype=torch.float64), torch.as_tensor(den, dtype=torch.float64)
    keep = ~(num.isnan() | den.isnan())
    num, den = num[keep], den[keep]
    n = num.numel()
    point = float(num.mean() / den.mean()) if n and float(den.mean()) != 0 else float("nan")
    if n < 2:
        return {"mean": point, "ci95": float("nan"), "n": n}
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (reps, n), generator=g)
    boot = num[idx].mean(1) / den[idx].mean(1)
    boot = boot[torch.isfinite(boot)]
    se = float(boot.std()) if boot.numel() > 1 else float("nan")
    return {"mean": point, "ci95": 1.96 * se, "n": n}


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
        if modality not in preds or modality not in targets or name == "miou_obj":
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
    x = x[~x.isnan()]  # e.g. object-class mIoU of a frame without objects
    n = x.numel()
    if n == 0:
        return {"mean": float("nan"), "ci95": float("nan"), "n": 0}
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
    lines = ["| " + " | ".join(str(h).replace("|", "\\|") for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
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
