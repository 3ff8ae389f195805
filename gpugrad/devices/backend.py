"""Backend: what ops need of a device, and what every device module (numpy.py, cupy.py,
strict.py, meta.py) provides by subclassing it.

A Backend knows which arrays are its own, makes arrays, draws random numbers, spells the few
functions NumPy and CuPy spell differently (erf, scatter-add, DLPack import), finds its fused
kernels, and keeps the rules a graphed step (gg.cuda.graph) sets for it.
"""

import contextlib

import numpy as np

from gpugrad.devices import capture
from gpugrad.devices import dtypes
from gpugrad.devices.cuda import kernels


class Backend:
    """One device: its array namespace `xp` and a handful of helpers. A subclass names its
    kind (the device string, or its prefix before ":N") and the array type it owns."""

    kind = None
    name = None
    xp = None  # the array namespace: NumPy's functions, or CuPy's
    array_type = ()  # the arrays this device owns
    dlpack_device_types = ()  # the DLPack device types it imports from
    is_cpu = False
    is_cuda = False
    host_arrays = False  # its arrays are NumPy arrays that NumPy reads directly
    has_values = True  # False where arrays hold a shape and a dtype only
    # how gg.cuda.graph runs a step here: None (eagerly, under the graphed-step contract),
    # "cuda" (captured into a CUDA graph) or "emulated" (eagerly, with capture's restrictions)
    capture = None
    gemm = None  # a matrix product a CUDA graph can capture (devices/cuda/cublas.py), where needed

    def __init__(self, device):
        self.device = device
        self.active = contextlib.nullcontext()

    def __repr__(self):
        return f"<{type(self).__name__} {self.device}>"

    # ------------------------------------------------------------------ which arrays
    @classmethod
    def device_of(cls, arr):
        """The device string of `arr` if it is one of this device's arrays, else None."""
        return cls.kind if isinstance(arr, cls.array_type) else None

    @classmethod
    def owns_namespace(cls, xp):
        return xp is cls.xp

    @classmethod
    def address(cls, arr):
        """Where one of its arrays' memory starts; None where arrays hold no memory."""
        return None

    # ------------------------------------------------------------------ arrays and numbers
    def transfer(self, arr):
        """An array of another device, copied here."""
        with self.active:
            return self.xp.asarray(arr)

    def seed(self, n):
        pass

    def synchronize(self):
        pass

    @classmethod
    def fused(cls, name, xp, arrays):
        """The fused kernel `name` for these arrays of namespace xp, or None (see devices.fused)."""
        return None

    def check_dtype(self, dtype):
        """Raise where this device cannot hold `dtype` (every device holds what NumPy does)."""

    def matmul(self, a, b):
        """xp.matmul, except inside a graphed step on a device whose graphs cannot capture it:
        there the product goes through `gemm`, the capturable cuBLAS call. The eager pass of a
        graphed step takes the same path, so a step computes the same numbers when it is
        captured as when it ran."""
        if self.gemm is not None and capture.in_graph_step():
            from gpugrad.devices.cuda import cublas

            return cublas.matmul(self.xp, a, b, self.gemm)
        return self.xp.matmul(a, b)

    def sum_of_squares(self, arrays, scale=1.0):
        """scale * the sum of the squares of every element of every array, as a 0-d array of
        their result dtype: dot products, so no temporary the size of an array. Inside a
        graphed step where matmul goes through `gemm`, each array's x . x is added into one
        output by the gemm itself (alpha = scale, beta = 1): no kernel for the sum or the
        scaling."""
        xp = self.xp
        dtype = xp.result_type(*arrays)
        in_step = self.gemm is not None and capture.in_graph_step()
        if in_step and all(a.dtype == dtype for a in arrays):
            from gpugrad.devices.cuda import cublas

            total = None
            for a in arrays:
                flat = a.reshape(-1)
                total = cublas.matmul(xp, flat.reshape(1, -1), flat.reshape(-1, 1), self.gemm,
                                      alpha=scale, into=total)
            return total.reshape(())
        total = None
        for a in arrays:
            flat = a.reshape(-1)
            dot = self.matmul(flat.reshape(1, -1), flat.reshape(-1, 1)).reshape(()) if in_step \
                else xp.vdot(flat, flat)
            total = dot if total is None else total + dot
        return xp.asarray(total if scale == 1.0 else total * scale, dtype=dtype)


def kernel_launcher(name, xp, arrays):
    """The launcher of the fused kernel `name` on namespace xp when fusion is on
    (GPUGRAD_FUSED, gg.fused) and the kernel exists and takes these arrays (dtype, shape,
    contiguity: kernels.suits); None otherwise, and the caller falls back to its xp formula."""
    if not kernels.enabled():
        return None
    launch = kernels.lookup(name, xp)
    return launch if launch is not None and kernels.suits(name, arrays) else None


def _sampled_dtype(dtype):
    """The dtype random samples are drawn in: float32 or float64, which the generators
    support; other float dtypes are drawn in float32 and rounded."""
    dtype = np.dtype(dtype)
    if not dtypes.is_float(dtype):
        raise TypeError(f"random samples are floating point; dtype {dtype} is not")
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float32)


def uniform_samples(xp, draw, shape, dtype):
    """draw(shape, dtype=...) uniform on [0, 1) in `dtype`: one rounded to 1 in a narrower
    float is moved to the largest number below 1, so that 1 is never drawn."""
    capture.forbid_random_numbers()
    dtype = np.dtype(dtype)
    x = draw(shape, dtype=_sampled_dtype(dtype))
    if x.dtype == dtype:
        return x
    return xp.minimum(x.astype(dtype), np.nextafter(dtype.type(1), dtype.type(0)))


def normal_samples(draw, shape, dtype):
    """draw(shape, dtype=...) standard normal in `dtype`."""
    capture.forbid_random_numbers()
    dtype = np.dtype(dtype)
    x = draw(shape, dtype=_sampled_dtype(dtype))
    return x if x.dtype == dtype else x.astype(dtype)
