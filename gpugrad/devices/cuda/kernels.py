"""The one loader of the CUDA kernels in kernels/: KernelSpec and the table of declared
kernels; finding, compiling (cupy.RawModule), caching and launching them; the on/off switch;
the launcher of a fused op for an array namespace and the check that arrays suit it.

The kernels are declared by their specs: the fixed ones in specs.py, the activations' from
their rows in gpugrad/ops/activation.py. Sources are read from the installed package (the
wheel maps kernels/ to gpugrad/_kernels) or else from the source tree. Each file compiles
lazily, once per device, with `#line` so compiler errors point at the real file,
instantiating every template its declared kernels use. devices.fused() is the only caller of
lookup() and suits(); fusion can be turned off with GPUGRAD_FUSED=0 or `with gg.fused(False):`
to compare the two paths.
"""

import contextlib
import dataclasses
import functools
import os
import pathlib
import shutil
import subprocess
import threading
from typing import Callable

import numpy as np

from gpugrad.devices import dtypes

# the layout of relu's 1-bit mask, which the library and the tests reach here
from gpugrad.devices.cuda.references import pack_mask, unpack_mask  # noqa: F401

_PACKAGE = pathlib.Path(__file__).resolve().parents[2]  # gpugrad/
BLOCK = 256
_WAVES = 2  # grid-stride kernels get this many full waves of resident blocks, then loop
# the float types a kernel is instantiated for: C type T, and the C type C it computes in (the
# 16-bit floats are stored as their bits and computed in float: kernels/precision.cuh)
DTYPES = {"float32": ("float", "float"), "float64": ("double", "double"),
          "float16": ("float16_bits", "float"), "bfloat16": ("bfloat16_bits", "float")}
LABEL_DTYPES = {"int32": "int", "int64": "long long"}
# the same, keyed by dtype: every launch looks these up, and NumPy's dtype.name is slow
_DTYPE_OF_NAME = {"bfloat16": dtypes.BFLOAT16}
CTYPE = {_DTYPE_OF_NAME.get(name, np.dtype(name)): ctype for name, (ctype, _) in DTYPES.items()}
COMPUTE = dict(DTYPES.values())  # T -> C
LABEL_CTYPE = {np.dtype(name): ctype for name, ctype in LABEL_DTYPES.items()}


def same_dtype_and_shape(arrays):
    """float arrays of one dtype and one shape (0-d included: launchers keep shapes)."""
    first = arrays[0]
    return first.dtype in CTYPE and all(
        a.dtype == first.dtype and a.shape == first.shape for a in arrays[1:])


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """One fused kernel, declared once.

    `launch` and `reference` are called alike, (xp, *arrays, *scalars), and return the same
    outputs: the launcher runs the compiled kernel (CuPy) or, on the strict test device, the
    reference in its place; the op calls the reference itself on the CPU and wherever the
    arrays do not suit the kernel. The kernel's own arguments are its arrays, n (elements, or
    rows for a row kernel) as int64, then its scalars.
    """

    name: str            # the fused op name ops ask devices.fused() for: "sigmoid_fwd", "sgd_step"
    source: str          # its .cu file in kernels/
    template: str        # the __global__ instantiated: T the stored float type, C the one it
    #                      computes in, L the label type
    launch: Callable     # (xp, *arrays, *scalars) -> outputs: runs the kernel
    reference: Callable  # (xp, *arrays, *scalars) -> outputs: the same math on arrays
    accepts: Callable = same_dtype_and_shape  # (arrays) -> whether the kernel takes them
    writes: int = 1      # the kernel's last `writes` arrays are its outputs (0: in place)
    sizes: int = 0       # its first `sizes` scalars are sizes the reference reads from shapes
    carried: bool = True  # a 16-bit T computed in float32, rounded once on store (False: each
    #                       step rounded in T, as the composition it equals rounds it)

    @property
    def function(self):
        """The __global__ function's name: 'act_fwd' for 'act_fwd<{T}, SigmoidFwd<{T}>>'."""
        return self.template.partition("<")[0]

    def expressions(self):
        """Every instantiation the loader compiles: one per float type (and label type)."""
        labels = LABEL_DTYPES.values() if "{L}" in self.template else [None]
        return [self.template.format(T=T, C=C, L=L) for T, C in DTYPES.values() for L in labels]


_SPECS = {}  # name -> KernelSpec, as declared
_by_expression = {}  # (source, instantiation) -> KernelSpec


def declare(spec):
    """Add one kernel to the table (specs.py, gpugrad/ops/activation.py)."""
    _SPECS[spec.name] = spec
    for expression in spec.expressions():
        _by_expression[spec.source, expression] = spec
    _functions.clear()


