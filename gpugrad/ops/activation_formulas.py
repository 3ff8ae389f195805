"""The activations' formulas on arrays: the CPU path, the reference the strict test device
computes in place of the kernels, and the math activations.cuh writes in CUDA. Each is guarded
as the kernel is (no overflow, no inf * 0); ops/activation.py declares the activations on them.
A 16-bit input is computed in float32 and rounded once (devices.carried, in the caller).

Written for NumPy's speed: one new array per formula where possible, the rest in place
(out=), and no where() on a data-dependent mask (about 4 ms at 2^20 elements, 40 times a plain
pass): branches become clamps (an x clamped to +-_FAR keeps x * 0 from being inf * 0 where the
other factor has underflowed to 0) and sums of terms of which one is 0."""

import math

import numpy as np

from gpugrad import devices
from gpugrad.devices.cuda.references import kept_where

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
GELU_C = 0.044715


# |x| beyond this gives sigmoid 0 or 1 (and its derivative 0) in float64 and every narrower dtype
_FAR = 800.0


def _new(a):
    """A new array to compute into in place: NumPy gives a scalar for a 0-d array's result."""
    return np.asarray(a) if isinstance(a, np.generic) else a


def sigmoid(xp, x):
    # 1 / (1 + e^-x): e^-x overflows to inf below about -88 (float32), giving 0 where the true
    # value is below the smallest normal float; elsewhere within 2 ulp of the two-branch form
    t = _new(xp.negative(x))
    xp.exp(t, out=t)
    t += 1
    return xp.divide(1, t, out=t)


def sigmoid_backward(xp, g, y):
    d = _new(xp.multiply(g, y))
    d *= xp.subtract(1, y)
    return d


def tanh_backward(xp, g, y):
    d = _new(xp.multiply(y, y))
    xp.subtract(1, d, out=d)
    return xp.multiply(g, d)


def elu(xp, x, alpha):
    # alpha * expm1(min(x, 0)) + max(x, 0): one of the two terms is 0 (NaN stays NaN)
    zero = xp.zeros_like(x)
    t = _new(xp.minimum(x, zero))
    xp.expm1(t, out=t)
    if alpha != 1:
        t *= alpha
    xp.maximum(x, zero, out=zero)
    t += zero
    return t


def elu_backward(xp, g, y, alpha):
    """g * (y + alpha) where y <= 0, else g (a NaN y passes g on, as PyTorch's): masks as
    factors, so each branch is exact (fmin keeps the masked-out term finite: inf * 0 is NaN)."""
    below = xp.less_equal(y, 0)
    d = _new(xp.fmin(y, xp.zeros_like(y)))  # y, or 0 where y > 0 or NaN
    d += alpha
    d *= below
    d += xp.logical_not(below)
    return xp.multiply(g, d)


def _tanh_inner(xp, x):
    """tanh(sqrt(2/pi) (x + c x^3)), the tanh approximation's, of an x clamped to +-_FAR."""
    t = _new(xp.multiply(x, GELU_C))  # in the kernel's order: c x x x
    t *= x
    t *= x
    t += x
    t *= SQRT_2_OVER_PI
    return xp.tanh(t, out=t)


def _cdf(xp, x):
    cdf = _new(devices.erf(x * INV_SQRT_2))
    cdf += 1
    cdf *= 0.5
    return cdf


def gelu(xp, x, approximate):
    xc = _clamped(xp, x)  # where the cdf is 0 (x -> -inf), x cdf is 0, not -inf * 0
    if approximate == "tanh":
        s = _tanh_inner(xp, xc)
        s += 1
        s *= xc
        s *= 0.5
        return xp.add(s, xp.maximum(xp.subtract(x, _FAR), 0), out=s)  # x itself beyond +_FAR
    cdf = _cdf(xp, x)
    cdf *= xc
    return xp.add(cdf, xp.maximum(xp.subtract(x, _FAR), 0), out=cdf)


