"""NumPy's functions that split, join and reshape tensors, built from the table's reshape,
concatenate and getitem (so their gradients are those ops'): split, array_split, hsplit,
vsplit, dsplit, hstack, vstack, dstack, column_stack, append, atleast_1d/2d/3d, ravel,
flatten, squeeze, expand_dims and unsqueeze."""

import numbers

import numpy as np

from gpugrad.ops import shape as sh
from gpugrad.ops import rearrange
from gpugrad.ops.rearrange import _axis, _tensor


def _sections(n, indices_or_sections, even, who):
    """The split points along an axis of length n."""
    if isinstance(indices_or_sections, numbers.Integral):
        k = int(indices_or_sections)
        if k <= 0:
            raise ValueError(f"{who}: the number of sections must be positive, got {k}")
        if even and n % k:
            raise ValueError(f"{who}: an axis of length {n} does not split into {k} equal "
                             f"sections (array_split allows unequal ones)")
        sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
        return list(np.cumsum([0] + sizes))
    points = [int(i) for i in indices_or_sections]
    return [0] + points + [n]


def _split(x, indices_or_sections, axis, even, who):
    x = _tensor(x)
    if x.ndim == 0:
        raise ValueError(f"{who}: cannot split a 0-d tensor")
    a = _axis(axis, x.ndim, who)
    bounds = _sections(x.shape[a], indices_or_sections, even, who)
    lead = (slice(None),) * a
    return [sh.getitem(x, lead + (slice(int(s), int(e)),)) for s, e in zip(bounds, bounds[1:])]


def split(x, indices_or_sections, axis=0):
    """NumPy's split: equal sections (an integer) or the pieces between split points."""
    return _split(x, indices_or_sections, axis, True, "split")


def array_split(x, indices_or_sections, axis=0):
    """split that allows sections of unequal length (the first ones one longer)."""
    return _split(x, indices_or_sections, axis, False, "array_split")


def hsplit(x, indices_or_sections):
    x = _tensor(x)
    return _split(x, indices_or_sections, 1 if x.ndim > 1 else 0, True, "hsplit")


def vsplit(x, indices_or_sections):
    x = _tensor(x)
    if x.ndim < 2:
        raise ValueError(f"vsplit: needs at least 2 dimensions, got shape {x.shape}")
    return _split(x, indices_or_sections, 0, True, "vsplit")


def dsplit(x, indices_or_sections):
    x = _tensor(x)
    if x.ndim < 3:
        raise ValueError(f"dsplit: needs at least 3 dimensions, got shape {x.shape}")
    return _split(x, indices_or_sections, 2, True, "dsplit")


def _at_least(x, ndim):
    x = _tensor(x)
    if x.ndim >= ndim:
        return x
    if ndim == 3 and x.ndim == 2:
        return x.reshape(x.shape + (1,))
    if ndim == 3:
        return x.reshape((1, x.size, 1))
    return x.reshape((1,) * (ndim - x.ndim) + x.shape)


def _each(xs, ndim):
    out = [_at_least(x, ndim) for x in xs]
    return out[0] if len(out) == 1 else out


def atleast_1d(*xs):
    return _each(xs, 1)


def atleast_2d(*xs):
    """Each tensor with at least 2 dimensions: a 1-D (n,) becomes (1, n)."""
    return _each(xs, 2)


def atleast_3d(*xs):
    """Each tensor with at least 3 dimensions: (n,) becomes (1, n, 1), (m, n) becomes (m, n, 1)."""
    return _each(xs, 3)


def _joined(xs, who):
    xs = list(xs)
    if not xs:
        raise ValueError(f"{who}: needs at least one tensor")
    return rearrange.on_one_device(xs)


def hstack(xs):
    xs = [_at_least(x, 1) for x in _joined(xs, "hstack")]
    return sh.concatenate(xs, axis=0 if xs[0].ndim == 1 else 1)


def vstack(xs):
    return sh.concatenate([_at_least(x, 2) for x in _joined(xs, "vstack")], axis=0)


def dstack(xs):
    return sh.concatenate([_at_least(x, 3) for x in _joined(xs, "dstack")], axis=2)


def column_stack(xs):
    """1-D tensors as columns, 2-D ones as they are, side by side."""
    cols = [x.reshape((x.size, 1)) if x.ndim < 2 else x for x in _joined(xs, "column_stack")]
    return sh.concatenate(cols, axis=1)


def append(x, values, axis=None):
    """NumPy's append: values after x along axis (both flattened when axis is None)."""
    x, values = _joined([x, values], "append")
    if axis is None:
        return sh.concatenate([x.reshape(-1), values.reshape(-1)], axis=0)
    return sh.concatenate([x, values], axis=axis)


def ravel(x):
    x = _tensor(x)
    return x.reshape(-1)


flatten = ravel


def squeeze(x, axis=None):
    """x without its axes of length 1 (only those named, each of which must have length 1)."""
    x = _tensor(x)
    if axis is None:
        axes = [a for a, n in enumerate(x.shape) if n == 1]
    else:
        axes = [_axis(a, x.ndim, "squeeze") for a in
                ((axis,) if isinstance(axis, numbers.Integral) else axis)]
        for a in axes:
            if x.shape[a] != 1:
                raise ValueError(f"squeeze: axis {a} of shape {x.shape} has length "
                                 f"{x.shape[a]}, not 1")
    return x.reshape(tuple(n for a, n in enumerate(x.shape) if a not in axes))


def expand_dims(x, axis):
    """x with new axes of length 1 at the positions `axis` names in the result."""
    x = _tensor(x)
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    nd = x.ndim + len(axes)
    new = {_axis(a, nd, "expand_dims") for a in axes}
    if len(new) != len(axes):
        raise ValueError(f"expand_dims: repeated axis in {axis!r}")
    sizes = iter(x.shape)
    return x.reshape(tuple(1 if a in new else next(sizes) for a in range(nd)))


def unsqueeze(x, dim):
    """PyTorch's unsqueeze: expand_dims at one position."""
    return expand_dims(x, dim)


BUILT = ("split", "array_split", "hsplit", "vsplit", "dsplit", "hstack", "vstack", "dstack",
         "column_stack", "append", "atleast_1d", "atleast_2d", "atleast_3d", "ravel", "flatten",
         "squeeze", "expand_dims", "unsqueeze")
