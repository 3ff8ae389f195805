"""Ops that move, select or copy elements: all linear, so their jvp is the op itself."""

import numbers

import numpy as np

from gpugrad import devices
from gpugrad import tensors
from gpugrad.ops.registry import deflinear


def _is_basic(key):
    return all(k is None or k is Ellipsis or isinstance(k, (slice, numbers.Integral))
               for k in key)


def index_array(obj, device, *, size=None, axis=None, what="index"):
    """An index given as Tensor, list or array -> a backend integer/bool array on `device`.

    With `size`, integer indices are checked to lie in [-size, size) of `axis` (None: the
    flattened tensor): NumPy raises for one outside, CuPy wraps it around without a word.
    """
    if not devices.get(device).has_values:  # shapes only: there are no values to check
        size = None
    if isinstance(obj, tensors.Tensor):
        if obj.device != device:
            raise devices.DeviceError(f"index tensor is on {obj.device!r} but the indexed "
                                      f"tensor is on {device!r}")
        arr = host = obj.data
        on_host = False  # a tensor stands for device data even on the CPU: same rules everywhere
    elif devices.is_device_array(obj):
        arr, host, on_host = devices.get(device).asarray(obj), obj, False
    else:
        host = np.asarray(obj)
        if host.dtype.kind not in "iub":  # before the move: refuse what cannot be an index
            raise IndexError(f"indices must be integers or booleans, got dtype {host.dtype}")
        if size is not None and host.dtype.kind != "b":
            _check_range(host, size, axis, what, on_host=True)
        return devices.get(device).asarray(host)
    if arr.dtype.kind not in "iub":
        raise IndexError(f"indices must be integers or booleans, got dtype {arr.dtype}")
    if size is not None and arr.dtype.kind != "b":
        _check_range(host, size, axis, what, on_host=on_host)
    return arr


def _check_range(indices, size, axis, what, on_host):
    """Raise NumPy's IndexError for an index outside [-size, size). Device indices cost a read
    of the device, which a graphed step cannot do: there they are refused."""
    if not indices.size:
        return
    if not on_host:
        devices.forbid_index_range_check(what)
    low, high = int(indices.min()), int(indices.max())
    if low < -size or high >= size:
        where = "the flattened tensor" if axis is None else f"axis {axis}"
        raise IndexError(f"{what}: index {high if high >= size else low} is out of bounds "
                         f"for {where} with size {size}")


def index_key(key, device, shape):
    """Normalise an indexing key of a tensor of `shape`: a tuple of ints, slices, None,
    Ellipsis and index arrays, every integer array checked to lie within its axis.

    Boolean masks become their nonzero() index arrays, so scatter-add can handle every key.
    """
    key = key if isinstance(key, tuple) else (key,)
    if _is_basic(key) and not any(isinstance(k, bool) for k in key):
        # ints, slices, None, Ellipsis: nothing to convert or check
        return tuple(int(k) if isinstance(k, numbers.Integral) else k for k in key)
    axes = _axes_indexed(key, len(shape))
    out = []
    for k, axis in zip(key, axes):
        if k is None or k is Ellipsis or isinstance(k, slice):
            out.append(k)
        elif isinstance(k, numbers.Integral) and not isinstance(k, bool):
            out.append(int(k))
        else:
            size = shape[axis] if axis is not None and axis < len(shape) else None
            arr = index_array(k, device, size=size, axis=axis, what="indexing")
            if arr.dtype.kind == "b":
                _check_mask_shape(arr, shape, axis)
                out.extend(arr.nonzero())
            elif arr.ndim == 0:
                out.append(int(arr))
            else:
                out.append(arr)
    return tuple(out)


def _check_mask_shape(mask, shape, axis):
    """A boolean mask covers the axes it indexes exactly (NumPy and CuPy raise otherwise; its
    nonzero() indices alone would select silently)."""
    covered = tuple(shape[axis: axis + max(mask.ndim, 1)])
    if mask.ndim and mask.shape != covered:
        raise IndexError(f"boolean index of shape {mask.shape} does not match the indexed "
                         f"axes {axis}..{axis + mask.ndim - 1} of shape {covered}")


def _axes_indexed(key, ndim):
    """The axis each entry of a key indexes first (None for None and Ellipsis); a boolean
    mask spans as many axes as it has dimensions."""
    def span(k):
        if k is None or k is Ellipsis:
            return 0
        if isinstance(k, (slice, numbers.Integral)):
            return 1
        return max(getattr(k, "ndim", np.ndim(k)), 1) if _dtype_kind(k) == "b" else 1

    taken = sum(span(k) for k in key)
    axes, axis = [], 0
    for k in key:
        axes.append(None if k is None or k is Ellipsis else axis)
        axis += ndim - taken if k is Ellipsis else span(k)
    return axes


def _dtype_kind(k):
    dtype = getattr(k, "dtype", None)
    return np.dtype(dtype if dtype is not None else np.asarray(k).dtype).kind


