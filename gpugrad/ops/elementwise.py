"""Elementwise arithmetic and transcendental ops; comparisons (no gradient)."""

import math


from gpugrad import devices
from gpugrad.ops import namespace
from gpugrad.ops.registry import defconstant, defelementwise


def _masked(ops, cond, g):
    """g where cond holds, else 0 (cond is a constant: no gradient flows through it)."""
    return ops.where(cond, g, 0.0)


def _extreme_partial(ops, g, wins, a, b):
    """maximum/minimum: g where this input wins, half of g on a tie, and all of g to both
    inputs where either is NaN (the output is NaN then; PyTorch routes it the same way)."""
    return (_masked(ops, wins, g) + _masked(ops, a == b, g * 0.5)
            + _masked(ops, _unordered(a, b), g))


def _unordered(a, b):
    """Where a and b do not compare (either is NaN)."""
    nan_a = a != a
    return nan_a if isinstance(b, (int, float)) else nan_a | (b != b)


def _power_grad_base(ops, g, a, b, y):
    """d(a ** b)/da = b * a ** (b - 1), which is 0 wherever b == 0 (PyTorch's too): at a == 0
    the formula would be 0 * inf. There the base is taken as 1, a constant, so that neither
    this gradient nor its own derivatives see the infinity."""
    if isinstance(b, (int, float)):
        return g * 0.0 if b == 0 else g * b * a ** (b - 1)
    if isinstance(a, (int, float)):
        return g * b * a ** (b - 1)
    return g * b * ops.where((a == 0) & (b == 0), 1.0, a) ** (b - 1)


def _log_base(ops, a):
    """log(a) for the exponent's gradient, with a == 0 giving 0 (the term is 0 there)."""
    if isinstance(a, (int, float)):
        return math.log(a) if a > 0 else (0.0 if a == 0 else math.nan)
    return ops.log(ops.where(a == 0, 1.0, a))


def _clip(xp, x, *, a_min=None, a_max=None):
    if a_min is None and a_max is None:
        return x.copy()
    return xp.clip(x, a_min, a_max).astype(x.dtype, copy=False)  # bfloat16 comes back float32


def _inside(x, lo, hi):
    inside = None
    if lo is not None:
        inside = x >= lo
    if hi is not None:
        inside = (x <= hi) if inside is None else inside & (x <= hi)
    return inside


def _lerp(xp, a, b, w):
    """a + w (b - a), from the nearer end (exact at w = 0 and w = 1, as PyTorch computes it)."""
    return xp.where(w < 0.5, a + w * (b - a), b - (b - a) * (1 - w))


def _where(xp, a, b, *, cond):
    return xp.where(cond, a, b)


# fmt: off
add      = defelementwise("add",      lambda xp, a, b: a + b,       save="",
                          partials=(lambda ops, g, a, b, y: g,       lambda ops, g, a, b, y: g))
subtract = defelementwise("subtract", lambda xp, a, b: a - b,       save="",
                          partials=(lambda ops, g, a, b, y: g,       lambda ops, g, a, b, y: -g))
multiply = defelementwise("multiply", lambda xp, a, b: a * b,       save={"a": "b", "b": "a"},
                          partials=(lambda ops, g, a, b, y: g * b,   lambda ops, g, a, b, y: g * a))
divide   = defelementwise("divide",   lambda xp, a, b: a / b,       save={"a": "b", "b": "a b"},
                          partials=(lambda ops, g, a, b, y: g / b,   lambda ops, g, a, b, y: -g * a / (b * b)))
power    = defelementwise("power",    lambda xp, a, b: a ** b,      save="a b",
                          partials=(_power_grad_base,
                                    lambda ops, g, a, b, y: g * a ** b * _log_base(ops, a)))
maximum  = defelementwise("maximum",  lambda xp, a, b: xp.maximum(a, b), save="a b",
                          partials=(lambda ops, g, a, b, y: _extreme_partial(ops, g, a > b, a, b),
                                    lambda ops, g, a, b, y: _extreme_partial(ops, g, b > a, a, b)))
minimum  = defelementwise("minimum",  lambda xp, a, b: xp.minimum(a, b), save="a b",
                          partials=(lambda ops, g, a, b, y: _extreme_partial(ops, g, a < b, a, b),
                                    lambda ops, g, a, b, y: _extreme_partial(ops, g, b < a, a, b)))
where_   = defelementwise("where",    _where,                       save="",
                          partials=(lambda ops, g, a, b, y, cond: _masked(ops, cond, g),
                                    lambda ops, g, a, b, y, cond: _masked(ops, ~cond, g)))

