"""Speed and memory on this CPU: latency and quality vs NFE per solver, peak memory vs
horizon, denoiser GFLOP/s vs this machine's matmul GFLOP/s, training throughput.

All figures come from one run on one machine; compare ratios, not absolute values. For
``vfmf`` vs ``causal`` + cache, eager vs ``torch.compile`` vs bf16, the full run calls the
existing scripts ``benchmarks/denoiser_latency.py`` and ``benchmarks/compile_bf16.py`` (at
the bundled model's size) and keeps their printed tables.
"""

from __future__ import annotations

import copy
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import (  # noqa: E402
    base_parser, image_scores, line_plot, load, md_table, setup, stack, test_clips, write_json,
)

FULL_SWEEP = {"euler": [1, 2, 4, 8, 16], "heun": [2, 4, 8, 16], "midpoint": [2, 4, 8, 16], "rk4": [4, 8, 16],
              "dopri5": [1e-2, 1e-3]}
QUICK_SWEEP = {"euler": [1, 2], "heun": [2], "midpoint": [2], "rk4": [4], "dopri5": [1e-2]}


def _timed(fn: Any, reps: int) -> float:
    """Median seconds of ``reps`` calls after one warm-up call."""
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def solver_sweep(wm: Any, world: Any, data: dict[str, int], quick: bool, n_clips: int, K: int) -> list[dict[str, Any]]:
    from featureflow import solvers

    c = wm.max_context
    clips = test_clips(world, n_clips, c + 1, data["stride"], data["warmup"])
    frames = stack(clips, "rgb", slice(0, c))
    targets = {"segmentation": stack(clips, "segmentation", slice(c, c + 1))}
    one = frames[:1]
    rows = []
    for name, settings in (QUICK_SWEEP if quick else FULL_SWEEP).items():
        for v in settings:
            if name == "dopri5":
                make = lambda: solvers.get("dopri5", rtol=v, atol=v)  # noqa: E731
                kw: dict[str, Any] = {}
            else:
                make = lambda: name  # noqa: E731
                kw = {"steps": int(v)}
            g = torch.Generator().manual_seed(0)
            fc = wm.forecast(frames, 1, K, solver=make(), generator=g, **kw)
            sc = image_scores({"segmentation": fc.decode("segmentation")}, targets, num_classes=len(world.CLASSES))
            lat = _timed(lambda: wm.forecast(one, 2, 1, solver=make(), generator=torch.Generator().manual_seed(1), **kw),
                         1 if quick else 3) / 2
            rows.append({"solver": name, "setting": f"rtol=atol={v:g}" if name == "dopri5" else f"steps={v}",
                         "nfe": int(fc.nfe), "ms_per_frame": 1000 * lat, "miou": float(sc["miou"].mean())})
            print(f"speed: {name} {rows[-1]['setting']}: nfe {fc.nfe}, {1000 * lat:.1f} ms/frame, "
                  f"mIoU {rows[-1]['miou']:.2f}", flush=True)
    return rows


def memory_probe(model: str, horizon: int) -> dict[str, float]:
    """In a fresh process: peak RSS growth (MB) of a ``horizon``-frame rollout over a 1-frame one."""
    wm, world, data = load(model)
    c = wm.max_context
    frames = world.clip(world.split_seeds("test")[0], c, stride=data["stride"], start=data["warmup"]).rgb[None]
    wm.forecast(frames, 1, 2, solver="heun", steps=4, generator=torch.Generator().manual_seed(0))
    wm.forecast(frames, 1, 2, solver="heun", steps=4, generator=torch.Generator().manual_seed(0))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wm.forecast(frames, horizon, 2, solver="heun", steps=4, generator=torch.Generator().manual_seed(0))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"horizon": horizon, "baseline_mb": base / 1024, "peak_mb": peak / 1024, "growth_mb": (peak - base) / 1024}


