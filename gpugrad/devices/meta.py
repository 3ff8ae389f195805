"""The "meta" device: arrays with a shape and a dtype and no data.

A MetaArray answers NumPy's dispatch protocols (__array_ufunc__, __array_function__) by
computing only the shape and dtype of the result, so the op table's forward functions, written
once with `xp`, run on it unchanged. gg.memory.estimate uses it to record a model's graph and
count what training would keep without allocating any of it.
"""

import math
import numbers

import numpy as np

from gpugrad.devices import backend


def _zero_view(shape, dtype):
    """A read-only array of `shape` backed by one element: for shape arithmetic only."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape, (0,) * len(shape),
                                           writeable=False)


def _as_template(a):
    """A MetaArray -> a zero-strided stand-in; anything else unchanged."""
    return _zero_view(a.shape, a.dtype) if isinstance(a, MetaArray) else a


def _dtype_of(ufunc, inputs, kwargs):
    probes = [np.ones((), a.dtype) if isinstance(a, MetaArray) else a for a in inputs]
    kw = {k: v for k, v in kwargs.items() if k in ("dtype", "casting")}
    with np.errstate(all="ignore"):
        return np.asarray(ufunc(*probes, **kw)).dtype


def _shape(a):
    return a.shape if isinstance(a, (MetaArray, np.ndarray)) else np.shape(a)


def _matmul_shape(a, b):
    sa, sb = list(a), list(b)
    if sa[-1] != (sb[0] if len(sb) == 1 else sb[-2]):
        raise ValueError(f"matmul: shapes {tuple(a)} and {tuple(b)} are not aligned")
    if len(sa) == 1 and len(sb) == 1:
        return ()
    if len(sa) == 1:
        return tuple(sb[:-2]) + (sb[-1],)
    if len(sb) == 1:
        return tuple(sa[:-1])
    batch = np.broadcast_shapes(tuple(sa[:-2]), tuple(sb[:-2]))
    return batch + (sa[-2], sb[-1])


def _reduce_shape(shape, axis, keepdims):
    nd = len(shape)
    axes = range(nd) if axis is None else ((axis,) if isinstance(axis, numbers.Integral) else axis)
    axes = {a % nd for a in axes} if nd else set()
    if keepdims:
        return tuple(1 if i in axes else n for i, n in enumerate(shape))
    return tuple(n for i, n in enumerate(shape) if i not in axes)


class MetaArray:
    """An array's shape and dtype, no data. Views remember their base (for accounting)."""

    __slots__ = ("shape", "dtype", "base")
    __array_priority__ = 2000

    def __init__(self, shape, dtype, base=None):
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.base = base

    ndim = property(lambda self: len(self.shape))
    size = property(lambda self: int(np.prod(self.shape, dtype=np.int64)))
    nbytes = property(lambda self: self.size * self.dtype.itemsize)
    T = property(lambda self: self.transpose())

    def __repr__(self):
        return f"MetaArray(shape={self.shape}, dtype={self.dtype})"

    def _view(self, shape):
        return MetaArray(shape, self.dtype, base=self.base if self.base is not None else self)

    # ------------------------------------------------------------------ methods ops use
    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and not isinstance(shape[0], numbers.Integral) else shape
        return self._view(_zero_view(self.shape, np.int8).reshape(shape).shape)

    def transpose(self, *axes):
        axes = axes[0] if len(axes) == 1 and not isinstance(axes[0], numbers.Integral) else axes
        return self._view(_zero_view(self.shape, np.int8).transpose(axes or None).shape)

    def astype(self, dtype, copy=True):
        return MetaArray(self.shape, dtype)

    def copy(self):
        return MetaArray(self.shape, self.dtype)

    def sum(self, axis=None, keepdims=False, dtype=None):
        return MetaArray(_reduce_shape(self.shape, axis, keepdims), dtype or np.sum(np.zeros(1, self.dtype)).dtype)

    def mean(self, axis=None, keepdims=False):
        return MetaArray(_reduce_shape(self.shape, axis, keepdims), np.mean(np.zeros(1, self.dtype)).dtype)

    def max(self, axis=None, keepdims=False):
        return MetaArray(_reduce_shape(self.shape, axis, keepdims), self.dtype)

    min = max

    def __getitem__(self, key):
        key = tuple(_as_template(k) for k in (key if isinstance(key, tuple) else (key,)))
        shape = _zero_view(self.shape, np.int8)[key].shape
        return self._view(shape)

    def __setitem__(self, key, value):
        pass  # no data to write

    def __len__(self):
        return self.shape[0]

    def __bool__(self):
        raise TypeError("a meta array has no values (estimate runs on shapes only)")

    __int__ = __float__ = __index__ = __bool__

    def item(self):
        raise TypeError("a meta array has no values (estimate runs on shapes only)")

    # ------------------------------------------------------------------ NumPy protocols
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.pop("out", None)
        if method != "__call__":
            return NotImplemented
        if ufunc is np.matmul:
            dtype = np.result_type(*(a.dtype if isinstance(a, MetaArray) else a for a in inputs))
            result = MetaArray(_matmul_shape(_shape(inputs[0]), _shape(inputs[1])), dtype)
        else:
            shape = np.broadcast_shapes(*(_shape(a) for a in inputs))
            result = MetaArray(shape, _dtype_of(ufunc, inputs, kwargs))
        return result if out is None else _written(out, result)

    def __array_function__(self, func, types, args, kwargs):
        handler = _FUNCTIONS.get(func)
        if handler is None:
            raise TypeError(f"the meta device does not support numpy.{func.__name__}")
        return handler(*args, **kwargs)

    def __array__(self, dtype=None, copy=None):
        raise TypeError("a meta array has no values (estimate runs on shapes only)")


