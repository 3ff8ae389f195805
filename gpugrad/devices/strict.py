"""The "strict" test device: NumPy underneath, CuPy's rules on top.

CuPy cannot run without a GPU, so a CPU-only test run never exercises the code paths that
differ on a GPU (tests that pass on the CPU and fail on one). The strict device lets every
test body run those paths on the CPU:

- its arrays (StrictArray) refuse implicit conversion to NumPy, as CuPy's do (`.get()` or
  `xp.asnumpy` to the host), have their own device string ('strict'), and refuse NumPy arrays
  as operands; reductions and single-element indexing give 0-d arrays, not scalars;
- ops take the fused-kernel path on it: the real launchers in gpugrad/devices/cuda/kernels.py run, and only
  the compiled kernel is replaced by a NumPy stand-in that checks the call against the kernel's
  signature in kernels/*.cu (array dtypes, contiguity, scalar types) before computing it;
- while a graphed step "captures", BLAS calls are refused as CuPy refuses cuBLAS during stream
  capture (cupy/cupy issue 6290), so a matmul must go through the capturable path;
- allocations are counted, so the memory accounting's allocator figures work as on CuPy;
- `empty` and `empty_like` return garbage (every bit set), as CuPy's pool recycles memory, so
  code that reads what it never wrote fails here too.

It is for tests (GPUGRAD_DEVICE=strict) and `gpugrad selftest`, not for computing.
"""

import collections
import contextlib
import functools
import re
import types
import weakref

import numpy as np

from gpugrad.devices import capture
from gpugrad.devices.cuda import kernels

DEVICE = "strict"
IMPLICIT = ("Implicit conversion to a NumPy array is not allowed on the strict test device "
            "(as in CuPy). Please use `.get()` to construct a NumPy array explicitly.")


def _capturing():
    return capture.capturing()


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


def _wrap(a):
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
        out._base = owner if owner is not None else _wrap(root)
    return out


def _wrap_all(result):
    if isinstance(result, (tuple, list)):
        return type(result)(_wrap_all(r) for r in result)
    return _wrap(result)


def _operand(x):
    """What a CuPy function accepts: its own arrays, scalars, and containers of them."""
    if isinstance(x, StrictArray):
        return x._a
    if isinstance(x, np.ndarray):
        raise TypeError(f"Unsupported type {type(x)}: a NumPy array cannot be an operand on the "
                        f"strict test device (as in CuPy); move it to the device first")
    if isinstance(x, (list, tuple)):
        return type(x)(_operand(v) for v in x)
    return x


_BLAS = {"matmul", "dot", "vdot", "inner", "tensordot", "einsum", "outer"}


class CaptureUnsupported(NotImplementedError):
    """What CuPy raises for a cuBLAS call while a stream captures."""


def _refuse_blas(name):
    if name in _BLAS and _capturing():
        raise CaptureUnsupported(f"{name}: calling cuBLAS API during stream capture is "
                                  f"currently unsupported (CuPy; the strict test device refuses "
                                  f"it too): use the capturable matmul")


# every call into the "device" array library, by name (functions, array methods, indexing,
# kernels): how many calls a step makes, each at most one kernel launch on CuPy (views none)
calls = collections.Counter()


def _call(func, name, args, kwargs):
    calls[name] += 1
    _refuse_blas(name)
    out = kwargs.get("out")
    args = [_operand(a) for a in args]
    kwargs = {k: _operand(v) for k, v in kwargs.items()}
    with np.errstate(all="ignore"):  # as CuPy, which never warns of inf or NaN
        result = func(*args, **kwargs)
    if out is not None:  # written in place: the caller's device arrays
        return out[0] if isinstance(out, tuple) and len(out) == 1 else out
    return _wrap_all(result)


# ---------------------------------------------------------------------------- the array


