"""The dispatch layer: one Backend per device kind (NumPy on "cpu", CuPy on "cuda:N", and for
tests the strict device, NumPy under CuPy's rules: gpugrad/devices/strict.py).

Everything device-specific lives here: parsing device strings, the default device and dtype,
array creation and transfer, random numbers, synchronisation, and the few functions NumPy and
CuPy spell differently (erf, scatter-add). Ops ask `backend.get(device).xp` for the array
namespace and write their math once.
"""

import contextlib
import math
import os
import threading

import numpy as np

from gpugrad.devices.cuda import kernels
# the graphed-step state and its errors live in devices/capture.py, below the backends that check
# them; they are handed on from here (backend.capturing(), backend.DeviceError, ...)
from gpugrad.devices.capture import (  # noqa: F401
    HOST_READ_WHY, RANDOM_WHY, DeviceError, GraphStepError, bake, capturing,
    forbid_in_graph_step, graph_step, in_graph_step, swapped_in,
)

_INSTALL_HINT = (
    "pip install 'gpugrad[cuda13]' (CUDA 13) or 'gpugrad[cuda12]' (CUDA 12)"
)


# ---------------------------------------------------------------------------- CuPy probing

_cupy = None
_cupy_reason = None
_cupy_probed = False


def _probe_cupy():
    """Import CuPy and touch the runtime once; remember why it failed if it did."""
    global _cupy, _cupy_reason, _cupy_probed
    if _cupy_probed:
        return _cupy
    _cupy_probed = True
    try:
        import cupy
    except ImportError as e:
        _cupy_reason = f"CuPy is not installed ({e}); install it with {_INSTALL_HINT}"
        return None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CuPy imports on machines without a driver, then its first call fails
        _cupy_reason = f"CuPy {cupy.__version__} is installed but CUDA is unusable: {e}"
        return None
    if count == 0:
        _cupy_reason = f"CuPy {cupy.__version__} is installed but no CUDA device was found"
        return None
    _cupy = cupy
    return cupy


def cuda_available():
    return _probe_cupy() is not None


def cupy_version():
    """CuPy's version if it imports (whether or not CUDA is usable), else None."""
    try:
        import cupy
    except ImportError:
        return None
    return cupy.__version__


def cuda_unavailable_reason():
    """Why cuda_available() is False, or None when it is True."""
    _probe_cupy()
    return _cupy_reason


def cuda_device_count():
    cp = _probe_cupy()
    return cp.cuda.runtime.getDeviceCount() if cp is not None else 0


# ---------------------------------------------------------------------------- devices


def canonical_device(device):
    """'cpu', 'cuda' or 'cuda:N' (or a Tensor's device) -> 'cpu' or 'cuda:N'."""
    if not isinstance(device, str):
        raise TypeError(f"device must be a string like 'cpu' or 'cuda:0', got {device!r}")
    d = device.strip().lower()
    if d in ("cpu", "meta", "strict"):
        return d
    if d == "cuda" or d == "gpu":
        return "cuda:0"
    for prefix in ("cuda:", "gpu:"):
        if d.startswith(prefix) and d[len(prefix):].isdigit():
            return f"cuda:{int(d[len(prefix):])}"
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
    if dt.kind != "f":
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


# ---------------------------------------------------------------------------- backends


class Backend:
    """What ops need of a device: its array namespace and a handful of helpers."""

    name = None
    is_cpu = True
    is_cuda = False
    # how gg.cuda.graph runs a step here: None (eagerly, under the graphed-step contract),
    # "cuda" (captured into a CUDA graph) or "emulated" (eagerly, with capture's restrictions)
    capture = None
    gemm = None  # a matrix product a CUDA graph can capture (gpugrad/devices/cuda/cublas.py), where needed

    def __init__(self, device):
        self.device = device

    def __repr__(self):
        return f"<{type(self).__name__} {self.device}>"


