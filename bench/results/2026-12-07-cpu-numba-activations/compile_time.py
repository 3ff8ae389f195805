import time, sys
t0 = time.perf_counter()
import numpy as np
import gpugrad as gg
t1 = time.perf_counter()
from gpugrad.ops import activation_numba
activation_numba.enabled()
t2 = time.perf_counter()
x = gg.tensor(np.linspace(-3, 3, 64, dtype=np.float32), requires_grad=True)
per = {}
for name, p in [("relu", {}), ("leaky_relu", {}), ("elu", {}), ("gelu", {}), ("gelu", {"approximate": "tanh"}), ("silu", {}), ("softplus", {}), ("sigmoid", {}), ("tanh", {}), ("softsign", {}), ("hardswish", {})]:
    s = time.perf_counter()
    with gg.autograd.record():
        y = getattr(gg, name)(x, **p)
    y.backward()
    per[name + ("_tanh" if p else "")] = time.perf_counter() - s
t3 = time.perf_counter()
print(f"import gpugrad {t1-t0:.2f}s  import numba+kernels module {t2-t1:.2f}s  first fwd+bwd of all 11 {t3-t2:.2f}s  " + " ".join(f"{k}:{v:.2f}" for k, v in per.items()))
