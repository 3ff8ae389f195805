"""The dispatch layer: one Backend per device kind, each in its own module, found by its kind.

    cpu       NumPy                               devices/numpy.py
    cuda:N    CuPy                                devices/cupy.py
    strict    NumPy under CuPy's rules, for tests  devices/strict.py
    meta      shapes and dtypes only               devices/meta.py

This module parses device strings, keeps the default device and dtype, and finds the Backend
of a device or of an array; the functions below ask that Backend. Ops ask
`devices.get(device).xp` for the array namespace and write their math once. Adding a device is
one module with a Backend subclass (devices/backend.py) and one line in _BACKENDS.
"""

import contextlib
import importlib
import os
import threading

import numpy as np

# the graphed-step state and its errors live in devices/capture.py, below the backends that check
# them; they are handed on from here (devices.capturing(), devices.DeviceError, ...)
from gpugrad.devices.capture import (  # noqa: F401
    HOST_READ_WHY, RANDOM_WHY, DeviceError, GraphStepError, bake, capturing,
    forbid_host_read, forbid_in_graph_step, forbid_index_range_check, graph_step,
    host_reads_allowed, in_graph_step, kept, swapped_in,
)
from gpugrad.devices.cupy import (  # noqa: F401
    cuda_available, cuda_device_count, cuda_unavailable_reason, cupy_version,
)
from gpugrad.devices.numpy import ERROR_STATE, QUIET_STATE, quiet  # noqa: F401
from gpugrad.devices.dtypes import (  # noqa: F401
    BFLOAT16, FLOAT16, FLOAT32, LOW_PRECISION, accumulating, epsilon, is_float,
)

# kind -> "module:Backend class"
_BACKENDS = {
    "cpu": "gpugrad.devices.numpy:NumpyBackend",
    "cuda": "gpugrad.devices.cupy:CupyBackend",
    "strict": "gpugrad.devices.strict:StrictBackend",
    "meta": "gpugrad.devices.meta:MetaBackend",
}
_NUMBERED = {"cuda"}  # kinds with several devices, "cuda:0", "cuda:1" ...
_ALIASES = {"gpu": "cuda"}


# ---------------------------------------------------------------------------- devices


def canonical_device(device):
    """'cpu', 'cuda' or 'cuda:N' (or a Tensor's device) -> 'cpu' or 'cuda:N'."""
    if not isinstance(device, str):
        raise TypeError(f"device must be a string like 'cpu' or 'cuda:0', got {device!r}")
    kind, colon, index = device.strip().lower().partition(":")
    kind = _ALIASES.get(kind, kind)
    if kind in _NUMBERED:
        if not colon:
            return f"{kind}:0"
        if index.isdigit():
            return f"{kind}:{int(index)}"
    elif kind in _BACKENDS and not colon:
        return kind
    raise ValueError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N' (or 'strict', "
                     f"the test device)")


_local = threading.local()
_env_cache = [None, None]  # (raw value of GPUGRAD_DEVICE, canonical device)


def default_device():
    """The device new tensors go to: gg.device(...) block, else GPUGRAD_DEVICE, else 'cpu'."""
    stack = getattr(_local, "devices", None)
    if stack:
        return stack[-1]
    raw = os.environ.get("GPUGRAD_DEVICE", "")
    if raw != _env_cache[0]:
        _env_cache[0], _env_cache[1] = raw, canonical_device(raw) if raw else "cpu"
    return _env_cache[1]


@contextlib.contextmanager
def device(name):
    """Within the block, new tensors are created on `name` ('cpu', 'cuda', 'cuda:N')."""
    dev = canonical_device(name)
    get(dev)  # fail at the `with`, not at the first tensor
    stack = _local.__dict__.setdefault("devices", [])
    stack.append(dev)
    try:
        yield dev
    finally:
        stack.pop()


# ---------------------------------------------------------------------------- dtypes

_default_dtype = np.dtype(np.float32)