def _written(out, result):
    """A ufunc's out= (an array or a 1-tuple of one): itself, once the result fits it as NumPy
    would check."""
    target = out[0] if isinstance(out, tuple) else out
    if not isinstance(target, MetaArray):
        return NotImplemented
    if np.broadcast_shapes(target.shape, result.shape) != target.shape or not np.can_cast(
            result.dtype, target.dtype, casting="same_kind"):
        raise ValueError(f"out= of shape {target.shape} and dtype {target.dtype} cannot hold a "
                         f"result of shape {result.shape} and dtype {result.dtype}")
    return target


def _binary_operator(ufunc):
    return (lambda self, other: ufunc(self, other), lambda self, other: ufunc(other, self))


for _name, _ufunc in [("add", np.add), ("sub", np.subtract), ("mul", np.multiply),
                      ("truediv", np.true_divide), ("pow", np.power), ("matmul", np.matmul),
                      ("lshift", np.left_shift), ("rshift", np.right_shift), ("and", np.bitwise_and),
                      ("or", np.bitwise_or)]:
    _fwd, _rev = _binary_operator(_ufunc)
    setattr(MetaArray, f"__{_name}__", _fwd)
    setattr(MetaArray, f"__r{_name}__", _rev)
for _name, _ufunc in [("lt", np.less), ("le", np.less_equal), ("gt", np.greater),
                      ("ge", np.greater_equal), ("eq", np.equal), ("ne", np.not_equal)]:
    setattr(MetaArray, f"__{_name}__", _binary_operator(_ufunc)[0])
MetaArray.__neg__ = lambda self: np.negative(self)
MetaArray.__invert__ = lambda self: np.invert(self)
MetaArray.__hash__ = object.__hash__


def _like(func):
    """Run func on zero-strided stand-ins to get the shape and dtype of its result."""
    def handler(*args, **kwargs):
        args = [[_as_template(a) for a in x] if isinstance(x, (list, tuple)) else _as_template(x)
                for x in args]
        out = func(*args, **kwargs)
        return MetaArray(out.shape, out.dtype)
    return handler


def _where(cond, a=None, b=None):
    if a is None:
        raise TypeError("the meta device supports where(cond, a, b) only")
    shape = np.broadcast_shapes(_shape(cond), _shape(a), _shape(b))
    dtype = np.result_type(*(np.zeros((), x.dtype) if isinstance(x, MetaArray) else x for x in (a, b)))
    return MetaArray(shape, dtype)


