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
    """Called like a cupy.RawKernel: k(grid, block, args). Checks the arguments against the
    kernel's C signature, then computes the kernel's result with NumPy."""

    def __init__(self, source, expression):
        self.expression = expression
        self.name, self.templates = _templates(expression)
        signature = _signatures(source).get(self.name)
        if signature is None:
            raise KeyError(f"{source} has no __global__ kernel {self.name}")
        # the template parameters are T (the float type), then Op or L, in that order
        names = {"T": self.templates[0]}
        if len(self.templates) > 1:
            names["Op" if self.templates[1] not in _CTYPES else "L"] = self.templates[1]
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
        values = []
        for i, (arg, (ctype, pointer)) in enumerate(zip(args, self.signature)):
            dtype = np.dtype(_CTYPES[ctype])
            if pointer:
                if not isinstance(arg, StrictArray):
                    raise TypeError(f"{self.expression}: argument {i} must be a device array, "
                                    f"got {type(arg).__name__}")
                if arg.dtype != dtype or not arg.flags.c_contiguous:
                    raise TypeError(f"{self.expression}: argument {i} must be a C-contiguous "
                                    f"{ctype} array, got {arg.dtype} "
                                    f"(contiguous: {arg.flags.c_contiguous})")
                values.append(arg._a.reshape(-1))
            else:  # CuPy passes a NumPy scalar by its own size: it must match the C type
                if not isinstance(arg, np.generic) or arg.dtype != dtype:
                    raise TypeError(f"{self.expression}: argument {i} must be a numpy "
                                    f"{dtype} scalar for C type {ctype}, got {arg!r}")
                values.append(arg.item())
        calls[f"kernel {self.name}"] += 1
        with np.errstate(all="ignore"):  # a CUDA kernel does not warn
            _MATH[self.name](self, *values)


@functools.lru_cache(maxsize=None)  # every launch asks; the declarations are made at import
def _functor(name):
    """The NumPy formula a functor of activations.cu must equal: the declared activation's
    array math (the CPU op path), with the kernel's p0, p1 as its numeric parameters."""
    for declared in kernels.declared_activations().values():
        if name == declared.forward_functor:
            return lambda x, p0, p1: declared.forward(np, x, p0, p1)
        if name == declared.backward_functor:
            return lambda g, s, p0, p1: declared.backward(np, g, s, p0, p1)
    raise KeyError(f"no declared activation has the functor {name}")


def _act_fwd(k, x, y, n, p0, p1):
    y[:n] = _functor(k.templates[1])(x[:n], p0, p1)


def _act_bwd(k, g, saved, dx, n, p0, p1):
    dx[:n] = _functor(k.templates[1])(g[:n], saved[:n], p0, p1)


def _relu_fwd_mask(k, x, y, mask, n, slope):
    declared = kernels.declared_activations()["leaky_relu" if slope else "relu"]
    x = x[:n]
    y[:n] = declared.forward(np, x, slope)
    words = kernels.pack_mask(np, declared.mask(np, x))
    mask[: words.size] = words


def _relu_bwd_mask(k, g, mask, dx, n, slope):
    bit = kernels.unpack_mask(np, mask, (n,))
    dx[:n] = np.where(bit, g[:n], g[:n] * slope if slope else 0)


def _relu_bwd_out(k, g, y, dx, n, slope, leaky):
    declared = kernels.declared_activations()["leaky_relu" if leaky else "relu"]
    dx[:n] = np.where(declared.mask(np, y[:n]), g[:n], g[:n] * slope if slope else 0)


def _rows(logits, labels, n, c):
    x = logits[: n * c].reshape(n, c)
    valid = (labels[:n] >= 0) & (labels[:n] < c)
    return x, np.clip(labels[:n], 0, c - 1), valid


def _softmax_xent_fwd(k, logits, labels, loss, n, c):
    x, lab, valid = _rows(logits, labels, n, c)
    m = x.max(axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)  # as the kernel: all -inf (or inf) rows unshifted
    log_sum = np.log(np.exp(x - m).sum(axis=1))
    loss[:n] = np.where(valid, log_sum - (x[np.arange(n), lab] - m[:, 0]), np.nan)


def _softmax_xent_bwd(k, logits, labels, g, dx, n, c, g_stride):
    if g_stride not in (0, 1) or g.size < (n if g_stride else 1):
        raise ValueError(f"{k.expression}: g of {g.size} elements with stride {g_stride} for "
                         f"{n} rows")
    g = g[:n] if g_stride else np.broadcast_to(g[:1], (n,))
    x, lab, valid = _rows(logits, labels, n, c)
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - np.where(np.isfinite(m), m, 0))
    p = e / e.sum(axis=1, keepdims=True)
    p[np.arange(n), lab] -= 1
    dx[: n * c] = np.where(valid[:, None], p * g[:n, None], np.nan).reshape(-1)


def _sgd_step(k, param, grad, v, n, lr, momentum, weight_decay):
    v[:n] = momentum * v[:n] + (grad[:n] + weight_decay * param[:n] if weight_decay else grad[:n])
    param[:n] -= lr * v[:n]


def _sgd_update(k, param, grad, n, lr, weight_decay):
    param[:n] -= lr * (grad[:n] + weight_decay * param[:n] if weight_decay else grad[:n])


def _add_scaled(k, acc, s, x, n):
    acc[:n] += s[0] * x[:n]


_MATH = {"act_fwd": _act_fwd, "act_bwd": _act_bwd,
         "relu_fwd_mask": _relu_fwd_mask, "relu_bwd_mask": _relu_bwd_mask,
         "relu_bwd_out": _relu_bwd_out,
         "softmax_xent_fwd": _softmax_xent_fwd, "softmax_xent_bwd": _softmax_xent_bwd,
         "sgd_step": _sgd_step, "sgd_update": _sgd_update, "add_scaled": _add_scaled}
