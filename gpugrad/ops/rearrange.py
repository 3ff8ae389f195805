"""NumPy's functions that move, repeat or select elements, built from the table's ops, so
their gradients are those ops' (exact: each is a selection, a scatter or a broadcast):
flip, roll, repeat, tile, pad, tril, triu, diagonal, diag, trace, take_along_axis, gather.

Every index array here is made on the host from shapes and the caller's integers, never
from a tensor's values, so none needs a read of the device.
"""

import numbers

import numpy as np

from gpugrad import recording
from gpugrad import tensors
from gpugrad.ops import elementwise as ew
from gpugrad.ops import reduce
from gpugrad.ops import shape as sh


def _tensor(x):
    return x if isinstance(x, tensors.Tensor) else tensors.tensor(x)


def on_one_device(xs):
    """xs as Tensors: host data (arrays, lists, numbers) on the device of the first Tensor."""
    first = next((x for x in xs if isinstance(x, tensors.Tensor)), None)
    device = None if first is None else first.device
    return [x if isinstance(x, tensors.Tensor) else tensors.tensor(x, device=device) for x in xs]


def _axis(axis, ndim, who):
    if not isinstance(axis, numbers.Integral) or not -ndim <= axis < max(ndim, 1):
        raise ValueError(f"{who}: axis {axis!r} is out of range for {ndim} dimension(s)")
    return int(axis) % max(ndim, 1)


def _axes(axis, ndim, who):
    axes = range(ndim) if axis is None else (axis,) if isinstance(axis, numbers.Integral) else axis
    return sorted({_axis(a, ndim, who) for a in axes})


def flip(x, axis=None):
    """x with the order of its elements reversed along axis (all axes when None)."""
    x = _tensor(x)
    key = [slice(None)] * x.ndim
    for a in _axes(axis, x.ndim, "flip"):
        key[a] = slice(None, None, -1)
    return sh.getitem(x, tuple(key))


def fliplr(x):
    x = _tensor(x)
    if x.ndim < 2:
        raise ValueError(f"fliplr: needs at least 2 dimensions, got shape {x.shape}")
    return flip(x, 1)


def flipud(x):
    x = _tensor(x)
    if x.ndim < 1:
        raise ValueError("flipud: needs at least 1 dimension, got a 0-d tensor")
    return flip(x, 0)


def roll(x, shift, axis=None):
    """x with its elements shifted along axis, those past the end coming back at the start
    (the tensor flattened when axis is None, as NumPy's roll)."""
    x = _tensor(x)
    if axis is None:
        return roll(x.reshape(-1), shift, 0).reshape(x.shape)
    shifts = np.broadcast_arrays(np.asarray(shift), np.asarray(axis))
    out = x
    for s, a in zip(shifts[0].reshape(-1), shifts[1].reshape(-1)):
        a = _axis(int(a), x.ndim, "roll")
        n = x.shape[a]
        if n:
            out = sh.take_in_range(out, _on(x, (np.arange(n) - int(s)) % n), axis=a)
    return out


def _on(x, host):
    """A host index array on x's device."""
    return tensors.tensor(host, dtype=host.dtype, device=x.device).data


def repeat(x, repeats, axis=None):
    """NumPy's repeat: each element repeated `repeats` times along axis (flattened when None);
    repeats is an integer or one integer per element."""
    x = _tensor(x)
    if axis is None:
        x, axis = x.reshape(-1), 0
    a = _axis(axis, x.ndim, "repeat")
    counts = np.asarray(repeats)
    if counts.dtype.kind not in "iu" or (counts < 0).any() or counts.ndim > 1:
        raise ValueError(f"repeat: repeats must be non-negative integers, got {repeats!r}")
    if counts.ndim == 1 and counts.size not in (1, x.shape[a]):
        raise ValueError(f"repeat: {counts.size} repeats for an axis of length {x.shape[a]}")
    return sh.take_in_range(x, _on(x, np.repeat(np.arange(x.shape[a]), counts)), axis=a)


def tile(x, reps):
    """NumPy's tile: x repeated as a whole `reps` times along each axis."""
    x = _tensor(x)
    reps = (reps,) if isinstance(reps, numbers.Integral) else tuple(reps)
    if any(not isinstance(r, numbers.Integral) or r < 0 for r in reps):
        raise ValueError(f"tile: reps must be non-negative integers, got {reps!r}")
    nd = max(len(reps), x.ndim)
    reps = (1,) * (nd - len(reps)) + tuple(int(r) for r in reps)
    shape = (1,) * (nd - x.ndim) + x.shape
    spread = x.reshape(tuple(v for n in shape for v in (1, n)))
    grown = sh.broadcast_to(spread, tuple(v for r, n in zip(reps, shape) for v in (r, n)))
    return grown.reshape(tuple(r * n for r, n in zip(reps, shape)))


def _pad_widths(pad_width, ndim):
    widths = np.broadcast_to(np.asarray(pad_width), (ndim, 2)) if ndim else np.zeros((0, 2), int)
    if widths.dtype.kind not in "iu" or (widths < 0).any():
        raise ValueError(f"pad: pad_width must be non-negative integers, got {pad_width!r}")
    return [(int(b), int(a)) for b, a in widths]


_PAD_MODES = ("constant", "edge", "reflect", "symmetric", "wrap")