def get_default_dtype():
    return _default_dtype


def set_default_dtype(dtype):
    """Set the dtype of tensors made from Python scalars and lists (float32 at start)."""
    global _default_dtype
    dt = as_dtype(dtype)
    if not is_float(dt):
        raise TypeError(f"the default dtype must be a floating type, got {dt}")
    _default_dtype = dt


def as_dtype(dtype):
    """NumPy dtype from a dtype, a type or a name; None stays None."""
    if dtype is None:
        return None
    try:
        return np.dtype(dtype)
    except TypeError:
        raise TypeError(f"unknown dtype {dtype!r}") from None


# ---------------------------------------------------------------------------- the registry

_classes = {}  # kind -> its Backend class
_every_class = []  # all of them, in _BACKENDS order: who owns an array is asked in turn
_backends = {}  # canonical device -> its Backend
_backends_lock = threading.Lock()
_namespace_owners = {}  # id(xp) -> the Backend class whose array namespace it is
_seed = None


def _backend_class(kind):
    """The Backend class of a kind, its module imported on first use."""
    cls = _classes.get(kind)
    if cls is None:
        module_name, _, class_name = _BACKENDS[kind].partition(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        _classes[kind] = cls
    return cls


def _all_classes():
    """Every device's Backend class, in _BACKENDS order; importing their modules is cheap
    (CuPy itself is imported only when a CUDA device is first asked about)."""
    if not _every_class:
        _every_class.extend(_backend_class(kind) for kind in _BACKENDS)
    return _every_class


def get(device=None):
    """The Backend for a device string (default: the default device)."""
    dev = default_device() if device is None else device
    be = _backends.get(dev)
    if be is not None:
        return be
    dev = canonical_device(dev)
    with _backends_lock:
        if dev not in _backends:
            be = _backend_class(dev.partition(":")[0])(dev)
            if _seed is not None:  # a backend made after gg.seed() starts from that seed too
                be.seed(_seed)
            _backends[dev] = be
        return _backends[dev]


def device_of_array(arr):
    """The device string of an array of any device, or None for anything else."""
    for cls in _all_classes():
        dev = cls.device_of(arr)
        if dev is not None:
            return dev
    return None


def is_backend_array(obj):
    return device_of_array(obj) is not None


def is_device_array(obj):
    """Whether obj is an array in a device's own memory, which NumPy cannot read (a CuPy or
    strict array, not a NumPy one)."""
    dev = device_of_array(obj)
    return dev is not None and not _backend_class(dev.partition(":")[0]).host_arrays


def address_of(arr):
    """Where an array's memory starts, on any device; None where arrays hold no memory."""
    dev = device_of_array(arr)
    return None if dev is None else _backend_class(dev.partition(":")[0]).address(arr)


def _backend_of_array(arr):
    dev = device_of_array(arr)
    if dev is None:
        raise TypeError(f"expected an array of a gpugrad device, got {type(arr).__name__}")
    return get(dev)


def seed(n):
    """Seed the random generators of every backend, present and future."""
    global _seed
    _seed = int(n)
    for be in list(_backends.values()):
        be.seed(_seed)


def from_dlpack(obj):
    """Zero-copy import of any object with __dlpack__ (PyTorch, JAX, NumPy, CuPy)."""
    if not hasattr(obj, "__dlpack__"):
        raise TypeError(f"from_dlpack needs an object with __dlpack__, got {type(obj).__name__}")
    kind, index = obj.__dlpack_device__()
    for cls in _all_classes():
        if int(kind) in cls.dlpack_device_types:
            return cls.import_dlpack(obj, index)
    raise DeviceError(f"from_dlpack: DLPack device type {int(kind)} is not supported")


# ---------------------------------------------------------------------------- spelled differently


def erf(x):
    """The error function of an array of any device, in its dtype."""
    if isinstance(x, np.generic):  # arithmetic on 0-d NumPy arrays gives NumPy scalars
        x = np.asarray(x)
    return _backend_of_array(x).erf(x)


def scatter_add(out, key, values):
    """out[key] += values, with repeated indices accumulated (NumPy's add.at)."""
    _backend_of_array(out).scatter_add(out, key, values)
    return out


def _namespace_owner(xp):
    owner = _namespace_owners.get(id(xp))
    if owner is None:
        owner = next((c for c in _all_classes() if c.owns_namespace(xp)), None)
        if owner is not None:
            _namespace_owners[id(xp)] = owner
    return owner


def fused(name, xp, *arrays):
    """The fused kernel `name` for these arrays of namespace xp, or None: on a device without
    kernels (the CPU), with fusion off (GPUGRAD_FUSED=0, gg.fused(False)), when the kernel is
    unavailable, or when the arrays do not suit it (dtype, shape, contiguity). The only place
    ops branch on the device: the caller falls back to its xp formula."""
    if xp is np:  # NumPy's Backend has no kernels; every op on the CPU asks, so it pays one test
        return None
    owner = _namespace_owner(xp)
    return None if owner is None else owner.fused(name, xp, arrays)


def matmul(xp, a, b):
    """xp.matmul, except inside a graphed step, where the device of `a` says how (a CUDA
    graph cannot capture CuPy's matmul: Backend.matmul). 16-bit operands are multiplied in
    float32 and the product rounded once to their dtype: on a device with a gemm (CUDA) by
    cublasGemmEx with a float32 compute type, eager and captured alike (1-D and 2-D operands
    of one dtype); elsewhere as float32 copies."""
    if (a.dtype.itemsize == 2 or b.dtype.itemsize == 2) and (
            a.dtype in LOW_PRECISION or b.dtype in LOW_PRECISION):  # the first test is cheap
        gemm = _backend_of_array(a).gemm
        if gemm is not None and a.dtype == b.dtype and a.ndim <= 2 and b.ndim <= 2:
            from gpugrad.devices.cuda import cublas

            return cublas.matmul(xp, a, b, gemm)
        return carried(lambda p, q: matmul(xp, p, q), a, b)
    if in_graph_step():
        return _backend_of_array(a).matmul(a, b)
    return xp.matmul(a, b)


def over(fn, x, **params):
    """fn(x, **params), carried in float32 and rounded once where x is a 16-bit float: for
    the reductions and running ops. (A 2-byte itemsize is tested first: it costs 40 ns where
    carried's scan costs 700.)"""
    if x.dtype.itemsize != 2:
        return fn(x, **params)
    return carried(fn, x, **params)


def carried(fn, *arrays, **params):
    """fn(*args, **params) with the 16-bit float arrays among args carried in float32 and the
    result rounded once to the arrays' result dtype (other args as they are): for what
    accumulates."""
    low = [isinstance(getattr(a, "dtype", None), np.dtype) and a.dtype in LOW_PRECISION
           for a in arrays]
    if not any(low):
        return fn(*arrays, **params)
    dtype = np.result_type(*(a.dtype for a in arrays if isinstance(getattr(a, "dtype", None), np.dtype)))
    wide = [a.astype(accumulating(a.dtype)) if is_low else a for a, is_low in zip(arrays, low)]
    out = fn(*wide, **params)
    return out.astype(dtype) if is_float(out.dtype) else out


def set_tf32(on):
    """TF32 for float32 matrix products on CUDA devices (gg.backends.matmul.allow_tf32):
    CuPy's compute type and gpugrad's cuBLAS handles, now where CuPy is loaded, else when a
    CUDA device is first used; nothing on the CPU."""
    from gpugrad.devices.cuda import cublas

    cublas.set_tf32(on)


def sum_of_squares(xp, arrays, scale=1.0):
    """scale * the sum of the squares of every element of every array (Backend.sum_of_squares),
    on the device of the arrays, whose namespace is xp."""
    return _backend_of_array(arrays[0]).sum_of_squares(arrays, scale)
