"""Activations, their backward passes as ops of their own, softmax and log_softmax.

Each activation's forward and backward ask backend.fused() for the CUDA kernel (kernels/
activations.cu) and fall back to the xp composition below, which computes the same guarded
formulas (activations.cuh) and saves the same things: relu and leaky_relu a 1-bit mask, sigmoid,
tanh, elu and softplus their output, gelu and silu their input. The backward of each activation
is itself an op with rules (Chainer's ReLUGrad2 pattern), so create_graph=True differentiates
through the fused path too.
"""

import math

import numpy as np

from gpugrad import backend
from gpugrad.ops import elementwise as ew
from gpugrad.ops import reduce
from gpugrad.ops.registry import defelementwise, defop, jvp_of_two, no_gradient

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_C = 0.044715


def _check_approximate(approximate):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return "gelu" if approximate == "none" else "gelu_tanh"


# ---------------------------------------------------------------------------- array formulas
# The xp compositions: the CPU path, and the reference the fused kernels are tested against.


def _sigmoid_array(xp, x):
    e = xp.exp(-xp.abs(x))  # never overflows
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _gelu_array(xp, x, approximate):
    if approximate == "tanh":
        s = 1 + xp.tanh(_SQRT_2_OVER_PI * (x + _GELU_C * x * x * x))
        return xp.where(s == 0, 0.0, 0.5 * x * s)  # -inf * 0 would be NaN; the limit is 0
    cdf = 0.5 * (1 + backend.erf(x * _INV_SQRT_2))
    return xp.where(cdf == 0, 0.0, x * cdf)


def _gelu_bwd_array(xp, g, x, approximate):
    if approximate == "tanh":
        t = xp.tanh(_SQRT_2_OVER_PI * (x + _GELU_C * x * x * x))
        sech2 = 1 - t * t
        du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_C * x * x)
        return g * (0.5 * (1 + t) + xp.where(sech2 == 0, 0.0, 0.5 * x * sech2 * du))
    cdf = 0.5 * (1 + backend.erf(x * _INV_SQRT_2))
    pdf = _INV_SQRT_2PI * xp.exp(-0.5 * x * x)
    return g * (cdf + xp.where(pdf == 0, 0.0, x * pdf))


def _silu_array(xp, x):
    s = _sigmoid_array(xp, x)
    return xp.where(s == 0, 0.0, x * s)


def _silu_bwd_array(xp, g, x):
    s = _sigmoid_array(xp, x)
    p = s * (1 - s)
    return g * (s + xp.where(p == 0, 0.0, x * p))


def _softplus_array(xp, x, beta, threshold):
    bx = x * beta
    return xp.where(bx > threshold, x, (xp.maximum(bx, 0) + xp.log1p(xp.exp(-xp.abs(bx)))) / beta)


# ---------------------------------------------------------------------------- forwards


def _relu(xp, x):
    k = backend.fused("relu_fwd", xp, x)
    return k(x) if k else xp.maximum(x, 0)  # NaN stays NaN, as in the kernel


def relu_mask(xp, x):
    """Where relu's gradient passes: !(x <= 0), so NaN passes it on, as PyTorch's relu does."""
    return ~(x <= 0)


def leaky_relu_mask(xp, x):
    """Where leaky_relu's gradient is 1, not the slope: x > 0, so NaN takes the slope, as
    PyTorch's leaky_relu does."""
    return x > 0


def _relu_saving(xp, x):
    k = backend.fused("relu_fwd_mask", xp, x)
    if k:
        y, mask = k(x)
        return y, {"mask": mask}
    return _relu(xp, x), {"mask": backend.pack_mask(xp, relu_mask(xp, x))}


def _leaky_relu(xp, x, *, negative_slope=0.01):
    k = backend.fused("leaky_relu_fwd", xp, x)
    if k:
        return k(x, negative_slope)
    if 0 <= negative_slope <= 1:  # the same values; where() over a random mask is ~10x slower
        return xp.maximum(x, x * negative_slope)
    return xp.where(x > 0, x, x * negative_slope)


def _leaky_relu_saving(xp, x, *, negative_slope=0.01):
    k = backend.fused("relu_fwd_mask", xp, x)
    if k and negative_slope != 0:
        y, mask = k(x, negative_slope)
        return y, {"mask": mask}
    mask = leaky_relu_mask(xp, x) if negative_slope != 0 else relu_mask(xp, x)
    return _leaky_relu(xp, x, negative_slope=negative_slope), {"mask": backend.pack_mask(xp, mask)}


def _elu(xp, x, *, alpha=1.0):
    k = backend.fused("elu_fwd", xp, x)
    return k(x, alpha) if k else xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0)))


def _gelu(xp, x, *, approximate="none"):
    k = backend.fused(_check_approximate(approximate) + "_fwd", xp, x)
    return k(x) if k else _gelu_array(xp, x, approximate)


def _silu(xp, x):
    k = backend.fused("silu_fwd", xp, x)
    return k(x) if k else _silu_array(xp, x)


