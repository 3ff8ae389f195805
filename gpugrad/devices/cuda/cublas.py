"""A matrix product that a CUDA graph can capture: cuBLAS gemm on a handle of gpugrad's own.

CuPy refuses every cuBLAS call while a stream is capturing (cupy/cupy issue 6290), but cuBLAS
itself captures fine when its handle's stream and workspace are set before the capture begins
(the graphed-step tests passed through it on an H100: bench/results/2026-11-23b-h100/tests-final.txt).
gg.cuda.graph runs a step once eagerly before
capturing it, so the eager pass creates the handle for the graph's stream and the capture reuses
it. devices.matmul sends a graphed step's products here, and every product of 16-bit operands
(cublasGemmEx, accumulated in float32); other products outside a step run CuPy's matmul.

The row-major product C = A @ B is the column-major product C^T = B^T A^T, so cuBLAS is called
with the operands swapped; an operand that is the transpose of a contiguous array (w.T) is
passed as it is with op T, and any other layout is copied to a contiguous one first. The plan
is separate from the call so that the strict test device can execute it with NumPy (strict.gemm).
"""

import ctypes
import threading

import numpy as np

from gpugrad.devices import capture, dtypes

OP_N, OP_T = 0, 1
# cublasGemmEx's cudaDataType_t of each 16-bit dtype, and its float32 compute type and algorithm
_DATA_TYPE = {dtypes.FLOAT16: 2, dtypes.BFLOAT16: 14}  # CUDA_R_16F, CUDA_R_16BF
COMPUTE_32F, GEMM_DEFAULT = 68, -1  # CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT
_GEMM_DTYPES = (dtypes.FLOAT32, dtypes.FLOAT64, *_DATA_TYPE)
WORKSPACE_BYTES = 32 << 20  # what cuBLAS asks for on Hopper; it may use less


def check_operands(a, b):
    """Raise a clear error for products the capturable path does not take."""
    if a.ndim not in (1, 2) or b.ndim not in (1, 2):
        raise capture.GraphStepError(
            f"matmul of shapes {a.shape} and {b.shape} inside a graphed step (gg.cuda.graph): "
            f"the capturable matmul takes 1-D and 2-D operands; reshape batched operands to 2-D")
    if a.dtype != b.dtype or a.dtype not in _GEMM_DTYPES:
        raise capture.GraphStepError(
            f"matmul of {a.dtype} and {b.dtype} inside a graphed step (gg.cuda.graph): the "
            f"capturable matmul takes two operands of one dtype: float32, float64, float16 or "
            f"bfloat16")


def _operand(xp, x):
    """(array, op, leading dimension) of x as cuBLAS reads it: a C-contiguous (r, c) array is
    the column-major (c, r) matrix x^T; an F-contiguous one is x itself, column-major."""
    if not x.flags.c_contiguous and x.flags.f_contiguous:
        return x, OP_T, max(1, x.shape[0])
    x = xp.ascontiguousarray(x)
    return x, OP_N, max(1, x.shape[1])


def matmul(xp, a, b, gemm, alpha=1.0, into=None):
    """alpha * (a @ b) for 1-D or 2-D operands through `gemm` (the device's cuBLAS-style gemm),
    as a new array, or added into `into` (C-contiguous, the product's size and dtype) by gemm's
    beta = 1: no kernel of its own for the scaling or the sum."""
    check_operands(a, b)
    out_shape = a.shape[:-1] + b.shape[1:]
    a2 = a.reshape(1, -1) if a.ndim == 1 else a
    b2 = b.reshape(-1, 1) if b.ndim == 1 else b
    m, k = a2.shape
    n = b2.shape[1]
    if into is None:
        c, beta = xp.empty((m, n), a.dtype), 0.0
    else:
        if into.dtype != a.dtype or into.size != m * n or not into.flags.c_contiguous:
            raise ValueError(f"matmul: cannot add a {m}x{n} {a.dtype} product into an array of "
                             f"shape {into.shape} and dtype {into.dtype}")
        c, beta = into.reshape(m, n), 1.0
    if m and n:
        if k == 0:
            if into is None:
                c[...] = 0
        else:
            # C^T (n x m) = B^T (n x k) @ A^T (k x m), all column-major
            bt, op_b, ld_b = _operand(xp, b2)
            at, op_a, ld_a = _operand(xp, a2)
            gemm(c.dtype, op_b, op_a, n, m, k, bt, ld_b, at, ld_a, c, max(1, n), alpha, beta)
    # the array itself where it has the product's shape: a new array, not a view of one, so
    # that backward may add into it in place as into the result of any other matmul
    return c if into is None and c.shape == out_shape else c.reshape(out_shape)


# ---------------------------------------------------------------------------- CuPy (ctypes)

_lib = None
_handles = {}  # (device, stream pointer) -> (handle, workspace)
DEFAULT_MATH, TF32_TENSOR_OP_MATH = 0, 3  # cublasMath_t
_tf32 = False  # gg.backends.matmul.allow_tf32


