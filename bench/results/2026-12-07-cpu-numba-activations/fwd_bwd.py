"""Every activation's forward + backward at 2^20 float32 on the CPU: gpugrad's op functions on
arrays with the numba kernels and with the NumPy formulas (GPUGRAD_NUMBA=0), beside PyTorch's
aten kernels (forward under no_grad, then the aten backward op), in one process. Each round
times every candidate in turn (k forward calls, then k backward calls), starting from a
different one each round; the figure is the median over the rounds, the ratio candidate /
torch. Under load, `cpu` as a second argument times CPU time (process_time: time spent
preempted does not count; then compare with torch at 1 thread, OMP_NUM_THREADS=1, since
process time sums the threads). Run: PYTHONPATH=$PWD python
bench/results/2026-12-07-cpu-numba-activations/fwd_bwd.py [rounds] [cpu]"""

import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import gpugrad as gg
from gpugrad.ops import activation_numba

N, ROUNDS, K = 1 << 20, int(sys.argv[1]) if len(sys.argv) > 1 else 11, 10
clock = time.process_time if sys.argv[2:] == ["cpu"] else time.perf_counter
CASES = [("relu", {}), ("leaky_relu", {}), ("elu", {}), ("gelu", {}), ("gelu_tanh", {"approximate": "tanh"}),
         ("silu", {}), ("softplus", {}), ("sigmoid", {}), ("tanh", {}), ("softsign", {}), ("hardswish", {})]
aten = torch.ops.aten


def gpugrad_case(label, p, x, g, numba):
    name = label.split("_tanh")[0]
    op, grad_name = gg.OPS[name], "relu_backward" if name in ("relu", "leaky_relu") else f"{name}_backward"
    grad, params = gg.OPS[grad_name], dict(op.defaults or {}, **p)
    env = "1" if numba else "0"

    def fwd():
        os.environ["GPUGRAD_NUMBA"] = env
        if op.forward_saving is not None:
            return op.forward_saving(np, x, **params)
        return op.forward(np, x, **params), None

    def bwd(saved):
        y, aux = saved
        if aux is not None:
            return grad.forward(np, g, aux["mask"], negative_slope=params.get("negative_slope", 0.0))
        s = y if name in ("elu", "sigmoid", "tanh") else x
        return grad.forward(np, g, s, **params)
    return fwd, bwd


def torch_case(label, x, g):
    x, g = torch.from_numpy(x), torch.from_numpy(g)
    fwd = {"relu": F.relu, "leaky_relu": F.leaky_relu, "elu": F.elu, "gelu": F.gelu,
           "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"), "silu": F.silu, "softplus": F.softplus,
           "sigmoid": torch.sigmoid, "tanh": torch.tanh, "softsign": F.softsign, "hardswish": F.hardswish}[label]
    bwd = {"relu": lambda y: aten.threshold_backward(g, y, 0),
           "leaky_relu": lambda y: aten.leaky_relu_backward(g, x, 0.01, False),
           "elu": lambda y: aten.elu_backward(g, 1.0, 1, 1, True, y),
           "gelu": lambda y: aten.gelu_backward(g, x), "gelu_tanh": lambda y: aten.gelu_backward(g, x, approximate="tanh"),
           "silu": lambda y: aten.silu_backward(g, x), "softplus": lambda y: aten.softplus_backward(g, x, 1.0, 20.0),
           "sigmoid": lambda y: aten.sigmoid_backward(g, y), "tanh": lambda y: aten.tanh_backward(g, y),
           "hardswish": lambda y: aten.hardswish_backward(g, x)}.get(label)
    if bwd is None:  # softsign: no aten kernel, autograd through F.softsign
        def bwd(y):
            xr = x.detach().requires_grad_()
            return torch.autograd.grad(F.softsign(xr), xr, g)[0]

    def f():
        with torch.no_grad():
            return fwd(x)
    return f, bwd


def timed(fwd, bwd):
    saved = fwd()
    bwd(saved)  # warm: compiled, caches touched
    t0 = clock()
    for _ in range(K):
        saved = fwd()
    t1 = clock()
    for _ in range(K):
        bwd(saved)
    return (t1 - t0) / K, (clock() - t1) / K


def main():
    rng = np.random.default_rng(0)
    x = (3 * rng.standard_normal(N)).astype(np.float32)
    g = rng.standard_normal(N).astype(np.float32)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {activation_numba.status()}; {clock.__name__}; "
          f"loadavg {open('/proc/loadavg').read().split()[:3]}")
    print(f"{'activation':<11} {'torch ms':>9} {'numba ms':>9} {'numpy ms':>9} {'numba/torch':>12} "
          f"{'numpy/torch':>12} {'(min)':>6} {'(min)':>6}")
    with np.errstate(all="ignore"):
        for label, p in CASES:
            cands = {"torch": torch_case(label, x, g), "numba": gpugrad_case(label, p, x, g, True),
                     "numpy": gpugrad_case(label, p, x, g, False)}
            times = {k: [] for k in cands}
            for r in range(ROUNDS):
                order = list(cands)[r % 3:] + list(cands)[:r % 3]
                for k in order:
                    times[k].append(sum(timed(*cands[k])))
            med = {k: np.median(v) * 1e3 for k, v in times.items()}
            lo = {k: np.min(v) * 1e3 for k, v in times.items()}
            print(f"{label:<11} {med['torch']:>9.3f} {med['numba']:>9.3f} {med['numpy']:>9.3f} "
                  f"{med['numba'] / med['torch']:>11.2f}x {med['numpy'] / med['torch']:>11.2f}x "
                  f"{lo['numba'] / lo['torch']:>5.2f}x {lo['numpy'] / lo['torch']:>5.2f}x", flush=True)
    os.environ.pop("GPUGRAD_NUMBA")
    print(f"loadavg after {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
