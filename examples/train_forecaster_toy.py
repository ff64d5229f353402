"""Train a flow forecaster and its regression baseline on ToyWorld latents (CPU, a few minutes).

Latents: ToyWorld frames cut into pixel patches (the stand-in for VFM patch features),
compressed to C channels by PCA (``--compressor pca``, the library's `PCA`) or a fixed
random projection (``--compressor random``). Both forecasters share the same causal
denoiser trunk and training budget. At the end, on held-out clips, the script prints
the next-frame error of the regression forecaster, of the mean of K flow samples, and
of the best of K flow samples, plus the spread of the flow samples.

    python examples/train_forecaster_toy.py                 # about 3-4 minutes on 2 CPU cores
    python examples/train_forecaster_toy.py --steps 100     # a quick smoke run
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from featureflow.data import ToyWorld
from featureflow.forecast import Denoiser, FlowForecaster, RegressionForecaster
from featureflow.training.forecaster import train_forecaster
from featureflow.utils import progress_bar


def patches(rgb: torch.Tensor, patch: int) -> torch.Tensor:
    """(n, T, 3, H, W) -> (n, T, h, w, 3 * patch * patch) channels-last patch vectors."""
    n, t, c, hh, ww = rgb.shape
    h, w = hh // patch, ww // patch
    x = rgb.reshape(n, t, c, h, patch, w, patch).permute(0, 1, 3, 5, 2, 4, 6)
    return x.reshape(n, t, h, w, c * patch * patch)


def toy_clips(world: ToyWorld, split: str, n: int, length: int, stride: int) -> torch.Tensor:
    seeds = ToyWorld.split_seeds(split)[:n]
    clips = [world.clip(seed=s, length=length, stride=stride).rgb for s in progress_bar(seeds, desc=f"{split} clips")]
    return torch.stack(clips)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--patch", type=int, default=4)
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--length", type=int, default=8)
    ap.add_argument("--stride", type=int, default=2, help="simulator steps between frames")
    ap.add_argument("--latent-dim", type=int, default=8)
    ap.add_argument("--compressor", choices=("pca", "random"), default="pca")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these tiny models)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    world = ToyWorld(resolution=args.resolution)
    t0 = time.time()
    train_px = patches(toy_clips(world, "train", args.clips, args.length, args.stride), args.patch)
    test_px = patches(toy_clips(world, "test", 16, args.length, args.stride), args.patch)
    if args.compressor == "pca":
        from featureflow.compressors import PCA

        pca = PCA(args.latent_dim).fit(train_px.reshape(-1, *train_px.shape[2:]))
        encode = pca.encode
        print(f"PCA keeps {float(pca.explained_variance_ratio.sum()):.1%} of the patch variance")
    else:
        proj = torch.randn(train_px.shape[-1], args.latent_dim) / math.sqrt(train_px.shape[-1])
        mean, std = (train_px @ proj).mean((0, 1, 2, 3)), (train_px @ proj).std((0, 1, 2, 3))
        encode = lambda x: (x @ proj - mean) / std  # noqa: E731
    with torch.no_grad():
        train, test = encode(train_px), encode(test_px)
    print(f"latents: train {tuple(train.shape)}, test {tuple(test.shape)} ({time.time() - t0:.0f}s)")

    def denoiser() -> Denoiser:
        torch.manual_seed(args.seed)
        return Denoiser(arch="causal", latent_dim=args.latent_dim, width=args.width, depth=args.depth, heads=4,
                        max_context=4)

    kw = dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=max(1, args.steps // 20),
              seed=args.seed, ema_decay=0.99)
    models = {"flow": FlowForecaster(denoiser(), max_stride=2), "regression": RegressionForecaster(denoiser(), max_stride=2)}
    for name, model in models.items():
        t0 = time.time()
        result = train_forecaster(model, train, **kw)
        result.ema.copy_to(model)
        chunk = max(1, len(result.losses) // 8)
        curve = [sum(result.losses[i : i + chunk]) / len(result.losses[i : i + chunk]) for i in range(0, len(result.losses), chunk)]
        print(f"{name:>10} loss by training phase: " + " ".join(f"{v:.3f}" for v in curve) + f"  ({time.time() - t0:.0f}s)")

    context, truth = test[:, :4], test[:, 4]
    g = torch.Generator().manual_seed(args.seed)
    for m in models.values():
        m.eval()
    samples = models["flow"].sample(context, num_samples=args.samples, solver="heun", steps=8, generator=g)
    reg = models["regression"].sample(context)[:, 0]
    err = lambda x: (x - truth).pow(2).mean(dim=(-3, -2, -1))  # noqa: E731  per clip
    per_sample = torch.stack([err(samples[:, i]) for i in range(args.samples)], 1)
    print(f"next-frame MSE on {len(test)} held-out clips (latent units):")
    print(f"  copy last frame       {err(context[:, -1]).mean():.4f}")
    print(f"  regression            {err(reg).mean():.4f}")
    print(f"  flow, one sample      {per_sample.mean():.4f}")
    print(f"  flow, mean of {args.samples:<2}      {err(samples.mean(1)).mean():.4f}")
    print(f"  flow, best of {args.samples:<2}      {per_sample.min(1).values.mean():.4f}")
    print(f"  flow sample spread    {samples.std(1).pow(2).mean():.4f} (variance across samples)")


if __name__ == "__main__":
    main()
