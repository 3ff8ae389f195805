"""Where the host time of gpugrad's small calls goes: cProfile of one fused activation backward
and of one eager section 4.7 training step, beside the array library's own launch cost.
Usage: python bench/profile_host.py [device]  (default: the default device)."""

import cProfile
import io
import pstats
import sys
import time

import numpy as np

import gpugrad as gg
from gpugrad import devices
from gpugrad.app.bench.suites import kernels as kernels_suite
from gpugrad.app.bench.suites import mlp
from gpugrad.devices.cuda import kernels


def per_call_us(fn, calls):
    fn()
    devices.get(DEVICE).synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    devices.get(DEVICE).synchronize()
    return (time.perf_counter() - t0) / calls * 1e6


def profile(title, fn, calls, top=18):
    print(f"\n== {title}: {per_call_us(fn, calls):.1f} us per call (host clock, {calls} calls)")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    print("\n".join(out.getvalue().splitlines()[6:]))


DEVICE = sys.argv[1] if len(sys.argv) > 1 else gg.default_device()
be = devices.get(DEVICE)
with be.active:
    cases, _, _ = kernels_suite.kernel_cases("silu", 2**16, DEVICE)
    profile("silu backward, 2^16 float32, fused op", cases["gpugrad"], 3000)
    if be.is_cuda:
        xp = be.xp
        g = xp.ones(2**16, np.float32)
        x = xp.ones(2**16, np.float32)
        dx = xp.empty_like(g)
        k, _ = kernels.compiled(xp, "silu_bwd", "float")
        args = (g, x, dx, np.int64(g.size), np.float32(0), np.float32(0))
        print(f"\nCuPy RawKernel launch alone: {per_call_us(lambda: k((64,), (256,), args), 3000):.1f} us")
        print(f"CuPy empty_like alone: {per_call_us(lambda: xp.empty_like(g), 3000):.1f} us")
        print(f"CuPy tanh alone: {per_call_us(lambda: xp.tanh(g), 3000):.1f} us")
    step = mlp.mlp_step_cases([784, 256, 10], 32, DEVICE)["gpugrad"]
    profile("section 4.7 eager SGD step, batch 32", step, 300, top=30)