def gelu_backward(xp, g, x, approximate):
    xc = _clamped(xp, x)  # where sech^2 or the pdf is 0, x times it is 0, not inf * 0
    if approximate == "tanh":
        t = _tanh_inner(xp, xc)
        sech2 = _new(xp.multiply(t, t))
        xp.subtract(1, sech2, out=sech2)
        du = _new(xp.multiply(xc, xc))
        du *= 3 * GELU_C
        du += 1
        du *= SQRT_2_OVER_PI
        half_x = _new(xp.multiply(xc, 0.5))
        half_x *= sech2
        du *= half_x  # 0.5 x sech^2 du/dx
        t += 1
        t *= 0.5
        t += du
        return xp.multiply(g, t)
    pdf = _new(xp.multiply(xc, xc))
    pdf *= -0.5
    xp.exp(pdf, out=pdf)
    pdf *= INV_SQRT_2PI
    pdf *= xc
    pdf += _cdf(xp, x)
    return xp.multiply(g, pdf)


def _clamped(xp, x):
    """x clamped to +-_FAR: where a factor beside it has underflowed to 0, x * 0 is 0, not
    inf * 0; NaN stays NaN."""
    return xp.clip(x, -_FAR, _FAR)


def silu(xp, x):
    s = sigmoid(xp, x)
    s *= xp.maximum(x, -_FAR)  # s == 0 only far below 0: clamped there, x s is 0, not -inf * 0
    return s


def silu_backward(xp, g, x):
    s = sigmoid(xp, x)
    p = _new(xp.subtract(1, s))
    p *= s
    p *= _clamped(xp, x)  # p == 0 only where |x| is large: x p is 0 there, not inf * 0
    p += s
    return xp.multiply(g, p)


def softplus(xp, x, beta, threshold):
    """log(1 + e^(beta x)) / beta, x itself where beta x > threshold (the branches as masks,
    each exact: the formula on beta x clamped to the threshold, x clamped from below so that
    x times a zero mask is 0)."""
    bx = _new(xp.multiply(x, beta))
    above = xp.greater(bx, threshold)
    xp.minimum(bx, threshold, out=bx)
    y = _new(xp.abs(bx))
    xp.negative(y, out=y)
    xp.exp(y, out=y)
    xp.log1p(y, out=y)
    y += xp.maximum(bx, 0, out=bx)
    y /= beta
    y *= xp.logical_not(above)
    y += xp.multiply(xp.maximum(x, min(0.0, threshold / beta)), above)
    return y


def softplus_backward(xp, g, x, beta, threshold):
    # the branch is the forward's, beta * x > threshold: the output cannot tell it (just
    # above the threshold both branches give outputs above it)
    bx = _new(xp.multiply(x, beta))
    above = xp.greater(bx, threshold)
    d = sigmoid(xp, xp.minimum(bx, threshold, out=bx))
    d *= xp.logical_not(above)
    d += above
    return xp.multiply(g, d)


def softsign(xp, x):
    # x / (1 + |x|) of x clamped to +-1e30 (the quotient is +-1 there in float32 and float64),
    # so that inf gives 1, not inf / inf
    xc = xp.clip(x, -1e30, 1e30)
    d = _new(xp.abs(xc))
    d += 1
    return xp.divide(xc, d, out=d)


def softsign_backward(xp, g, x):
    d = _new(xp.abs(x))
    d += 1
    d *= d
    return xp.divide(g, d)


def hardswish(xp, x):
    # c (c + 3) / 6 on c = x clipped to [-3, 3], plus max(x - 3, 0): -inf gives its limit 0 (not
    # -inf * 0), no product overflows, and from 3 on the sum is x (exact up to 6)
    c = xp.clip(x, -3, 3)
    y = _new(xp.add(c, 3))
    y *= c
    y /= 6
    above = _new(xp.subtract(x, 3))
    y += xp.maximum(above, 0, out=above)
    return y


def hardswish_backward(xp, g, x):
    """0 up to -3 (even for an infinite g, as the kernel and PyTorch), x / 3 + 1/2 strictly
    between, 1 from 3 on and for NaN: the middle as a mask on x clipped with fmin/fmax (NaN
    clipped to -3, so no NaN times 0)."""
    d = _new(xp.fmax(x, -3))
    xp.fmin(d, 3, out=d)
    d /= 3
    d += 0.5
    below_3 = xp.less(x, 3)
    dead = xp.less_equal(x, -3)
    d *= xp.logical_and(xp.logical_not(dead), below_3)
    d += xp.logical_not(below_3)
    dx = xp.multiply(g, d)  # g and x may broadcast against each other
    return kept_where(xp, dx, xp.broadcast_to(dead, dx.shape), False)
