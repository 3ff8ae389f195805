"""The one loader of the CUDA kernels in kernels/: find, compile (cupy.RawModule), cache, launch.

Sources are read from the installed package (the wheel maps kernels/ to gpugrad/_kernels) or
else from the source tree. Each file compiles lazily, once per device, with `#line` so compiler
errors point at the real file. backend.fused() is the only caller of lookup(); fusion can be
turned off with GPUGRAD_FUSED=0 or `with gg.fused(False):` to compare the two paths.
"""

import contextlib
import functools
import os
import pathlib
import shutil
import subprocess
import threading

import numpy as np

_PACKAGE = pathlib.Path(__file__).resolve().parents[2]  # gpugrad/
_BLOCK = 256

# kernel name -> (source file, template instantiations per dtype name)
KERNELS = {
    "act_fwd": ("activations.cu", "act_fwd<{T}, {OP}>"),
    "act_bwd": ("activations.cu", "act_bwd<{T}, {OP}>"),
    "relu_fwd_mask": ("activations.cu", "relu_fwd_mask<{T}>"),
    "relu_bwd_mask": ("activations.cu", "relu_bwd_mask<{T}>"),
    "relu_bwd_out": ("activations.cu", "relu_bwd_out<{T}>"),
    "softmax_xent_fwd": ("softmax_xent.cu", "softmax_xent_fwd<{T}, {L}>"),
    "softmax_xent_bwd": ("softmax_xent.cu", "softmax_xent_bwd<{T}, {L}>"),
    "sgd_step": ("sgd.cu", "sgd_step<{T}>"),
    "sgd_update": ("sgd.cu", "sgd_update<{T}>"),
    "add_scaled": ("accumulate.cu", "add_scaled<{T}>"),
}
DTYPES = {"float32": "float", "float64": "double"}
LABEL_DTYPES = {"int32": "int", "int64": "long long"}
# the same, keyed by dtype: every launch looks these up, and NumPy's dtype.name is slow
_CTYPE = {np.dtype(name): ctype for name, ctype in DTYPES.items()}
_LABEL_CTYPE = {np.dtype(name): ctype for name, ctype in LABEL_DTYPES.items()}


# ---------------------------------------------------------------------------- which arrays suit

def _same(arrays):
    """float32/float64 arrays of one dtype and one shape (0-d included: launchers keep shapes)."""
    first = arrays[0]
    return first.dtype in _CTYPE and all(
        a.dtype == first.dtype and a.shape == first.shape for a in arrays[1:])


def _in_place(arrays):
    """As _same, and C-contiguous: the kernel writes into them."""
    return _same(arrays) and all(a.flags.c_contiguous for a in arrays)


def _first_float(arrays):
    """The gradient float32/float64; the packed mask beside it is checked by its op."""
    return arrays[0].dtype in _CTYPE


def _rows(arrays):
    """Logits (N, C) float32/float64, integer labels (N,), then (N,) arrays of the logits' dtype."""
    x, labels, *others = arrays
    return (x.ndim == 2 and x.dtype in _CTYPE and labels.dtype in _LABEL_CTYPE
            and labels.shape == (x.shape[0],)
            and all(o.dtype == x.dtype and o.shape == (x.shape[0],) for o in others))


def _scaled(arrays):
    """acc and x of one float dtype and shape, C-contiguous (acc is written), s 0-d of it."""
    acc, s, x = arrays
    return _in_place((acc, x)) and s.shape == () and s.dtype == acc.dtype


def suits(name, arrays):
    """Whether a fused op's kernel takes these arrays (the one check, made by backend.fused)."""
    return not arrays or _REQUIRES.get(name, _same)(arrays)


_REQUIRES = {"relu_bwd_mask": _first_float, "softmax_xent_fwd": _rows,
             "softmax_xent_bwd": _rows, "sgd_step": _in_place,
             "sgd_update": _in_place, "add_scaled": _scaled}


