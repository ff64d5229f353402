"""Per-network-evaluation cost of the cached causal step: the blockwise step vs the eager window step.

Runs ``WorldModel.from_pretrained("toyworld")``'s denoiser (size (a): 8x8 grid, width
128, depth 4) on a prefilled 4-frame window, ``--batch`` samples, and times
``denoiser.step`` with :meth:`CausalTrunk.step_window` taking the blockwise path
(``before``: ``CausalBlock.forward`` per layer) and the eager window step (``after``:
``CausalBlock.window_step``), interleaved in one process, one thread. Also counts the
aten calls of one step (all profiler events, and the top-level ones) and the largest
output difference between the two paths.

Run::

    OMP_NUM_THREADS=1 python benchmarks/step_overhead.py --batch 8 --reps 30
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from featureflow.forecast import causal_trunk
from featureflow.world import WorldModel

FAST = causal_trunk.CausalTrunk._fast_window
PATHS = {"before": lambda self, *args: False, "after": FAST}


def use(path: str) -> None:
    """Select the step path (patches ``CausalTrunk._fast_window``)."""
    causal_trunk.CausalTrunk._fast_window = PATHS[path]


def aten_calls(fn) -> tuple[int, int]:
    """(all aten events, top-level aten events) of one call of ``fn``."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    top = [e for e in events if not (e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::"))]
    return len(events), len(top)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8, help="samples per step (8 at size (a) in vs_official.py)")
    p.add_argument("--reps", type=int, default=30, help="timed repetitions per path (each the mean of --inner steps)")
    p.add_argument("--inner", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    den = WorldModel.from_pretrained("toyworld").forecaster.denoiser.eval()
    gen = torch.Generator().manual_seed(0)
    ctx = torch.randn(1, 4, 8, 8, den.latent_dim, generator=gen)
    x = torch.randn(args.batch, 8, 8, den.latent_dim, generator=gen)
    t = torch.tensor(0.3)
    try:
        with torch.inference_mode():
            state = den.prefill(ctx).expand(args.batch)
            out = {}
            for path in PATHS:
                use(path)
                out[path] = den.step(state, x, t)
                for _ in range(3):
                    den.step(state, x, t)
                print(f"{path}: aten calls per step (all events, top-level) = {aten_calls(lambda: den.step(state, x, t))}")
            print(f"max |after - before| = {float((out['after'] - out['before']).abs().max()):.2e} "
                  f"(outputs up to {float(out['before'].abs().max()):.2f})")
            times: dict[str, list[float]] = {path: [] for path in PATHS}
            for r in range(args.reps):
                for path in list(PATHS)[:: 1 if r % 2 else -1]:
                    use(path)
                    start = time.perf_counter()
                    for _ in range(args.inner):
                        den.step(state, x, t)
                    times[path].append(1000 * (time.perf_counter() - start) / args.inner)
    finally:
        causal_trunk.CausalTrunk._fast_window = FAST
    med = {path: statistics.median(v) for path, v in times.items()}
    for path in PATHS:
        print(f"{path}: {med[path]:.2f} ms per network evaluation (median of {args.reps} x {args.inner})")
    print(f"after/before speed-up: {med['before'] / med['after']:.2f}x")


if __name__ == "__main__":
    main()
