"""First-use cost of the numba activations: importing them, then the first forward + backward of
each activation (compiled, or loaded from numba's cache). Run twice with a fresh cache:
NUMBA_CACHE_DIR=/tmp/cache PYTHONPATH=$PWD python bench/results/2026-12-07-cpu-numba-activations/compile_time.py"""

import importlib
import time

CASES = [("relu", {}), ("leaky_relu", {}), ("elu", {}), ("gelu", {}), ("gelu", {"approximate": "tanh"}),
         ("silu", {}), ("softplus", {}), ("sigmoid", {}), ("tanh", {}), ("softsign", {}), ("hardswish", {})]


def main():
    t0 = time.perf_counter()
    np = importlib.import_module("numpy")
    gg = importlib.import_module("gpugrad")
    t1 = time.perf_counter()
    importlib.import_module("gpugrad.ops.activation_numba").enabled()
    t2 = time.perf_counter()
    x = gg.tensor(np.linspace(-3, 3, 64, dtype=np.float32), requires_grad=True)
    per = {}
    for name, p in CASES:
        s = time.perf_counter()
        with gg.autograd.record():
            y = getattr(gg, name)(x, **p)
        y.backward()
        per[name + ("_tanh" if p else "")] = time.perf_counter() - s
    t3 = time.perf_counter()
    print(f"import gpugrad {t1 - t0:.2f}s  import numba+kernels module {t2 - t1:.2f}s  "
          f"first fwd+bwd of all 11 {t3 - t2:.2f}s  " + " ".join(f"{k}:{v:.2f}" for k, v in per.items()))


if __name__ == "__main__":
    main()