def _softplus(xp, x, *, beta=1.0, threshold=20.0):
    if beta <= 0:
        raise ValueError(f"softplus: beta must be positive, got {beta}")
    k = backend.fused("softplus_fwd", xp, x)
    return k(x, beta, threshold) if k else _softplus_array(xp, x, beta, threshold)


def _sigmoid(xp, x):
    k = backend.fused("sigmoid_fwd", xp, x)
    return k(x) if k else _sigmoid_array(xp, x)


def _tanh(xp, x):
    k = backend.fused("tanh_fwd", xp, x)
    return k(x) if k else xp.tanh(x)


# ---------------------------------------------------------------------------- backwards as ops


def _relu_backward(xp, g, mask, *, negative_slope=0.0):
    if mask.ndim != 1 or mask.dtype != np.uint32 or mask.size * 32 < g.size:
        raise ValueError(f"relu_backward: the mask must be packed uint32 words for {g.size} "
                         f"elements ({(g.size + 31) // 32} words), got {mask.dtype} of shape "
                         f"{mask.shape}")
    k = backend.fused("relu_bwd_mask", xp, g)
    if k:
        return k(g, mask, negative_slope)
    bits = backend.unpack_mask(xp, mask, g.shape)
    if negative_slope:  # multiplying is ~8x faster than where() on a random mask
        scale = bits.astype(g.dtype)
        scale *= 1 - negative_slope
        scale += negative_slope
        return g * scale
    # g where the bit is set and +0 elsewhere, even where g is inf or NaN (a product would give
    # NaN there): all-ones or all-zeros words and-ed with g's bits, with no host-side check
    word = np.dtype(f"uint{8 * g.dtype.itemsize}")
    keep = bits.view(xp.uint8).astype(word)
    xp.negative(keep, out=keep)
    xp.bitwise_and(keep, g.view(word), out=keep)
    return keep.view(g.dtype)


def _elu_backward(xp, g, out, *, alpha):
    k = backend.fused("elu_bwd", xp, g, out)
    return k(g, out, alpha) if k else xp.where(out <= 0, g * (out + alpha), g)  # NaN: g


def _gelu_backward(xp, g, x, *, approximate="none"):
    k = backend.fused(_check_approximate(approximate) + "_bwd", xp, g, x)
    return k(g, x) if k else _gelu_bwd_array(xp, g, x, approximate)


def _silu_backward(xp, g, x):
    k = backend.fused("silu_bwd", xp, g, x)
    return k(g, x) if k else _silu_bwd_array(xp, g, x)


def _softplus_backward(xp, g, out, *, beta, threshold):
    k = backend.fused("softplus_bwd", xp, g, out)
    return k(g, out, beta, threshold) if k else xp.where(out * beta > threshold, g, -g * xp.expm1(-beta * out))


def _sigmoid_backward(xp, g, out):
    k = backend.fused("sigmoid_bwd", xp, g, out)
    return k(g, out) if k else g * out * (1 - out)


def _tanh_backward(xp, g, out):
    k = backend.fused("tanh_bwd", xp, g, out)
    return k(g, out) if k else g * (1 - out * out)


def _gelu_second(x, approximate):
    """d^2 gelu / dx^2, in Tensor ops (the rule of gelu_backward with respect to x)."""
    if approximate == "tanh":
        t = tanh(_SQRT_2_OVER_PI * (x + _GELU_C * x * x * x))
        du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_C * x * x)
        d2u = 6 * _SQRT_2_OVER_PI * _GELU_C * x
        return (1 - t * t) * (du - x * t * du * du + 0.5 * x * d2u)
    return _INV_SQRT_2PI * ew.exp(-0.5 * (x * x)) * (2 - x * x)


def _silu_second(x):
    s = sigmoid(x)
    return s * (1 - s) * (2 + x * (1 - 2 * s))


def _elu_grad(g, x, y, alpha):
    if alpha >= 0:
        return elu_backward(g, y, alpha=alpha)
    return ew.where(x <= 0, g * alpha * ew.exp(x), g)  # a negative alpha needs x, not y


def _softmax(xp, x, *, axis=-1):
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(xp, x, *, axis=-1):
    shifted, _, log_sum = reduce.shifted_log_sum_exp(xp, x, axis)
    return shifted - log_sum


# fmt: off
relu       = defelementwise("relu",       _relu,       save="mask", aux=("mask",), forward_saving=_relu_saving,
                            partials=(lambda g, x, y, mask: relu_backward(g, mask),))
leaky_relu = defelementwise("leaky_relu", _leaky_relu, save="mask", aux=("mask",), forward_saving=_leaky_relu_saving,
                            partials=(lambda g, x, y, mask, negative_slope: relu_backward(g, mask, negative_slope=negative_slope),))
elu        = defelementwise("elu",        _elu,        save=lambda p: "y" if p["alpha"] >= 0 else "x",
                            partials=(_elu_grad,))
