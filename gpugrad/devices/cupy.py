"""The "cuda:N" devices: CuPy arrays on NVIDIA GPUs.

CuPy is optional, and may import on a machine with no usable GPU (no driver: it imports, then
its first runtime call raises), so it is probed once and the reason kept when it fails.
"""

from gpugrad.devices import backend
from gpugrad.devices import capture
from gpugrad.devices import dtypes

_INSTALL_HINT = (
    "pip install 'gpugrad[cuda13]' (CUDA 13) or 'gpugrad[cuda12]' (CUDA 12)"
)

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


BFLOAT16_CUPY = 14  # the first CuPy whose arrays hold ml_dtypes' bfloat16


def bfloat16_refusal(version):
    """The error for bfloat16 on a CuPy of this version, or None where it can hold it."""
    major = int(version.split(".")[0]) if version and version.split(".")[0].isdigit() else 0
    if major >= BFLOAT16_CUPY:
        return None
    return capture.DeviceError(f"bfloat16 on a CUDA device needs CuPy {BFLOAT16_CUPY} or later; "
                               f"this is CuPy {version} (pip install -U 'gpugrad[cuda13]'), or "
                               f"use float16")


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


class CupyBackend(backend.Backend):
    kind = "cuda"
    name = "cupy"
    dlpack_device_types = (2, 3)  # kDLCUDA, kDLCUDAHost
    is_cuda = True
    capture = "cuda"

    def __init__(self, device):
        super().__init__(device)
        cp = _probe_cupy()
        if cp is None:
            raise capture.DeviceError(f"device {device!r} requested but {_cupy_reason}")
        self.index = int(device.split(":")[1])
        count = cp.cuda.runtime.getDeviceCount()
        if self.index >= count:
            raise capture.DeviceError(f"device {device!r} requested but only {count} CUDA "
                                      f"device(s) exist")
        self.xp = cp
        self.active = cp.cuda.Device(self.index)
        with self.active:
            self.rng = cp.random.RandomState()
        from gpugrad.devices.cuda import cublas

        cublas.apply_tf32_to_cupy(cp)  # gg.backends.matmul.allow_tf32, set before CuPy loaded

    def check_dtype(self, dtype):
        if dtype == dtypes.BFLOAT16:
            refusal = bfloat16_refusal(self.xp.__version__)
            if refusal is not None:
                raise refusal

    @classmethod
    def device_of(cls, arr):
        # only a probed CuPy can have made arrays gpugrad is asked about
        if _cupy is not None and isinstance(arr, _cupy.ndarray):
            return f"cuda:{arr.device.id}"
        return None

    @classmethod
    def owns_namespace(cls, xp):
        return _cupy is not None and xp is _cupy

    @classmethod
    def address(cls, arr):
        return arr.data.ptr

    def asarray(self, data, dtype=None):
        capture.forbid_host_data_while_capturing(data, self.xp.ndarray)
        with self.active:
            return self.xp.asarray(data, dtype=dtype)

    def to_host(self, arr):
        capture.forbid_device_copy_to_host("GPU")
        return self.xp.asnumpy(arr)

    def seed(self, n):
        with self.active:
            self.rng = self.xp.random.RandomState(n)

    def rand(self, shape, dtype):
        with self.active:
            return backend.uniform_samples(self.xp, self.rng.random_sample, shape, dtype)

    def randn(self, shape, dtype):
        with self.active:
            return backend.normal_samples(self.rng.standard_normal, shape, dtype)

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

    @classmethod
    def import_dlpack(cls, obj, index):
        from gpugrad import devices

        be = devices.get(f"cuda:{index}")
        with be.active:
            return be.xp.from_dlpack(obj)

    @classmethod
    def fused(cls, name, xp, arrays):
        return backend.kernel_launcher(name, xp, arrays)

    @staticmethod
    def erf(x):
        import cupyx.scipy.special

        return cupyx.scipy.special.erf(x)

    @staticmethod
    def scatter_add(out, key, values):
        if hasattr(_cupy.add, "at"):  # CuPy 13 and later
            _cupy.add.at(out, key, values)
        else:
            import cupyx

            cupyx.scatter_add(out, key, values)
