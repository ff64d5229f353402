"""Per-network-evaluation cost of the cached causal step: the blockwise step vs the eager window step.

Runs ``WorldModel.from_pretrained("toyworld")``'s denoiser (size (a): 8x8 grid, width
128, depth 4) on a prefilled 4-frame window, ``--batch`` samples, and times
``denoiser.step`` with :meth:`CausalTrunk.step_window` taking the blockwise path
(``before``: ``CausalBlock.forward`` per layer) and the eager window step (``after``:
``featureflow.forecast.causal_fast.window_step``), interleaved in one process, one thread. Also counts the
aten calls of one step (all profiler events, and the top-level ones) and the largest
output difference between the two paths.

Run::

    OMP_NUM_THREADS=1 python benchmarks/step_overhead.py --batch 8 --reps 30

``--against REV`` instead compares this checkout's causal step and append with those of
git revision ``REV`` (the methods of ``CausalBlock``, ``CausalTrunk`` and ``CausalDenoiser``
as of ``REV``, with the fast-path functions of ``window_ops`` / ``causal_fast`` as of ``REV``,
are swapped in and out of the classes), in fp32 and with the bf16 sampling
copy, at ``--size`` (a) or (b) of ``benchmarks/vs_official.py`` (randomised weights,
context 4), interleaved in one process. Each call is timed both by wall clock and by this
thread's CPU time (``time.thread_time``: the machine is shared, and CPU time leaves out
the time other processes hold the core). Printed: medians and every run, the largest
output differences between the revisions, the step's share of the fp32 matmul peak
(FLOPs from ``torch.utils.flop_counter``, peak = best 2048^3 matmul timed between
repetitions, by the same clock), and bf16 over fp32 per Heun 4 forecast frame
(4 steps + 1 append)::

    OMP_NUM_THREADS=1 python benchmarks/step_overhead.py --against c4d7c34 --size b --reps 21
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

import torch
from torch.profiler import ProfilerActivity, profile

from featureflow.forecast import causal_denoiser, causal_trunk
from featureflow.world import WorldModel

ROOT = Path(__file__).resolve().parent.parent

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


# ------------------------------------------------------------ --against REV
LIVE = {"causal_trunk": (causal_trunk, ("CausalBlock", "CausalTrunk")),
        "causal_denoiser": (causal_denoiser, ("CausalDenoiser",))}


def _methods(module: Any, classes: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    return {c: {k: v for k, v in vars(getattr(module, c)).items() if callable(v) and not k.startswith("__")}
            for c in classes}


#: modules of functions the causal classes import (the fast path); executed at ``REV`` first
#: and seen by the classes' modules at ``REV`` in place of the live ones
HELPERS = ("window_ops", "causal_fast")


def _source_at(rev: str, name: str) -> str | None:
    done = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:src/featureflow/forecast/{name}.py"],
                          capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


def revision_methods(rev: str) -> dict[str, dict[str, Any]]:
    """The causal classes' methods as of git revision ``rev`` (their modules, and the helper
    modules they import from, executed under another name; the old denoiser class is not
    registered as an architecture)."""
    from featureflow.forecast import denoiser

    out: dict[str, dict[str, Any]] = {}
    swapped: dict[str, Any] = {}
    register = denoiser.register_arch
    denoiser.register_arch = lambda cls: cls  # type: ignore[assignment]
    try:
        for name in (*HELPERS, *LIVE):
            src = _source_at(rev, name)
            if src is None:
                if name in LIVE:
                    raise SystemExit(f"src/featureflow/forecast/{name}.py does not exist at {rev}")
                continue  # a helper module that revision did not have yet
            module = types.ModuleType(f"featureflow.forecast._{name}_at_{rev}")
            exec(compile(src, module.__name__, "exec"), module.__dict__)
            if name in LIVE:
                out.update(_methods(module, LIVE[name][1]))
            else:  # later modules of this revision import these functions, not the live ones
                full = f"featureflow.forecast.{name}"
                swapped.setdefault(full, sys.modules.get(full))
                sys.modules[full] = module
    finally:
        denoiser.register_arch = register
        for full, live in swapped.items():
            if live is None:
                sys.modules.pop(full, None)
            else:
                sys.modules[full] = live
    return out


def live_methods() -> dict[str, dict[str, Any]]:
    return {c: v for module, classes in LIVE.values() for c, v in _methods(module, classes).items()}


def install(table: dict[str, dict[str, Any]]) -> None:
    """Put ``table``'s methods on the live classes."""
    owners = {c: getattr(module, c) for module, classes in LIVE.values() for c in classes}
    for c, fns in table.items():
        for k, fn in fns.items():
            setattr(owners[c], k, fn)


