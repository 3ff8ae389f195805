"""The activations' CPU kernels in numba, float32: activations.cuh's math element by element
(the same branches, guards and special values as the CUDA kernels), in loops that LLVM
vectorizes, on float32 math of our own (numba_math.py). activation_numba.py chooses and calls
them; only it imports this module, and only where numba is installed.

Each loop takes flat C-contiguous float32 arrays, its outputs first, and writes them in
place: forward (y, x, p0, p1), backward (dx, g, saved, p0, p1), p0 and p1 the activation's
numeric parameters as float32 (a float64 scalar would turn the arithmetic into float64). Compiled on first use and
cached on disk (cache=True) beside this module or under NUMBA_CACHE_DIR.
"""

import numpy as np
from numba import njit

from gpugrad.ops.numba_math import (
    HALF, ONE, ZERO, exp, expm1, f32, inlined, log1p_of_unit, normal_cdf_and_gauss, tanh,
)

# fastmath "contract" only: a * b + c fused into one FMA (20-35% faster, within an ulp);
# no other fast-math liberty, so NaN, inf and signed zeros behave as written
loop = njit(cache=True, error_model="numpy", fastmath={"contract"}, nogil=True)

THREE, SIX = f32(3), f32(6)
INV_SQRT_2PI = f32(0.39894228040143267794)
SQRT_2_OVER_PI = f32(0.79788456080286535588)
GELU_C, GELU_3C = f32(0.044715), f32(3 * 0.044715)


# ---------------------------------------------------------------------------- elements


@inlined
def _sigmoid(x):
    e = exp(-abs(x))  # of a non-positive number only: no overflow
    return (ONE if x >= ZERO else e) / (ONE + e)


@inlined
def _tanh_inner(x):
    return tanh(SQRT_2_OVER_PI * (x + GELU_C * x * x * x))


@inlined
def _gelu_bwd(g, x):
    cdf, gauss = normal_cdf_and_gauss(x)
    pdf = INV_SQRT_2PI * gauss
    return g * (cdf + (ZERO if pdf == ZERO else x * pdf))


@inlined
def _gelu_tanh_bwd(g, x):
    t = _tanh_inner(x)
    sech2 = ONE - t * t
    du = SQRT_2_OVER_PI * (ONE + GELU_3C * x * x)
    return g * (HALF * (ONE + t) + (ZERO if sech2 == ZERO else HALF * x * sech2 * du))


@inlined
def _silu_bwd(g, x):
    s = _sigmoid(x)
    p = s * (ONE - s)
    return g * (s + (ZERO if p == ZERO else x * p))


@inlined
def _softplus(x, beta, threshold):
    bx = beta * x
    if bx > threshold:
        return x
    # log1p(e^-|bx|), e^-|bx| in [0, 1]; NaN goes through as NaN
    return ((bx if bx > ZERO else ZERO) + log1p_of_unit(exp(-abs(bx)))) / beta


@inlined
def _softsign(x):
    a = abs(x)
    r = ONE - ONE / (ONE + a) if a > ONE else a / (ONE + a)  # +-inf gives +-1, not inf / inf
    return -r if x < ZERO else r


@inlined
def _hardswish(x):
    c = -THREE if x < -THREE else (THREE if x > THREE else x)
    return x if x >= THREE else c * (c + THREE) / SIX


@inlined
def _hardswish_bwd(g, x):
    return ZERO if x <= -THREE else (g * (x / THREE + HALF) if x < THREE else g)


# ---------------------------------------------------------------------------- forward loops


@loop
def relu_fwd(y, x, p0, p1):
    for i in range(x.size):
        y[i] = ZERO if x[i] <= ZERO else x[i]  # -0 gives +0, as NumPy's maximum(x, 0)


@loop
def leaky_relu_fwd(y, x, p0, p1):
    for i in range(x.size):
        y[i] = x[i] if x[i] > ZERO else x[i] * p0


@loop
def elu_fwd(y, x, p0, p1):
    for i in range(x.size):
        y[i] = x[i] if x[i] > ZERO else p0 * expm1(x[i])


@loop
def gelu_fwd(y, x, p0, p1):
    for i in range(x.size):
        cdf = normal_cdf_and_gauss(x[i])[0]
        y[i] = ZERO if cdf == ZERO else x[i] * cdf


