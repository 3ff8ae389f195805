"""The CPU's compiled activations: numba kernels (numba_kernels.py) in place of the NumPy
formulas, where numba is installed (`pip install gpugrad[fast]`) and GPUGRAD_NUMBA is not 0.

kernel() is the one place that chooses: ops/activation.py asks it beside devices.fused(), under
the CUDA kernels' names and with their launchers' signatures, and falls back to the formulas
where it answers None: numba absent or off, another device's arrays (CuPy's, the strict test
device's), a dtype other than float32 (float64 keeps NumPy's libm-accurate formulas, 16-bit
floats their float32 formulas), fewer than SMALLEST elements (a kernel call costs about 5 us
more than a NumPy call: below 2^15 elements the formulas are as fast or faster), or a kernel
numba_kernels does not have (tanh's forward: NumPy's own tanh is faster at every size). The choice depends on the dtype alone, never on the
layout: a strided view, or a g that broadcasts against x, is copied flat first, so that a value
is computed the same way (bit for bit) however its arrays lie.

Each kernel is compiled on its first call (about 0.1-0.6 s) and cached on disk, so later
processes load it in milliseconds. Calls go through the tape (devices/tape.foreign), so that
gg.compile replays them.
"""

import collections
import importlib
import os

import numpy as np

from gpugrad.devices import tape

_OFF = ("0", "false", "no", "off")
_env = [None, None]  # (raw value of GPUGRAD_NUMBA, whether it allows numba)
_loaded = {}  # "kernels": the numba_kernels module, or "error": why it could not be imported
calls = collections.Counter()  # kernel name -> calls that took it: which path ran
SMALLEST = 1 << 15  # elements: smaller arrays take the formulas (measured: see the module doc)


def _allowed():
    raw = os.environ.get("GPUGRAD_NUMBA", "")
    if raw != _env[0]:
        _env[0], _env[1] = raw, raw.strip().lower() not in _OFF
    return _env[1]


def _kernels():
    """numba_kernels, imported on first use (numba takes 0.1-0.3 s to import), or None."""
    if not _loaded:
        try:
            _loaded["kernels"] = importlib.import_module("gpugrad.ops.numba_kernels")
        except ImportError as e:  # numba absent, or built for another NumPy
            _loaded["kernels"], _loaded["error"] = None, f"{type(e).__name__}: {e}"
    return _loaded["kernels"]


def enabled():
    """Whether float32 activations on the CPU run the numba kernels."""
    return _allowed() and _kernels() is not None


def status():
    """One line for reports: which path the CPU's float32 activations take, and why."""
    if not _allowed():
        return "NumPy formulas (GPUGRAD_NUMBA=0)"
    if _kernels() is None:
        return f"NumPy formulas (numba unavailable: {_loaded['error']})"
    import numba

    return f"numba {numba.__version__} kernels"


def _suits(arrays):
    """NumPy arrays or scalars (as arithmetic on 0-d arrays gives), the float ones float32 (a
    packed mask is uint32 words)."""
    return all(isinstance(a, (np.ndarray, np.generic)) and a.dtype in (np.float32, np.uint32)
               for a in arrays)


def _flat(*arrays):
    """The float arrays broadcast to one shape and C-contiguous, as the flat kernels read them
    (a copy only where they are not already)."""
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    return [a if isinstance(a, np.ndarray) and a.shape == shape and a.flags.c_contiguous
            else np.ascontiguousarray(np.broadcast_to(a, shape)) for a in arrays]


def _elements(name, arrays):
    """How many elements the kernel computes: x's, or g's (beside a packed mask), or those of
    g and the saved array broadcast together (every op on the CPU asks: cheap where they agree)."""
    first = arrays[0]
    if len(arrays) == 1 or name == "relu_bwd_mask" or first.shape == arrays[1].shape:
        return first.size
    return int(np.prod(np.broadcast_shapes(first.shape, arrays[1].shape)))


def kernel(name, xp, *arrays):
    """The numba kernel `name` (a CUDA kernel's: gelu_fwd, silu_bwd, relu_fwd_mask,
    relu_bwd_mask, relu_bwd_out ...) for these arrays of namespace xp, as a launcher with the
    signature of that kernel's (devices/cuda/specs.py, without xp), or None: the caller falls
    back to its formula."""
    if xp is not np or _elements(name, arrays) < SMALLEST or not _suits(arrays) or not enabled():
        return None
    loop = getattr(_kernels(), name, None)
    if loop is None:
        return None
    launch = _mask_launchers.get(name) or (_forward if name.endswith("_fwd") else _backward)
    return lambda *args: launch(name, loop, *args)


def _run(name, loop, out, *args):
    """loop(*out, *args) on flat views; through the tape, which replays it into `out`."""
    calls[name] += 1
    tape.foreign(_flat_call, loop, *args, out=out)
    return out


def _flat_call(loop, *args, out):
    flat = [a.reshape(-1) if isinstance(a, np.ndarray) else a for a in (*out, *args)]
    loop(*flat)


def _forward(name, loop, x, p0=0.0, p1=0.0):
    (x,) = _flat(x)
    y = np.empty(x.shape, np.float32)
    return _run(name, loop, (y,), x, np.float32(p0), np.float32(p1))[0]


def _backward(name, loop, g, saved, p0=0.0, p1=0.0):
    g, saved = _flat(g, saved)
    dx = np.empty(g.shape, np.float32)
    return _run(name, loop, (dx,), g, saved, np.float32(p0), np.float32(p1))[0]


def _relu_fwd_mask(name, loop, x, slope):
    (x,) = _flat(x)
    y = np.empty(x.shape, np.float32)
    words = np.empty((x.size + 31) // 32, np.uint32)  # the kernel writes every word
    return _run(name, loop, (y, words), x, np.float32(slope))


def _relu_bwd_mask(name, loop, g, mask, slope):
    (g,) = _flat(g)
    dx = np.empty(g.shape, np.float32)
    return _run(name, loop, (dx,), g, mask, np.float32(slope))[0]


def _relu_bwd_out(name, loop, g, y, slope, leaky):
    g, y = _flat(g, y)
    dx = np.empty(g.shape, np.float32)
    return _run(name, loop, (dx,), g, y, np.float32(slope), bool(leaky))[0]


_mask_launchers = {"relu_fwd_mask": _relu_fwd_mask, "relu_bwd_mask": _relu_bwd_mask,
                   "relu_bwd_out": _relu_bwd_out}
