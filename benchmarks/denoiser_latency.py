"""Per-frame sampling latency: ``arch="vfmf"`` (recompute the window) vs ``arch="causal"`` (K/V cache).

Both denoisers get the same width, depth, heads and MLP size; the context window holds
``--context`` frames (4, as in the paper's rollouts). One forecast frame = one ODE solve
(Euler with 9 NFE, or Heun with 4 NFE = 2 Heun steps) followed by sliding the window:

* vfmf: every network evaluation recomputes context + target frames; append is free.
* causal (cached): every evaluation runs only the target frame's tokens; append encodes
  the new frame once (its keys/values), nothing else is recomputed.
* causal (uncached): for reference, the same network through ``velocity`` each time.

Run::

    python benchmarks/denoiser_latency.py            # defaults: 16x16 grid, width 384, depth 6
    python benchmarks/denoiser_latency.py --threads 2 --frames 6 --width 768 --depth 12

Prints milliseconds per forecast frame (median over ``--frames`` rollout frames; the three
models are interleaved frame by frame so that load from other processes hits all alike).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from featureflow.forecast.denoiser import Denoiser


def euler(fn, x: torch.Tensor, nfe: int) -> torch.Tensor:
    ts = torch.linspace(0.0, 1.0, nfe + 1)
    for i in range(nfe):
        x = x + (ts[i + 1] - ts[i]) * fn(ts[i], x)
    return x


def heun(fn, x: torch.Tensor, nfe: int) -> torch.Tensor:
    steps = nfe // 2
    ts = torch.linspace(0.0, 1.0, steps + 1)
    for i in range(steps):
        dt = ts[i + 1] - ts[i]
        v0 = fn(ts[i], x)
        v1 = fn(ts[i + 1], x + dt * v0)
        x = x + dt * 0.5 * (v0 + v1)
    return x


class Rollout:
    """One model's rollout: its window (and cache), advanced one forecast frame at a time."""

    def __init__(self, den: Denoiser, context: torch.Tensor, mode: str) -> None:
        self.den, self.mode, self.window = den, mode, context
        self.state = den.prefill(context) if mode == "cached" else None

    def frame(self, solver, nfe: int) -> float:
        """Forecast one frame and slide the window; returns milliseconds."""
        den, b = self.den, self.window.shape[0]
        noise = torch.randn_like(self.window[:, 0])
        start = time.perf_counter()
        if self.mode == "cached":
            x = solver(lambda t, x: den.step(self.state, x, t.expand(b)), noise, nfe)
            self.state = den.append(self.state, x)
        else:
            x = solver(lambda t, x: den.velocity(self.window, x, t.expand(b)), noise, nfe)
            self.window = torch.cat([self.window, x[:, None]], dim=1)[:, -den.max_context :]
        return 1000 * (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", type=int, nargs=2, default=(16, 16))
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--width", type=int, default=384)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--context", type=int, default=4)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--frames", type=int, default=3, help="timed rollout frames per setting")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = dict(latent_dim=args.latent_dim, width=args.width, depth=args.depth, heads=args.heads, max_context=args.context)
    models = {
        "vfmf (recompute)": (Denoiser("vfmf", grid=tuple(args.grid), **size).eval(), "uncached"),
        "causal (cached)": (Denoiser("causal", **size).eval(), "cached"),
        "causal (uncached)": (Denoiser("causal", **size).eval(), "uncached"),
    }
    context = torch.randn(args.batch, args.context, *args.grid, args.latent_dim)
    n_params = sum(p.numel() for p in models["causal (cached)"][0].parameters())
    print(
        f"grid {args.grid[0]}x{args.grid[1]}, width {args.width}, depth {args.depth}, heads {args.heads}, "
        f"context {args.context}, batch {args.batch}, threads {args.threads}, torch {torch.__version__}, "
        f"causal params {n_params / 1e6:.1f}M"
    )
    print(f"{'denoiser':<20} {'Euler 9 NFE':>14} {'Heun 4 NFE':>14}   (ms per forecast frame, median)")
    results: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for solver, nfe in ((euler, 9), (heun, 4)):
            rollouts = {name: Rollout(den, context, mode) for name, (den, mode) in models.items()}
            times: dict[str, list[float]] = {name: [] for name in models}
            for i in range(args.frames + 1):  # frame 0 is a warm-up; models interleaved per frame
                for name, r in rollouts.items():
                    ms = r.frame(solver, nfe)
                    if i > 0:
                        times[name].append(ms)
            for name in models:
                results[name].append(statistics.median(times[name]))
    for name, (euler_ms, heun_ms) in results.items():
        print(f"{name:<20} {euler_ms:>14.1f} {heun_ms:>14.1f}")


if __name__ == "__main__":
    main()