def _sampled_dtype(dtype):
    """The dtype random samples are drawn in: float32 or float64, which the generators
    support; other float dtypes are drawn in float32 and rounded."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"random samples are floating point; dtype {dtype} is not")
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float32)


def uniform_samples(xp, draw, shape, dtype):
    """draw(shape, dtype=...) uniform on [0, 1) in `dtype`: one rounded to 1 in a narrower
    float is moved to the largest number below 1, so that 1 is never drawn."""
    dtype = np.dtype(dtype)
    x = draw(shape, dtype=_sampled_dtype(dtype))
    if x.dtype == dtype:
        return x
    return xp.minimum(x.astype(dtype), np.nextafter(dtype.type(1), dtype.type(0)))


def normal_samples(draw, shape, dtype):
    """draw(shape, dtype=...) standard normal in `dtype`."""
    dtype = np.dtype(dtype)
    x = draw(shape, dtype=_sampled_dtype(dtype))
    return x if x.dtype == dtype else x.astype(dtype)


class NumpyBackend(Backend):
    name = "numpy"
    xp = np
    is_cpu = True

    def __init__(self):
        super().__init__("cpu")
        self.rng = np.random.default_rng()
        self.active = contextlib.nullcontext()

    def asarray(self, data, dtype=None):
        if not isinstance(data, np.ndarray) and is_backend_array(data):
            data = get(device_of_array(data)).to_host(data)
        return np.asarray(data, dtype=dtype)

    def to_host(self, arr):
        return arr

    def seed(self, n):
        self.rng = np.random.default_rng(n)

    def rand(self, shape, dtype):
        forbid_in_graph_step("random numbers", RANDOM_WHY)
        return uniform_samples(np, self.rng.random, shape, dtype)

    def randn(self, shape, dtype):
        forbid_in_graph_step("random numbers", RANDOM_WHY)
        return normal_samples(self.rng.standard_normal, shape, dtype)

    def synchronize(self):
        pass


class MetaBackend(Backend):
    """Shapes and dtypes only (gpugrad/devices/meta.py): for estimating memory without allocating it."""

    name = "meta"
    is_cpu = False

    def __init__(self):
        from gpugrad.devices import meta

        super().__init__("meta")
        self.xp = meta.xp
        self.active = contextlib.nullcontext()

    def asarray(self, data, dtype=None):
        return self.xp.asarray(data, dtype)

    def to_host(self, arr):
        raise TypeError("a tensor on the meta device has no values (it holds a shape and a dtype)")

    def seed(self, n):
        pass

    def rand(self, shape, dtype):
        return self.xp.zeros(shape, dtype)

    randn = rand

    def synchronize(self):
        pass


class StrictBackend(Backend):
    """The strict test device (gpugrad/devices/strict.py): CuPy's rules over NumPy, on the CPU."""

    name = "strict"
    is_cpu = False
    capture = "emulated"

    def __init__(self):
        from gpugrad.devices import strict

        super().__init__("strict")
        self.strict = strict
        self.xp = strict.xp
        self.active = contextlib.nullcontext()
        self.rng = np.random.default_rng()

    def asarray(self, data, dtype=None):
        if capturing() and not isinstance(data, self.xp.ndarray):
            raise GraphStepError(_HOST_COPY_IN_CAPTURE)
        return self.xp.asarray(data, dtype=dtype)

    def to_host(self, arr):
        forbid_in_graph_step("copying a device array to the host", HOST_READ_WHY)
        return arr.get()

    def seed(self, n):
        self.rng = np.random.default_rng(n)

    def rand(self, shape, dtype):
        forbid_in_graph_step("random numbers", RANDOM_WHY)
        return self.xp.asarray(uniform_samples(np, self.rng.random, shape, dtype))

    def randn(self, shape, dtype):
        forbid_in_graph_step("random numbers", RANDOM_WHY)
        return self.xp.asarray(normal_samples(self.rng.standard_normal, shape, dtype))

    def synchronize(self):
        pass

    def allocations(self, out):
        return self.strict.track(out)

    def gemm(self, *args):
        return self.strict.gemm(*args)


_HOST_COPY_IN_CAPTURE = (
    "copying host data to the GPU inside a graphed step (gg.cuda.graph): the graph would read "
    "that host memory again on every replay; pass the data in as an argument (it is copied to "
    "the device before each replay)")


