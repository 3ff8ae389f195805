"""The strict test device's arrays: a NumPy array playing a CuPy array (gpugrad/devices/strict.py
is the device). Every value stays on the "device": no implicit conversion to NumPy, no NumPy
operands, 0-d arrays where NumPy gives scalars, allocations counted, and every call counted by
name; BLAS calls are refused while a graphed step captures, as CuPy refuses cuBLAS.
"""

import collections
import contextlib
import functools
import weakref

import numpy as np

from gpugrad.devices import capture

IMPLICIT = ("Implicit conversion to a NumPy array is not allowed on the strict test device "
            "(as in CuPy). Please use `.get()` to construct a NumPy array explicitly.")
DLPACK_DEVICE_TYPE = 12  # kDLExtDev: an extension device of its own, so only strict imports it


# ---------------------------------------------------------------------------- device memory

_owners = {}  # id(NumPy buffer) -> weakref to the StrictArray standing for it
_hooks = []  # allocation trackers (gpugrad.memory.Allocations) in effect


def _malloc(nbytes):
    for out in _hooks:
        out.current += nbytes
        out.peak = max(out.peak, out.current)


def _free(key, nbytes):
    _owners.pop(key, None)
    for out in _hooks:
        out.current -= nbytes


@contextlib.contextmanager
def track(out):
    """Count the bytes of device buffers allocated and freed inside the block into `out`."""
    _hooks.append(out)
    try:
        yield out
    finally:
        _hooks.remove(out)


