"""Peak memory of a forecast vs its horizon, with every modality decoded (issue 15).

Each horizon runs in a fresh process (peak RSS, ``ru_maxrss``, only grows): load the
bundled model, forecast ``--samples`` futures of a ToyWorld clip, then decode every
modality the model has and its per-pixel uncertainty, one after the other, dropping each
result after use (as a caller that looks at one modality at a time does). Prints the peak
RSS per horizon and its growth over horizon 1.

glibc keeps freed memory of mid-sized blocks for reuse (its mmap threshold grows with the
largest block freed), so peak RSS then includes memory that is free but not returned. The
probes run with ``MALLOC_MMAP_THRESHOLD_=131072`` (large tensors are mapped and unmapped),
so the figure follows live memory; ``--default-malloc`` measures with glibc's defaults
(typically 5-20 MiB more, and noisier).

Run::

    OMP_NUM_THREADS=1 python benchmarks/memory.py                  # horizons 1, 16, 64; 8 samples; Heun 4
    OMP_NUM_THREADS=1 python benchmarks/memory.py --quick          # horizons 1, 64; Euler 1

Targets (issue 15): growth from horizon 1 to 64 at most +30 MiB (it was +246 MiB when a
`Forecast` kept every decoded feature and probe output).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys


def probe(model: str, horizon: int, samples: int, solver: str, steps: int, chunk: int | None) -> dict[str, float]:
    """In this (fresh) process: peak RSS in MiB after forecasting and decoding everything."""
    import torch

    import featureflow as ff

    torch.set_num_threads(1)
    if chunk is not None:
        ff.Forecast.chunk = chunk
    wm = ff.WorldModel.from_pretrained(model)
    clip = ff.data.ToyWorld(resolution=64).clip(seed=123, length=wm.max_context)
    fc = wm.forecast(clip.rgb[None], horizon, samples, solver=solver, steps=steps,
                     generator=torch.Generator().manual_seed(0))
    largest = 0
    for modality in sorted(wm.probes):
        out = fc.decode(modality)
        largest = max(largest, out.numel() * out.element_size())
        float(out.float().mean())
        del out
        unc = fc.uncertainty(modality)
        float(unc["spread"].mean())
        del unc
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"horizon": horizon, "peak_mib": peak, "largest_output_mib": largest / 2**20}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toyworld", help="bundled model name or directory")
    p.add_argument("--horizons", type=int, nargs="+", default=None, help="horizons to measure (default 1 16 64)")
    p.add_argument("--samples", type=int, default=8, help="samples per forecast")
    p.add_argument("--quick", action="store_true", help="horizons 1 and 64 with Euler 1 (fast)")
    p.add_argument("--chunk", type=int, default=None, help="images per probe call (default: Forecast.chunk)")
    p.add_argument("--default-malloc", action="store_true", help="do not fix glibc's mmap threshold in the probes")
    p.add_argument("--probe", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--solver", default=None, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    solver, steps = ("euler", 1) if a.quick else ("heun", 4)
    if a.probe is not None:
        print(json.dumps(probe(a.model, a.probe, a.samples, a.solver or solver, a.steps or steps, a.chunk)))
        return {}
    horizons = a.horizons or ([1, 64] if a.quick else [1, 16, 64])
    rows = []
    for h in horizons:
        cmd = [sys.executable, __file__, "--model", a.model, "--samples", str(a.samples), "--probe", str(h),
               "--solver", solver, "--steps", str(steps)] + ([] if a.chunk is None else ["--chunk", str(a.chunk)])
        env = dict(os.environ) if a.default_malloc else {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        base = rows[0]["peak_mib"]
        print(f"horizon {h:3d}: peak RSS {rows[-1]['peak_mib']:7.1f} MiB  growth {rows[-1]['peak_mib'] - base:+6.1f} MiB"
              f"  (largest decoded output {rows[-1]['largest_output_mib']:.1f} MiB)", flush=True)
    growth = rows[-1]["peak_mib"] - rows[0]["peak_mib"]
    print(f"peak memory growth, horizon {horizons[0]} -> {horizons[-1]}, {a.samples} samples, all modalities "
          f"decoded: {growth:+.1f} MiB (target <= +30 MiB; "
          f"{'glibc default malloc' if a.default_malloc else 'MALLOC_MMAP_THRESHOLD_=131072'})")
    return {"rows": rows, "growth_mib": growth}


if __name__ == "__main__":
    main()