@loop
def gelu_tanh_fwd(y, x, p0, p1):
    for i in range(x.size):
        s = ONE + _tanh_inner(x[i])
        y[i] = ZERO if s == ZERO else HALF * x[i] * s


@loop
def silu_fwd(y, x, p0, p1):
    for i in range(x.size):
        s = _sigmoid(x[i])
        y[i] = ZERO if s == ZERO else x[i] * s


@loop
def softplus_fwd(y, x, p0, p1):
    for i in range(x.size):
        y[i] = _softplus(x[i], p0, p1)


@loop
def sigmoid_fwd(y, x, p0, p1):
    for i in range(x.size):
        y[i] = _sigmoid(x[i])


# no tanh_fwd: NumPy's own tanh is a faster SIMD loop at every size, so tanh's forward keeps it


@loop
def softsign_fwd(y, x, p0, p1):
    for i in range(x.size):
        y[i] = _softsign(x[i])


@loop
def hardswish_fwd(y, x, p0, p1):
    for i in range(x.size):
        y[i] = _hardswish(x[i])


# ---------------------------------------------------------------------------- backward loops


@loop
def elu_bwd(dx, g, y, p0, p1):
    for i in range(g.size):
        dx[i] = g[i] * (y[i] + p0) if y[i] <= ZERO else g[i]  # a NaN y passes g on


@loop
def gelu_bwd(dx, g, x, p0, p1):
    for i in range(g.size):
        dx[i] = _gelu_bwd(g[i], x[i])


@loop
def gelu_tanh_bwd(dx, g, x, p0, p1):
    for i in range(g.size):
        dx[i] = _gelu_tanh_bwd(g[i], x[i])


@loop
def silu_bwd(dx, g, x, p0, p1):
    for i in range(g.size):
        dx[i] = _silu_bwd(g[i], x[i])


@loop
def softplus_bwd(dx, g, x, p0, p1):
    for i in range(g.size):
        bx = p0 * x[i]
        dx[i] = g[i] if bx > p1 else g[i] * _sigmoid(bx)


@loop
def sigmoid_bwd(dx, g, y, p0, p1):
    for i in range(g.size):
        dx[i] = g[i] * y[i] * (ONE - y[i])


@loop
def tanh_bwd(dx, g, y, p0, p1):
    for i in range(g.size):
        dx[i] = g[i] * (ONE - y[i] * y[i])


@loop
def softsign_bwd(dx, g, x, p0, p1):
    for i in range(g.size):
        d = ONE + abs(x[i])
        dx[i] = g[i] / (d * d)


@loop
def hardswish_bwd(dx, g, x, p0, p1):
    for i in range(g.size):
        dx[i] = _hardswish_bwd(g[i], x[i])


# ---------------------------------------------------------------------------- relu's 1-bit mask
# bit i % 32 of word i // 32, as pack_mask and the CUDA kernels write it. A zero slope is relu:
# y = max(x, 0), bit !(x <= 0) (NaN passes g on); else leaky_relu: bit x > 0 (NaN takes the
# slope). Backward: g where the bit is set, else g * slope, or +0 for a zero slope (even for an
# infinite g).


@inlined
def _relu_bit(v, slope):
    return not (v <= ZERO) if slope == ZERO else v > ZERO


@loop
def relu_fwd_mask(y, words, x, slope):
    n = x.size
    for w in range(words.size):
        word = np.uint32(0)
        for j in range(min(32, n - 32 * w)):
            v = x[32 * w + j]
            if slope == ZERO:
                y[32 * w + j] = ZERO if v <= ZERO else v
            else:
                y[32 * w + j] = v if v > ZERO else v * slope
            word |= np.uint32(_relu_bit(v, slope)) << np.uint32(j)
        words[w] = word


@inlined
def _through_bit(g, bit, slope):
    return g if bit else (ZERO if slope == ZERO else g * slope)


@loop
def relu_bwd_mask(dx, g, words, slope):
    n = g.size
    for w in range((n + 31) // 32):  # word by word: the inner loop vectorizes
        word = words[w]
        for j in range(min(32, n - 32 * w)):
            bit = (word >> np.uint32(j)) & np.uint32(1)
            dx[32 * w + j] = _through_bit(g[32 * w + j], bit != 0, slope)


@loop
def relu_bwd_out(dx, g, y, slope, leaky):
    for i in range(g.size):
        bit = y[i] > ZERO if leaky else not (y[i] <= ZERO)
        dx[i] = _through_bit(g[i], bit, slope)