def _reduction(method):
    return lambda a, axis=None, keepdims=False, **kw: getattr(a, method)(axis=axis, keepdims=keepdims, **kw)


_FUNCTIONS = {
    np.where: _where,
    np.sum: _reduction("sum"), np.mean: _reduction("mean"), np.max: _reduction("max"),
    np.min: _reduction("min"), np.amax: _reduction("max"), np.amin: _reduction("min"),
    np.reshape: lambda a, shape, **kw: a.reshape(shape),
    np.transpose: lambda a, axes=None: a.transpose(axes) if axes is not None else a.transpose(),
    np.broadcast_to: lambda a, shape, **kw: a._view(tuple(shape)),
    np.squeeze: lambda a, axis=None: MetaArray(np.squeeze(_as_template(a), axis=axis).shape, a.dtype),
    np.concatenate: _like(np.concatenate), np.stack: _like(np.stack),
    np.take: _like(np.take), np.clip: _like(np.clip),
    np.einsum: _like(np.einsum), np.prod: _like(np.prod), np.var: _like(np.var),
    np.std: _like(np.std), np.cumsum: _like(np.cumsum), np.cumprod: _like(np.cumprod),
    np.round: _like(np.round),
    np.full_like: lambda a, fill_value, dtype=None, **kw: MetaArray(a.shape, dtype or a.dtype),
    np.zeros_like: lambda a, dtype=None, **kw: MetaArray(a.shape, dtype or a.dtype),
    np.ones_like: lambda a, dtype=None, **kw: MetaArray(a.shape, dtype or a.dtype),
    np.empty_like: lambda a, dtype=None, **kw: MetaArray(a.shape, dtype or a.dtype),
    np.copyto: lambda dst, src, **kw: None,
    np.result_type: lambda *xs: np.result_type(*(x.dtype if isinstance(x, MetaArray) else x for x in xs)),
    np.vdot: lambda a, b: MetaArray((), np.result_type(a.dtype, b.dtype)),
}


class MetaNamespace:
    """`xp` for the meta device: NumPy, with creation functions that make MetaArrays."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def _shape(shape):
        return (int(shape),) if isinstance(shape, numbers.Integral) else tuple(shape)

    def zeros(self, shape, dtype=float, **kw):
        return MetaArray(self._shape(shape), dtype)

    ones = empty = zeros

    def full(self, shape, fill_value, dtype=None, **kw):
        return MetaArray(self._shape(shape), dtype or np.asarray(fill_value).dtype)

    def arange(self, start, stop=None, step=1, dtype=None, **kw):
        if stop is None:
            start, stop = 0, start
        n = max(0, math.ceil((stop - start) / step))
        return MetaArray((n,), dtype or np.result_type(start, stop, step))

    def eye(self, n, m=None, dtype=float, **kw):
        return MetaArray((n, m or n), dtype)

    def asarray(self, data, dtype=None):
        if isinstance(data, MetaArray):
            return data if dtype is None else data.astype(dtype)
        arr = np.asarray(data)
        return MetaArray(arr.shape, dtype or arr.dtype)

    def array(self, data, dtype=None, copy=True):
        return self.asarray(data, dtype)


xp = MetaNamespace()


class MetaBackend(backend.Backend):
    """Shapes and dtypes only: for estimating memory without allocating it."""

    kind = "meta"
    name = "meta"
    xp = xp
    array_type = MetaArray
    has_values = False

    def asarray(self, data, dtype=None):
        return self.xp.asarray(data, dtype)

    def to_host(self, arr):
        raise TypeError("a tensor on the meta device has no values (it holds a shape and a dtype)")

    def rand(self, shape, dtype):
        return self.xp.zeros(shape, dtype)

    randn = rand

    @staticmethod
    def erf(x):
        return x.copy()

    @staticmethod
    def scatter_add(out, key, values):
        pass  # shapes only
