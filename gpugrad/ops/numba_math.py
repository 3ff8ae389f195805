"""float32 exp, expm1, log1p, tanh and the normal cdf, written so that LLVM vectorizes the
loops that call them (numba's libm calls do not vectorize: expf, tanhf and erff cost 2-13 ns
an element where these cost well under 1). Only numba_kernels.py imports this module, and
only where numba is installed.

Every function is float32 in, float32 out, with float32 constants (a float64 constant would
turn the arithmetic into float64), and keeps the special values: NaN stays NaN, +-inf give
their limits, tiny results come out as denormals rather than 0.
"""

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

f32 = np.float32
ZERO, ONE, HALF, TWO, INF = f32(0), f32(1), f32(0.5), f32(2), f32(np.inf)

# inlined into the kernels; "numpy": a division by 0 gives inf, as NumPy's, with no check that
# would stop the loop from vectorizing
inlined = njit(inline="always", cache=True, error_model="numpy")


@intrinsic
def _float_of_bits(typingctx, bits):
    """The float32 whose bits are the int32 `bits`."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


# Cephes' expf: e^x = 2^n e^r with n = round(x / ln 2), |r| <= ln(2) / 2, ln 2 in two parts
# (Cody-Waite) so that r is exact, e^r by a degree-5 polynomial
_LOG2E = f32(1.44269504088896341)
_LN2_HI, _LN2_LO = f32(0.693359375), f32(-2.12194440e-4)
_ROUNDER = f32(12582912.0)  # 1.5 * 2^23: adding and subtracting it rounds to an integer
_EXP_MAX, _EXP_MIN = f32(88.72283), f32(-104.0)  # e^x is inf above, 0 below (in float32)
_EXP_P = tuple(f32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                                4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))


@inlined
def _power_of_2(n):
    """2^n for an int32 n in [-127, 128] as a float32 built from its exponent bits."""
    return _float_of_bits((n + np.int32(127)) << np.int32(23))


@inlined
def exp(x):
    xc = x if x < _EXP_MAX else _EXP_MAX  # NaN becomes a number here and is put back last
    xc = xc if xc > _EXP_MIN else _EXP_MIN
    n = (xc * _LOG2E + _ROUNDER) - _ROUNDER
    r = xc - n * _LN2_HI
    r = r - n * _LN2_LO
    p0, p1, p2, p3, p4, p5 = _EXP_P
    p = (((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5) * (r * r) + r + ONE
    k = np.int32(n)
    half = k >> np.int32(1)  # 2^n as two factors: n down to -150 gives denormals, not 0
    p = p * _power_of_2(half) * _power_of_2(k - half)
    p = INF if x > _EXP_MAX else p
    p = ZERO if x < _EXP_MIN else p
    return p if x == x else x


_EXPM1_TAYLOR = tuple(f32(1 / math.factorial(k)) for k in range(3, 9))


@inlined
def expm1(x):
    """e^x - 1: its Taylor series to x^8 for |x| < 1/2 (relative error < 2e-8), e^x - 1
    beyond, where the subtraction loses nothing that matters."""
    c3, c4, c5, c6, c7, c8 = _EXPM1_TAYLOR
    small = x * (ONE + x * (HALF + x * (c3 + x * (c4 + x * (c5 + x * (c6 + x * (c7 + x * c8)))))))
    return small if abs(x) < HALF else exp(x) - ONE


_ATANH_SERIES = tuple(f32(1 / k) for k in (3, 5, 7, 9, 11, 13))


@inlined
def log1p_of_unit(u):
    """log(1 + u) for u in [0, 1]: 2 atanh(s) with s = u / (2 + u) <= 1/3, its series to s^13."""
    s = u / (TWO + u)
    s2 = s * s
    c3, c5, c7, c9, c11, c13 = _ATANH_SERIES
    return TWO * s * (ONE + s2 * (c3 + s2 * (c5 + s2 * (c7 + s2 * (c9 + s2 * (c11 + s2 * c13))))))


_TANH_P = tuple(f32(c) for c in (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2,
                                 1.33314422036e-1, -3.33332819422e-1))
_TANH_SMALL = f32(0.625)


@inlined
def tanh(x):
    """Cephes' tanhf: an odd polynomial below |x| = 0.625, 1 - 2 / (e^(2|x|) + 1) above (which
    gives +-1 at +-inf; NaN takes the second branch and stays NaN)."""
    a = abs(x)
    z = x * x
    t0, t1, t2, t3, t4 = _TANH_P
    small = ((((t0 * z + t1) * z + t2) * z + t3) * z + t4) * z * x + x
    big = ONE - TWO / (exp(a + a) + ONE)
    big = big if x >= ZERO else -big
    return small if a < _TANH_SMALL else big


# erfc(z) = t P(t) e^(-z^2) with t = 1 / (1 + 0.3 z): P of degree 8 fitted to a relative error
# of 2e-8 on z in [0, 10] (bench/results/2026-12-07-cpu-compile-activations), so that gelu's
# backward shares e^(-x^2 / 2) between the cdf and the pdf
_ERFC_T = f32(0.3 / math.sqrt(2.0))  # 0.3 z for z = |x| / sqrt(2)
_ERFC_P = tuple(f32(c) for c in (
    0.16918674940450681, 0.17073462690193464, 0.1482126292384681, 0.21538181458954164,
    -0.09564370844873565, 0.5490627575518706, -0.5133807731110337, 0.4860670527432072,
    -0.12962116819272887))


@inlined
def normal_cdf_and_gauss(x):
    """(Phi(x), e^(-x^2 / 2)): the normal cdf from the tail erfc(|x| / sqrt 2) / 2, accurate
    relative to itself far out in either tail (no 1 + erf cancellation)."""
    e = exp(-HALF * x * x)
    t = ONE / (ONE + _ERFC_T * abs(x))
    c0, c1, c2, c3, c4, c5, c6, c7, c8 = _ERFC_P
    p = c0 + t * (c1 + t * (c2 + t * (c3 + t * (c4 + t * (c5 + t * (c6 + t * (c7 + t * c8)))))))
    tail = HALF * t * p * e
    return (tail if x < ZERO else ONE - tail), e
