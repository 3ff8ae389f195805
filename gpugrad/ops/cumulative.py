"""Running sums and products along an axis (the whole tensor flattened when axis is None),
and the linear recurrence h[k] = a[k] h[k-1] + b[k] they differentiate through.

Every gradient here is exact to every order, zeros included: none divides by the input.
cumprod's gradient at x[k] is the product of the elements before k times a recurrence run
backwards over g, and a recurrence's own gradients are recurrences again.
"""

import numbers

import numpy as np

from gpugrad import devices
from gpugrad import recording
from gpugrad.ops.registry import deflinear, defop


def _along(axis, ndim, k):
    """The key that takes slice k along axis."""
    return (slice(None),) * (axis % ndim) + (k,)


def _scan(xp, b, a, *, axis=-1):
    """h[k] = a[k] h[k-1] + b[k] along axis, h[-1] = 0: Hillis and Steele's scan of the
    affine maps h -> a h + b, log2(n) vectorized steps of products and sums (no division)."""
    if b.shape != a.shape:
        raise recording.ShapeError(f"linear_recurrence: b has shape {b.shape} and a has shape "
                                   f"{a.shape}; they must be equal")
    if not isinstance(axis, numbers.Integral) or not -b.ndim <= axis < b.ndim:
        raise ValueError(f"linear_recurrence: axis {axis!r} is out of range for shape {b.shape}")
    dtype = np.result_type(b.dtype, a.dtype)
    h, scale = b.astype(dtype, copy=True), a.astype(dtype, copy=True)
    n, step = b.shape[axis], 1
    while step < n:
        later, earlier = _along(axis, b.ndim, slice(step, None)), _along(axis, b.ndim, slice(0, n - step))
        h_new = h[later] + scale[later] * h[earlier]
        scale[later] = scale[later] * scale[earlier]
        h[later] = h_new
        step *= 2
    return h


def _shifted(ops, v, axis, fill, later):
    """v moved one place along axis, towards the end (later) or the start, `fill` entering."""
    n = v.shape[axis]
    keep = _along(axis, v.ndim, slice(0, n - 1) if later else slice(1, n))
    edge = ops.full_like(ops.getitem(v, key=_along(axis, v.ndim, slice(0, 1))), fill)
    parts = [edge, ops.getitem(v, key=keep)] if later else [ops.getitem(v, key=keep), edge]
    return ops.concatenate(parts, axis=axis)


def _reversed(ops, x, axis):
    return ops.getitem(x, key=_along(axis, x.ndim, slice(None, None, -1)))


def backward_scan(ops, u, a, axis):
    """r[k] = u[k] + a[k+1] r[k+1]: the recurrence's transpose, which carries gradients back."""
    later_a = _shifted(ops, a, axis, 0, later=False)
    return _reversed(ops, ops.linear_recurrence(_reversed(ops, u, axis),
                                                _reversed(ops, later_a, axis), axis=axis), axis)


def _scan_grad_a(ops, g, b, a, y, axis):
    """d h[k] / d a[m] = h[m-1] times the products of a after m: the backward scan times h
    one place later."""
    return backward_scan(ops, _full(ops, g, y), a, axis) * _shifted(ops, y, axis, 0, later=True)


def _scan_jvp(ops, ts, b, a, y, axis):
    tb, ta = ts
    t = tb if ta is None else ta * _shifted(ops, y, axis, 0, later=True)
    if ta is not None and tb is not None:
        t = t + tb
    return ops.linear_recurrence(t, a, axis=axis)


def reverse_cumsum(ops, x, axis):
    """sum of x[j] for j >= i along axis, at each i."""
    return _reversed(ops, ops.cumsum(_reversed(ops, x, axis), axis=axis), axis)


def _flat(ops, x, axis):
    """x and the axis to run along: x flattened and axis 0 when axis is None (NumPy's rule)."""
    return (ops.reshape(x, (-1,)), 0) if axis is None else (x, axis)


def _full(ops, g, y):
    """g as y's shape (a uniform gradient comes back from sum as 0-d)."""
    return g if g.shape == y.shape else ops.broadcast_to(g, y.shape)


def _cumsum_grad(ops, g, x, y, axis):
    shape = (x.size,) if axis is None else x.shape
    if g.shape != shape:
        g = ops.broadcast_to(g, shape)
    return ops.reshape(reverse_cumsum(ops, g, 0 if axis is None else axis), x.shape)


def _cumprod_grad(ops, g, x, y, axis):
    """d cumprod(x)[j] / d x[k] = the product of x[:j+1] without x[k]: the product before k
    times the recurrence over g backwards with the elements after k."""
    flat, ax = _flat(ops, x, axis)
    r = backward_scan(ops, _full(ops, g, y), flat, ax)
    return ops.reshape(r * _shifted(ops, y, ax, 1, later=True), x.shape)


def _cumprod_jvp(ops, ts, x, y, axis):
    t, ax = _flat(ops, ts[0], axis)
    flat, _ = _flat(ops, x, axis)
    return ops.linear_recurrence(t * _shifted(ops, y, ax, 1, later=True), flat, axis=ax)


def exclusive_products(ops, x, axis):
    """The product of every element but x[k] along axis, at each k, exactly (no division):
    the products before k times the products after k."""
    before = _shifted(ops, ops.cumprod(x, axis=axis), axis, 1, later=True)
    after = _reversed(ops, _shifted(ops, ops.cumprod(_reversed(ops, x, axis), axis=axis),
                                    axis, 1, later=True), axis)
    return before * after


# fmt: off
linear_recurrence = defop("linear_recurrence", lambda xp, b, a, *, axis=-1: devices.carried(_scan, xp, b, a, axis=axis), save={"b": "a", "a": "a y"},
                          vjp=(lambda ops, g, b, a, y, axis: backward_scan(ops, _full(ops, g, y), a, axis),
                               _scan_grad_a),
                          jvp=_scan_jvp)
cumsum  = deflinear("cumsum",  lambda xp, x, *, axis=None: devices.over(xp.cumsum, x, axis=axis), vjp=(_cumsum_grad,))
cumprod = defop("cumprod",     lambda xp, x, *, axis=None: devices.over(xp.cumprod, x, axis=axis), save="x y",
                vjp=(_cumprod_grad,), jvp=_cumprod_jvp)
# fmt: on
