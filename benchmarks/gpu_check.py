"""One command to run whenever a CUDA GPU is at hand: do the fused kernels work, and how fast is a step?

On a CUDA machine (under 5 minutes):

1. every Triton kernel of ``featureflow.kernels`` against its PyTorch reference, forward
   and (for the normalisations) backward, in float32 and bfloat16, with the tolerance
   used and the max difference seen; a kernel outside its tolerance is reported as FAIL
   and the script exits 1;
2. one cached ``arch="causal"`` denoiser step at sizes (b) 16x16 width 384 depth 8 and
   (c) 16x16 width 1152 depth 12 (8 samples, context 4, random weights), median ms:
   eager PyTorch references (``kernels.use("torch")``), eager with the Triton kernels,
   ``torch.compile``, and a bf16 weight copy (``Denoiser.sampling_copy``);
3. one ``WorldModel.forecast`` of the bundled ``toyworld`` model on CUDA (horizon 4,
   8 samples, Heun 4), checked against the same forecast on the CPU.

Without CUDA it says so and exits 0.

Run::

    python benchmarks/gpu_check.py
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from typing import Any, Callable

import torch

NO_CUDA = "gpu_check: no CUDA device visible (torch.cuda.is_available() is False); nothing to check on this machine."
TOLERANCE = {torch.float32: 2e-4, torch.bfloat16: 5e-2}  # max abs difference, inputs ~ N(0, 1)


def timed(fn: Callable[[], Any], reps: int) -> float:
    """Median milliseconds of ``fn`` on the GPU (synchronised)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(1000 * (time.perf_counter() - start))
    return statistics.median(ts)


