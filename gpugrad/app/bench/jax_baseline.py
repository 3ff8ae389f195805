"""JAX, the baseline beside the captured training step on a GPU: the same step, jit-compiled."""

import functools
import os

import numpy as np


def training_step(weights_host, x_host, y_host, lam, lr):
    """The same step in JAX, jit-compiled, its matmuls at full float32 precision (JAX's default
    on a GPU is TF32); each call waits for its result, as CUDA events cannot see JAX's stream.
    None when JAX or its GPU backend is missing."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave CuPy its memory
    try:
        import jax
        import jax.numpy as jnp
        gpu = jax.devices("gpu")[0]
    except Exception:  # noqa: BLE001 - not installed, or no GPU backend: no row
        return None

    def loss_fn(ws, x, y):
        h = x
        for i, w in enumerate(ws):
            h = jnp.matmul(h, w.T, precision="highest")
            if i < len(ws) - 1:
                h = jax.nn.relu(h)
        logp = jax.nn.log_softmax(h, axis=1)
        xent = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
        return xent + lam / 2 * sum(jnp.sum(w * w) for w in ws)

    @functools.partial(jax.jit, donate_argnums=0)
    def update(ws, x, y):
        grads = jax.grad(loss_fn)(ws, x, y)
        return [w - lr * g for w, g in zip(ws, grads)]

    state = [jax.device_put(w, gpu) for w in weights_host]
    x, y = jax.device_put(x_host, gpu), jax.device_put(y_host.astype(np.int32), gpu)

    def step():
        state[:] = update(state, x, y)
        state[0].block_until_ready()
    return step