def _clocked(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, this thread's CPU seconds) of one call."""
    w, c = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - w, time.thread_time() - c


def against(rev: str, size_name: str, reps: int) -> None:
    """This checkout vs revision ``rev``: step and append, fp32 and bf16, interleaved."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from vs_official import CONTEXT, LATENT, SIZES, randomised, step_flops

    tables = {"before": revision_methods(rev), "after": live_methods()}
    size = SIZES[size_name]
    g, s = size["grid"], size["samples"]
    fp32 = randomised("causal", size)
    bf16 = fp32.sampling_copy(torch.bfloat16)
    gen = torch.Generator().manual_seed(1)
    ctx = torch.randn(1, CONTEXT, g, g, LATENT, generator=gen)
    x, frame = torch.randn(s, g, g, LATENT, generator=gen), torch.randn(s, g, g, LATENT, generator=gen)
    t = torch.full((s,), 0.5)
    units = {"fp32 step": lambda st: fp32.step(st[0], x, t), "bf16 step": lambda st: bf16.step(st[1], x, t),
             "fp32 append": lambda st: fp32.append(st[0], frame), "bf16 append": lambda st: bf16.append(st[1], frame)}
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    try:
        with torch.inference_mode():
            states, outs = {}, {}
            for path, table in tables.items():
                install(table)
                states[path] = (fp32.prefill(ctx).expand(s), bf16.prefill(ctx).expand(s))
                outs[path] = [fn(states[path]) for fn in units.values()]
            ob, oa = outs["before"], outs["after"]
            print(f"size ({size_name}), revision {rev} (before) vs this checkout (after), {s} sample(s), "
                  f"context {CONTEXT}")
            rel = [float((o[1] - ob[0]).norm() / ob[0].norm()) for o in (ob, oa)]
            print(f"fp32 step: max |after - before| = {float((oa[0] - ob[0]).abs().max()):.1e} "
                  f"(outputs up to {float(ob[0].abs().max()):.2f}); bf16 step vs fp32 step, relative: "
                  f"before {rel[0]:.2e}, after {rel[1]:.2e}")
            ctx_a, ctx_b = oa[2].keys + oa[2].values, ob[2].keys + ob[2].values
            print(f"fp32 append, cached keys/values: max |after - before| = "
                  f"{max(float((u - v).abs().max()) for u, v in zip(ctx_a, ctx_b)):.1e}")
            flops = step_flops(fp32, states["after"][0], x, t)
            times: dict[tuple[str, str], list[tuple[float, float]]] = {(p, u): [] for p in tables for u in units}
            peak = [0.0, 0.0]
            a @ b
            for r in range(reps):
                for path in list(tables)[:: 1 if r % 2 else -1]:
                    install(tables[path])
                    for u, fn in units.items():
                        times[(path, u)].append(_clocked(lambda: fn(states[path])))
                wall, cpu = _clocked(lambda: a @ b)
                peak = [max(peak[0], 2 * 2048**3 / wall / 1e9), max(peak[1], 2 * 2048**3 / cpu / 1e9)]
    finally:
        install(tables["after"])
    print(f"step: {flops / 1e9:.2f} GFLOP; fp32 matmul peak (best 2048^3 matmul): wall {peak[0]:.0f}, "
          f"CPU time {peak[1]:.0f} GFLOP/s; load average {' '.join(f'{v:.1f}' for v in __import__('os').getloadavg())}")
    for k, clock in enumerate(("wall clock", "thread CPU time")):
        print(f"-- {clock}: medians of {reps} (ms)")
        for path in tables:
            med = {u: 1000 * statistics.median(v[k] for v in times[(path, u)]) for u in units}
            f32 = 4 * med["fp32 step"] + med["fp32 append"]
            f16 = 4 * med["bf16 step"] + med["bf16 append"]
            print(f"{path:6s} " + ", ".join(f"{u} {v:.1f}" for u, v in med.items())
                  + f" | fp32 step {100 * flops / 1e9 / (med['fp32 step'] / 1000) / peak[k]:.0f} % of peak"
                  + f" | Heun 4 frame: fp32 {f32:.0f}, bf16 {f16:.0f}, bf16 over fp32 {f32 / f16:.2f}x")
    print("-- every run (thread CPU ms):")
    for key, v in times.items():
        print(f"{key[0]:6s} {key[1]:12s} " + " ".join(f"{1000 * c:.1f}" for _, c in v))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8, help="samples per step (8 at size (a) in vs_official.py)")
    p.add_argument("--reps", type=int, default=30, help="timed repetitions per path (each the mean of --inner steps)")
    p.add_argument("--inner", type=int, default=5)
    p.add_argument("--against", metavar="REV", default=None,
                   help="compare this checkout's step and append with git revision REV (fp32 and bf16)")
    p.add_argument("--size", choices=("a", "b", "c"), default="b", help="vs_official.py size for --against")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.against:
        against(args.against, args.size, args.reps)
        return
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