gelu       = defelementwise("gelu",       _gelu,       save="x",
                            partials=(lambda g, x, y, approximate: gelu_backward(g, x, approximate=approximate),))
silu       = defelementwise("silu",       _silu,       save="x", partials=(lambda g, x, y: silu_backward(g, x),))
softplus   = defelementwise("softplus",   _softplus,   save="y",
                            partials=(lambda g, x, y, beta, threshold: softplus_backward(g, y, beta=beta, threshold=threshold),))
sigmoid    = defelementwise("sigmoid",    _sigmoid,    save="y", partials=(lambda g, x, y: sigmoid_backward(g, y),))
tanh       = defelementwise("tanh",       _tanh,       save="y", partials=(lambda g, x, y: tanh_backward(g, y),))

# The backward passes: linear in g; with respect to the saved array, the next derivative.
relu_backward     = defop("relu_backward",     _relu_backward,     save="mask",
                          vjp=(lambda h, g, mask, y, negative_slope: relu_backward(h, mask, negative_slope=negative_slope), no_gradient),
                          jvp=lambda ts, g, mask, y, negative_slope: relu_backward(ts[0], mask, negative_slope=negative_slope))
elu_backward      = defop("elu_backward",      _elu_backward,      save={"g": "out", "out": "g out"},
                          vjp=(lambda h, g, y_, y, alpha: elu_backward(h, y_, alpha=alpha),
                               lambda h, g, y_, y, alpha: ew.where(y_ > 0, 0.0, h * g)),
                          jvp=lambda ts, g, y_, y, alpha: jvp_of_two(ts, lambda t: elu_backward(t, y_, alpha=alpha),
                                                                       lambda t: ew.where(y_ > 0, 0.0, t * g)))
gelu_backward     = defop("gelu_backward",     _gelu_backward,     save={"g": "x", "x": "g x"},
                          vjp=(lambda h, g, x, y, approximate: gelu_backward(h, x, approximate=approximate),
                               lambda h, g, x, y, approximate: h * g * _gelu_second(x, approximate)),
                          jvp=lambda ts, g, x, y, approximate: jvp_of_two(ts, lambda t: gelu_backward(t, x, approximate=approximate),
                                                                            lambda t: t * g * _gelu_second(x, approximate)))
silu_backward     = defop("silu_backward",     _silu_backward,     save={"g": "x", "x": "g x"},
                          vjp=(lambda h, g, x, y: silu_backward(h, x), lambda h, g, x, y: h * g * _silu_second(x)),
                          jvp=lambda ts, g, x, y: jvp_of_two(ts, lambda t: silu_backward(t, x), lambda t: t * g * _silu_second(x)))
softplus_backward = defop("softplus_backward", _softplus_backward, save={"g": "out", "out": "g out"},
                          vjp=(lambda h, g, y_, y, beta, threshold: softplus_backward(h, y_, beta=beta, threshold=threshold),
                               lambda h, g, y_, y, beta, threshold: ew.where(y_ * beta > threshold, 0.0, h * g * beta * ew.exp(-beta * y_))),
                          jvp=lambda ts, g, y_, y, beta, threshold: jvp_of_two(
                              ts, lambda t: softplus_backward(t, y_, beta=beta, threshold=threshold),
                              lambda t: ew.where(y_ * beta > threshold, 0.0, t * g * beta * ew.exp(-beta * y_))))
sigmoid_backward  = defop("sigmoid_backward",  _sigmoid_backward,  save={"g": "out", "out": "g out"},
                          vjp=(lambda h, g, y_, y: sigmoid_backward(h, y_), lambda h, g, y_, y: h * g * (1 - 2 * y_)),
                          jvp=lambda ts, g, y_, y: jvp_of_two(ts, lambda t: sigmoid_backward(t, y_), lambda t: t * g * (1 - 2 * y_)))
tanh_backward     = defop("tanh_backward",     _tanh_backward,     save={"g": "out", "out": "g out"},
                          vjp=(lambda h, g, y_, y: tanh_backward(h, y_), lambda h, g, y_, y: -2 * h * g * y_),
                          jvp=lambda ts, g, y_, y: jvp_of_two(ts, lambda t: tanh_backward(t, y_), lambda t: -2 * t * g * y_))

softmax     = defop("softmax",     _softmax,     save="y",
                    vjp=(lambda g, x, y, axis: y * (g - reduce.sum(g * y, axis=axis, keepdims=True)),),
                    jvp=lambda ts, x, y, axis: y * (ts[0] - reduce.sum(ts[0] * y, axis=axis, keepdims=True)))
log_softmax = defop("log_softmax", _log_softmax, save="y",
                    vjp=(lambda g, x, y, axis: g - ew.exp(y) * reduce.sum(g, axis=axis, keepdims=True),),
                    jvp=lambda ts, x, y, axis: ts[0] - reduce.sum(ew.exp(y) * ts[0], axis=axis, keepdims=True))
# fmt: on
