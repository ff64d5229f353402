"""How much do compressors lose? Probe quality from raw ToyEncoder features vs FeatureVAE- and PCA-16-reconstructed features.

    python benchmarks/probe_reconstruction.py --model toyworld [--train-clips 96 --val-clips 32 --steps 400]

For each variant (raw features; VAE decode(encode(f)); PCA-16 decode(encode(f)), the PCA
fitted by streaming over the training features) a fresh linear probe per task
(segmentation, depth, normals) is trained on the training clips' reconstructed
features and evaluated on held-out validation clips. Prints a Markdown table and
writes it with JSON to docs/benchmarks/probe_reconstruction.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from featureflow.compressors import PCA
from featureflow.data import ToyWorldClips
from featureflow.encoders import encode_frames
from featureflow.metrics import abs_rel, angular_error, miou
from featureflow.probes import DepthHead, LinearHead, NormalsHead, SegmentationHead
from featureflow.training import train_probe
from featureflow.utils import progress_bar
from featureflow.world import WorldModel

ROOT = Path(__file__).resolve().parent.parent


@torch.no_grad()
def encode_split(wm: WorldModel, split: str, clips: int, stride: int, res: int) -> tuple[torch.Tensor, dict]:
    ds = ToyWorldClips(split, length=4, stride=stride, size=clips, resolution=res)
    feats, tg = [], {"segmentation": [], "depth": [], "normals": []}
    for i in progress_bar(range(len(ds)), desc=f"encode {split}"):
        item = ds[i]
        feats.append(encode_frames(wm.encoder, item["rgb"][None])[0])
        for k in tg:
            tg[k].append(item[k])
    return torch.cat(feats), {k: torch.cat(v) for k, v in tg.items()}


def probe(task: str, d: int) -> torch.nn.Module:
    if task == "segmentation":
        return SegmentationHead(LinearHead(d, 5), num_classes=5)
    if task == "depth":
        return DepthHead(LinearHead(d, 1), min_depth=1.0, max_depth=20.0)
    return NormalsHead(LinearHead(d, 3))


@torch.no_grad()
def evaluate(head: torch.nn.Module, task: str, x: torch.Tensor, y: torch.Tensor, seg: torch.Tensor) -> float:
    preds = torch.cat([head.predict(c, size=(y.shape[-2], y.shape[-1])) for c in x.split(64)])
    fg = seg > 0
    if task == "segmentation":
        return 100.0 * miou(preds, y, num_classes=5)
    if task == "depth":
        return abs_rel(preds, y, fg)
    return float(angular_error(preds, y)[fg].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="toyworld")
    ap.add_argument("--train-clips", type=int, default=96)
    ap.add_argument("--val-clips", type=int, default=32)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    args = ap.parse_args()
    torch.manual_seed(0)
    t0 = time.time()
    wm = WorldModel.from_pretrained(args.model)
    data = wm.metadata.get("data", {})
    stride, res = int(data.get("stride", 3)), int(data.get("resolution", 64))
    xtr, ytr = encode_split(wm, "train", args.train_clips, stride, res)
    xva, yva = encode_split(wm, "val", args.val_clips, stride, res)
    pca = PCA(16).fit(xtr.split(256))
    variants = {
        "ToyEncoder features (no compression)": lambda f: f,
        f"FeatureVAE ({wm.compressor.latent_dim} ch) reconstruction": lambda f: wm.compressor.decode(wm.compressor.encode(f)),
        "PCA-16 reconstruction": lambda f: pca.decode(pca.encode(f)),
    }
    rows = {}
    for name, recon in variants.items():
        with torch.no_grad():
            rtr = torch.cat([recon(c) for c in xtr.split(256)])
            rva = torch.cat([recon(c) for c in xva.split(256)])
        row = {}
        for task in ("segmentation", "depth", "normals"):
            head = probe(task, rtr.shape[-1])
            g = torch.Generator().manual_seed(0)

            def batches(rtr=rtr, task=task, g=g):
                while True:
                    idx = torch.randint(0, rtr.shape[0], (32,), generator=g)
                    yield rtr[idx], ytr[task][idx]

            train_probe(head, batches(), steps=args.steps, lr=3e-3, progress=False)
            row[task] = evaluate(head, task, rva, yva[task], yva["segmentation"])
        rows[name] = row
        print(name, row, flush=True)
    table = ["| features | mIoU ↑ (%) | depth AbsRel ↓ | normal error ↓ (°) |", "| --- | --- | --- | --- |"]
    for name, r in rows.items():
        table.append(f"| {name} | {r['segmentation']:.1f} | {r['depth']:.4f} | {r['normals']:.2f} |")
    md = "\n".join(table)
    print(md)
    print(f"PCA-16 keeps {100 * pca.report()['total_ratio']:.1f} % of the feature variance")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe_reconstruction.md").write_text(md + "\n")
    (out / "probe_reconstruction.json").write_text(json.dumps(
        {"args": vars(args), "pca16_explained_variance": pca.report()["total_ratio"], "rows": rows, "seconds": round(time.time() - t0, 1)}, indent=2))


if __name__ == "__main__":
    main()
