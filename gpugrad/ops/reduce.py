"""Reductions over an axis (or all axes): sum, mean, prod, max, min, var, std, logsumexp, norm."""

import numbers

import numpy as np

from gpugrad import devices
from gpugrad.ops import cumulative
from gpugrad.ops.registry import defop, deflinear


def _axes(ndim, axis):
    """axis (None, int or tuple, negatives allowed) -> sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < (ndim or 1):
            raise ValueError(f"axis {a} is out of range for a tensor with {ndim} dimensions")
        out.append(a % ndim if ndim else 0)
    return tuple(sorted(set(out)))


def _kept_shape(shape, axis):
    axes = _axes(len(shape), axis)
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _keep(ops, g, x, axis):
    """g reshaped so it broadcasts against x (the reduced axes kept as size 1); as it is when
    it already does (a full reduction's 0-d g broadcasts anywhere): no op for nothing."""
    if axis is None or g.shape == _kept_shape(x.shape, axis):
        return g
    return ops.reshape(g, _kept_shape(x.shape, axis))


def _count(x, axis):
    n = 1
    for a in _axes(x.ndim, axis):
        n *= x.shape[a]
    return n


# NumPy reduces a short last axis one row at a time (the max over 1024 rows of 10: 48 us on
# this project's 2-core CPU); copied to (row length, rows), the same reduction runs over whole
# rows as vectors (8 us with the copy). Up to these row lengths, and from 64 rows on (below
# that the copy costs what it saves), that way was faster, measured per reduction at 4 to 8192
# rows in float32 and float64.
_SHORT_ROWS = {"max": 32, "sum": 16}
_MANY_ROWS = 64


def kept_reduction(xp, how, x, axis):
    """xp.max or xp.sum (`how`) of x along one axis, the axis kept (keepdims=True)."""
    n = x.shape[axis] if isinstance(axis, numbers.Integral) and x.ndim >= 2 else 0
    if (xp is np and 0 < n <= _SHORT_ROWS[how] and x.size >= _MANY_ROWS * n
            and axis % x.ndim == x.ndim - 1):
        columns = np.ascontiguousarray(x.reshape(-1, n).T)
        return getattr(columns, how)(axis=0).reshape(x.shape[:-1] + (1,))
    return getattr(x, how)(axis=axis, keepdims=True)  # the method: no NumPy function dispatch


def shifted_log_sum_exp(xp, x, axis):
    """(x - m, log(sum(exp(x - m)))) with m = max(x) along axis (kept), finite rows only.

    Every member of the logsumexp family is built from these two terms and never adds m back
    before subtracting it again: (x - m) - log(...) is exact where x - (m + log(...)) cancels
    catastrophically (float32 log_softmax([1e8, 1e8]) would be [0, 0], not -log 2).
    """
    m = kept_reduction(xp, "max", x, axis)
    m = xp.where(xp.isfinite(m), m, 0)  # all -inf (or inf) rows: leave them to exp/log
    shifted = x - m
    return shifted, m, xp.log(kept_reduction(xp, "sum", xp.exp(shifted), axis))


def logsumexp_array(xp, x, axis, keepdims):
    _, m, log_sum = shifted_log_sum_exp(xp, x, axis)
    out = log_sum + m
    return out if keepdims else xp.squeeze(out, axis=axis)


def _softmax_of(ops, x, axis):
    """softmax(x) along axis, the gradient of logsumexp: shifted by max(x), a constant (no
    gradient flows through a shift softmax does not see), never by logsumexp(x) itself, which
    rounds to max(x) at large |x| and would give exp(0) = 1 for every tied maximum."""
    e = ops.exp(x - ops.max(ops.constant(x), axis=axis, keepdims=True))
    return e / ops.sum(e, axis=axis, keepdims=True)


def _attains(ops, x, y, axis):
    """Elements of x that attain the extreme y: equal to it, or NaN where y is NaN (a NaN
    result came from them; PyTorch's max() over all elements routes it so too)."""
    kept = _keep(ops, y, x, axis)
    return (x == kept) | ((x != x) & (kept != kept))


def _extreme_grad(ops, g, x, y, axis):
    """max/min: the gradient is shared equally among all elements that attain the extreme."""
    hit = _attains(ops, x, y, axis)
    count = ops.sum(hit.astype(x.dtype), axis=axis, keepdims=True)
    return ops.where(hit, _keep(ops, g, x, axis) / count, 0.0)


def _extreme_jvp(ops, ts, x, y, axis, keepdims):
    hit = _attains(ops, x, y, axis)
    count = ops.sum(hit.astype(x.dtype), axis=axis, keepdims=keepdims)
    return ops.sum(ops.where(hit, ts[0], 0.0), axis=axis, keepdims=keepdims) / count


def _sum(xp, x, *, axis=None, keepdims=False):
    if x.dtype.itemsize != 2:  # sum and mean run in every step: devices.over's call inlined
        return xp.sum(x, axis=axis, keepdims=keepdims)
    return devices.carried(xp.sum, x, axis=axis, keepdims=keepdims)


def _mean(xp, x, *, axis=None, keepdims=False):
    if x.dtype.itemsize != 2:
        return xp.mean(x, axis=axis, keepdims=keepdims)
    return devices.carried(xp.mean, x, axis=axis, keepdims=keepdims)


def _prod_partials(ops, x, axis):
    """d prod / d x_k: the product of the other elements of its slice, exact to every order
    where elements are zero (cumulative.exclusive_products; no division). Several reduced
    axes are moved last and taken as one."""
    axes = _axes(x.ndim, axis)
    if len(axes) == 1:
        return cumulative.exclusive_products(ops, x, axes[0])
    others = [a for a in range(x.ndim) if a not in axes]
    order = tuple(others + list(axes))
    moved = ops.transpose(x, axes=order)
    lead = moved.shape[: len(others)]
    flat = ops.reshape(moved, lead + (-1,))
    partials = ops.reshape(cumulative.exclusive_products(ops, flat, len(others)), moved.shape)
    return ops.transpose(partials, axes=tuple(int(i) for i in np.argsort(order)))


def _mean_corrected(ops, x, axis):
    """mean(x) along axis, kept, plus one correction, mean(x - mean(x)): a rounded sum over n
    misses equal elements' value by an ulp or so, which makes their deviations, var and std
    tiny instead of 0 and the gradient of std 0/0 noise of order 1; corrected, equal elements
    give their own value, and every deviation is exactly 0. (ops: an array namespace or the op
    namespace.)"""
    m = ops.mean(x, axis=axis, keepdims=True)
    return m + ops.mean(x - m, axis=axis, keepdims=True)


def _moments_forward(how):
    def forward(xp, x, *, axis=None, ddof=0, keepdims=False):
        n = _count(x, axis)
        if n - ddof <= 0:
            raise ValueError(f"{how}: ddof={ddof} leaves no degrees of freedom over {n} "
                             f"element(s) per result")

        def moments(x):
            d = x - _mean_corrected(xp, x, axis)
            var = xp.sum(d * d, axis=axis, keepdims=keepdims) / (n - ddof)
            return var if how == "var" else xp.sqrt(var)
        return devices.over(moments, x)
    return forward


def _centered(ops, x, axis, ddof):
    """(x - mean(x)) / (n - ddof) along axis, kept, the mean corrected as the forward's: half
    the gradient of var."""
    return (x - _mean_corrected(ops, x, axis)) / (_count(x, axis) - ddof)


def _norm(xp, x, *, ord=None, axis=None, keepdims=False):
    if ord not in (None, 2, "fro"):
        raise ValueError(f"norm supports the 2-norm (ord=None, 2 or 'fro'), got ord={ord!r}")
    if ord == 2 and (axis is None and x.ndim > 1 or not isinstance(axis, (int, type(None)))):
        raise ValueError("norm: ord=2 of a matrix (spectral norm) is not supported; use "
                         "ord='fro' or give a single axis")
    return devices.over(lambda x: xp.sqrt(xp.sum(x * x, axis=axis, keepdims=keepdims)), x)


def _sum_of(terms):
    out = None
    for t in terms:
        out = t if out is None else out + t
    return out


def _safe(ops, y):
    return ops.where(y == 0, 1.0, y)  # a zero norm or std has zero (sub)gradient, as in PyTorch


def _half_sum_squares(xp, *xs):
    if not xs:
        raise ValueError("half_sum_squares needs at least one tensor")
    if all(x.dtype.itemsize != 2 for x in xs):
        return devices.sum_of_squares(xp, xs, 0.5)
    return devices.carried(lambda *xs: devices.sum_of_squares(xp, xs, 0.5), *xs)


def _half_sum_squares_into(acc, g, x, y):
    """The rule g * x, added straight into the gradient a weight already has from its layer
    (the L2 term's gradient in a training step): one fused kernel on a GPU, acc += g * x on
    the CPU; returned as g * x where the dtypes or shapes differ (a float32 weight's float64
    gradient is rounded to float32 before it is added)."""
    if not acc.dtype == x.dtype == g.dtype or acc.shape != x.shape:
        return g * x
    add_scaled = devices.fused("add_scaled", devices.get(devices.device_of_array(x)).xp,
                               acc, g, x)
    if add_scaled:
        add_scaled(acc, g, x)
    else:
        acc += g * x
    return None


# fmt: off
half_sum_squares = defop("half_sum_squares", _half_sum_squares, save="self",
                         vjp=(lambda ops, g, x, y: g * x,), vjp_into=_half_sum_squares_into,
                         jvp=lambda ops, ts, *xs, y: _sum_of(ops.sum(t * x) for t, x in zip(ts, xs) if t is not None))
sum  = deflinear("sum",  _sum,
                 vjp=(lambda ops, g, x, y, axis, keepdims: ops.broadcast_to(_keep(ops, g, x, axis), x.shape),))
mean = deflinear("mean", _mean,
                 vjp=(lambda ops, g, x, y, axis, keepdims: ops.broadcast_to(_keep(ops, g / _count(x, axis), x, axis), x.shape),))
prod = defop("prod", lambda xp, x, *, axis=None, keepdims=False: devices.over(xp.prod, x, axis=axis, keepdims=keepdims),
             save="x", vjp=(lambda ops, g, x, y, axis, keepdims: _keep(ops, g, x, axis) * _prod_partials(ops, x, axis),),
             jvp=lambda ops, ts, x, y, axis, keepdims: ops.sum(ts[0] * _prod_partials(ops, x, axis), axis=axis, keepdims=keepdims))
var  = defop("var", _moments_forward("var"), save="x",
             vjp=(lambda ops, g, x, y, axis, ddof, keepdims: _keep(ops, g, x, axis) * 2 * _centered(ops, x, axis, ddof),),
             jvp=lambda ops, ts, x, y, axis, ddof, keepdims: ops.sum(ts[0] * (2 * _centered(ops, x, axis, ddof)), axis=axis, keepdims=keepdims))
std  = defop("std", _moments_forward("std"), save="x y",
             vjp=(lambda ops, g, x, y, axis, ddof, keepdims: _keep(ops, g / _safe(ops, y), x, axis) * _centered(ops, x, axis, ddof),),
             jvp=lambda ops, ts, x, y, axis, ddof, keepdims: ops.sum(ts[0] * _centered(ops, x, axis, ddof), axis=axis, keepdims=keepdims) / _safe(ops, y))
max  = defop("max",  lambda xp, x, *, axis=None, keepdims=False: xp.max(x, axis=axis, keepdims=keepdims),
             save="x y", vjp=(lambda ops, g, x, y, axis, keepdims: _extreme_grad(ops, g, x, y, axis),), jvp=_extreme_jvp)
min  = defop("min",  lambda xp, x, *, axis=None, keepdims=False: xp.min(x, axis=axis, keepdims=keepdims),
             save="x y", vjp=(lambda ops, g, x, y, axis, keepdims: _extreme_grad(ops, g, x, y, axis),), jvp=_extreme_jvp)
logsumexp = defop("logsumexp", lambda xp, x, *, axis=None, keepdims=False: devices.over(lambda x: logsumexp_array(xp, x, axis, keepdims), x),
                  save="x",
                  vjp=(lambda ops, g, x, y, axis, keepdims: _keep(ops, g, x, axis) * _softmax_of(ops, x, axis),),
                  jvp=lambda ops, ts, x, y, axis, keepdims: ops.sum(ts[0] * _softmax_of(ops, x, axis), axis=axis, keepdims=keepdims))
norm = defop("norm", _norm, save="x y",
             vjp=(lambda ops, g, x, y, ord, axis, keepdims: _keep(ops, g, x, axis) * x / _keep(ops, _safe(ops, y), x, axis),),
             jvp=lambda ops, ts, x, y, ord, axis, keepdims: ops.sum(ts[0] * x, axis=axis, keepdims=keepdims) / _safe(ops, y))
# fmt: on
