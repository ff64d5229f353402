"""Denoiser step on this machine: eager vs ``torch.compile`` vs bf16 autocast, and bf16's error.

For one cached ``arch="causal"`` step (the unit of work of a sampling loop) this prints:

* graph breaks Dynamo finds in ``Denoiser.step``, in the same method without its
  ``@typechecked`` wrapper, and in ``Denoiser.trunk.step`` (the core without validation);
* median latency of eager fp32, eager fp32 with attention through
  :func:`featureflow.kernels.sdpa` (leading axes folded: SDPA's fused CPU kernel instead
  of its 5-D math path; patched in for the measurement), compiled fp32, eager bf16
  autocast and compiled bf16 autocast, with speedups over eager fp32 (compile time
  reported separately);
* bf16 accuracy: the velocity's error vs fp32 (max abs, relative L2) for one step, and the
  error of a whole Heun 4-NFE sample from the same noise;
* with ``--profile``: the hottest operators of an eager step (``torch.profiler``).

The trunk is initialised adaLN-zero (it outputs exactly 0), so every zero-initialised
parameter is re-drawn from N(0, 0.02^2) to make the velocity non-trivial.

Run::

    python benchmarks/compile_bf16.py                       # 16x16 grid, width 256, depth 4, 1 thread
    python benchmarks/compile_bf16.py --width 384 --depth 6 --heads 6 --profile
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import torch

from featureflow.forecast.denoiser import Denoiser
from featureflow.forecast.layers import Attention
from featureflow.kernels import compile_step, graph_breaks, sampling_autocast, sdpa

_ATTEND = Attention.attend


def _attend_4d(self: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any = None) -> torch.Tensor:
    return sdpa(q, k, v, mask, self.dropout if self.training else 0.0)


def interleaved(fns: list[Callable[[], Any]], reps: int) -> list[float]:
    """Median milliseconds of each function, timed round-robin so background load hits all alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i].append(1000 * (time.perf_counter() - start))
    return [statistics.median(ts) for ts in times]


def errors(got: torch.Tensor, want: torch.Tensor) -> tuple[float, float]:
    """(max abs error, relative L2 error) of ``got`` vs ``want``."""
    diff = got.float() - want.float()
    return float(diff.abs().max()), float(diff.norm() / want.float().norm().clamp_min(1e-12))