def source_dir():
    """Where the .cu sources are: inside the installed package, else the source tree."""
    for d in (_PACKAGE / "_kernels", _PACKAGE.parent / "kernels"):
        if (d / "activations.cuh").is_file():
            return d
    raise FileNotFoundError(f"gpugrad's CUDA sources were not found in {_PACKAGE / '_kernels'} "
                            f"or {_PACKAGE.parent / 'kernels'}")


def sources():
    return sorted(p.name for p in source_dir().glob("*.cu"))


# ---------------------------------------------------------------------------- 1-bit masks


def pack_mask(xp, cond):
    """A boolean array -> uint32 words, element i at bit i % 32 of word i // 32 (as the CUDA
    kernels write it), so a mask costs 1 bit per element on either backend."""
    flat = cond.reshape(-1)
    if xp is np:
        packed = np.packbits(flat, bitorder="little")
        words = np.zeros((flat.size + 31) // 32, np.uint32)
        words.view(np.uint8)[: packed.size] = packed
        return words
    padded = xp.zeros(((flat.size + 31) // 32) * 32, xp.uint32)
    padded[: flat.size] = flat
    return (padded.reshape(-1, 32) << xp.arange(32, dtype=xp.uint32)).sum(axis=1, dtype=xp.uint32)


def unpack_mask(xp, words, shape):
    """pack_mask's inverse: uint32 words -> a boolean array of `shape`."""
    n = int(np.prod(shape, dtype=np.int64))
    if xp is np:
        bits = np.unpackbits(words.view(np.uint8), count=n, bitorder="little")
    else:
        bits = ((words[:, None] >> xp.arange(32, dtype=xp.uint32)) & 1).reshape(-1)[:n]
    return bits.reshape(shape).view(bool) if xp is np else bits.reshape(shape).astype(bool)


# ---------------------------------------------------------------------------- the switch

_local = threading.local()


def enabled():
    """Whether ops use fused kernels: gg.fused(...) block, else GPUGRAD_FUSED (default on)."""
    stack = getattr(_local, "stack", None)
    if stack:
        return stack[-1]
    return os.environ.get("GPUGRAD_FUSED", "1") != "0"


@contextlib.contextmanager
def fused(on=True):
    """Turn fused kernels on or off inside the block (this thread)."""
    stack = _local.__dict__.setdefault("stack", [])
    stack.append(bool(on))
    try:
        yield
    finally:
        stack.pop()


# ---------------------------------------------------------------------------- compiling

_modules = {}
_lock = threading.Lock()


class DeclaredKernel:
    """What gpugrad/ops/activation.py declares of one activation kernel: the functor names its
    GG_ACTIVATIONS row makes in activations.cu, and the same math on arrays (the reference the
    strict test device's stand-ins compute): forward(xp, x, p0, p1), backward(xp, g, s, p0, p1),
    and for relu and leaky_relu the 1-bit mask(xp, x)."""

    __slots__ = ("forward_functor", "backward_functor", "forward", "backward", "mask")

    def __init__(self, forward_functor, backward_functor, forward, backward=None, mask=None):
        self.forward_functor, self.backward_functor = forward_functor, backward_functor
        self.forward, self.backward, self.mask = forward, backward, mask


_activations = {}  # kernel name -> DeclaredKernel
_launchers = None  # built on first use from the fixed launchers and the declared activations


def declare_activation(kernel, declared):
    """Called by gpugrad/ops/activation.py for each kernel of each declared activation."""
    global _launchers
    _activations[kernel] = declared
    _launchers = None


def declared_activations():
    """{activation kernel: DeclaredKernel}, as declared."""
    return dict(_activations)


def activation_functors():
    """{activation kernel: (forward functor, backward functor or None)}, as declared."""
    return {k: (d.forward_functor, d.backward_functor) for k, d in _activations.items()}


def _functors(kname):
    """The activation functors a templated kernel is instantiated with."""
    pairs = activation_functors().values()
    if kname == "act_bwd":
        return [b for _, b in pairs if b is not None]
    return [f for f, _ in pairs]


def _name_expressions(kernel_file):
    """Every template instantiation of one source file that the launchers use."""
    names = []
    for kname, (file, pattern) in KERNELS.items():
        if file != kernel_file:
            continue
        for T in DTYPES.values():
            if "{OP}" in pattern:
                names += [pattern.format(T=T, OP=f"{op}<{T}>") for op in _functors(kname)]
            elif "{L}" in pattern:
                names += [pattern.format(T=T, L=L) for L in LABEL_DTYPES.values()]
            else:
                names.append(pattern.format(T=T))
    return names


def module(kernel_file, cp):
    """The compiled RawModule for one source file on the current device (cached)."""
    key = (kernel_file, cp.cuda.runtime.getDevice())
    mod = _modules.get(key)
    if mod is None:
        with _lock:
            mod = _modules.get(key)
            if mod is None:
                d = source_dir()
                code = f'#line 1 "{d / kernel_file}"\n' + (d / kernel_file).read_text()
                mod = cp.RawModule(code=code, options=("-std=c++17", f"-I{d}"),
                                   name_expressions=_name_expressions(kernel_file))
                mod.compile()
                _modules[key] = mod
    return mod


_functions = {}  # (namespace, device, kernel, template arguments) -> (function, blocks cap)
_WAVES = 2  # grid-stride kernels get this many full waves of resident blocks, then loop


def _kernel(xp, kname, **fmt):
    """(the compiled kernel (CuPy), or on the strict test device its NumPy stand-in; the most
    blocks worth launching on the device): looked up once per namespace, device, kernel and
    template arguments, then taken from a dict."""
    device = xp.cuda.runtime.getDevice() if hasattr(xp, "cuda") else 0
    key = (id(xp), device, kname, *fmt.values())
    found = _functions.get(key)
    if found is None:
        file, pattern = KERNELS[kname]
        expression = pattern.format(**fmt)
        if hasattr(xp, "stand_in_kernel"):
            found = (xp.stand_in_kernel(file, expression), 65535 * 4)
        else:
            props = xp.cuda.runtime.getDeviceProperties(device)
            resident = props["multiProcessorCount"] * (props["maxThreadsPerMultiProcessor"] // _BLOCK)
            found = (module(file, xp).get_function(expression), resident * _WAVES)
        _functions[key] = found
    return found


def _flat(xp, *arrays):
    """C-contiguous arrays, as the kernels index them (flat): the array itself when it is one
    (a kernel reads no shape), else a contiguous copy of the same shape."""
    return [a if a.flags.c_contiguous else xp.ascontiguousarray(a) for a in arrays]


# ---------------------------------------------------------------------------- launchers
# Each takes the array namespace first (CuPy, or the strict test device's) and returns arrays
# of its inputs' shapes. Every kernel takes its arrays, then n as int64, then its scalars.
# Outputs come from xp.empty(shape, dtype): CuPy's empty_like spends ~6 us in Python.


def _launch(xp, kname, n, arrays, scalars=(), dtype=None, grid=None, per_thread=1, **fmt):
    """Run kernel kname over n elements (nothing for n = 0): T is dtype's C type; a scalar that
    is not already a NumPy scalar is passed in dtype, as the kernel's T parameters are. Without
    a grid, one thread per `per_thread` elements up to the device's cap, then they loop."""
    if not n:
        return
    dtype = dtype or arrays[0].dtype
    k, most_blocks = _kernel(xp, kname, T=_CTYPE[dtype], **fmt)
    typed = tuple(v if isinstance(v, np.generic) else dtype.type(v) for v in scalars)
    if grid is None:
        grid = (min(max(-(-n // (per_thread * _BLOCK)), 1), most_blocks),)
    k(grid, (_BLOCK,), (*arrays, np.int64(n), *typed))


def _vector(dtype):
    """Elements per 16-byte vector, as the activation kernels load them."""
    return 16 // dtype.itemsize


def _act_fwd(op):
    functors = {dtype: f"{op}<{ctype}>" for dtype, ctype in _CTYPE.items()}

    def launch(xp, x, p0=0.0, p1=0.0):
        (x,) = _flat(xp, x)
        y = xp.empty(x.shape, x.dtype)
        _launch(xp, "act_fwd", x.size, (x, y), (p0, p1), per_thread=_vector(x.dtype),
                OP=functors[x.dtype])
        return y
    return launch


def _act_bwd(op):
    functors = {dtype: f"{op}<{ctype}>" for dtype, ctype in _CTYPE.items()}

    def launch(xp, g, saved, p0=0.0, p1=0.0):
        g, saved = _flat(xp, g, saved)
        dx = xp.empty(g.shape, g.dtype)
        _launch(xp, "act_bwd", g.size, (g, saved, dx), (p0, p1), per_thread=_vector(g.dtype),
                OP=functors[g.dtype])
        return dx
    return launch


def _relu_fwd_mask(xp, x, negative_slope=0.0):
    (x,) = _flat(xp, x)
    y = xp.empty(x.shape, x.dtype)
    mask = xp.empty((x.size + 31) // 32, np.uint32)  # the kernel writes every word
    _launch(xp, "relu_fwd_mask", x.size, (x, y, mask), (negative_slope,))
    return y, mask


def _relu_bwd_mask(xp, g, mask, negative_slope=0.0):
    g, mask = _flat(xp, g, mask)
    dx = xp.empty(g.shape, g.dtype)
    _launch(xp, "relu_bwd_mask", g.size, (g, mask, dx), (negative_slope,),
            per_thread=_vector(g.dtype))
    return dx


def _relu_bwd_out(xp, g, y, negative_slope=0.0, leaky=False):
    """relu's (or, leaky, leaky_relu's) backward with the mask bit taken from the output y."""
    g, y = _flat(xp, g, y)
    dx = xp.empty(g.shape, g.dtype)
    _launch(xp, "relu_bwd_out", g.size, (g, y, dx), (negative_slope, np.int32(leaky)),
            per_thread=_vector(g.dtype))
    return dx


def _softmax_xent_fwd(xp, logits, labels):
    """Per-row loss -log softmax(logits)[label] for logits (N, C), integer labels (N,)."""
    n, c = logits.shape
    logits, labels = _flat(xp, logits, labels)
    loss = xp.empty(n, logits.dtype)
    _launch(xp, "softmax_xent_fwd", n, (logits, labels, loss), (np.int64(c),), grid=(n,),
            L=_LABEL_CTYPE[labels.dtype])
    return loss


def _softmax_xent_bwd(xp, logits, labels, g):
    """d loss_i / d logits = (softmax - onehot) * g_i, for a per-row gradient g (N,). A g
    broadcast from one value (a mean's gradient) is read with stride 0, not copied out."""
    n, c = logits.shape
    one = n > 1 and g.strides[0] == 0
    logits, labels, g = _flat(xp, logits, labels, g[:1] if one else g)
    dx = xp.empty(logits.shape, logits.dtype)
    _launch(xp, "softmax_xent_bwd", n, (logits, labels, g, dx), (np.int64(c), np.int64(not one)),
            grid=(n,), L=_LABEL_CTYPE[labels.dtype])
    return dx


def _sgd_step(xp, param, grad, velocity, lr, momentum=0.0, weight_decay=0.0):
    """In place: v = momentum * v + grad + weight_decay * param; param -= lr * v."""
    if not (param.flags.c_contiguous and grad.flags.c_contiguous and velocity.flags.c_contiguous):
        raise ValueError("sgd_step updates in place: param, grad and velocity must be contiguous")
    _launch(xp, "sgd_step", param.size, (param, grad, velocity), (lr, momentum, weight_decay))
    return param


def _sgd_update(xp, param, grad, lr, weight_decay=0.0):
    """In place: param -= lr * (grad + weight_decay * param) (SGD without momentum)."""
    if not (param.flags.c_contiguous and grad.flags.c_contiguous):
        raise ValueError("sgd_update updates in place: param and grad must be contiguous")
    _launch(xp, "sgd_update", param.size, (param, grad), (lr, weight_decay))
    return param


def _add_scaled(xp, acc, s, x):
    """In place: acc += s * x, for s a 0-d array on the device (read there, not on the host)."""
    if not (acc.flags.c_contiguous and x.flags.c_contiguous):
        raise ValueError("add_scaled adds in place: acc and x must be contiguous")
    _launch(xp, "add_scaled", acc.size, (acc, s, x))
    return acc


_FIXED_LAUNCHERS = {
    "relu_fwd_mask": _relu_fwd_mask,
    "relu_bwd_mask": _relu_bwd_mask,
    "relu_bwd_out": _relu_bwd_out,
    "softmax_xent_fwd": _softmax_xent_fwd,
    "softmax_xent_bwd": _softmax_xent_bwd,
    "sgd_step": _sgd_step,
    "sgd_update": _sgd_update,
    "add_scaled": _add_scaled,
}


def launchers():
    """{fused op name: launcher}: the fixed kernels, and <kernel>_fwd / <kernel>_bwd of every
    declared activation."""
    global _launchers
    if _launchers is None:
        table = dict(_FIXED_LAUNCHERS)
        for kernel, (forward, backward) in activation_functors().items():
            table[f"{kernel}_fwd"] = _act_fwd(forward)
            if backward is not None:
                table[f"{kernel}_bwd"] = _act_bwd(backward)
        _launchers = table
    return _launchers


_bound = {}  # (name, id of xp) -> the launcher bound to xp: no new partial on every op


def lookup(name, xp):
    """The launcher for a fused op name on namespace xp, or None if there is no such kernel."""
    key = (name, id(xp))
    launch = _bound.get(key)
    if launch is None and name in launchers():
        launch = _bound[key] = functools.partial(launchers()[name], xp)
    return launch


def nvcc_version(path):
    """The release line of `nvcc --version` at path."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unusable ({e})"
    lines = [ln for ln in out.stdout.splitlines() if "release" in ln]
    return lines[-1].strip() if lines else out.stdout.strip()[-80:]


def compile_report(cp=None, compile_now=False):
    """Where the CUDA sources are and whether they compile: NVRTC through CuPy's namespace cp
    on a GPU, else (compile_now) nvcc -ptx when it is on the PATH (gpugrad info, selftest)."""
    try:
        src = source_dir()
    except FileNotFoundError as e:
        return {"kernel sources": f"missing: {e}"}
    report = {"kernel sources": f"{src} ({', '.join(sources())})",
              "fused kernels": "on" if enabled() else "off (GPUGRAD_FUSED=0)",
              "fused ops": sorted(launchers())}
    if cp is not None:
        results = check_compiles(cp)
        report["kernels compiled (NVRTC)"] = [f"{f}: {'ok' if e is None else e}"
                                              for f, e in results.items()]
    elif compile_now and shutil.which("nvcc"):
        results = []
        for f in sources():
            out = subprocess.run(["nvcc", "-std=c++17", "-ptx", "-arch=sm_90", f"-I{src}",
                                  str(src / f), "-o", "/dev/null"], capture_output=True, text=True)
            results.append(f"{f}: {'ok' if out.returncode == 0 else out.stderr.strip()[:200]}")
        report["kernels compiled (nvcc -ptx sm_90)"] = results
    else:
        report["kernels compiled"] = "not yet: they compile on first use on a CUDA device" + (
            "" if cp is not None else "; --compile checks them with nvcc")
    return report


def check_compiles(cp):
    """Compile every source on the current device; {file: None or the error}."""
    out = {}
    for f in sources():
        try:
            module(f, cp)
            out[f] = None
        except Exception as e:  # report every file, not only the first failure
            out[f] = str(e).splitlines()[0] if str(e) else type(e).__name__
    return out
