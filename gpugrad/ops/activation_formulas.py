"""The activations' formulas on arrays: the CPU path, the reference the strict test device
computes in place of the kernels, and the math activations.cuh writes in CUDA. Each is guarded
as the kernel is (no overflow, no inf * 0); ops/activation.py declares the activations on them.
A 16-bit input is computed in float32 and rounded once (devices.carried, in the caller)."""

import math

from gpugrad import devices

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
GELU_C = 0.044715


def sigmoid(xp, x):
    e = xp.exp(-xp.abs(x))  # never overflows
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def gelu(xp, x, approximate):
    if approximate == "tanh":
        s = 1 + xp.tanh(SQRT_2_OVER_PI * (x + GELU_C * x * x * x))
        return xp.where(s == 0, 0.0, 0.5 * x * s)  # -inf * 0 would be NaN; the limit is 0
    cdf = 0.5 * (1 + devices.erf(x * INV_SQRT_2))
    return xp.where(cdf == 0, 0.0, x * cdf)


def gelu_backward(xp, g, x, approximate):
    if approximate == "tanh":
        t = xp.tanh(SQRT_2_OVER_PI * (x + GELU_C * x * x * x))
        sech2 = 1 - t * t
        du = SQRT_2_OVER_PI * (1 + 3 * GELU_C * x * x)
        return g * (0.5 * (1 + t) + xp.where(sech2 == 0, 0.0, 0.5 * x * sech2 * du))
    cdf = 0.5 * (1 + devices.erf(x * INV_SQRT_2))
    pdf = INV_SQRT_2PI * xp.exp(-0.5 * x * x)
    return g * (cdf + xp.where(pdf == 0, 0.0, x * pdf))


def silu(xp, x):
    s = sigmoid(xp, x)
    return xp.where(s == 0, 0.0, x * s)


def silu_backward(xp, g, x):
    s = sigmoid(xp, x)
    p = s * (1 - s)
    return g * (s + xp.where(p == 0, 0.0, x * p))


def softplus(xp, x, beta, threshold):
    bx = x * beta
    return xp.where(bx > threshold, x, (xp.maximum(bx, 0) + xp.log1p(xp.exp(-xp.abs(bx)))) / beta)


def softplus_backward(xp, g, x, beta, threshold):
    # the branch is the forward's, beta * x > threshold: the output cannot tell it (just
    # above the threshold both branches give outputs above it)
    bx = x * beta
    return xp.where(bx > threshold, g, g * sigmoid(xp, bx))


def softsign(xp, x):
    a = xp.abs(x)
    # above 1 as 1 - 1/(1 + a), so that inf gives 1; below, a / (1 + a) of min(a, 1) never
    # sees inf / inf
    small = xp.minimum(a, 1)
    r = xp.where(a > 1, 1 - 1 / (1 + a), small / (1 + small))
    return xp.where(x < 0, -r, r)


def hardswish(xp, x):
    # x * clip(x + 3, 0, 6) / 6 on x clipped to [-3, 3], x itself above: -inf gives its
    # limit 0 (not -inf * 0) and no product overflows
    c = xp.clip(x, -3, 3)
    return xp.where(x >= 3, x, c * (c + 3) / 6)
