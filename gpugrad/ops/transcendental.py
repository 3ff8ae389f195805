"""Elementwise functions of one input beyond the core arithmetic: reciprocals and roots,
logarithms and exponentials in other bases, hyperbolic, inverse trigonometric and inverse
hyperbolic functions, angle conversions. Each partial derivative is written in what its op
saves: the output where the derivative is a function of it, else the input."""

import math

from gpugrad.ops.registry import defelementwise

_LN2, _LN10 = math.log(2.0), math.log(10.0)
_DEG = math.pi / 180.0


def _unit_root(ops, x):
    """sqrt(1 - x^2), the derivative's denominator of arcsin and arccos."""
    return ops.sqrt(1 - x * x)


# fmt: off
reciprocal = defelementwise("reciprocal", lambda xp, x: xp.reciprocal(x), save="y",
                            partials=(lambda ops, g, x, y: -g * (y * y),))
rsqrt      = defelementwise("rsqrt",      lambda xp, x: 1 / xp.sqrt(x),   save="y",
                            partials=(lambda ops, g, x, y: (-0.5 * g) * (y * y * y),))
cbrt       = defelementwise("cbrt",       lambda xp, x: xp.cbrt(x),       save="y",
                            partials=(lambda ops, g, x, y: g / (3 * (y * y)),))
exp2       = defelementwise("exp2",       lambda xp, x: xp.exp2(x),       save="y",
                            partials=(lambda ops, g, x, y: (g * _LN2) * y,))
log2       = defelementwise("log2",       lambda xp, x: xp.log2(x),       save="x",
                            partials=(lambda ops, g, x, y: g / (x * _LN2),))
log10      = defelementwise("log10",      lambda xp, x: xp.log10(x),      save="x",
                            partials=(lambda ops, g, x, y: g / (x * _LN10),))
sinh       = defelementwise("sinh",       lambda xp, x: xp.sinh(x),       save="x",
                            partials=(lambda ops, g, x, y: g * ops.cosh(x),))
cosh       = defelementwise("cosh",       lambda xp, x: xp.cosh(x),       save="x",
                            partials=(lambda ops, g, x, y: g * ops.sinh(x),))
arcsin     = defelementwise("arcsin",     lambda xp, x: xp.arcsin(x),     save="x",
                            partials=(lambda ops, g, x, y: g / _unit_root(ops, x),))
arccos     = defelementwise("arccos",     lambda xp, x: xp.arccos(x),     save="x",
                            partials=(lambda ops, g, x, y: -g / _unit_root(ops, x),))
arctan     = defelementwise("arctan",     lambda xp, x: xp.arctan(x),     save="x",
                            partials=(lambda ops, g, x, y: g / (1 + x * x),))
arcsinh    = defelementwise("arcsinh",    lambda xp, x: xp.arcsinh(x),    save="x",
                            partials=(lambda ops, g, x, y: g / ops.sqrt(x * x + 1),))
# sqrt(x - 1) sqrt(x + 1), not sqrt(x^2 - 1): no cancellation near x = 1 (PyTorch's form too)
arccosh    = defelementwise("arccosh",    lambda xp, x: xp.arccosh(x),    save="x",
                            partials=(lambda ops, g, x, y: g / (ops.sqrt(x - 1) * ops.sqrt(x + 1)),))
arctanh    = defelementwise("arctanh",    lambda xp, x: xp.arctanh(x),    save="x",
                            partials=(lambda ops, g, x, y: g / (1 - x * x),))
deg2rad    = defelementwise("deg2rad",    lambda xp, x: xp.deg2rad(x),    save="",
                            partials=(lambda ops, g, x, y: g * _DEG,))
rad2deg    = defelementwise("rad2deg",    lambda xp, x: xp.rad2deg(x),    save="",
                            partials=(lambda ops, g, x, y: g * (1 / _DEG),))
# fmt: on