def heun_sample(step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, nfe: int = 4) -> torch.Tensor:
    ts = torch.linspace(0.0, 1.0, nfe // 2 + 1)
    for i in range(nfe // 2):
        dt = ts[i + 1] - ts[i]
        k1 = step(ts[i], x).float()
        k2 = step(ts[i + 1], x + dt * k1).float()
        x = x + dt * 0.5 * (k1 + k2)
    return x


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", type=int, nargs=2, default=(16, 16))
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--context", type=int, default=4)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1, help="1 is the most stable on a shared machine")
    p.add_argument("--profile", action="store_true", help="also profile one eager step")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    den = Denoiser(
        "causal", latent_dim=args.latent_dim, width=args.width, depth=args.depth, heads=args.heads,
        max_context=args.context,
    ).eval()  # fmt: skip
    with torch.no_grad():
        for prm in den.parameters():
            if not prm.any():
                prm.normal_(0.0, 0.02)
    b = args.batch
    context = torch.randn(b, args.context, *args.grid, args.latent_dim)
    x = torch.randn(b, *args.grid, args.latent_dim)
    t = torch.full((b,), 0.5)
    print(
        f"causal denoiser: grid {args.grid[0]}x{args.grid[1]}, width {args.width}, depth {args.depth}, "
        f"heads {args.heads}, context {args.context}, batch {b}, threads {args.threads}, torch {torch.__version__}"
    )

    with torch.no_grad():
        state = den.prefill(context)
        trunk_step = den.trunk.step
        keys, values = state.keys, state.values

        den.step(state, x, t)  # eager warm-up: fills the trunk's rotary-table cache
        unchecked_step = type(den).step.__wrapped__  # Denoiser.step without the @typechecked wrapper

        # ---- graph breaks
        for name, fn, fargs in (
            ("Denoiser.step", den.step, (state, x, t)),
            ("Denoiser.step without @typechecked", unchecked_step, (den, state, x, t)),
            ("Denoiser.trunk.step", trunk_step, (keys, values, x, t)),
        ):
            try:
                rep = graph_breaks(fn, *fargs)
            except Exception as err:  # report, then go on with the parts that do trace
                print(f"graph breaks in {name}: tracing FAILED with {type(err).__name__}: {str(err).splitlines()[0]}")
                continue
            print(f"graph breaks in {name}: {rep.graph_break_count} ({rep.graph_count} graphs)")
            for reason in rep.break_reasons[:8]:
                print(f"    - {reason}")

        # ---- latency
        def eager() -> torch.Tensor:
            return trunk_step(keys, values, x, t)

        compiled_step = compile_step(trunk_step, enabled=True)
        start = time.perf_counter()
        compiled_step(keys, values, x, t)
        compile_s = time.perf_counter() - start

        def compiled() -> torch.Tensor:
            return compiled_step(keys, values, x, t)

        def eager_bf16() -> torch.Tensor:
            with sampling_autocast("cpu"):
                return trunk_step(keys, values, x, t)

        compiled_bf16_step = compile_step(trunk_step, enabled=True)
        with sampling_autocast("cpu"):
            start = time.perf_counter()
            compiled_bf16_step(keys, values, x, t)
            compile_bf16_s = time.perf_counter() - start

        def compiled_bf16() -> torch.Tensor:
            with sampling_autocast("cpu"):
                return compiled_bf16_step(keys, values, x, t)

        def eager_sdpa4d() -> torch.Tensor:
            Attention.attend = _attend_4d  # type: ignore[method-assign]
            try:
                return trunk_step(keys, values, x, t)
            finally:
                Attention.attend = _ATTEND  # type: ignore[method-assign]

        paths = (
            ("eager fp32", eager),
            ("eager fp32, 4-D sdpa", eager_sdpa4d),
            ("compile fp32", compiled),
            ("eager bf16 autocast", eager_bf16),
            ("compile bf16 autocast", compiled_bf16),
        )
        rows = [(name, t_ms) for (name, _), t_ms in zip(paths, interleaved([fn for _, fn in paths], args.reps))]
        base = rows[0][1]
        print(f"first call (compile) time: fp32 {compile_s:.1f} s, bf16 {compile_bf16_s:.1f} s")
        print(f"{'path':<24} {'ms/step':>9} {'speedup':>8}")
        for name, ms in rows:
            print(f"{name:<24} {ms:>9.2f} {base / ms:>7.2f}x")

        # ---- accuracy
        v32 = eager()
        print("velocity error vs eager fp32 (max abs / relative L2):")
        for name, fn in (
            ("eager bf16", eager_bf16), ("compile bf16", compiled_bf16), ("compile fp32", compiled),
            ("4-D sdpa fp32", eager_sdpa4d),
        ):
            mx, rel = errors(fn(), v32)
            print(f"    {name:<15} {mx:.2e} / {rel:.2e}   (|v| max {float(v32.abs().max()):.2f})")
        noise = torch.randn_like(x)

        def step32(tt: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
            return den.step(state, xx, tt.expand(b))

        def step16(tt: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
            with sampling_autocast("cpu"):
                return den.step(state, xx, tt.expand(b))

        mx, rel = errors(heun_sample(step16, noise), heun_sample(step32, noise))
        print(f"bf16 Heun 4-NFE sample error vs fp32 (max abs / relative L2): {mx:.2e} / {rel:.2e}")

        # ---- profile
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            eager()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(3):
                    eager()
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