def set_tf32(on):
    """TF32 for float32 products: the math mode of every handle of ours (and of those made
    later), and CuPy's compute type for float32 where CuPy is loaded (else at its first use:
    apply_tf32_to_cupy)."""
    global _tf32
    _tf32 = on
    import sys

    cp = sys.modules.get("cupy")
    if cp is not None:
        apply_tf32_to_cupy(cp)
        for handle, _, _ in _handles.values():
            _check(_library(cp).cublasSetMathMode(handle, _math_mode()), "cublasSetMathMode")


def _math_mode():
    return TF32_TENSOR_OP_MATH if _tf32 else DEFAULT_MATH


def apply_tf32_to_cupy(cp):
    """CuPy's compute type for float32 products, as gg.backends.matmul.allow_tf32 says."""
    from cupy._core import _routines_linalg as linalg

    linalg.set_compute_type(np.float32, linalg.COMPUTE_TYPE_TF32 if _tf32
                            else linalg.COMPUTE_TYPE_DEFAULT)
_lock = threading.Lock()


def _library(cp):
    """libcublas as CuPy loaded it (found in this process's memory map)."""
    global _lib
    if _lib is None:
        cp.cuda.device.get_cublas_handle()  # makes CuPy load cuBLAS if it has not yet
        path = None
        try:
            with open("/proc/self/maps") as maps:
                for line in maps:
                    name = line.rsplit(None, 1)[-1]
                    if "/libcublas.so" in name:
                        path = name
                        break
        except OSError:
            pass
        candidates = [path] if path else [f"libcublas.so.{v}" for v in (13, 12, 11)]
        for candidate in candidates:
            try:
                _lib = ctypes.CDLL(candidate)
                break
            except OSError:
                continue
        if _lib is None:
            raise capture.DeviceError("the capturable matmul needs libcublas, which was not "
                                      "found in this process nor on the library path")
        for fn in ("cublasCreate_v2", "cublasSetStream_v2", "cublasSetWorkspace_v2",
                   "cublasSgemm_v2", "cublasDgemm_v2", "cublasGemmEx", "cublasSetMathMode"):
            getattr(_lib, fn).restype = ctypes.c_int
    return _lib


def _check(status, what):
    if status != 0:
        raise RuntimeError(f"{what} failed with cuBLAS status {status}")


def _handle(cp):
    """A cuBLAS handle bound to the current stream, with its own workspace. Made outside a
    capture (the eager pass of gg.cuda.graph); a capture only reuses it."""
    stream = cp.cuda.get_current_stream()
    key = (cp.cuda.runtime.getDevice(), stream.ptr)
    entry = _handles.get(key)
    if entry is None:
        if capture.capturing():
            raise capture.GraphStepError(
                "the capturable matmul has no cuBLAS handle for this stream: gg.cuda.graph "
                "makes one in the eager pass before capturing")
        with _lock:
            lib = _library(cp)
            handle = ctypes.c_void_p()
            _check(lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
            _check(lib.cublasSetStream_v2(handle, ctypes.c_void_p(stream.ptr)), "cublasSetStream")
            workspace = cp.cuda.memory.alloc(WORKSPACE_BYTES)
            _check(lib.cublasSetWorkspace_v2(handle, ctypes.c_void_p(workspace.ptr),
                                             ctypes.c_size_t(WORKSPACE_BYTES)),
                   "cublasSetWorkspace")
            _check(lib.cublasSetMathMode(handle, _math_mode()), "cublasSetMathMode")
            entry = _handles[key] = (handle, workspace, stream)
    return entry[0]


def cupy_gemm(cp, dtype, op_a, op_b, m, n, k, a, lda, b, ldb, c, ldc, alpha=1.0, beta=0.0):
    """C = alpha op(A) op(B) + beta C, column-major, on CuPy's current stream; 16-bit operands
    through cublasGemmEx, accumulated in float32 and C rounded once."""
    lib = _library(cp)
    handle = _handle(cp)
    if dtype in _DATA_TYPE:
        kind, one, zero = _DATA_TYPE[dtype], ctypes.c_float(alpha), ctypes.c_float(beta)
        _check(lib.cublasGemmEx(handle, op_a, op_b, m, n, k, ctypes.byref(one),
                                ctypes.c_void_p(a.data.ptr), kind, lda,
                                ctypes.c_void_p(b.data.ptr), kind, ldb, ctypes.byref(zero),
                                ctypes.c_void_p(c.data.ptr), kind, ldc, COMPUTE_32F, GEMM_DEFAULT),
               "cublasGemmEx")
        return
    scalar = ctypes.c_float if dtype == np.float32 else ctypes.c_double
    fn = lib.cublasSgemm_v2 if dtype == np.float32 else lib.cublasDgemm_v2
    # host pointers: cuBLAS reads them when the call is made, or captured into the graph
    alpha_, beta_ = scalar(alpha), scalar(beta)
    _check(fn(handle, op_a, op_b, m, n, k, ctypes.byref(alpha_), ctypes.c_void_p(a.data.ptr),
              lda, ctypes.c_void_p(b.data.ptr), ldb, ctypes.byref(beta_),
              ctypes.c_void_p(c.data.ptr), ldc), "cublas gemm")