def _scatter(xp, g, *, key, shape):
    out = xp.zeros(shape, g.dtype)
    if _is_basic(key):
        out[key] = g  # basic indices select each element at most once
    else:
        devices.scatter_add(out, key, g)
    return out


def _to_device(xp, x, *, device):
    return devices.get(device).transfer(x)


def _normal_axis(axis, ndim):
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for {ndim} dimensions")
    return axis % ndim


def _concatenate_grads(ops, g, *xs, y, axis):
    ax = _normal_axis(axis, g.ndim)
    grads, start = [], 0
    for x in xs:
        n = x.shape[ax]
        grads.append(ops.getitem(g, key=(slice(None),) * ax + (slice(start, start + n),)))
        start += n
    return grads


def _stack_grads(ops, g, *xs, y, axis):
    ax = _normal_axis(axis, g.ndim)
    return [ops.getitem(g, key=(slice(None),) * ax + (i,)) for i in range(len(xs))]


def _take_grad(ops, g, x, y, indices, axis):
    if axis is None:
        return ops.reshape(ops.scatter(g, key=(indices,), shape=(x.size,)), x.shape)
    ax = _normal_axis(axis, x.ndim)
    return ops.scatter(g, key=(slice(None),) * ax + (indices,), shape=x.shape)


def _transpose_grad(ops, g, x, y, axes):
    if axes is None:
        return ops.transpose(g)
    return ops.transpose(g, axes=tuple(int(i) for i in np.argsort([a % x.ndim for a in axes])))


def _stack_forward(xp, *xs, axis=0):
    if not xs:
        raise ValueError("stack needs at least one tensor")
    if any(x.shape != xs[0].shape for x in xs):  # checked here: NumPy and CuPy word it apart
        raise ValueError("all input arrays must have the same shape")
    return xp.stack(xs, axis=axis)


def _concatenate_forward(xp, *xs, axis=0):
    if not xs:
        raise ValueError("concatenate needs at least one tensor")
    ndim = xs[0].ndim
    if ndim == 0 or any(x.ndim != ndim for x in xs):
        raise ValueError("the inputs must have one number of dimensions, at least 1")
    ax = _normal_axis(axis, ndim)
    for x in xs:
        for d in range(ndim):
            if d != ax and x.shape[d] != xs[0].shape[d]:
                raise ValueError(f"the inputs differ along dimension {d} ({xs[0].shape[d]} "
                                 f"and {x.shape[d]}); only the axis {ax} may differ")
    return xp.concatenate(xs, axis=axis)


# fmt: off
reshape      = deflinear("reshape",      lambda xp, x, *, shape: xp.reshape(x, shape),
                         vjp=(lambda ops, g, x, y, shape: ops.reshape(g, x.shape),))
transpose    = deflinear("transpose",    lambda xp, x, *, axes=None: xp.transpose(x, axes),
                         vjp=(_transpose_grad,))
broadcast_to = deflinear("broadcast_to", lambda xp, x, *, shape: xp.broadcast_to(x, shape),
                         vjp=(lambda ops, g, x, y, shape: g,))  # the engine sums g back to x's shape
concatenate  = deflinear("concatenate",  _concatenate_forward, vjp_all=_concatenate_grads)
stack        = deflinear("stack",        _stack_forward,       vjp_all=_stack_grads)
_getitem     = deflinear("getitem",      lambda xp, x, *, key: x[key],
                         vjp=(lambda ops, g, x, y, key: ops.scatter(g, key=key, shape=x.shape),))
scatter      = deflinear("scatter",      _scatter,
                         vjp=(lambda ops, g, x, y, key, shape: ops.getitem(g, key=key),))
_take        = deflinear("take",         lambda xp, x, *, indices, axis=None: xp.take(x, indices, axis=axis),
                         vjp=(_take_grad,))
astype       = deflinear("astype",       lambda xp, x, *, dtype: x.astype(dtype),
                         vjp=(lambda ops, g, x, y, dtype: g,))  # the engine casts g back to x's dtype
copy         = deflinear("copy",         lambda xp, x: x.copy(), vjp=(lambda ops, g, x, y: g,))
to_device    = deflinear("to_device",    _to_device, moves_device=True,
                         vjp=(lambda ops, g, x, y, device: ops.to_device(g, device=x.device),))
# fmt: on


def getitem(x, key):
    """x[key] with NumPy's basic and advanced indexing; repeated indices accumulate gradient."""
    return _getitem(x, key=index_key(key, x.device, x.shape))


def take_in_range(x, indices, axis=None):
    """take() for backend indices that the caller has checked or clipped to the axis."""
    return _take(x, indices=indices, axis=axis)


def take(x, indices, axis=None):
    """Elements of x at `indices` along `axis` (flattened when None), as numpy.take."""
    size = x.size if axis is None else x.shape[_normal_axis(axis, x.ndim)]
    named_axis = 0 if axis is None and x.ndim <= 1 else None if axis is None else axis % x.ndim
    return _take(x, indices=index_array(indices, x.device, size=size, axis=named_axis,
                                        what="take"), axis=axis)