def memory_vs_horizon(model: str, horizons: list[int], threads: int) -> list[dict[str, float]]:
    rows = []
    for h in horizons:
        out = subprocess.run([sys.executable, str(HERE / "speed.py"), "--model", str(model), "--threads", str(threads),
                              "--memory-probe", str(h)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"speed: horizon {h}: peak RSS {rows[-1]['peak_mb']:.0f} MB (+{rows[-1]['growth_mb']:.1f})", flush=True)
    return rows


def throughput(wm: Any, quick: bool) -> dict[str, Any]:
    """Denoiser GFLOP/s (FlopCounterMode count / time) next to a measured fp32 matmul GFLOP/s."""
    from torch.utils.flop_counter import FlopCounterMode

    den = wm.forecaster.denoiser
    c, C = wm.max_context, den.latent_dim
    res = wm.metadata.get("data", {}).get("resolution", 64)
    grid = int(res) // int(wm.encoder.patch_size)
    ctx = torch.randn(1, c, grid, grid, C)
    x = torch.randn(1, grid, grid, C)
    t = torch.full((1,), 0.5)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            den.velocity(ctx, x, t)
        flops = counter.get_total_flops()
        sec = _timed(lambda: den.velocity(ctx, x, t), 3 if quick else 10)
    n = 256 if quick else 512
    a, b = torch.randn(n, n), torch.randn(n, n)
    mm = _timed(lambda: a @ b, 3 if quick else 20)
    den_gf, mm_gf = flops / sec / 1e9, 2 * n**3 / mm / 1e9
    # FlopCounterMode does not count CPU scaled_dot_product_attention; add it analytically:
    # QKᵀ and AV, 2 FLOPs per multiply-add, every token attending to every token (an upper bound)
    T, cfg = (c + 1) * grid * grid, den.config
    attn = 4 * T * T * int(cfg["width"]) * int(cfg["depth"])
    return {"attention_gflop_per_call": attn / 1e9, "fraction_of_peak_with_attention": (flops + attn) / sec / 1e9 / mm_gf,
            "denoiser_gflop_per_call": flops / 1e9, "denoiser_ms_per_call": 1000 * sec, "denoiser_gflops": den_gf,
            "matmul_n": n, "matmul_gflops": mm_gf, "fraction_of_peak": den_gf / mm_gf, "tokens": (c + 1) * grid * grid,
            "threads": torch.get_num_threads()}


def training_throughput(wm: Any, world: Any, data: dict[str, int], quick: bool) -> dict[str, Any]:
    """Samples/s of a few optimiser steps of the VAE and of the flow forecaster (copies; nothing saved)."""
    from featureflow.encoders import encode_frames
    from featureflow.training import train_forecaster, train_vae

    c = wm.max_context
    steps, bs = (2, 2) if quick else (6, 8)
    clips = test_clips(world, bs, c + 1, data["stride"], data["warmup"])
    with torch.no_grad():
        feats = encode_frames(wm.encoder, stack(clips, "rgb", slice(None)))  # (bs, c+1, h, w, D)
        lat = wm.compressor.encode(feats.reshape(-1, *feats.shape[2:])).reshape(*feats.shape[:2], -1)
    lat = lat.reshape(*feats.shape[:4], -1)
    out: dict[str, Any] = {"steps": steps, "batch_size": bs}
    vae = copy.deepcopy(wm.compressor).train()
    frames = feats.reshape(-1, *feats.shape[2:])
    train_vae(vae, frames, steps=1, batch_size=bs, progress=False, fit_feature_stats=False, fit_latent_stats=False)
    t = time.perf_counter()
    train_vae(vae, frames, steps=steps, batch_size=bs, progress=False, fit_feature_stats=False, fit_latent_stats=False)
    out["vae_samples_per_s"] = steps * bs / (time.perf_counter() - t)
    fc = copy.deepcopy(wm.forecaster).train()
    train_forecaster(fc, lat, steps=1, batch_size=bs, warmup=1, ema_decay=None, progress=False)
    fc = copy.deepcopy(wm.forecaster).train()
    t = time.perf_counter()
    train_forecaster(fc, lat, steps=steps, batch_size=bs, warmup=1, ema_decay=None, progress=False)
    out["forecaster_samples_per_s"] = steps * bs / (time.perf_counter() - t)
    return out


def external(wm: Any, threads: int) -> dict[str, str]:
    """Run the existing vfmf-vs-causal and eager/compile/bf16 scripts at the model's size."""
    cfg = wm.forecaster.denoiser.config
    res = wm.metadata.get("data", {}).get("resolution", 64)
    grid = str(int(res) // int(wm.encoder.patch_size))
    # arch="vfmf" splits each head's width into t/h/w position tables: round up to a multiple of 6·heads
    unit = 6 * int(cfg["heads"])
    width = -(-int(cfg["width"]) // unit) * unit
    size = ["--grid", grid, grid, "--latent-dim", str(cfg["latent_dim"]), "--width", str(width),
            "--depth", str(cfg["depth"]), "--heads", str(cfg["heads"]), "--context", str(cfg["max_context"]),
            "--threads", str(threads)]
    out = {}
    for script, extra in (("denoiser_latency.py", ["--frames", "3"]), ("compile_bf16.py", ["--reps", "10"])):
        try:
            r = subprocess.run([sys.executable, str(HERE / script), *size, *extra], capture_output=True, text=True,
                               timeout=600)
            out[script] = r.stdout.strip() if r.returncode == 0 else f"failed ({r.returncode}): {r.stderr[-400:]}"
        except subprocess.TimeoutExpired:
            out[script] = "timed out after 600 s"
        print(f"speed: ran {script}", flush=True)
    out["width"] = str(width)
    return out


def run(args: Any) -> dict[str, Any]:
    setup(args.threads)
    wm, world, data = load(args.model)
    t0 = time.perf_counter()
    quick = bool(args.quick)
    sweep = solver_sweep(wm, world, data, quick, 2 if quick else 16, 2 if quick else 4)
    horizons = [1, 2] if quick else [1, 4, 16]
    memory = memory_vs_horizon(str(args.model), horizons, args.threads)
    flops = throughput(wm, quick)
    train = training_throughput(wm, world, data, quick)
    ext = {} if quick or args.skip_external else external(wm, args.threads)
    out = Path(args.out)
    by_solver: dict[str, list[dict[str, Any]]] = {}
    for r in sweep:
        by_solver.setdefault(r["solver"], []).append(r)
    line_plot(out / "speed_miou_vs_nfe.png", [(s, [r["nfe"] for r in rs], [r["miou"] for r in rs])
                                             for s, rs in by_solver.items()],
              xlabel="NFE per forecast frame", ylabel="mIoU % (t+1, mean of K)", title="Quality vs NFE", logx=True)
    line_plot(out / "speed_latency_vs_nfe.png", [(s, [r["nfe"] for r in rs], [r["ms_per_frame"] for r in rs])
                                                for s, rs in by_solver.items()],
              xlabel="NFE per forecast frame", ylabel="ms per forecast frame", title="Latency vs NFE", logx=True)
    res = {"benchmark": "speed", "model": str(args.model), "quick": quick, "threads": torch.get_num_threads(),
           "solvers": sweep, "memory": memory, "throughput": flops, "training": train, "external": ext,
           "plots": ["speed_miou_vs_nfe.png", "speed_latency_vs_nfe.png"], "seconds": round(time.perf_counter() - t0, 1)}
    write_json(out / "speed.json", res)
    print(markdown(res))
    return res


def markdown(res: dict[str, Any], img_prefix: str = "benchmarks/") -> str:
    s = [[r["solver"], r["setting"], r["nfe"], f"{r['ms_per_frame']:.1f}", f"{r['miou']:.2f}"] for r in res["solvers"]]
    m = [[r["horizon"], f"{r['baseline_mb']:.0f}", f"{r['peak_mb']:.0f}", f"{r['growth_mb']:.1f}"] for r in res["memory"]]
    f, t = res["throughput"], res["training"]
    out = [f"{res['threads']} torch thread(s). Latency: one clip, one sample, median per forecast frame; mIoU: "
           "next frame, mean over K samples and the clips.", "",
           md_table(["solver", "setting", "NFE", "ms / frame", "mIoU %"], s), "",
           f"![mIoU vs NFE]({img_prefix}speed_miou_vs_nfe.png) ![latency vs NFE]({img_prefix}speed_latency_vs_nfe.png)",
           "", "**Peak memory vs horizon** (fresh process per horizon; growth of peak RSS over a 1-frame forecast):", "",
           md_table(["horizon", "RSS before (MB)", "peak RSS (MB)", "growth (MB)"], m), "",
           f"**Denoiser throughput:** {f['denoiser_gflop_per_call']:.3f} GFLOP per network evaluation "
           f"({f['tokens']} tokens) in {f['denoiser_ms_per_call']:.2f} ms = {f['denoiser_gflops']:.2f} GFLOP/s; "
           f"fp32 matmul {f['matmul_n']}² on the same threads: {f['matmul_gflops']:.2f} GFLOP/s → "
           f"**{100 * f['fraction_of_peak']:.0f} % of peak** (FLOPs counted by `FlopCounterMode`, which does not "
           f"count CPU attention; adding the attention's {f['attention_gflop_per_call']:.3f} GFLOP analytically "
           f"(full T×T, an upper bound) gives {100 * f['fraction_of_peak_with_attention']:.0f} %).", "",
           f"**Training throughput** ({t['steps']} steps, batch {t['batch_size']}): VAE "
           f"{t['vae_samples_per_s']:.1f} frames/s, flow forecaster {t['forecaster_samples_per_s']:.1f} clips/s.", ""]
    ext = dict(res.get("external", {}))
    width = ext.pop("width", None)
    for script, text in ext.items():
        out += [f"`benchmarks/{script}` at the model's size (width {width}: rounded up to a multiple of 6·heads, "
                "which arch='vfmf' needs):", "", "```text", text, "```", ""]
    if not ext:
        out += ["vfmf vs causal + cache and eager vs compile vs bf16: not run in this mode; see "
                "`benchmarks/denoiser_latency.py` and `benchmarks/compile_bf16.py`.", ""]
    return "\n".join(out)


def parser() -> Any:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--skip-external", action="store_true", help="do not run denoiser_latency.py / compile_bf16.py")
    p.add_argument("--memory-probe", type=int, default=None, help=argparse_suppress())
    return p


def argparse_suppress() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    a = parser().parse_args()
    if a.memory_probe is not None:
        setup(a.threads)
        print(json.dumps(memory_probe(a.model, a.memory_probe)))
    else:
        run(a)
