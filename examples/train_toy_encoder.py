"""Train the ToyEncoder on ToyWorld and report how linearly decodable its features are.

    python examples/train_toy_encoder.py --out runs/toy_encoder            # a few minutes on a CPU
    python examples/train_toy_encoder.py --steps 1200 --batch-size 32 --lr 1.5e-3   # ~20 min, mIoU ~0.62

Steps:
1. train a `ToyEncoder` with linear pixel heads (`featureflow.training.toy_encoder`),
   logging to ``<out>/train_log.jsonl``;
2. save ``<out>/toy_encoder.safetensors`` + ``<out>/toy_encoder.json`` (component spec);
3. linear probe: freeze the encoder, fit *fresh* linear pixel heads on features of
   other train clips, and evaluate them on validation clips: segmentation mIoU, depth
   AbsRel and mean normal angle error (depth and normals on non-background pixels);
   written to ``<out>/probe_metrics.json``.

Reload the encoder with::

    spec = json.load(open("toy_encoder.json"))
    enc = featureflow.utils.build_component(spec)
    enc.load_state_dict(featureflow.utils.load_safetensors("toy_encoder.safetensors"))
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from featureflow import metrics
from featureflow.data import ToyWorld
from featureflow.encoders import ToyEncoder, encode_frames
from featureflow.training.toy_encoder import PixelLinearHeads, pixel_losses, render_pool, train_toy_encoder
from featureflow.utils import progress_bar, save_json, save_safetensors
from featureflow.version import __version__


def encode_pool(encoder: ToyEncoder, pool: dict, batch_size: int = 64) -> torch.Tensor:
    rgb = pool["rgb"]
    return encode_frames(encoder, rgb.unsqueeze(1), batch_size=batch_size).squeeze(1)


def fit_probe(features: torch.Tensor, pool: dict, patch_size: int, num_classes: int, steps: int,
              batch_size: int, seed: int, progress: bool) -> PixelLinearHeads:
    """Fit fresh linear pixel heads on frozen features (the linear-probe protocol)."""
    torch.manual_seed(seed)
    heads = PixelLinearHeads(features.shape[-1], patch_size, num_classes)
    opt = torch.optim.AdamW(heads.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    for _ in progress_bar(range(steps), progress=progress, desc="fit linear probe", unit="step"):
        idx = torch.randint(0, features.shape[0], (batch_size,), generator=gen)
        batch = {k: v[idx] for k, v in pool.items()}
        loss = pixel_losses(heads(features[idx]), batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return heads.eval()


@torch.no_grad()
def evaluate(heads: PixelLinearHeads, features: torch.Tensor, pool: dict, num_classes: int) -> dict[str, float]:
    out = heads(features)
    seg, depth, normals = pool["segmentation"], pool["depth"], pool["normals"]
    objects = seg != 0  # background pixels have a conventional depth/normal, not a surface
    return {
        "mIoU": metrics.miou(out["segmentation"].argmax(1), seg, num_classes=num_classes),
        "pixel_acc": metrics.pixel_accuracy(out["segmentation"].argmax(1), seg),
        "depth_AbsRel": metrics.abs_rel(out["depth"], depth, valid=objects),
        "depth_delta1": metrics.delta_accuracy(out["depth"], depth, valid=objects),
        "normal_mean_deg": metrics.normal_metrics(out["normals"], normals, valid=objects)["mean"],
        "normal_within_11.25": metrics.normal_metrics(out["normals"], normals, valid=objects)["within_11.25"],
        "rgb_PSNR": metrics.psnr(out["rgb"].clamp(0, 1), pool["rgb"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/toy_encoder")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--num-clips", type=int, default=128, help="training clips rendered (8 frames each)")
    ap.add_argument("--probe-clips", type=int, default=48)
    ap.add_argument("--probe-steps", type=int, default=400)
    ap.add_argument("--val-clips", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy machine)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    progress = not args.no_progress
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    world = ToyWorld(resolution=64)
    num_classes = len(world.CLASSES)
    torch.manual_seed(args.seed)
    encoder = ToyEncoder()
    print(f"ToyEncoder: {encoder.num_parameters() / 1e6:.2f} M parameters, feature_dim {encoder.feature_dim}")
    result = train_toy_encoder(encoder, world, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                               progress=progress, log_path=out / "train_log.jsonl", seed=args.seed,
                               num_clips=args.num_clips)
    spec = encoder.describe()
    spec["featureflow_version"] = __version__
    save_safetensors(encoder.state_dict(), out / "toy_encoder.safetensors", metadata={"featureflow_version": __version__})
    save_json(spec, out / "toy_encoder.json")

    # Linear probe on frozen features: other train clips (seed block 1), validation clips.
    probe_pool = render_pool(world, args.probe_clips, 8, 3, seed=args.seed + 1)
    val_pool = render_pool(world, args.val_clips, 8, 3, seed=0, split="val")
    probe_feats, val_feats = encode_pool(encoder, probe_pool), encode_pool(encoder, val_pool)
    probe = fit_probe(probe_feats, probe_pool, encoder.patch_size, num_classes, args.probe_steps, 64, args.seed, progress)
    report = {
        "linear_probe": evaluate(probe, val_feats, val_pool, num_classes),
        "joint_heads": evaluate(result.heads, val_feats, val_pool, num_classes),
        "final_train_loss": result.history[-1],
        "args": vars(args),
    }
    save_json(report, out / "probe_metrics.json")
    print(f"\n{'heads':<14}" + "".join(f"{k:>20}" for k in report["linear_probe"]))
    for name in ("linear_probe", "joint_heads"):
        print(f"{name:<14}" + "".join(f"{v:>20.4f}" for v in report[name].values()))
    print(f"\nwrote {out / 'toy_encoder.safetensors'}, {out / 'toy_encoder.json'}, {out / 'probe_metrics.json'}")
    print(json.dumps(report["linear_probe"], indent=2))


if __name__ == "__main__":
    main()