def specs():
    """{name: KernelSpec} of every declared kernel."""
    return dict(_SPECS)


def spec_of(source, expression):
    """The declared kernel a source file's instantiation belongs to (KeyError if none)."""
    return _by_expression[source, expression]


def source_dir():
    """Where the .cu sources are: inside the installed package, else the source tree."""
    for d in (_PACKAGE / "_kernels", _PACKAGE.parent / "kernels"):
        if (d / "activations.cuh").is_file():
            return d
    raise FileNotFoundError(f"gpugrad's CUDA sources were not found in {_PACKAGE / '_kernels'} "
                            f"or {_PACKAGE.parent / 'kernels'}")


def sources():
    return sorted(p.name for p in source_dir().glob("*.cu"))


def name_expressions(source):
    """Every template instantiation of one source file that the declared kernels use."""
    return [e for s in _SPECS.values() if s.source == source for e in s.expressions()]


# ---------------------------------------------------------------------------- compiling

_modules = {}
_lock = threading.Lock()


def module(source, cp):
    """The compiled RawModule for one source file on the current device (cached)."""
    key = (source, cp.cuda.runtime.getDevice())
    mod = _modules.get(key)
    if mod is None:
        with _lock:
            mod = _modules.get(key)
            if mod is None:
                d = source_dir()
                code = f'#line 1 "{d / source}"\n' + (d / source).read_text()
                mod = cp.RawModule(code=code, options=("-std=c++17", f"-I{d}"),
                                   name_expressions=name_expressions(source))
                mod.compile()
                _modules[key] = mod
    return mod


_functions = {}  # (namespace, device, kernel, T, L) -> (function, blocks cap)


def compiled(xp, name, ctype, label_ctype=None):
    """(the compiled kernel `name` for C types T and L (CuPy), or on the strict test device its
    NumPy stand-in; the most blocks worth launching on the device): looked up once per
    namespace, device, kernel and types, then taken from a dict."""
    device = xp.cuda.runtime.getDevice() if hasattr(xp, "cuda") else 0
    key = (id(xp), device, name, ctype, label_ctype)
    found = _functions.get(key)
    if found is None:
        s = _SPECS[name]
        expression = s.template.format(T=ctype, C=COMPUTE[ctype], L=label_ctype)
        if hasattr(xp, "stand_in_kernel"):
            found = (xp.stand_in_kernel(s.source, expression), 65535 * 4)
        else:
            props = xp.cuda.runtime.getDeviceProperties(device)
            resident = props["multiProcessorCount"] * (props["maxThreadsPerMultiProcessor"] // BLOCK)
            found = (module(s.source, xp).get_function(expression), resident * _WAVES)
        _functions[key] = found
    return found


def launch(xp, name, n, arrays, scalars=(), dtype=None, grid=None, per_thread=1, labels=None):
    """Run kernel `name` over n elements (nothing for n = 0): T is dtype's C type, L that of
    the labels' dtype; a scalar that is not already a NumPy scalar is passed in the dtype the
    kernel computes in (float32 for a 16-bit dtype), as its compute_t<T> parameters are.
    Without a grid, one thread per `per_thread` elements up to the device's cap, then they
    loop."""
    if not n:
        return
    dtype = dtype or arrays[0].dtype
    k, most_blocks = compiled(xp, name, CTYPE[dtype],
                              None if labels is None else LABEL_CTYPE[labels])
    scalar = dtypes.accumulating(dtype).type
    typed = tuple(v if isinstance(v, np.generic) else scalar(v) for v in scalars)
    if grid is None:
        grid = (min(max(-(-n // (per_thread * BLOCK)), 1), most_blocks),)
    k(grid, (BLOCK,), (*arrays, np.int64(n), *typed))


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


# ---------------------------------------------------------------------------- the fused ops


def launchers():
    """{fused op name: launcher(xp, *arrays, *scalars)} of every declared kernel."""
    return {name: s.launch for name, s in _SPECS.items()}


def suits(name, arrays):
    """Whether a fused op's kernel takes these arrays (the one check, made by devices.fused)."""
    return not arrays or _SPECS[name].accepts(arrays)


_bound = {}  # (name, id of xp) -> the launcher bound to xp: no new partial on every op


def lookup(name, xp):
    """The launcher for a fused op name on namespace xp, or None if there is no such kernel."""
    key = (name, id(xp))
    launch = _bound.get(key)
    if launch is None:
        s = _SPECS.get(name)
        if s is not None:
            launch = _bound[key] = functools.partial(s.launch, xp)
    return launch


# ---------------------------------------------------------------------------- report


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