@functools.lru_cache(maxsize=None)
def _function(func, name):
    """NumPy's `func` as CuPy's: device arrays in, device arrays out."""
    return lambda *args, **kwargs: _call(func, name, args, kwargs)


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
    T = property(lambda self: _wrap(self._a.T))

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
        return (Namespace.DLPACK_DEVICE_TYPE, 0)

    def __dlpack__(self, *args, **kwargs):
        return _Capsule(self)

    def __repr__(self):
        return f"strict_array({np.array2string(self._a, separator=', ')}, dtype={self.dtype})"

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(self._a[i]) for i in range(len(self._a)))

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
        return _wrap(self._a[_index(key, self._a.shape)])

    def __setitem__(self, key, value):
        if isinstance(value, np.ndarray) and not (isinstance(key, slice) and key == slice(None)):
            raise TypeError("a NumPy array can be assigned into a device array only whole "
                            "(a[:] = host), as in CuPy; move it to the device first")
        calls["setitem"] += 1
        self._a[_index(key, self._a.shape)] = value._a if isinstance(value, StrictArray) else value

    def __getattr__(self, name):
        """Array methods (reshape, astype, sum, ...): NumPy's, on device arrays."""
        method = getattr(self._a, name)
        if not callable(method):
            raise AttributeError(f"StrictArray has no attribute {name!r}")
        return lambda *args, **kwargs: _call(method, name, args, kwargs)

    # NumPy's protocols: NumPy functions called on strict arrays run here, as on CuPy arrays
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _call(getattr(ufunc, method), ufunc.__name__, inputs, kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        return _call(func, func.__name__, args, kwargs)


def _index(key, shape):
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


def _take(a, indices, axis=None, **kwargs):
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


# ---------------------------------------------------------------------------- the namespace


class Namespace(types.SimpleNamespace):
    """`xp` for the strict device: CuPy's API over NumPy's functions."""

    ndarray = StrictArray
    DLPACK_DEVICE_TYPE = 12  # kDLExtDev

    @staticmethod
    def from_dlpack(obj):
        capsule = obj.__dlpack__()
        if not isinstance(capsule, _Capsule):
            raise TypeError(f"the strict test device imports only its own arrays through "
                            f"DLPack, not {type(obj).__name__}")
        return capsule.array

    def __getattr__(self, name):
        attr = _take if name == "take" else getattr(np, name)
        if isinstance(attr, types.ModuleType):
            return _Submodule(attr)
        if callable(attr) and not isinstance(attr, type):
            return _function(attr, name)
        return attr

    # host data crosses to the device only through these, as in CuPy
    @staticmethod
    def asarray(data, dtype=None):
        if isinstance(data, StrictArray):
            return data if dtype is None or data.dtype == dtype else data.astype(dtype)
        return _wrap(np.array(data, dtype=dtype, copy=True))

    @staticmethod
    def array(data, dtype=None, copy=True):
        if isinstance(data, StrictArray):
            return _wrap(np.array(data._a, dtype=dtype, copy=copy))
        return _wrap(np.array(data, dtype=dtype, copy=True))

    @staticmethod
    def asnumpy(a):
        return a.get() if isinstance(a, StrictArray) else np.asarray(a)

    # CuPy's empty hands back recycled pool memory, NumPy's often fresh zeroed pages: here it
    # holds garbage (every bit set: NaN, -1), so code that reads what it never wrote fails
    @staticmethod
    def empty(shape, dtype=float, order="C"):
        return _garbage(_call(np.empty, "empty", (shape,), {"dtype": dtype, "order": order}))

    @staticmethod
    def empty_like(a, dtype=None, order="K", shape=None):
        return _garbage(_call(np.empty_like, "empty_like", (a,),
                              {"dtype": dtype, "order": order, "shape": shape}))

    @staticmethod
    def stand_in_kernel(source, expression):
        """The NumPy stand-in for one compiled kernel (see `kernels`)."""
        return _StandIn(source, expression)


def _garbage(array):
    a = array._a
    if a.dtype == bool:
        a[...] = True
    elif a.size:
        a.reshape(-1).view(np.uint8)[...] = 0xFF  # contiguous: reshape is a view
    return array


class _Capsule:
    """What a strict array exports through DLPack: itself (zero-copy on the same device)."""

    def __init__(self, array):
        self.array = array


class _Submodule:
    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        attr = getattr(self._module, name)
        if callable(attr) and not isinstance(attr, type):
            return _function(attr, name)
        return attr


xp = Namespace()


def scatter_add(out, key, values):
    """out[key] += values with repeated indices accumulated (CuPy's add.at)."""
    np.add.at(out._a, _index(key, out._a.shape), _operand(values))


def _column_major(x, op, rows, cols, ld):
    """The matrix op(X) of `rows` x `cols` that a column-major BLAS reads from x's memory."""
    if not (x.flags.c_contiguous or x.flags.f_contiguous):
        raise TypeError("gemm: an operand must be contiguous (a BLAS reads raw memory)")
    flat = np.ravel(x._a, order="K")  # memory order, no copy
    stored = (rows, cols) if op == 0 else (cols, rows)
    if ld < stored[0] or stored[0] + ld * (stored[1] - 1) > flat.size:
        raise ValueError(f"gemm: leading dimension {ld} does not fit a {stored} matrix in "
                         f"{flat.size} elements")
    m = np.lib.stride_tricks.as_strided(flat, stored, (flat.itemsize, ld * flat.itemsize))
    return m if op == 0 else m.T


def gemm(dtype, op_a, op_b, m, n, k, a, lda, b, ldb, c, ldc, alpha=1.0, beta=0.0):
    """cuBLAS's gemm (column-major, C = alpha op(A) op(B) + beta C) with NumPy: the capturable
    matmul's stand-in, executing the same plan as on CUDA (gpugrad/devices/cuda/cublas.py)."""
    for x in (a, b, c):
        if not isinstance(x, StrictArray) or x.dtype != dtype:
            raise TypeError(f"gemm: operands must be {dtype} device arrays")
    product = _column_major(a, op_a, m, k, lda) @ _column_major(b, op_b, k, n, ldb)
    if not c.flags.c_contiguous or c.size != m * n or ldc != m:
        raise ValueError("gemm: the output must be a contiguous m x n column-major buffer")
    if alpha != 1.0:
        product = product * product.dtype.type(alpha)
    flat = c._a.reshape(-1)
    if beta == 0.0:  # as cuBLAS: C is not read (it may hold garbage, even NaN)
        flat[:] = product.reshape(-1, order="F")
    else:
        flat[:] = product.reshape(-1, order="F") + beta * flat


# ---------------------------------------------------------------------------- kernel stand-ins

_CTYPES = {"float": np.float32, "double": np.float64, "int": np.int32, "long long": np.int64,
           "unsigned int": np.uint32}


@functools.lru_cache(maxsize=None)
def _signatures(source):
    """{kernel: [(C type, is pointer), ...]} read from a .cu file's __global__ declarations."""
    text = (kernels.source_dir() / source).read_text()
    out = {}
    for name, params in re.findall(r"__global__\s+void\s+(\w+)\s*\(([^)]*)\)", text):
        parsed = []
        for p in params.split(","):
            p = p.replace("const", " ").replace("__restrict__", " ")
            pointer = "*" in p
            ctype = " ".join(p.replace("*", " ").split()[:-1])
            parsed.append((ctype, pointer))
        out[name] = parsed
    return out


def _templates(expression):
    """'act_bwd<float, SigmoidBwdFromY<float>>' -> ('act_bwd', ['float', 'SigmoidBwdFromY'])."""
    name, _, rest = expression.partition("<")
    args = [a.split("<")[0].strip() for a in re.split(r",(?![^<]*>)", rest[:-1])]
    return name, args


class _StandIn:
    """Called like a cupy.RawKernel: k(grid, block, args). Checks the launch against the
    kernel's C signature, then computes the kernel's outputs with its KernelSpec's reference,
    on NumPy views of the device arrays."""

    def __init__(self, source, expression):
        self.expression = expression
        self.spec = kernels.spec_of(source, expression)
        self.name, templates = _templates(expression)
        signature = _signatures(source).get(self.name)
        if signature is None:
            raise KeyError(f"{source} has no __global__ kernel {self.name}")
        # the template parameters are T (the float type), then Op or L, in that order
        names = {"T": templates[0]}
        if len(templates) > 1:
            names["Op" if templates[1] not in _CTYPES else "L"] = templates[1]
        self.signature = [(names.get(c, c), p) for c, p in signature]

    def __call__(self, grid, block, args):
        if not (isinstance(grid, tuple) and isinstance(block, tuple)
                and all(isinstance(v, int) and v > 0 for v in grid + block)
                and block[0] <= 1024 and grid[0] < 2**31):
            raise ValueError(f"{self.expression}: bad launch configuration grid={grid} "
                             f"block={block}")
        if len(args) != len(self.signature):
            raise TypeError(f"{self.expression} takes {len(self.signature)} arguments, "
                            f"got {len(args)}")
        arrays, scalars = [], []
        for i, (arg, (ctype, pointer)) in enumerate(zip(args, self.signature)):
            (arrays if pointer else scalars).append(self._checked(i, arg, ctype, pointer))
        n, *scalars = scalars
        self._check_sizes(arrays, n, scalars[: self.spec.sizes])
        calls[f"kernel {self.name}"] += 1
        split = len(arrays) - self.spec.writes  # the outputs are the last arrays
        with np.errstate(all="ignore"):  # a CUDA kernel does not warn
            results = self.spec.reference(np, *arrays[:split], *scalars[self.spec.sizes:])
        if self.spec.writes == 1:
            results = (results,)
        for out, result in zip(arrays[split:], results if self.spec.writes else ()):
            out[...] = result  # an in-place kernel's reference has updated its arrays

    def _checked(self, i, arg, ctype, pointer):
        """A pointer argument as a NumPy view of its device array, a scalar as a Python one."""
        dtype = np.dtype(_CTYPES[ctype])
        if pointer:
            if not isinstance(arg, StrictArray):
                raise TypeError(f"{self.expression}: argument {i} must be a device array, "
                                f"got {type(arg).__name__}")
            if arg.dtype != dtype or not arg.flags.c_contiguous:
                raise TypeError(f"{self.expression}: argument {i} must be a C-contiguous "
                                f"{ctype} array, got {arg.dtype} "
                                f"(contiguous: {arg.flags.c_contiguous})")
            return arg._a
        if not isinstance(arg, np.generic) or arg.dtype != dtype:  # CuPy passes a NumPy
            raise TypeError(f"{self.expression}: argument {i} must be a numpy "  # scalar by its
                            f"{dtype} scalar for C type {ctype}, got {arg!r}")  # own size
        return arg.item()

    def _check_sizes(self, arrays, n, sizes):
        """n counts the first array's elements, or a row kernel's rows; a row kernel's sizes
        are its classes, then (backward) whether g has one value per row (1) or one for all (0)."""
        first = arrays[0]
        if n != (first.shape[0] if sizes else first.size):
            raise ValueError(f"{self.expression}: n = {n} for an array of shape {first.shape}")
        if sizes and sizes[0] != first.shape[1]:
            raise ValueError(f"{self.expression}: {sizes[0]} classes for logits {first.shape}")
        if len(sizes) > 1 and (sizes[1] not in (0, 1) or arrays[2].size != (n if sizes[1] else 1)):
            raise ValueError(f"{self.expression}: g of {arrays[2].size} elements with stride "
                             f"{sizes[1]} for {n} rows")