def pad(x, pad_width, mode="constant", constant_values=0):
    """NumPy's pad in modes constant (one value), edge, reflect, symmetric and wrap."""
    x = _tensor(x)
    if mode not in _PAD_MODES:
        raise ValueError(f"pad: mode {mode!r} is not supported; one of {', '.join(_PAD_MODES)}")
    try:
        widths = _pad_widths(pad_width, x.ndim)
    except ValueError as e:
        if "non-negative" in str(e):
            raise
        raise ValueError(f"pad: pad_width {pad_width!r} does not fit shape {x.shape}") from None
    if mode == "constant":
        if not isinstance(constant_values, numbers.Real):
            raise TypeError(f"pad: constant_values is one number, got {constant_values!r}")
        shape = tuple(n + b + a for n, (b, a) in zip(x.shape, widths))
        key = tuple(slice(b, b + n) for n, (b, _) in zip(x.shape, widths))
        out = sh.scatter(x, key=key, shape=shape)
        if constant_values == 0:
            return out
        inside = np.zeros(shape, bool)
        inside[key] = True
        return ew.where(_on(x, inside), out, constant_values)
    for a, (before, after) in enumerate(widths):
        if (before or after) and x.shape[a] == 0:
            raise ValueError(f"pad: cannot pad an empty axis {a} in mode {mode!r}")
        if before or after:
            index = np.pad(np.arange(x.shape[a]), (before, after), mode=mode)
            x = sh.take_in_range(x, _on(x, index), axis=a)
    return x


def _triangle(x, k, lower, who):
    x = _tensor(x)
    if x.ndim < 2:
        raise ValueError(f"{who}: needs at least 2 dimensions, got shape {x.shape}")
    n, m = x.shape[-2:]
    keep = np.tri(n, m, k, dtype=bool) if lower else ~np.tri(n, m, k - 1, dtype=bool)
    return ew.where(_on(x, keep), x, 0)


def tril(x, k=0):
    """x with the elements above the k-th diagonal of its last two axes set to 0."""
    return _triangle(x, k, True, "tril")


def triu(x, k=0):
    """x with the elements below the k-th diagonal of its last two axes set to 0."""
    return _triangle(x, k, False, "triu")


def _diagonal_index(n1, n2, offset):
    k = max(0, min(n1, n2 - offset) if offset >= 0 else min(n1 + offset, n2))
    rows = np.arange(k) - min(offset, 0)
    return rows, rows + offset


def diagonal(x, offset=0, axis1=0, axis2=1):
    """NumPy's diagonal: the elements x[..., i, i + offset, ...] of two axes, along a new
    last axis."""
    x = _tensor(x)
    if x.ndim < 2:
        raise ValueError(f"diagonal: needs at least 2 dimensions, got shape {x.shape}")
    a1, a2 = _axis(axis1, x.ndim, "diagonal"), _axis(axis2, x.ndim, "diagonal")
    if a1 == a2:
        raise ValueError(f"diagonal: axis1 and axis2 are both axis {a1}")
    rest = [a for a in range(x.ndim) if a not in (a1, a2)]
    moved = sh.transpose(x, axes=tuple(rest + [a1, a2])) if rest + [a1, a2] != list(range(x.ndim)) else x
    rows, cols = _diagonal_index(x.shape[a1], x.shape[a2], int(offset))
    return sh.getitem(moved, (Ellipsis, rows, cols))


def trace(x, offset=0, axis1=0, axis2=1):
    """The sum of x's diagonal (see diagonal)."""
    return reduce.sum(diagonal(x, offset, axis1, axis2), axis=-1)


def diag(v, k=0):
    """NumPy's diag: a 1-D tensor -> the matrix with it on the k-th diagonal; a 2-D tensor
    -> its k-th diagonal."""
    v = _tensor(v)
    if v.ndim == 2:
        return diagonal(v, k)
    if v.ndim != 1:
        raise ValueError(f"diag: takes a 1-D or 2-D tensor, got shape {v.shape}")
    n = v.shape[0] + abs(k)
    rows, cols = _diagonal_index(n, n, int(k))
    return sh.scatter(v, key=(_on(v, rows), _on(v, cols)), shape=(n, n))


def _along(x, indices, axis, who, sizes_of):
    """The index tuple that selects indices[..., i, ...] along axis at every other position."""
    index = indices if isinstance(indices, tensors.Tensor) else np.asarray(indices)
    if index.ndim != x.ndim:
        raise recording.ShapeError(f"{who}: indices have {index.ndim} dimension(s) but the "
                                   f"tensor has {x.ndim} (shape {x.shape})")
    a = _axis(axis, x.ndim, who)
    key = []
    for d in range(x.ndim):
        if d == a:
            key.append(index)
        else:
            span = np.arange(sizes_of(d, index))
            key.append(span.reshape((-1,) + (1,) * (x.ndim - d - 1)))
    return tuple(key)


def take_along_axis(x, indices, axis):
    """NumPy's take_along_axis: x[..., indices[..., i, ...], ...] along axis (flattened when
    axis is None), indices broadcasting against x's other axes."""
    x = _tensor(x)
    if axis is None:
        return take_along_axis(x.reshape(-1), indices, 0)
    key = _along(x, indices, axis, "take_along_axis", lambda d, index: x.shape[d])
    return sh.getitem(x, key)


def gather(x, dim, index):
    """PyTorch's gather: out[i][j] = x[index[i][j]][j] along dim (dim 0 here), the result of
    index's shape, which may be smaller than x's along the other dims."""
    x = _tensor(x)
    index = index if isinstance(index, tensors.Tensor) else np.asarray(index)
    for d in range(min(x.ndim, index.ndim)):
        if d != _axis(dim, x.ndim, "gather") and index.shape[d] > x.shape[d]:
            raise recording.ShapeError(f"gather: index has shape {index.shape}, larger than "
                                       f"the tensor's {x.shape} along dim {d}")
    key = _along(x, index, dim, "gather", lambda d, index: index.shape[d])
    return sh.getitem(x, key)


BUILT = ("flip", "fliplr", "flipud", "roll", "repeat", "tile", "pad", "tril", "triu",
         "diagonal", "diag", "trace", "take_along_axis", "gather")