def kernel_cases(dtype: torch.dtype) -> list[tuple[str, Callable[..., Any], list[torch.Tensor], bool]]:
    """(name, fn(*inputs), inputs, differentiable) at the sizes of a (b)-sized step, 8 rows."""
    from featureflow import kernels as K

    dev, b, hw, width, heads = "cuda", 8, 256, 384, 6
    hd = width // heads
    r = lambda *s: torch.randn(*s, device=dev, dtype=dtype)  # noqa: E731
    ang_t, ang_s = torch.rand(1, hd // 2, device=dev), torch.rand(hw, hd // 2, device=dev)
    ct, st, cs, ss = ang_t.cos(), ang_t.sin(), ang_s.cos(), ang_s.sin()
    dt = torch.tensor(0.125, device=dev)
    return [
        ("adaln_modulate", lambda x, sh, sc: K.adaln_modulate(x, sh, sc), [r(b, 1, hw, width), r(b, 1, 1, width), r(b, 1, 1, width)], True),
        ("qk_rmsnorm_rope temporal", lambda q, k, qw, kw: K.qk_rmsnorm_rope(q, k, qw, kw, ct, st),
         [r(b, hw, heads, 1, hd), r(b, hw, heads, 1, hd), r(hd), r(hd)], True),
        ("qk_rmsnorm_rope spatial", lambda q, k, qw, kw: K.qk_rmsnorm_rope(q, k, qw, kw, cs, ss),
         [r(b, 1, heads, hw, hd), r(b, 1, heads, hw, hd), r(hd), r(hd)], True),
        ("rmsnorm_rope", lambda x, w: K.rmsnorm_rope(x, w, cs, ss), [r(b, 1, heads, hw, hd), r(hd)], True),
        ("axpy (Euler)", lambda x, v: K.axpy(x, v, dt), [r(b, 16, 16, 16), r(b, 16, 16, 16)], False),
        ("heun_combine", lambda x, k1, k2: K.heun_combine(x, k1, k2, dt), [r(b, 16, 16, 16)] * 3, False),
    ]


def _run(mode: str, fn: Callable[..., Any], inputs: list[torch.Tensor], grad: bool) -> list[torch.Tensor]:
    from featureflow import kernels as K

    leaves = [x.detach().clone().requires_grad_(grad) for x in inputs]
    with K.use(mode):
        out = fn(*leaves)
        outs = list(out) if isinstance(out, tuple) else [out]
        if grad:
            gen = torch.Generator(device="cuda").manual_seed(0)
            cot = [torch.randn(o.shape, device="cuda", generator=gen).to(o.dtype) for o in outs]
            torch.autograd.backward(outs, cot)
    return [o.detach() for o in outs] + ([x.grad for x in leaves if x.grad is not None] if grad else [])


def check_kernels() -> bool:
    ok = True
    print(f"{'kernel':<26} {'dtype':<9} {'pass':<8} {'max diff':>9} {'tolerance':>9}  result")
    for dtype in (torch.float32, torch.bfloat16):
        for name, fn, inputs, diff in kernel_cases(dtype):
            for grad in (False, True) if diff else (False,):
                got, want = _run("triton", fn, inputs, grad), _run("torch", fn, inputs, grad)
                err = max(float((a.float() - b.float()).abs().max()) for a, b in zip(got, want))
                tol = TOLERANCE[dtype] * (4 if grad else 1)
                good = len(got) == len(want) and err <= tol
                ok &= good
                print(f"{name:<26} {str(dtype).split('.')[-1]:<9} {'fwd+bwd' if grad else 'fwd':<8} {err:>9.1e} "
                      f"{tol:>9.1e}  {'ok' if good else 'FAIL'}", flush=True)
    return ok


def time_steps(reps: int) -> None:
    from featureflow import kernels as K
    from featureflow.forecast import Denoiser

    sizes = {"(b) 16x16, width 384, depth 8": (384, 8, 6), "(c) 16x16, width 1152, depth 12": (1152, 12, 16)}
    print(f"\n{'denoiser step, 8 samples':<34} {'eager torch':>12} {'eager triton':>13} {'compiled':>9} {'bf16':>7}  (ms)")
    for label, (width, depth, heads) in sizes.items():
        torch.manual_seed(0)
        den = Denoiser(latent_dim=16, width=width, depth=depth, heads=heads, max_context=4).eval()
        with torch.no_grad():
            for p in den.parameters():
                if bool((p == 0).all()):
                    p.normal_(std=0.02)
        den = den.cuda()
        bf16 = den.sampling_copy(torch.bfloat16)
        compiled = copy.deepcopy(den).compile_sampling()
        ctx, x = torch.randn(1, 4, 16, 16, 16, device="cuda"), torch.randn(8, 16, 16, 16, device="cuda")
        t = torch.full((8,), 0.5, device="cuda")
        with torch.inference_mode():
            st, sb = den.prefill(ctx).expand(8), bf16.prefill(ctx).expand(8)

            def with_mode(mode: str, d: Any, s: Any) -> Callable[[], Any]:
                def call() -> Any:
                    with K.use(mode):
                        return d.step(s, x, t)
                return call

            row = [timed(with_mode("torch", den, st), reps)]
            row.append(timed(with_mode("triton", den, st), reps) if K.triton_available() else float("nan"))
            start = time.perf_counter()
            compiled.step(st, x, t)
            torch.cuda.synchronize()
            first = time.perf_counter() - start
            row.append(timed(lambda: compiled.step(st, x, t), reps))
            row.append(timed(with_mode("auto", bf16, sb), reps))
        print(f"{label:<34} {row[0]:>12.2f} {row[1]:>13.2f} {row[2]:>9.2f} {row[3]:>7.2f}  "
              f"(first compiled call {first:.0f} s)", flush=True)


def forecast_on_cuda() -> bool:
    import featureflow as ff

    wm = ff.WorldModel.from_pretrained("toyworld")
    frames = ff.data.ToyWorld(resolution=64).clip(seed=7, length=wm.max_context).rgb[None]
    kw = dict(horizon=4, num_samples=8, solver="heun", steps=4)
    cpu = wm.forecast(frames, generator=torch.Generator().manual_seed(0), **kw)
    wm = wm.cuda()
    start = time.perf_counter()
    fc = wm.forecast(frames.cuda(), generator=torch.Generator(device="cuda").manual_seed(0), **kw)
    seg = fc.decode("segmentation")
    torch.cuda.synchronize()
    took = time.perf_counter() - start
    ok = fc.latents.is_cuda and seg.shape == cpu.decode("segmentation").shape and bool(torch.isfinite(fc.latents).all())
    print(f"\nWorldModel.forecast on CUDA (toyworld, horizon 4, 8 samples, Heun 4, + segmentation): {took:.2f} s, "
          f"latents {tuple(fc.latents.shape)}, finite: {ok}; |latents| mean CUDA {float(fc.latents.abs().mean()):.3f} "
          f"vs CPU {float(cpu.latents.abs().mean()):.3f} (different noise streams per device)")
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=20, help="timed repetitions per step")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_CUDA)
        return 0
    from featureflow import kernels as K

    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name()}, triton importable: {K.triton_available()}")
    ok = True
    if K.triton_available():
        ok = check_kernels()
    else:
        print("Triton is not importable (pip install featureflow[triton]): kernel checks skipped")
    time_steps(a.reps)
    ok &= forecast_on_cuda()
    print("\ngpu_check:", "all checks passed" if ok else "FAILED (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
