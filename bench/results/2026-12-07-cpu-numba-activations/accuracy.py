"""Accuracy of the CPU's float32 activations, numba kernels and NumPy formulas side by side,
against the formulas in float64, forward and backward (g = 1): the max error in ulps of the
reference where |reference| >= 1e-3 (near a zero crossing of a backward both paths lose
relative accuracy to cancellation), and in ulps of max(|reference|, 1) everywhere (the scale of
the terms that cancel).
Inputs: 2^18 of 3 N(0, 1), 2^18 of U(-25, 25), 2^14 of +-10^U(-30, 30).
Run: PYTHONPATH=$PWD python bench/results/2026-12-07-cpu-numba-activations/accuracy.py"""

import os

import numpy as np

import gpugrad as gg
from gpugrad.ops import activation_numba

CASES = [("relu", {}), ("leaky_relu", {}), ("elu", {}), ("gelu", {}), ("gelu", {"approximate": "tanh"}),
         ("silu", {}), ("softplus", {}), ("sigmoid", {}), ("tanh", {}), ("softsign", {}), ("hardswish", {})]


def inputs():
    rng = np.random.default_rng(0)
    return np.concatenate([3 * rng.standard_normal(1 << 18), rng.uniform(-25, 25, 1 << 18),
                           rng.choice([-1, 1], 1 << 14) * 10 ** rng.uniform(-30, 30, 1 << 14)])


def fwd_bwd(name, p, x, numba):
    """y and dx (g = 1) of the op on the CPU, with numba on or off."""
    os.environ["GPUGRAD_NUMBA"] = "1" if numba else "0"
    t = gg.tensor(x, requires_grad=True)
    with gg.autograd.record():
        y = getattr(gg, name)(t, **p)
    y.backward(gg.ones_like(y))
    return y.numpy(), t.grad.numpy()


def errors(got, want):
    """(max ulp where |want| >= 1e-3, max ulp of max(|want|, 1)); NaN and inf must agree."""
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(got[np.isinf(want)], want[np.isinf(want)])
    fin = np.isfinite(want)
    err, want = np.abs(got[fin].astype(np.float64) - want[fin]), np.abs(want[fin])
    ulp = err / np.spacing(want.astype(np.float32)).astype(np.float64)
    return np.max(ulp[want >= 1e-3]), np.max(err / np.spacing(np.maximum(want, 1).astype(np.float32)))


def main():
    x64 = inputs()
    x32 = x64.astype(np.float32)
    x64 = x32.astype(np.float64)
    print(f"{'activation':<16} {'path':<8} {'fwd ulp':>8} {'fwd ulp(1)':>10} {'bwd ulp':>8} {'bwd ulp(1)':>10}")
    for name, p in CASES:
        ref = fwd_bwd(name, p, x64, numba=False)
        label = name + ("_tanh" if p else "")
        for path in ("numba", "numpy"):
            before = sum(activation_numba.calls.values())
            y, dx = fwd_bwd(name, p, x32, numba=path == "numba")
            assert (sum(activation_numba.calls.values()) > before) == (path == "numba")
            (fu, fa), (bu, ba) = errors(y, ref[0]), errors(dx, ref[1])
            print(f"{label:<16} {path:<8} {fu:>8.0f} {fa:>10.1f} {bu:>8.0f} {ba:>10.1f}")


if __name__ == "__main__":
    main()