class CupyBackend(Backend):
    name = "cupy"
    is_cpu = False
    is_cuda = True
    capture = "cuda"

    def __init__(self, device):
        super().__init__(device)
        cp = _probe_cupy()
        if cp is None:
            raise DeviceError(f"device {device!r} requested but {_cupy_reason}")
        self.index = int(device.split(":")[1])
        count = cp.cuda.runtime.getDeviceCount()
        if self.index >= count:
            raise DeviceError(f"device {device!r} requested but only {count} CUDA device(s) exist")
        self.xp = cp
        self.active = cp.cuda.Device(self.index)
        with self.active:
            self.rng = cp.random.RandomState()

    def asarray(self, data, dtype=None):
        if capturing() and not isinstance(data, self.xp.ndarray):
            raise GraphStepError(_HOST_COPY_IN_CAPTURE)
        with self.active:
            return self.xp.asarray(data, dtype=dtype)

    def to_host(self, arr):
        forbid_in_graph_step("copying a GPU array to the host", HOST_READ_WHY)
        return self.xp.asnumpy(arr)

    def seed(self, n):
        with self.active:
            self.rng = self.xp.random.RandomState(n)

    def rand(self, shape, dtype):
        forbid_in_graph_step("random numbers", RANDOM_WHY)
        with self.active:
            return uniform_samples(self.xp, self.rng.random_sample, shape, dtype)

    def randn(self, shape, dtype):
        forbid_in_graph_step("random numbers", RANDOM_WHY)
        with self.active:
            return normal_samples(self.rng.standard_normal, shape, dtype)

    def synchronize(self):
        with self.active:
            self.xp.cuda.get_current_stream().synchronize()

    def gemm(self, *args):
        from gpugrad.devices.cuda import cublas

        with self.active:
            return cublas.cupy_gemm(self.xp, *args)

    def allocations(self, out):
        """Count the pool's mallocs and frees into `out` (the pool keeps no peak of its own)."""
        cp = self.xp

        class PoolHook(cp.cuda.MemoryHook):
            name = "gpugrad-memory"

            def malloc_postprocess(self, device_id, size, mem_size, mem_ptr, pmem_id):
                out.current += mem_size
                out.peak = max(out.peak, out.current)

            def free_postprocess(self, device_id, mem_size, mem_ptr, pmem_id):
                out.current -= mem_size
        return PoolHook()


_backends = {}
_backends_lock = threading.Lock()
_seed = None


def get(device=None):
    """The Backend for a device string (default: the default device)."""
    dev = default_device() if device is None else device
    be = _backends.get(dev)
    if be is not None:
        return be
    dev = canonical_device(dev)
    with _backends_lock:
        if dev not in _backends:
            local = {"cpu": NumpyBackend, "meta": MetaBackend, "strict": StrictBackend}
            be = local[dev]() if dev in local else CupyBackend(dev)
            if _seed is not None:  # a backend made after gg.seed() starts from that seed too
                be.seed(_seed)
            _backends[dev] = be
        return _backends[dev]


def device_of_array(arr):
    """The device string of a NumPy, CuPy or meta array."""
    if isinstance(arr, np.ndarray):
        return "cpu"
    kind = type(arr).__name__
    if kind == "MetaArray":
        return "meta"
    if kind == "StrictArray":
        return "strict"
    if _cupy is not None and isinstance(arr, _cupy.ndarray):
        return f"cuda:{arr.device.id}"
    return None


def is_backend_array(obj):
    return (isinstance(obj, np.ndarray) or (_cupy is not None and isinstance(obj, _cupy.ndarray))
            or type(obj).__name__ in ("MetaArray", "StrictArray"))


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
    if int(kind) == 1:  # kDLCPU
        return np.from_dlpack(obj)
    if int(kind) in (2, 3):  # kDLCUDA, kDLCUDAHost
        be = get(f"cuda:{index}")
        with be.active:
            return be.xp.from_dlpack(obj)
    if int(kind) == get("strict").xp.DLPACK_DEVICE_TYPE:
        return get("strict").xp.from_dlpack(obj)
    raise DeviceError(f"from_dlpack: DLPack device type {int(kind)} is not supported")


# ---------------------------------------------------------------------------- spelled differently


def _erf_numpy(x):
    try:
        from scipy import special
    except ImportError:
        # math.erf is exact to double precision; slower than SciPy but needs nothing
        return np.vectorize(math.erf, otypes=[x.dtype])(x) if x.size else x.copy()
    return special.erf(x).astype(x.dtype, copy=False)


def quiet():
    """NumPy's floating-point warnings off for a block (a backward: inf and NaN in gradients
    are anomaly mode's to report). CuPy never warns."""
    return np.errstate(all="ignore")


class _GlobalErrorState:
    """NumPy 1's error state is global (np.seterr): set and reset as NumPy 2's context
    variable is."""

    @staticmethod
    def set(_):
        return np.seterr(all="ignore")

    @staticmethod
    def reset(previous):
        np.seterr(**previous)


