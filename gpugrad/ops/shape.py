"""Ops that move, select or copy elements: all linear, so their jvp is the op itself."""

import numbers

import numpy as np

from gpugrad import backend
from gpugrad import tensors
from gpugrad.ops.registry import deflinear


def _is_basic(key):
    return all(k is None or k is Ellipsis or isinstance(k, (slice, numbers.Integral))
               for k in key)


def index_array(obj, device):
    """An index given as Tensor, list or array -> a backend integer/bool array on `device`."""
    if isinstance(obj, tensors.Tensor):
        if obj.device != device:
            raise backend.DeviceError(f"index tensor is on {obj.device!r} but the indexed "
                                      f"tensor is on {device!r}")
        arr = obj.data
    else:
        arr = backend.get(device).asarray(obj)
    if arr.dtype.kind not in "iub":
        raise IndexError(f"indices must be integers or booleans, got dtype {arr.dtype}")
    return arr


def index_key(key, device):
    """Normalise an indexing key: a tuple of ints, slices, None, Ellipsis and index arrays.

    Boolean masks become their nonzero() index arrays, so scatter-add can handle every key.
    """
    key = key if isinstance(key, tuple) else (key,)
    out = []
    for k in key:
        if k is None or k is Ellipsis or isinstance(k, slice):
            out.append(k)
        elif isinstance(k, numbers.Integral) and not isinstance(k, bool):
            out.append(int(k))
        else:
            arr = index_array(k, device)
            if arr.dtype.kind == "b":
                out.extend(arr.nonzero())
            elif arr.ndim == 0:
                out.append(int(arr))
            else:
                out.append(arr)
    return tuple(out)


def _scatter(xp, g, *, key, shape):
    out = xp.zeros(shape, g.dtype)
    if _is_basic(key):
        out[key] = g  # basic indices select each element at most once
    else:
        backend.scatter_add(out, key, g)
    return out


def _to_device(xp, x, *, device):
    target = backend.get(device)
    if target.is_cpu:
        return backend.get(backend.device_of_array(x)).to_host(x)
    with target.active:
        return target.xp.asarray(x)


def _normal_axis(axis, ndim):
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for {ndim} dimensions")
    return axis % ndim


def _concatenate_grads(g, *xs, y, axis):
    ax = _normal_axis(axis, g.ndim)
    grads, start = [], 0
    for x in xs:
        n = x.shape[ax]
        grads.append(_getitem(g, key=(slice(None),) * ax + (slice(start, start + n),)))
        start += n
    return grads


def _stack_grads(g, *xs, y, axis):
    ax = _normal_axis(axis, g.ndim)
    return [_getitem(g, key=(slice(None),) * ax + (i,)) for i in range(len(xs))]


def _take_grad(g, x, y, indices, axis):
    if axis is None:
        return reshape(scatter(g, key=(indices,), shape=(x.size,)), x.shape)
    ax = _normal_axis(axis, x.ndim)
    return scatter(g, key=(slice(None),) * ax + (indices,), shape=x.shape)


def _transpose_grad(g, x, y, axes):
    if axes is None:
        return transpose(g)
    return transpose(g, axes=tuple(int(i) for i in np.argsort([a % x.ndim for a in axes])))


def _stack_forward(xp, *xs, axis=0):
    if not xs:
        raise ValueError("stack needs at least one tensor")
    return xp.stack(xs, axis=axis)


def _concatenate_forward(xp, *xs, axis=0):
    if not xs:
        raise ValueError("concatenate needs at least one tensor")
    return xp.concatenate(xs, axis=axis)


# fmt: off
reshape      = deflinear("reshape",      lambda xp, x, *, shape: xp.reshape(x, shape),
                         vjp=(lambda g, x, y, shape: reshape(g, x.shape),))
transpose    = deflinear("transpose",    lambda xp, x, *, axes=None: xp.transpose(x, axes),
                         vjp=(_transpose_grad,))
broadcast_to = deflinear("broadcast_to", lambda xp, x, *, shape: xp.broadcast_to(x, shape),
                         vjp=(lambda g, x, y, shape: g,))  # the engine sums g back to x's shape
concatenate  = deflinear("concatenate",  _concatenate_forward, vjp_all=_concatenate_grads)
stack        = deflinear("stack",        _stack_forward,       vjp_all=_stack_grads)
_getitem     = deflinear("getitem",      lambda xp, x, *, key: x[key],
                         vjp=(lambda g, x, y, key: scatter(g, key=key, shape=x.shape),))
scatter      = deflinear("scatter",      _scatter,
                         vjp=(lambda g, x, y, key, shape: _getitem(g, key=key),))
_take        = deflinear("take",         lambda xp, x, *, indices, axis=None: xp.take(x, indices, axis=axis),
                         vjp=(_take_grad,))
astype       = deflinear("astype",       lambda xp, x, *, dtype: x.astype(dtype),
                         vjp=(lambda g, x, y, dtype: g,))  # the engine casts g back to x's dtype
copy         = deflinear("copy",         lambda xp, x: x.copy(), vjp=(lambda g, x, y: g,))
to_device    = deflinear("to_device",    _to_device, moves_device=True,
                         vjp=(lambda g, x, y, device: to_device(g, device=x.device),))
# fmt: on


def getitem(x, key):
    """x[key] with NumPy's basic and advanced indexing; repeated indices accumulate gradient."""
    return _getitem(x, key=index_key(key, x.device))


def take(x, indices, axis=None):
    """Elements of x at `indices` along `axis` (flattened when None), as numpy.take."""
    return _take(x, indices=index_array(indices, x.device), axis=axis)
