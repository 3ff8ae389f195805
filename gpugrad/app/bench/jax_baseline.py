"""JAX, the baseline beside the captured training step on a GPU and the compiled one on the CPU:
the same step, jit-compiled. JAX is optional: without it there is no row."""

import functools
import importlib.metadata
import os

import numpy as np

# --precision -> (the dtype the products' inputs are cast to, or None: float32; the precision
# a product asks for). "highest" is float32 itself; "default", JAX's own default, is TF32 on
# NVIDIA GPUs of compute capability 8.0 and later. bf16 and fp16 cast the inputs of each
# product and keep the weights float32, as autocast does, and the logits go back to float32
# for the loss, as autocast's float32 list says
JAX_PRECISIONS = {None: (None, "highest"), "fp32": (None, "highest"), "tf32": (None, "default"),
                  "bf16": ("bfloat16", "default"), "fp16": ("float16", "default")}


def version():
    """JAX's version where it is installed, else None (found without importing it)."""
    try:
        return importlib.metadata.version("jax")
    except importlib.metadata.PackageNotFoundError:
        return None


def training_step(weights_host, x_host, y_host, lam, lr, precision=None, platform="gpu"):
    """The same step in JAX, jit-compiled for `platform` ("gpu" or "cpu"), its matmuls at full
    float32 precision, or in `precision` (JAX_PRECISIONS); each call waits for its result, as
    CUDA events cannot see JAX's stream. None when JAX or that backend is missing."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave CuPy its memory
    try:
        import jax
        import jax.numpy as jnp
        target = jax.devices(platform)[0]
    except Exception:  # noqa: BLE001 - not installed, or no such backend: no row
        return None
    cast, matmul_precision = JAX_PRECISIONS[precision]
    cast = getattr(jnp, cast) if cast else None

    def loss_fn(ws, x, y):
        h = x
        for i, w in enumerate(ws):
            if cast is not None:  # the weights stay float32; their copies in `cast` are not
                h, w = h.astype(cast), w.astype(cast)
            h = jnp.matmul(h, w.T, precision=matmul_precision)
            if i < len(ws) - 1:
                h = jax.nn.relu(h)
        if cast is not None:
            h = h.astype(jnp.float32)
        logp = jax.nn.log_softmax(h, axis=1)
        xent = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
        return xent + lam / 2 * sum(jnp.sum(w * w) for w in ws)

    @functools.partial(jax.jit, donate_argnums=0)
    def update(ws, x, y):
        grads = jax.grad(loss_fn)(ws, x, y)
        return [w - lr * g for w, g in zip(ws, grads)]

    state = [jax.device_put(w, target) for w in weights_host]
    x, y = jax.device_put(x_host, target), jax.device_put(y_host.astype(np.int32), target)

    def step():
        state[:] = update(state, x, y)
        state[0].block_until_ready()
    return step
