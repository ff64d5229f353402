"""Fused Triton kernels vs their PyTorch references, at the sizes of a denoiser step.

Sizes follow one cached step of the causal denoiser (``--grid``, ``--width``,
``--heads``, ``--batch``): adaLN over (b, 1, h*w, width) tokens, QK RMSNorm + rotary over
(b, h*w, heads, 1, head_dim) and (b, 1, heads, h*w, head_dim), Euler/Heun updates over
the (b, h, w, C) latent.

* ``--device cuda``: Triton kernel vs PyTorch reference, forward (and forward+backward
  for the normalisations), median microseconds and speedup; plus the max difference.
* ``--device cpu`` (no GPU here): times the references only, and with ``--interpret``
  also runs every kernel once through Triton's interpreter at a tiny size to show it
  works and matches (the interpreter is far too slow to time).

Run::

    python benchmarks/kernels.py --device cuda
    python benchmarks/kernels.py --device cpu --interpret
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Callable

if "--interpret" in sys.argv:  # must be set before Triton is imported
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

from featureflow import kernels as K  # noqa: E402


def bench(fn: Callable[[], Any], device: str, reps: int) -> float:
    """Median microseconds per call."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(1e6 * (time.perf_counter() - start))
    return statistics.median(times)


def cases(b: int, h: int, w: int, width: int, heads: int, latent: int, device: str, dtype: torch.dtype, grad: bool):
    """(name, kernel call, reference call) triples on random inputs."""
    hw, hd = h * w, width // heads

    def r(*shape: int, req: bool = False) -> torch.Tensor:
        return torch.randn(*shape, device=device, dtype=dtype).requires_grad_(req)

    x, mods = r(b, 1, hw, width, req=grad), r(b, 1, 1, 9 * width, req=grad)
    shift, scale = mods.chunk(9, dim=-1)[:2]
    qt, kt = r(b, hw, heads, 1, hd, req=grad), r(b, hw, heads, 1, hd, req=grad)
    qs, ks = r(b, 1, heads, hw, hd, req=grad), r(b, 1, heads, hw, hd, req=grad)
    qw, kw = r(hd, req=grad), r(hd, req=grad)
    ang_t = torch.rand(1, hd // 2, device=device)
    ang_s = torch.rand(hw, hd // 2, device=device)
    z, v1, v2 = r(b, h, w, latent), r(b, h, w, latent), r(b, h, w, latent)
    dt = torch.tensor(0.125, device=device)

    def run(mode: str, fn: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            with K.use(mode):
                out = fn()
            if grad:
                outs = out if isinstance(out, tuple) else (out,)
                torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
            return out

        return call

    table = [
        ("adaln_modulate", lambda: K.adaln_modulate(x, shift, scale)),
        ("qk_rmsnorm_rope temporal", lambda: K.qk_rmsnorm_rope(qt, kt, qw, kw, torch.cos(ang_t), torch.sin(ang_t))),
        ("qk_rmsnorm_rope spatial", lambda: K.qk_rmsnorm_rope(qs, ks, qw, kw, torch.cos(ang_s), torch.sin(ang_s))),
    ]
    if not grad:
        table += [("axpy (Euler)", lambda: K.axpy(z, v1, dt)), ("heun_combine", lambda: K.heun_combine(z, v1, v2, dt))]
    return [(name, run("triton", fn), run("torch", fn)) for name, fn in table]


def max_diff(a: Any, b: Any) -> float:
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    return max(float((u.detach().float() - v.detach().float()).abs().max()) for u, v in zip(a, b))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--grid", type=int, nargs=2, default=(16, 16))
    p.add_argument("--width", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--batch", type=int, default=8, help="rows: batch x samples")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--threads", type=int, default=1, help="CPU threads")
    p.add_argument("--interpret", action="store_true", help="CPU: run each kernel once under TRITON_INTERPRET=1")
    args = p.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, triton importable: {K.triton_available()}, device {args.device}, dtype {args.dtype}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU visible on this machine; use --device cpu")
    size = (args.batch, *args.grid, args.width, args.heads, args.latent_dim)

    if args.device == "cuda":
        if not K.triton_available():
            raise SystemExit("Triton is not importable: pip install featureflow[triton]")
        print(f"{'kernel':<28} {'pass':<9} {'triton us':>10} {'torch us':>10} {'speedup':>8} {'max diff':>9}")
        for grad in (False, True):
            for name, kern, ref in cases(*size, "cuda", dtype, grad):
                tk, tr = bench(kern, "cuda", args.reps), bench(ref, "cuda", args.reps)
                diff = max_diff(kern(), ref())
                print(f"{name:<28} {'fwd+bwd' if grad else 'fwd':<9} {tk:>10.1f} {tr:>10.1f} {tr / tk:>7.2f}x {diff:>9.1e}")
        return

    print("no GPU: timing the PyTorch references on CPU (the Triton kernels need CUDA)")
    print(f"{'reference':<28} {'pass':<9} {'torch us':>10}")
    for grad in (False, True):
        for name, _, ref in cases(*size, "cpu", torch.float32, grad):
            print(f"{name:<28} {'fwd+bwd' if grad else 'fwd':<9} {bench(ref, 'cpu', args.reps):>10.1f}")
    if args.interpret:
        if not K.interpreter_enabled():
            raise SystemExit("Triton's interpreter is not available (is Triton installed?)")
        print("Triton interpreter, tiny size (batch 1, grid 2x2, width 16, 2 heads): kernel vs reference")
        for grad in (False, True):
            for name, kern, ref in cases(1, 2, 2, 16, 2, 4, "cpu", torch.float32, grad):
                print(f"    {name:<28} {'fwd+bwd' if grad else 'fwd':<9} max diff {max_diff(kern(), ref()):.1e}")


if __name__ == "__main__":
    main()