square   = defelementwise("square",   lambda xp, x: x * x,          save="x", partials=(lambda ops, g, x, y: (2 * g) * x,))
negative = defelementwise("negative", lambda xp, x: -x,             save="",  partials=(lambda ops, g, x, y: -g,))
exp      = defelementwise("exp",      lambda xp, x: xp.exp(x),      save="y", partials=(lambda ops, g, x, y: g * y,))
expm1    = defelementwise("expm1",    lambda xp, x: xp.expm1(x),    save="y", partials=(lambda ops, g, x, y: g * (y + 1),))
log      = defelementwise("log",      lambda xp, x: xp.log(x),      save="x", partials=(lambda ops, g, x, y: g / x,))
log1p    = defelementwise("log1p",    lambda xp, x: xp.log1p(x),    save="x", partials=(lambda ops, g, x, y: g / (x + 1),))
sqrt     = defelementwise("sqrt",     lambda xp, x: xp.sqrt(x),     save="y", partials=(lambda ops, g, x, y: g * 0.5 / y,))
abs      = defelementwise("abs",      lambda xp, x: xp.abs(x),      save="x", partials=(lambda ops, g, x, y: g * ops.sign(x),))
sin      = defelementwise("sin",      lambda xp, x: xp.sin(x),      save="x", partials=(lambda ops, g, x, y: g * ops.cos(x),))
cos      = defelementwise("cos",      lambda xp, x: xp.cos(x),      save="x", partials=(lambda ops, g, x, y: -g * ops.sin(x),))
tan      = defelementwise("tan",      lambda xp, x: xp.tan(x),      save="y", partials=(lambda ops, g, x, y: g * (1 + y * y),))
erf      = defelementwise("erf",      lambda xp, x: devices.erf(x), save="x",
                          partials=(lambda ops, g, x, y: g * (2 / math.sqrt(math.pi)) * ops.exp(-(x * x)),))
clip     = defelementwise("clip",     _clip,                        save="x",
                          partials=(lambda ops, g, x, y, a_min, a_max: g if a_min is None and a_max is None
                                    else _masked(ops, _inside(x, a_min, a_max), g),))
remainder = defelementwise("remainder", lambda xp, a, b: xp.remainder(a, b), save={"b": "a b"},
                           partials=(lambda ops, g, a, b, y: g,
                                     lambda ops, g, a, b, y: -g * ops.floor(a / b)))
fmod      = defelementwise("fmod",      lambda xp, a, b: xp.fmod(a, b),      save={"b": "a b"},
                           partials=(lambda ops, g, a, b, y: g,
                                     lambda ops, g, a, b, y: -g * ops.trunc(a / b)))
lerp      = defelementwise("lerp",      _lerp, save={"a": "w", "b": "w", "w": "a b"},
                           partials=(lambda ops, g, a, b, w, y: g * (1 - w),
                                     lambda ops, g, a, b, w, y: g * w,
                                     lambda ops, g, a, b, w, y: g * (b - a)))

sign          = defconstant("sign",          lambda xp, x: xp.sign(x))
equal         = defconstant("equal",         lambda xp, a, b: a == b)
not_equal     = defconstant("not_equal",     lambda xp, a, b: a != b)
less          = defconstant("less",          lambda xp, a, b: a < b)
less_equal    = defconstant("less_equal",    lambda xp, a, b: a <= b)
greater       = defconstant("greater",       lambda xp, a, b: a > b)
greater_equal = defconstant("greater_equal", lambda xp, a, b: a >= b)
logical_and   = defconstant("logical_and",   lambda xp, a, b: xp.logical_and(a, b))
logical_or    = defconstant("logical_or",    lambda xp, a, b: xp.logical_or(a, b))
logical_not   = defconstant("logical_not",   lambda xp, x: xp.logical_not(x))
isfinite      = defconstant("isfinite",      lambda xp, x: xp.isfinite(x))
floor         = defconstant("floor",         lambda xp, x: xp.floor(x))
ceil          = defconstant("ceil",          lambda xp, x: xp.ceil(x))
trunc         = defconstant("trunc",         lambda xp, x: xp.trunc(x))
round         = defconstant("round",         lambda xp, x, *, decimals=0: xp.round(x, decimals))
# fmt: on


mod = remainder  # NumPy's other name for it; Python's % on tensors
where = namespace.where  # gg.where(cond, a, b); the rules' ops.where on Tensors
