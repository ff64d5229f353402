"""featureflow's causal sampling paths against the official VFMF recipe, per forecast frame.

The official recipe (gboduljak/vfmf ``sample_autoregressive``) runs the released trunk
(``arch="vfmf"``: featureflow's rebuild, identical outputs, 0.95-1.02x the official
code's time) over the whole window (4 context frames + the noisy target) at every network
evaluation, with Euler on 10 grid points = 9 evaluations per forecast frame. featureflow's
``arch="causal"`` runs only the target frame per evaluation over cached keys/values and
encodes each new frame once (``append``). Compared, per forecast frame at context 4:

* official: 9 x (vfmf evaluation over 5 frames);
* causal Euler 9 / Heun 4 / Euler 3 / Euler 1: NFE x (cached step) + 1 append;
* compile Euler 9 / Heun 4 / Euler 3: the same with the step through ``torch.compile`` (full run
  only; the compilation, seconds to minutes here, is reported apart);
* bf16 Euler 9 / 7 / 6 / 5, Heun 4, Euler 3: the same with a bf16 weight copy
  (``Denoiser.sampling_copy``), fp32 solver state;
* MeanFlow 1 / 2 NFE: NFE x (cached step of a denoiser with the interval input,
  ``interval_cond=True``, as the bundled ``meanflow`` baseline) + 1 append, in fp32 and
  with a bf16 weight copy.

Speed-up at equal quality: for each size, the fastest of these settings whose quality
passed the equal-quality rule of ``benchmarks/equal_quality.py`` on the bundled model
(read from ``docs/benchmarks/equal_quality.json``, written by
``benchmarks/few_step.py --equal-quality``). Sizes (b) and (c) have no trained model: their
quality is the one established at (a) for the same solver, NFE and precision.

Sizes: (a) 8x8 grid, width 144, depth 4 (the bundle's size), 8 samples; (b) 16x16,
width 384, depth 8, 1 sample; (c) 16x16, width 1152, depth 12 (the released size), 1
sample. Weights are random (every zero-initialised parameter drawn from N(0, 0.02^2)),
so this is speed only; the VAE re-encoding the released loop also does each frame is
not counted (it would only widen the gap). Each unit of work (one vfmf evaluation, one
cached step, one append, ...) is timed round-robin with the others in one process on
one thread, and per-frame times are composed from the medians: the machine is shared,
so interleaving makes background load hit every path alike.

Also printed: the causal step's share of this process's fp32 matmul peak (FLOPs counted
by ``torch.utils.flop_counter``, peak from a 2048^3 matmul timed in the same process)
and bf16-over-fp32 per frame at (b). ``--quick`` needs about a minute of CPU time (one
thread; under 3 minutes of wall time unless the core is shared: the script prints both).

Run::

    OMP_NUM_THREADS=1 python benchmarks/vs_official.py --quick         # ~1 min of CPU, prints the ratios
    OMP_NUM_THREADS=1 python benchmarks/vs_official.py --write-docs    # full run; writes docs/speed.md and
                                                                       # docs/benchmarks/vs_official.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from featureflow.forecast.denoiser import Denoiser

sys.path.insert(0, str(Path(__file__).resolve().parent))
from equal_quality import equal_quality_report, equal_quality_rows, load_quality  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SIZES: dict[str, dict[str, Any]] = {
    "a": {"label": "(a) 8x8 grid, width 144, depth 4 (the bundle)", "grid": 8, "width": 144, "depth": 4,
          "heads": 4, "samples": 8},
    "b": {"label": "(b) 16x16, width 384, depth 8", "grid": 16, "width": 384, "depth": 8, "heads": 6, "samples": 1},
    "c": {"label": "(c) 16x16, width 1152, depth 12 (released)", "grid": 16, "width": 1152, "depth": 12,
          "heads": 16, "samples": 1},
}
CONTEXT, LATENT = 4, 16
PATHS = ("official Euler 9", "causal Euler 9", "causal Heun 4", "causal Euler 3", "causal Euler 1", "compile Euler 9",
         "compile Heun 4", "compile Euler 3", "bf16 Euler 9", "bf16 Euler 7", "bf16 Euler 6", "bf16 Euler 5",
         "bf16 Heun 4", "bf16 Euler 3", "MeanFlow 1 NFE", "MeanFlow 2 NFE", "bf16 MeanFlow 1 NFE",
         "bf16 MeanFlow 2 NFE")


def randomised(arch: str, size: dict[str, Any], seed: int = 0, **kw: Any) -> Denoiser:
    """A denoiser of ``size`` whose zero-initialised parameters are drawn from N(0, 0.02^2)."""
    torch.manual_seed(seed)
    g = size["grid"]
    den = Denoiser(arch, latent_dim=LATENT, width=size["width"], depth=size["depth"], heads=size["heads"],
                   max_context=CONTEXT, grid=(g, g) if arch == "vfmf" else None, **kw).eval()
    with torch.no_grad():
        for p in den.parameters():
            if bool((p == 0).all()):
                p.normal_(std=0.02)
    return den


def interleaved(fns: dict[str, Callable[[], Any]], reps: int) -> dict[str, list[float]]:
    """Seconds of each call, timed round-robin (one warm-up call each first)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """GFLOP/s of an n^3 matmul in ``dtype`` (best of ``reps``: the peak)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = min(_time(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _time(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def step_flops(den: Denoiser, state: Any, x: torch.Tensor, t: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        den.step(state, x, t)
    return int(counter.get_total_flops())


@torch.inference_mode()
def measure(name: str, reps: int, with_compile: bool) -> dict[str, Any]:
    """Medians of every unit of work at size ``name`` and the per-frame times built from them."""
    size = SIZES[name]
    g, s = size["grid"], size["samples"]
    official, causal = randomised("vfmf", size), randomised("causal", size)
    meanflow = randomised("causal", size, interval_cond=True)
    bf16 = causal.sampling_copy(torch.bfloat16)
    bf16_mf = meanflow.sampling_copy(torch.bfloat16)
    gen = torch.Generator().manual_seed(1)
    ctx = torch.randn(1, CONTEXT, g, g, LATENT, generator=gen)
    x = torch.randn(s, g, g, LATENT, generator=gen)
    frame = torch.randn(s, g, g, LATENT, generator=gen)
    t = torch.full((s,), 0.5)
    window = ctx.repeat_interleave(s, 0)
    st32 = causal.prefill(ctx).expand(s)
    st16 = bf16.prefill(ctx).expand(s)
    st_mf = meanflow.prefill(ctx).expand(s)
    st_mf16 = bf16_mf.prefill(ctx).expand(s)
    h = torch.full((s,), 0.5)
    fns: dict[str, Callable[[], Any]] = {
        "official_nfe": lambda: official.velocity(window, x, t),
        "causal_step": lambda: causal.step(st32, x, t),
        "causal_append": lambda: causal.append(st32, frame),
        "bf16_step": lambda: bf16.step(st16, x, t),
        "bf16_append": lambda: bf16.append(st16, frame),
        "meanflow_step": lambda: meanflow.step(st_mf, x, t, h=h),
        "meanflow_append": lambda: meanflow.append(st_mf, frame),
        "bf16_meanflow_step": lambda: bf16_mf.step(st_mf16, x, t, h=h),
        "bf16_meanflow_append": lambda: bf16_mf.append(st_mf16, frame),
    }
    compile_s = None
    if with_compile:
        compiled = copy.deepcopy(causal).compile_sampling()
        start = time.perf_counter()
        compiled.step(st32, x, t)
        compile_s = time.perf_counter() - start
        fns["compiled_step"] = lambda: compiled.step(st32, x, t)
    times = interleaved(fns, reps)
    med = {k: statistics.median(v) for k, v in times.items()}
    frame_s = {
        "official Euler 9": 9 * med["official_nfe"],
        "causal Euler 9": 9 * med["causal_step"] + med["causal_append"],
        "causal Heun 4": 4 * med["causal_step"] + med["causal_append"],
        "causal Euler 3": 3 * med["causal_step"] + med["causal_append"],
        "causal Euler 1": med["causal_step"] + med["causal_append"],
        "bf16 Euler 9": 9 * med["bf16_step"] + med["bf16_append"],
        "bf16 Euler 7": 7 * med["bf16_step"] + med["bf16_append"],
        "bf16 Euler 6": 6 * med["bf16_step"] + med["bf16_append"],
        "bf16 Euler 5": 5 * med["bf16_step"] + med["bf16_append"],
        "bf16 Heun 4": 4 * med["bf16_step"] + med["bf16_append"],
        "bf16 Euler 3": 3 * med["bf16_step"] + med["bf16_append"],
        "MeanFlow 1 NFE": med["meanflow_step"] + med["meanflow_append"],
        "MeanFlow 2 NFE": 2 * med["meanflow_step"] + med["meanflow_append"],
        "bf16 MeanFlow 1 NFE": med["bf16_meanflow_step"] + med["bf16_meanflow_append"],
        "bf16 MeanFlow 2 NFE": 2 * med["bf16_meanflow_step"] + med["bf16_meanflow_append"],
    }
    if "compiled_step" in med:
        frame_s["compile Euler 9"] = 9 * med["compiled_step"] + med["causal_append"]
        frame_s["compile Heun 4"] = 4 * med["compiled_step"] + med["causal_append"]
        frame_s["compile Euler 3"] = 3 * med["compiled_step"] + med["causal_append"]
    flops = step_flops(causal, st32, x, t)
    ref = causal.step(st32, x, t)
    err = float((bf16.step(st16, x, t) - ref).norm() / ref.norm())
    return {
        "size": name, "label": size["label"], "samples": s, "reps": reps, "median_s": med,
        "frame_s": frame_s, "speedup": {k: frame_s["official Euler 9"] / v for k, v in frame_s.items()},
        "causal_step_gflop": flops / 1e9, "causal_step_gflops": flops / med["causal_step"] / 1e9,
        "bf16_step_rel_error": err, "compile_first_call_s": compile_s,
    }


def table(results: list[dict[str, Any]]) -> list[str]:
    head = "| size | " + " | ".join(PATHS[1:]) + " |"
    lines = [head, "|---" * (len(PATHS)) + "|"]
    for r in results:
        cells = [f"{r['speedup'][p]:.1f}x" if p in r["speedup"] else "—" for p in PATHS[1:]]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return lines


def report(res: dict[str, Any], quality: dict[str, Any] | None) -> list[str]:
    """Markdown lines: the equal-quality table first, then every timed setting."""
    out = equal_quality_report(res["results"], quality)
    out += ["", "## Every setting", "",
            "Speed-up per forecast frame over the official recipe (Euler 9, window recomputed), context 4:", ""]
    out += table(res["results"])
    out += ["", "Milliseconds per forecast frame (medians of interleaved units of work):", "",
            "| size | " + " | ".join(PATHS) + " |", "|---" * (len(PATHS) + 1) + "|"]
    for r in res["results"]:
        cells = [f"{1000 * r['frame_s'][p]:.0f}" if p in r["frame_s"] else "—" for p in PATHS]
        out.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    out += ["", f"fp32 matmul peak in this process (best 2048^3 matmul, measured at the start and "
            f"beside every size): {res['peak_fp32_gflops']:.0f} GFLOP/s; bf16 (at the start): "
            f"{res['peak_bf16_gflops']:.0f} GFLOP/s.", ""]
    out += ["| size | causal step GFLOP | GFLOP/s | share of fp32 peak | bf16 velocity rel. error | "
            "first compiled call |", "|---|---|---|---|---|---|"]
    for r in res["results"]:
        first = "—" if r["compile_first_call_s"] is None else f"{r['compile_first_call_s']:.0f} s"
        out.append(f"| {r['label']} | {r['causal_step_gflop']:.2f} | {r['causal_step_gflops']:.0f} | "
                   f"{100 * r['causal_step_gflops'] / res['peak_fp32_gflops']:.0f} % | "
                   f"{r['bf16_step_rel_error']:.1e} | {first} |")
    b = next((r for r in res["results"] if r["size"] == "b"), None)
    if b is not None:
        out += ["", f"bf16 over fp32 per frame at (b), Heun 4: "
                f"{b['frame_s']['causal Heun 4'] / b['frame_s']['bf16 Heun 4']:.2f}x"]
    return out


def write_docs(res: dict[str, Any], quality: dict[str, Any] | None) -> None:
    (ROOT / "docs" / "benchmarks").mkdir(parents=True, exist_ok=True)
    if quality is not None:  # a snapshot of the table in the JSON; --render recomputes it from the quality run
        res["equal_quality"] = {"quality_source": quality["source"],
                                "sizes": equal_quality_rows(res["results"], quality)}
    (ROOT / "docs" / "benchmarks" / "vs_official.json").write_text(json.dumps(res, indent=1) + "\n")
    page = [
        "# Speed against the official sampling loop",
        "",
        "<!-- generated by `python benchmarks/vs_official.py --write-docs`; do not edit by hand -->",
        "",
        "The paper names sampling latency as its method's main limitation. featureflow's",
        '`arch="causal"` denoiser caches each context frame\'s keys and values, so one network',
        "evaluation runs the target frame only, where the released recipe recomputes the whole",
        "window (4 context frames + the target) nine times per forecast frame. This page compares",
        "the two on this machine, per forecast frame at context 4, with random weights (speed);",
        "which settings keep the official sampler's quality is measured on the bundled model",
        "(\"Speed-up at equal quality\" and \"Quality of the fast settings\").",
        "",
        f"Machine: {res['machine']}, torch {res['torch']}, one thread (load average at the start "
        f"{res['load']}; the machine's 2 cores are often shared with training runs): figures are "
        "medians of interleaved runs; compare ratios, not absolute times. Per-frame times are "
        "composed from the medians of each unit of work (one official evaluation; one cached step; "
        "one append). Samples per forecast: 8 at (a), 1 at (b) and (c). The official loop's VAE "
        "re-encoding of the window before every frame is not counted. `torch.compile` is not run "
        "at (c) (its compilation alone takes minutes here). Regenerate with "
        "`OMP_NUM_THREADS=1 python benchmarks/vs_official.py --write-docs` (about 3 minutes on an "
        "idle core; `--render` rewrites this page from `docs/benchmarks/vs_official.json`).",
        "",
    ]
    page += report(res, quality)
    page += [
        "",
        "## Options",
        "",
        "- The K/V windows are always on: the cached keys and values of a state sit in",
        "  per-layer buffers with one scratch slot that each step writes in place (no cache",
        "  concatenation per layer per evaluation).",
        '- `WorldModel.forecast(..., precision="bf16")`: a bfloat16 copy of the denoiser\'s',
        "  weights, made once (fp32 latents in and out, solver state fp32). Opt-in: velocities",
        "  move by about 1 % (column \"bf16 velocity rel. error\"). `autocast=True` is slower:",
        "  autocast re-casts the fp32 weights in every region.",
        "- `WorldModel.forecast(..., compile=True)`: `torch.compile` of the cached step. The",
        "  first forecast compiles once per window length (1 to 4 context frames) and batch",
        "  size (column \"first compiled call\" for one shape); later forecasts reuse it.",
        "- Few-step sampling (`Euler 1`) is fast but its quality needs a model trained for it:",
        "  the bundled model's `baseline=\"meanflow\"` (see \"Few-step sampling\" below), which",
        "  samples at a noise scale calibrated on val clips so that it spreads like the flow",
        "  (`featureflow.forecast.calibrate_noise_scale`).",
    ]
    # sections written by other scripts between <!-- name:begin --> / <!-- name:end -->
    # markers are kept (in their order) when the page is regenerated
    page_path = ROOT / "docs" / "speed.md"
    old = page_path.read_text() if page_path.exists() else ""
    kept = list(re.finditer(r"<!-- (\w+):begin -->.*?<!-- \1:end -->", old, flags=re.S))
    for block in kept:
        page += ["", block.group(0)]
    page_path.write_text("\n".join(page) + "\n")
    if kept:
        print(f"docs/speed.md: kept the sections {[m.group(1) for m in kept]}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions, no torch.compile (under 3 minutes)")
    p.add_argument("--sizes", default="a,b,c", help="comma-separated sizes among a, b, c")
    p.add_argument("--reps", type=int, default=None, help="repetitions per unit of work (default 15/5/3, quick 5/3/1)")
    p.add_argument("--compile-sizes", default="a,b", help="sizes that also time torch.compile (full run only)")
    p.add_argument("--write-docs", action="store_true", help="write docs/speed.md and docs/benchmarks/vs_official.json")
    p.add_argument("--render", action="store_true", help="only rewrite docs/speed.md from the stored JSON")
    a = p.parse_args(argv)
    if a.render:
        res = json.loads((ROOT / "docs" / "benchmarks" / "vs_official.json").read_text())
        write_docs(res, load_quality())
        print("\n".join(report(res, load_quality())))
        return res
    wall = time.perf_counter()
    torch.set_num_threads(1)
    default_reps = {"a": 5, "b": 3, "c": 1} if a.quick else {"a": 15, "b": 5, "c": 3}
    res: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "load": " ".join(f"{v:.1f}" for v in os.getloadavg()), "quick": a.quick,
        "peak_fp32_gflops": matmul_peak(torch.float32), "peak_bf16_gflops": matmul_peak(torch.bfloat16),
        "results": [],
    }
    for name in a.sizes.split(","):
        with_compile = not a.quick and name in a.compile_sizes.split(",")
        peak = matmul_peak(torch.float32)  # re-measured beside every size: the machine may be shared
        r = measure(name, a.reps or default_reps[name], with_compile)
        r["peak_fp32_gflops_around"] = max(peak, matmul_peak(torch.float32))
        res["peak_fp32_gflops"] = max(res["peak_fp32_gflops"], r["peak_fp32_gflops_around"])
        res["results"].append(r)
        print(f"{r['label']}: " + ", ".join(f"{k} {v:.1f}x" for k, v in r["speedup"].items() if k != PATHS[0]),
              flush=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    res["cpu_s"], res["wall_s"] = usage.ru_utime + usage.ru_stime, time.perf_counter() - wall
    print("\n".join(report(res, load_quality())))
    print(f"took {res['wall_s']:.0f} s wall, {res['cpu_s']:.0f} s CPU (load average at start {res['load']})")
    if a.write_docs:
        write_docs(res, load_quality())
        print("wrote docs/speed.md and docs/benchmarks/vs_official.json")
    return res


if __name__ == "__main__":
    main()
