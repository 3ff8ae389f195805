"""The array library itself (NumPy, CuPy or the strict device's), the floor under gpugrad: its
matrix products alone, one call of it per op, and the training step written by hand on its
arrays."""

import numpy as np

from gpugrad import devices


def array_library(device):
    """The name of the device's array library, as the suites label its rows."""
    be = devices.get(device)
    return "numpy" if be.xp is np else "cupy" if be.is_cuda else f"{be.name} xp"


def matmul_products(matmul, weights, activations):
    """The matrix products of one training step of an MLP alone (each layer's forward and weight
    gradient, and the gradient of every layer's input but the data's, which no step computes),
    with `matmul` of any array library: the floor under a step's time."""
    def run():
        for i, (w, h_in, h_out) in enumerate(zip(weights, activations[:-1], activations[1:])):
            matmul(h_in, w.T)   # forward
            if i:
                matmul(h_out, w)    # gradient of the layer's input
            matmul(h_out.T, h_in)  # gradient of the weight
    return run


def hand_written_step(weights, x, y, lam, lr):
    """The same SGD step written by hand on raw arrays of one device (no autograd, no Tensor):
    the floor under a step built from the same array library and gpugrad's capturable matmul
    (devices.matmul), which gg.cuda.graph can capture on CUDA. Updates `weights` (arrays,
    (out, in) each) in place and returns the loss (cross-entropy + lam/2 |W|^2, before the
    update); x (N, d) and integer labels y (N,) stay fixed."""
    be = devices.get(devices.device_of_array(x))
    xp, n = be.xp, x.shape[0]
    with be.active:
        rows = xp.arange(n)

    def step():
        with be.active:
            hs, h = [x], x
            for i, w in enumerate(weights):
                z = devices.matmul(xp, h, w.T)
                if i < len(weights) - 1:
                    h = xp.maximum(z, 0)
                    hs.append(h)
            shifted = z - z.max(axis=1, keepdims=True)
            p = xp.exp(shifted)
            total = p.sum(axis=1, keepdims=True)
            loss = (xp.log(total[:, 0]) - shifted[rows, y]).mean()
            loss += devices.sum_of_squares(xp, weights, lam / 2)
            p /= total
            p[rows, y] -= 1
            dz = p
            dz /= n  # d mean(cross-entropy) / d logits
            for i in range(len(weights) - 1, -1, -1):
                w = weights[i]
                grad_w = devices.matmul(xp, dz.T, hs[i])
                if i:
                    dz = devices.matmul(xp, dz, w)
                    dz *= hs[i] > 0
                grad_w += lam * w  # the L2 term's gradient
                w -= lr * grad_w
        return loss
    return step