# Every op's forward runs with NumPy's warnings off, as on CuPy (and as PyTorch: log(0) is
# -inf without a word). np.errstate costs about 0.7 us to enter and leave, 40% of an op's
# whole overhead; NumPy 2 keeps the state in a context variable, set and reset in about 0.13 us.
try:
    from numpy._core._ufunc_config import _extobj_contextvar as ERROR_STATE
except ImportError:
    ERROR_STATE = _GlobalErrorState()
    QUIET_STATE = None
else:
    with np.errstate(all="ignore"):
        QUIET_STATE = ERROR_STATE.get()


def erf(x):
    """The error function of a NumPy or CuPy array, in its dtype."""
    if isinstance(x, (np.ndarray, np.generic)):  # arithmetic on 0-d NumPy arrays gives scalars
        return _erf_numpy(np.asarray(x))
    if device_of_array(x) == "meta":
        return x.copy()
    if device_of_array(x) == "strict":
        return get("strict").xp.asarray(_erf_numpy(x.get()))
    import cupyx.scipy.special

    return cupyx.scipy.special.erf(x)


def scatter_add(out, key, values):
    """out[key] += values, with repeated indices accumulated (NumPy's add.at)."""
    if isinstance(out, np.ndarray):
        np.add.at(out, key, values)
    elif device_of_array(out) == "meta":
        pass  # shapes only
    elif device_of_array(out) == "strict":
        get("strict").strict.scatter_add(out, key, values)
    elif hasattr(_cupy.add, "at"):  # CuPy 13 and later
        _cupy.add.at(out, key, values)
    else:
        import cupyx

        cupyx.scatter_add(out, key, values)
    return out


def fused(name, xp, *arrays):
    """The fused CUDA kernel `name` for these arrays of namespace xp, or None: on the CPU, with
    fusion off (GPUGRAD_FUSED=0, gg.fused(False)), when the kernel is unavailable, or when the
    arrays do not suit it (dtype, shape, contiguity: kernels.suits). The only place ops branch
    on the device, and the only check of the arrays: the caller falls back to its xp formula."""
    if xp is np or not kernels.enabled():  # first: the CPU pays one comparison
        return None
    if xp is _cupy or hasattr(xp, "stand_in_kernel"):  # CuPy, or the strict test device
        launch = kernels.lookup(name, xp)
        return launch if launch is not None and kernels.suits(name, arrays) else None
    return None


def matmul(xp, a, b):
    """xp.matmul, except inside a graphed step on a device that captures one: there CuPy's
    matmul cannot be captured (cupy/cupy issue 6290), and cuBLAS on a handle of gpugrad's own
    can (gpugrad/devices/cuda/cublas.py). The eager pass of a graphed step takes the same path, so a step
    computes the same numbers when it is captured as when it ran."""
    if xp is not np and in_graph_step():
        be = get(device_of_array(a))
        if be.gemm is not None:
            from gpugrad.devices.cuda import cublas

            return cublas.matmul(xp, a, b, be.gemm)
    return xp.matmul(a, b)


def sum_of_squares(xp, arrays, scale=1.0):
    """scale * the sum of the squares of every element of every array, as a 0-d array of their
    result dtype: dot products, so no temporary the size of an array. Inside a graphed step on
    a device whose matmul a graph can capture, each array's x . x is added into one output by
    the gemm itself (alpha = scale, beta = 1): no kernel for the sum or the scaling."""
    dtype = xp.result_type(*arrays)
    be = get(device_of_array(arrays[0])) if xp is not np and in_graph_step() else None
    if be is not None and be.gemm is not None and all(a.dtype == dtype for a in arrays):
        from gpugrad.devices.cuda import cublas

        total = None
        for a in arrays:
            flat = a.reshape(-1)
            total = cublas.matmul(xp, flat.reshape(1, -1), flat.reshape(-1, 1), be.gemm,
                                  alpha=scale, into=total)
        return total.reshape(())
    total = None
    for a in arrays:
        flat = a.reshape(-1)
        dot = xp.vdot(flat, flat) if be is None else matmul(
            xp, flat.reshape(1, -1), flat.reshape(-1, 1)).reshape(())
        total = dot if total is None else total + dot
    return xp.asarray(total if scale == 1.0 else total * scale, dtype=dtype)


