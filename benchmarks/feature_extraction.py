"""Feature-extraction throughput (frames/s), one process vs ``torchrun`` with two (gloo), issue 14.

Clips of ToyWorld frames are written once as PNG folders (the ``frames`` dataset), then
`featureflow.training.extract_features` encodes them with a frozen encoder, once per
process count, each in a fresh ``torchrun --standalone`` (one thread per process). The
time is the wall time of `extract_features` on rank 0, between a barrier before it and
its return (its final barrier: every rank done, index written); process start-up and
model building are not counted. The caches of all process counts must be identical byte
for byte; the script says so.

Encoders: ``dinov2-s`` (default) is the DINOv2 ViT-S/14 architecture with random weights
(the same compute as the released small model; weights cannot be downloaded here) at
224 px; ``toy`` is a default-size `ToyEncoder` at 64 px.

Run::

    OMP_NUM_THREADS=1 python benchmarks/feature_extraction.py                 # 16 clips x 4 frames, 1 and 2 processes
    OMP_NUM_THREADS=1 python benchmarks/feature_extraction.py --quick         # 4 clips, toy encoder: a smoke run

Writes ``docs/benchmarks/feature_extraction.json``.
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


def build_encoder(name: str):
    import torch

    torch.manual_seed(0)  # every rank builds the same weights
    if name == "toy":
        from featureflow.encoders import ToyEncoder

        return ToyEncoder().eval(), 64
    if name == "dinov2-s":
        from featureflow.encoders import DINOv2Encoder

        cfg = {"model_type": "dinov2", "hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6,
               "intermediate_size": 1536, "patch_size": 14, "image_size": 518}
        return DINOv2Encoder(reference=False, hf_config=cfg, blocks=(2, 5, 8, 11)), 224
    raise ValueError(f"unknown encoder {name!r}; expected 'dinov2-s' or 'toy'")


def worker(args: argparse.Namespace) -> None:
    """One rank (under torchrun): extract, time it, rank 0 writes the timing JSON."""
    import torch
    import torch.distributed as dist

    from featureflow.data import FrameFolderClips
    from featureflow.training.features import extract_features

    torch.set_num_threads(1)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo")
    encoder, side = build_encoder(args.encoder)
    clips = FrameFolderClips(args.frames, length=args.length, resolution=side)
    with torch.no_grad():  # warm-up: first-call allocations are not part of the throughput
        encoder(clips[0]["rgb"][:1])
    if distributed:
        dist.barrier()
    start = time.perf_counter()
    extract_features(encoder, clips, args.cache, shard_size=args.shard_size, batch_size=args.batch_size,
                     progress=False)
    seconds = time.perf_counter() - start
    rank = dist.get_rank() if distributed else 0
    if rank == 0:
        frames = len(clips) * args.length
        Path(args.timing).write_text(json.dumps({"seconds": seconds, "frames": frames, "clips": len(clips)}))
    if distributed:
        dist.destroy_process_group()


def write_frames_dataset(root: Path, clips: int, length: int) -> None:
    import torch

    from featureflow.data import ToyWorld, write_frames

    torch.set_num_threads(1)
    world = ToyWorld(resolution=64)
    for i in range(clips):
        write_frames(world.clip(seed=10_000 + i, length=length, stride=2).rgb, root / f"clip_{i:04d}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", choices=("dinov2-s", "toy"), default="dinov2-s")
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--length", type=int, default=4)
    p.add_argument("--shard-size", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--quick", action="store_true", help="4 clips with the toy encoder: a smoke run")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "feature_extraction.json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--frames", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--timing", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.clips, args.encoder = 4, "toy"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_frames_dataset(work / "frames", args.clips, args.length)
        runs, caches = [], []
        load_before = os.getloadavg()[0]
        for n in args.processes:
            cache, timing = work / f"cache_{n}", work / f"timing_{n}.json"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                   str(Path(__file__).resolve()), "--worker", "--encoder", args.encoder,
                   "--length", str(args.length), "--shard-size", str(args.shard_size),
                   "--batch-size", str(args.batch_size), "--frames", str(work / "frames"),
                   "--cache", str(cache), "--timing", str(timing)]
            subprocess.run(cmd, env=env, check=True)
            t = json.loads(timing.read_text())
            runs.append({"processes": n, "seconds": round(t["seconds"], 3),
                         "frames_per_s": round(t["frames"] / t["seconds"], 2)})
            caches.append({f.name: f.read_bytes() for f in sorted(cache.iterdir())})
            print(f"{n} process(es): {t['frames']} frames in {t['seconds']:.2f} s = "
                  f"{t['frames'] / t['seconds']:.1f} frames/s", flush=True)
        identical = all(c == caches[0] for c in caches[1:])
        print("caches identical across process counts:", identical)
    result = {
        "benchmark": "feature_extraction",
        "encoder": args.encoder,
        "image_side": 224 if args.encoder == "dinov2-s" else 64,
        "clips": args.clips,
        "frames_per_clip": args.length,
        "shard_size": args.shard_size,
        "batch_size": args.batch_size,
        "threads_per_process": 1,
        "backend": "gloo (CPU)",
        "cpu_count": os.cpu_count(),
        "load_average_before": round(load_before, 2),
        "runs": runs,
        "speedup": round(runs[-1]["frames_per_s"] / runs[0]["frames_per_s"], 2) if len(runs) > 1 else None,
        "caches_identical": identical,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
