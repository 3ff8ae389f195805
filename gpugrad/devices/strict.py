"""The "strict" test device: NumPy underneath, CuPy's rules on top.

CuPy cannot run without a GPU, so a CPU-only test run never exercises the code paths that
differ on a GPU (tests that pass on the CPU and fail on one). The strict device lets every
test body run those paths on the CPU:

- its arrays (StrictArray, in gpugrad/devices/strict_array.py) refuse implicit conversion to
  NumPy, as CuPy's do (`.get()` or `xp.asnumpy` to the host), have their own device string
  ('strict'), and refuse NumPy arrays as operands; reductions and single-element indexing give
  0-d arrays, not scalars;
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

import functools
import re
import types

import numpy as np

from gpugrad.devices import backend
from gpugrad.devices import capture
from gpugrad.devices import dtypes
from gpugrad.devices import numpy as numpy_device
from gpugrad.devices import strict_array
from gpugrad.devices.cuda import kernels
from gpugrad.devices.strict_array import StrictArray, calls  # the stand-ins check and count


# ---------------------------------------------------------------------------- the namespace


class Namespace(types.SimpleNamespace):
    """`xp` for the strict device: CuPy's API over NumPy's functions."""

    ndarray = StrictArray
    DLPACK_DEVICE_TYPE = strict_array.DLPACK_DEVICE_TYPE

    @staticmethod
    def from_dlpack(obj):
        capsule = obj.__dlpack__()
        if not isinstance(capsule, strict_array.Capsule):
            raise TypeError(f"the strict test device imports only its own arrays through "
                            f"DLPack, not {type(obj).__name__}")
        return capsule.array

    def __getattr__(self, name):
        attr = strict_array.take if name == "take" else getattr(np, name)
        if isinstance(attr, types.ModuleType):
            return strict_array.Submodule(attr)
        if callable(attr) and not isinstance(attr, type):
            return strict_array.function(attr, name)
        return attr

    # host data crosses to the device only through these, as in CuPy
    @staticmethod
    def asarray(data, dtype=None):
        if isinstance(data, StrictArray):
            return data if dtype is None or data.dtype == dtype else data.astype(dtype)
        return strict_array.wrap(np.array(data, dtype=dtype, copy=True))

    @staticmethod
    def array(data, dtype=None, copy=True):
        if isinstance(data, StrictArray):
            return strict_array.wrap(np.array(data._a, dtype=dtype, copy=copy))
        return strict_array.wrap(np.array(data, dtype=dtype, copy=True))

    @staticmethod
    def asnumpy(a):
        return a.get() if isinstance(a, StrictArray) else np.asarray(a)

    # CuPy's empty hands back recycled pool memory, NumPy's often fresh zeroed pages: here it
    # holds garbage (every bit set: NaN, -1), so code that reads what it never wrote fails
    @staticmethod
    def empty(shape, dtype=float, order="C"):
        return strict_array.garbage(strict_array.call(np.empty, "empty", (shape,), {"dtype": dtype, "order": order}))

    @staticmethod
    def empty_like(a, dtype=None, order="K", shape=None):
        return strict_array.garbage(strict_array.call(np.empty_like, "empty_like", (a,),
                              {"dtype": dtype, "order": order, "shape": shape}))

    @staticmethod
    def stand_in_kernel(source, expression):
        """The NumPy stand-in for one compiled kernel (see `kernels`)."""
        return _StandIn(source, expression)


xp = Namespace()


def scatter_add(out, key, values):
    """out[key] += values with repeated indices accumulated (CuPy's add.at)."""
    np.add.at(out._a, strict_array.index_key(key, out._a.shape), strict_array.operand(values))


# ---------------------------------------------------------------------------- the device


class StrictBackend(backend.Backend):
    """The strict test device: CuPy's rules over NumPy, on the CPU."""

    kind = "strict"
    name = "strict"
    xp = xp
    array_type = StrictArray
    dlpack_device_types = (Namespace.DLPACK_DEVICE_TYPE,)
    capture = "emulated"

    def __init__(self, device="strict"):
        super().__init__(device)
        self.rng = np.random.default_rng()

    def asarray(self, data, dtype=None):
        capture.forbid_host_data_while_capturing(data, StrictArray)
        return self.xp.asarray(data, dtype=dtype)

    def to_host(self, arr):
        capture.forbid_device_copy_to_host("device")
        return arr.get()

    def seed(self, n):
        self.rng = np.random.default_rng(n)

    def rand(self, shape, dtype):
        return self.xp.asarray(backend.uniform_samples(np, self.rng.random, shape, dtype))

    def randn(self, shape, dtype):
        return self.xp.asarray(backend.normal_samples(self.rng.standard_normal, shape, dtype))

    def allocations(self, out):
        return strict_array.track(out)

    @classmethod
    def address(cls, arr):
        return arr._a.__array_interface__["data"][0]  # a NumPy array underneath

    def gemm(self, *args):
        return gemm(*args)

    @classmethod
    def import_dlpack(cls, obj, index):
        return xp.from_dlpack(obj)

    @classmethod
    def fused(cls, name, xp, arrays):
        return backend.kernel_launcher(name, xp, arrays)

    @staticmethod
    def erf(x):
        return xp.asarray(numpy_device.host_erf(x.get()))

    scatter_add = staticmethod(scatter_add)


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
    matmul's stand-in, executing the same plan as on CUDA (gpugrad/devices/cuda/cublas.py).
    16-bit operands are multiplied and accumulated in float32 and C rounded once, as
    cublasGemmEx with a float32 compute type does."""
    for x in (a, b, c):
        if not isinstance(x, StrictArray) or x.dtype != dtype:
            raise TypeError(f"gemm: operands must be {dtype} device arrays")
    wide = dtypes.accumulating(dtype)
    # op(A) op(B) as (op(B)^T op(A)^T)^T: the row-major product the caller asked for, which NumPy
    # sums as it sums that product on the CPU
    product = (_column_major(b, op_b, k, n, ldb).T.astype(wide, copy=False)
               @ _column_major(a, op_a, m, k, lda).T.astype(wide, copy=False)).T
    if not c.flags.c_contiguous or c.size != m * n or ldc != m:
        raise ValueError("gemm: the output must be a contiguous m x n column-major buffer")
    if alpha != 1.0:
        product = product * wide.type(alpha)
    flat = c._a.reshape(-1)
    if beta == 0.0:  # as cuBLAS: C is not read (it may hold garbage, even NaN)
        flat[:] = product.reshape(-1, order="F")
    else:
        flat[:] = product.reshape(-1, order="F") + beta * flat.astype(wide, copy=False)


# ---------------------------------------------------------------------------- kernel stand-ins

_CTYPES = {"float": np.float32, "double": np.float64, "float16_bits": np.float16,
           "bfloat16_bits": dtypes.BFLOAT16, "int": np.int32, "long long": np.int64,
           "unsigned int": np.uint32}


@functools.lru_cache(maxsize=None)
def _signatures(source):
    """{kernel: ([template parameter names], [(C type, is pointer), ...])} read from a .cu
    file's template <...> __global__ declarations."""
    text = (kernels.source_dir() / source).read_text()
    out = {}
    declarations = r"template\s*<([^>]*)>\s*__global__\s+void\s+(\w+)\s*\(([^)]*)\)"
    for template, name, params in re.findall(declarations, text):
        parsed = []
        for p in params.split(","):
            p = p.replace("const", " ").replace("__restrict__", " ")
            pointer = "*" in p
            ctype = " ".join(p.replace("*", " ").split()[:-1])
            parsed.append((ctype, pointer))
        out[name] = ([t.split()[-1] for t in template.split(",")], parsed)
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
        declared = _signatures(source).get(self.name)
        if declared is None:
            raise KeyError(f"{source} has no __global__ kernel {self.name}")
        names = dict(zip(declared[0], templates))  # T (the stored float type), then Op or L
        names["compute_t<T>"] = kernels.COMPUTE[names["T"]]
        self.signature = [(names.get(c, c), p) for c, p in declared[1]]

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
        # as the kernel computes a 16-bit T: in float32, rounded once on store
        work = [a.astype(np.float32) if self.spec.carried and a.dtype in dtypes.LOW_PRECISION
                else a for a in arrays]
        with np.errstate(all="ignore"):  # a CUDA kernel does not warn
            results = self.spec.reference(np, *work[:split], *scalars[self.spec.sizes:])
        if self.spec.writes == 1:
            results = (results,)
        for out, result in zip(arrays[split:], results if self.spec.writes else ()):
            out[...] = result
        for array, worked in zip(arrays, work if not self.spec.writes else ()):
            if worked is not array:  # an in-place kernel's reference has updated its arrays
                array[...] = worked

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
