"""Training throughput of the forecaster stage (target frames/s), one process vs ``torchrun`` with two (gloo), issue 14.

The flow forecaster of ``configs/toyworld.json`` (causal trunk, width 128, depth 4,
4 heads, residual, logit-normal times, teacher forcing) trains through
`featureflow.training.fit` on random latent clips of the bundle's shape (8 frames of
8 x 8 patches x 16 channels), with the same *global* batch for every process count (each
of n ranks trains on batch / n clips; DistributedDataParallel averages the gradients).
Each process count runs in a fresh ``torchrun --standalone`` with one thread per process.
The clock starts at the first loss of the first timed step (after ``--warmup`` steps) and
stops when `fit` returns on rank 0; a target frame is a frame the loss is computed on
(teacher forcing: every frame of a clip but the first), so

    target frames/s = timed steps x global batch x (frames per clip - 1) / seconds.

Run::

    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py            # 1 and 2 processes, 8 timed steps
    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py --quick    # a smoke run (2 timed steps)

Prints the figures and writes ``docs/benchmarks/train_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DENOISER = {"arch": "causal", "width": 128, "depth": 4, "heads": 4, "max_context": 4}
FLOW = {"time_sampling": "logit_normal", "max_stride": 1, "residual": True}
SHAPE = (64, 8, 8, 8, 16)  # clips, frames, h, w, C


def worker(args: argparse.Namespace) -> None:
    """One rank (under torchrun): train warm-up + timed steps; rank 0 writes the timing JSON."""
    import torch

    from featureflow.forecast import Denoiser, FlowForecaster
    from featureflow.training import distributed
    from featureflow.training.forecaster import train_forecaster

    torch.set_num_threads(1)
    info = distributed.setup("cpu")
    latents = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = FlowForecaster(Denoiser(latent_dim=SHAPE[-1], **DENOISER), **FLOW)
    model.fit_residual_scale(latents)
    if args.batch % info.world_size:
        raise ValueError(f"--batch {args.batch} must be divisible by {info.world_size} processes")
    started: list[float] = []
    calls = [0]

    def timed_encode(batch: torch.Tensor) -> torch.Tensor:  # runs before every loss: marks the first timed step
        if calls[0] == args.warmup:
            started.append(time.perf_counter())
        calls[0] += 1
        return batch

    steps = args.warmup + args.steps
    train_forecaster(model, latents, steps=steps, batch_size=args.batch // info.world_size, warmup=1, lr=3e-4,
                     ema_decay=0.999, progress=False, encode=timed_encode)
    seconds = time.perf_counter() - started[0]
    if info.is_main:
        frames = args.steps * args.batch * (SHAPE[1] - 1)
        Path(args.timing).write_text(json.dumps({"seconds": seconds, "target_frames": frames}))
    distributed.teardown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8, help="global batch (clips per optimizer step)")
    p.add_argument("--steps", type=int, default=8, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--quick", action="store_true", help="2 timed steps after 1 warm-up step: a smoke run")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "train_throughput.json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--timing", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.steps, args.warmup = 2, 1
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    runs = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.processes:
            timing = Path(tmp) / f"timing_{n}.json"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                   str(Path(__file__).resolve()), "--worker", "--batch", str(args.batch), "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--timing", str(timing)]
            subprocess.run(cmd, env=env, check=True)
            t = json.loads(timing.read_text())
            rate = t["target_frames"] / t["seconds"]
            runs.append({"processes": n, "seconds": round(t["seconds"], 3), "target_frames": t["target_frames"],
                         "target_frames_per_s": round(rate, 2)})
            print(f"{n} process(es): {t['target_frames']} target frames in {t['seconds']:.2f} s = "
                  f"{rate:.1f} target frames/s", flush=True)
    result = {
        "benchmark": "train_throughput",
        "stage": "flow forecaster (configs/toyworld.json sizes)",
        "denoiser": DENOISER,
        "flow": FLOW,
        "clip_shape": {"frames": SHAPE[1], "h": SHAPE[2], "w": SHAPE[3], "C": SHAPE[4]},
        "global_batch": args.batch,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "threads_per_process": 1,
        "backend": "gloo (CPU), DistributedDataParallel",
        "cpu_count": os.cpu_count(),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "runs": runs,
        "speedup": round(runs[-1]["target_frames_per_s"] / runs[0]["target_frames_per_s"], 2) if len(runs) > 1 else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