def _root(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def wrap(a):
    """A NumPy result -> a StrictArray (NumPy scalars become 0-d arrays, as CuPy returns).
    One wrapper stands for each NumPy buffer while it lives; views hold it as their base."""
    if isinstance(a, np.generic):
        a = np.asarray(a)
    if not isinstance(a, np.ndarray):
        return a
    root = _root(a)
    key = id(root)
    if key not in _owners:  # a new device buffer
        _owners[key] = None
        _malloc(root.nbytes)
        weakref.finalize(root, _free, key, root.nbytes)
    owner = _owners[key]() if _owners[key] is not None else None
    if root is a and owner is not None:
        return owner  # NumPy handed back the same array (astype without a copy, say)
    out = StrictArray.__new__(StrictArray)
    out._a = a
    if root is a:
        out._base = None
        _owners[key] = weakref.ref(out)
    else:
        out._base = owner if owner is not None else wrap(root)
    return out


def wrap_all(result):
    if isinstance(result, (tuple, list)):
        return type(result)(wrap_all(r) for r in result)
    return wrap(result)


def operand(x):
    """What a CuPy function accepts: its own arrays, scalars, and containers of them."""
    if isinstance(x, StrictArray):
        return x._a
    if isinstance(x, np.ndarray):
        raise TypeError(f"Unsupported type {type(x)}: a NumPy array cannot be an operand on the "
                        f"strict test device (as in CuPy); move it to the device first")
    if isinstance(x, (list, tuple)):
        return type(x)(operand(v) for v in x)
    return x


_BLAS = {"matmul", "dot", "vdot", "inner", "tensordot", "einsum", "outer"}


class CaptureUnsupported(NotImplementedError):
    """What CuPy raises for a cuBLAS call while a stream captures."""


def _refuse_blas(name):
    if name in _BLAS and capture.capturing():
        raise CaptureUnsupported(f"{name}: calling cuBLAS API during stream capture is "
                                  f"currently unsupported (CuPy; the strict test device refuses "
                                  f"it too): use the capturable matmul")


# every call into the "device" array library, by name (functions, array methods, indexing,
# kernels): how many calls a step makes, each at most one kernel launch on CuPy (views none)
calls = collections.Counter()


def call(func, name, args, kwargs):
    calls[name] += 1
    _refuse_blas(name)
    out = kwargs.get("out")
    args = [operand(a) for a in args]
    kwargs = {k: operand(v) for k, v in kwargs.items()}
    with np.errstate(all="ignore"):  # as CuPy, which never warns of inf or NaN
        result = func(*args, **kwargs)
    if out is not None:  # written in place: the caller's device arrays
        return out[0] if isinstance(out, tuple) and len(out) == 1 else out
    return wrap_all(result)


# ---------------------------------------------------------------------------- the array


@functools.lru_cache(maxsize=None)
def function(func, name):
    """NumPy's `func` as CuPy's: device arrays in, device arrays out."""
    return lambda *args, **kwargs: call(func, name, args, kwargs)


class _Device:
    id = 0

    def __repr__(self):
        return "<strict device>"


class StrictArray:
    """A NumPy array playing a CuPy array: every value stays on the "device"."""

    __slots__ = ("_a", "_base", "__weakref__")
    device = _Device()

    def __init__(self, *args, **kwargs):
        raise TypeError("make strict arrays through gpugrad.strict.xp (asarray, zeros, ...)")

    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    base = property(lambda self: self._base)
    T = property(lambda self: wrap(self._a.T))

    def get(self):
        """A host copy (numpy.ndarray), as CuPy's ndarray.get()."""
        return self._a.copy()

    def item(self):
        return self._a.item()

    def tolist(self):
        return self._a.tolist()

    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT)

    # DLPack: an "extension device" of its own, so only the strict device imports it
    def __dlpack_device__(self):
        return (DLPACK_DEVICE_TYPE, 0)

    def __dlpack__(self, *args, **kwargs):
        return Capsule(self)

    def __repr__(self):
        return f"strict_array({np.array2string(self._a, separator=', ')}, dtype={self.dtype})"

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (wrap(self._a[i]) for i in range(len(self._a)))

    def __bool__(self):
        return bool(self._a)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __index__(self):
        return self._a.__index__()

    def __getitem__(self, key):
        calls["getitem"] += 1
        return wrap(self._a[index_key(key, self._a.shape)])

    def __setitem__(self, key, value):
        if isinstance(value, np.ndarray) and not (isinstance(key, slice) and key == slice(None)):
            raise TypeError("a NumPy array can be assigned into a device array only whole "
                            "(a[:] = host), as in CuPy; move it to the device first")
        calls["setitem"] += 1
        self._a[index_key(key, self._a.shape)] = value._a if isinstance(value, StrictArray) else value

    def __getattr__(self, name):
        """Array methods (reshape, astype, sum, ...): NumPy's, on device arrays."""
        method = getattr(self._a, name)
        if not callable(method):
            raise AttributeError(f"StrictArray has no attribute {name!r}")
        return lambda *args, **kwargs: call(method, name, args, kwargs)

    # NumPy's protocols: NumPy functions called on strict arrays run here, as on CuPy arrays
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return call(getattr(ufunc, method), ufunc.__name__, inputs, kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        return call(func, func.__name__, args, kwargs)


def index_key(key, shape):
    """Index arrays may live on the device or, as CuPy allows, on the host. An integer index
    array out of its axis's range wraps around, as in CuPy (NumPy raises)."""
    key = tuple(k._a if isinstance(k, StrictArray) else k for k in
                (key if isinstance(key, tuple) else (key,)))
    spans = [0 if k is None or k is Ellipsis else
             np.ndim(k) if isinstance(k, np.ndarray) and k.dtype == bool else 1 for k in key]
    out, axis = [], 0
    for k, span in zip(key, spans):
        if isinstance(k, (np.ndarray, list)) and np.asarray(k).dtype.kind in "iu" \
                and axis < len(shape) and shape[axis]:
            k = np.asarray(k) % shape[axis]
        out.append(k)
        axis += len(shape) - sum(spans) if k is Ellipsis else span
    return tuple(out)


def take(a, indices, axis=None, **kwargs):
    """CuPy's take wraps an index out of range around (NumPy raises)."""
    return np.take(a, indices, axis=axis, mode="wrap", **kwargs)


def _operator(ufunc, reflected=False, inplace=False):
    if inplace:
        return lambda self, other: ufunc(self, other, out=(self,))
    if reflected:
        return lambda self, other: ufunc(other, self)
    return lambda self, other: ufunc(self, other)


for _name, _ufunc in [("add", np.add), ("sub", np.subtract), ("mul", np.multiply),
                      ("truediv", np.true_divide), ("floordiv", np.floor_divide),
                      ("mod", np.remainder), ("pow", np.power), ("matmul", np.matmul),
                      ("and", np.bitwise_and), ("or", np.bitwise_or), ("xor", np.bitwise_xor),
                      ("lshift", np.left_shift), ("rshift", np.right_shift)]:
    setattr(StrictArray, f"__{_name}__", _operator(_ufunc))
    setattr(StrictArray, f"__r{_name}__", _operator(_ufunc, reflected=True))
    setattr(StrictArray, f"__i{_name}__", _operator(_ufunc, inplace=True))
for _name, _ufunc in [("lt", np.less), ("le", np.less_equal), ("gt", np.greater),
                      ("ge", np.greater_equal), ("eq", np.equal), ("ne", np.not_equal)]:
    setattr(StrictArray, f"__{_name}__", _operator(_ufunc))
StrictArray.__neg__ = lambda self: np.negative(self)
StrictArray.__pos__ = lambda self: np.positive(self)
StrictArray.__abs__ = lambda self: np.absolute(self)
StrictArray.__invert__ = lambda self: np.invert(self)
StrictArray.__hash__ = None


def garbage(array):
    a = array._a
    if a.dtype == bool:
        a[...] = True
    elif a.size:
        a.reshape(-1).view(np.uint8)[...] = 0xFF  # contiguous: reshape is a view
    return array


class Capsule:
    """What a strict array exports through DLPack: itself (zero-copy on the same device)."""

    def __init__(self, array):
        self.array = array


class Submodule:
    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        attr = getattr(self._module, name)
        if callable(attr) and not isinstance(attr, type):
            return function(attr, name)
        return attr
