"""Activations, softmax and log_softmax. Each saves what is cheapest (DESIGN.md)."""

import math

from gpugrad import backend
from gpugrad.ops import elementwise as ew
from gpugrad.ops import reduce
from gpugrad.ops.registry import defelementwise, defop

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_C = 0.044715


def _sigmoid(xp, x):
    e = xp.exp(-xp.abs(x))  # never overflows
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _leaky_relu(xp, x, *, negative_slope=0.01):
    return xp.where(x > 0, x, x * negative_slope)


def _leaky_relu_grad(g, x, y, negative_slope):
    # with slope >= 0, y > 0 exactly where x > 0, so the output is enough
    s = y if negative_slope >= 0 else x
    return ew.where(s > 0, g, g * negative_slope)


def _elu(xp, x, *, alpha=1.0):
    return xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0)))


def _elu_grad(g, x, y, alpha):
    if alpha >= 0:  # d/dx = 1 for x > 0, alpha * exp(x) = y + alpha otherwise
        return ew.where(y > 0, g, g * (y + alpha))
    return ew.where(x > 0, g, g * alpha * ew.exp(x))


def _gelu(xp, x, *, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + xp.tanh(_SQRT_2_OVER_PI * (x + _GELU_C * x * x * x)))
    if approximate != "none":
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return 0.5 * x * (1 + backend.erf(x * _INV_SQRT_2))


def _gelu_grad(g, x, y, approximate):
    if approximate == "tanh":
        th = ew.tanh(_SQRT_2_OVER_PI * (x + _GELU_C * x * x * x))
        du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_C * x * x)
        return g * (0.5 * (1 + th) + 0.5 * x * (1 - th * th) * du)
    cdf = 0.5 * (1 + ew.erf(x * _INV_SQRT_2))
    pdf = _INV_SQRT_2PI * ew.exp(-0.5 * (x * x))
    return g * (cdf + x * pdf)


def _softplus(xp, x, *, beta=1.0, threshold=20.0):
    if beta <= 0:
        raise ValueError(f"softplus: beta must be positive, got {beta}")
    bx = x * beta
    # logaddexp(0, bx) = log(1 + exp(bx)) without overflow; linear above the threshold as in PyTorch
    return xp.where(bx > threshold, x, xp.logaddexp(0, bx) / beta)


def _softplus_grad(g, x, y, beta, threshold):
    # sigmoid(beta x) = 1 - exp(-beta y), in expm1 form to keep precision where y is tiny
    return ew.where(y * beta > threshold, g, -g * ew.expm1(-beta * y))


def _softmax(xp, x, *, axis=-1):
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(xp, x, *, axis=-1):
    return x - reduce.logsumexp_array(xp, x, axis, True)


# fmt: off
sigmoid    = defelementwise("sigmoid",    _sigmoid,   save="y", partials=(lambda g, x, y: g * y * (1 - y),))
relu       = defelementwise("relu",       lambda xp, x: xp.maximum(x, 0), save="y",
                            partials=(lambda g, x, y: ew.where(y > 0, g, 0.0),))
leaky_relu = defelementwise("leaky_relu", _leaky_relu,
                            save=lambda p: "y" if p["negative_slope"] >= 0 else "x",
                            partials=(_leaky_relu_grad,))
elu        = defelementwise("elu",        _elu,       save=lambda p: "y" if p["alpha"] >= 0 else "x",
                            partials=(_elu_grad,))
gelu       = defelementwise("gelu",       _gelu,      save="x", partials=(_gelu_grad,))
silu       = defelementwise("silu",       lambda xp, x: x * _sigmoid(xp, x), save="x",
                            partials=(lambda g, x, y: g * sigmoid(x) * (1 + x * (1 - sigmoid(x))),))
softplus   = defelementwise("softplus",   _softplus,  save="y", partials=(_softplus_grad,))

softmax     = defop("softmax",     _softmax,     save="y",
                    vjp=(lambda g, x, y, axis: y * (g - reduce.sum(g * y, axis=axis, keepdims=True)),),
                    jvp=lambda ts, x, y, axis: y * (ts[0] - reduce.sum(ts[0] * y, axis=axis, keepdims=True)))
log_softmax = defop("log_softmax", _log_softmax, save="y",
                    vjp=(lambda g, x, y, axis: g - ew.exp(y) * reduce.sum(g, axis=axis, keepdims=True),),
                    jvp=lambda ts, x, y, axis: ts[0] - reduce.sum(ew.exp(y) * ts[0], axis=axis, keepdims=True))
# fmt: on
