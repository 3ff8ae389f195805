"""The 4.7 step's matrix products alone (the mlp suite's 'numpy matmuls' case) beside the same
products jit-compiled by JAX on its CPU device, round-robin in short samples (as
side_by_side.py): is the floor under the compiled step above JAX's whole step?

    PYTHONPATH=<tree>:<jax> python products_floor.py BATCH
"""

import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from gpugrad.app.bench import array_baseline

batch = int(sys.argv[1])
sizes = [784, 256, 10]
rng = np.random.default_rng(0)
weights = [rng.standard_normal((o, i)).astype(np.float32) for i, o in zip(sizes, sizes[1:])]
acts = [rng.standard_normal((batch, n)).astype(np.float32) for n in sizes]
numpy_products = array_baseline.matmul_products(np.matmul, weights, acts)


@jax.jit
def products(ws, hs):
    out = []
    for i, (w, h_in, h_out) in enumerate(zip(ws, hs[:-1], hs[1:])):
        out.append(jnp.matmul(h_in, w.T, precision="highest"))
        if i:
            out.append(jnp.matmul(h_out, w, precision="highest"))
        out.append(jnp.matmul(h_out.T, h_in, precision="highest"))
    return out


cpu = jax.devices("cpu")[0]
jws, jhs = ([jax.device_put(a, cpu) for a in arrays] for arrays in (weights, acts))


def jax_products():
    jax.block_until_ready(products(jws, jhs))


run = {"numpy products": numpy_products, "jax products": jax_products}
for f in run.values():
    f()
k = max(1, int(32 / batch * 10))
samples = {name: [] for name in run}
for r in range(300):
    for name in (list(run) if r % 2 == 0 else list(run)[::-1]):
        start = time.perf_counter()
        for _ in range(k):
            run[name]()
        samples[name].append((time.perf_counter() - start) / k)
p10 = {n: statistics.quantiles(v, n=10)[0] for n, v in samples.items()}
print(f"batch {batch}: ms fastest / 10th percentile: " + "; ".join(
    f"{n} {min(v) * 1e3:.3f} / {p10[n] * 1e3:.3f}" for n, v in samples.items()))
print(f"numpy / jax products: fastest "
      f"{min(samples['numpy products']) / min(samples['jax products']):.2f}, 10th percentile "
      f"{p10['numpy products'] / p10['jax products']:.2f}")
