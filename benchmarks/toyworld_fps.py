"""ToyWorld throughput: frames per second of `ToyWorld.clip` (simulation + rendering).

Usage:
    python benchmarks/toyworld_fps.py [--threads 1] [--clips 8] [--length 64] [--resolutions 64 128]

Prints, per resolution, frames/s by wall clock and by process CPU time. On a shared
machine the CPU-time figure is the one-core throughput; the wall-clock figure also pays
for whatever else is running.
"""

from __future__ import annotations

import argparse
import time

import torch

from featureflow.data import ToyWorld


def measure(resolution: int, clips: int, length: int) -> tuple[float, float]:
    world = ToyWorld(resolution=resolution)
    world.clip(0, 4)  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    for seed in range(clips):
        world.clip(seed, length)
    frames = clips * length
    return frames / (time.perf_counter() - wall), frames / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 = one core)")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"ToyWorld.clip, {args.clips} clips x {args.length} frames, {args.threads} thread(s)")
    for res in args.resolutions:
        wall, cpu = measure(res, args.clips, args.length)
        print(f"{res:4d}x{res:<4d} {wall:8.1f} frames/s (wall)   {cpu:8.1f} frames/s (CPU time)")


if __name__ == "__main__":
    main()
