"""The "cpu" device: NumPy arrays in host memory."""

import math

import numpy as np

from gpugrad import devices
from gpugrad.devices import backend


class NumpyBackend(backend.Backend):
    kind = "cpu"
    name = "numpy"
    xp = np
    array_type = np.ndarray
    dlpack_device_types = (1,)  # kDLCPU
    is_cpu = True
    host_arrays = True

    def __init__(self, device="cpu"):
        super().__init__(device)
        self.rng = np.random.default_rng()

    def asarray(self, data, dtype=None):
        if not isinstance(data, np.ndarray) and devices.is_backend_array(data):
            data = devices.get(devices.device_of_array(data)).to_host(data)
        return np.asarray(data, dtype=dtype)

    def to_host(self, arr):
        return arr

    @classmethod
    def address(cls, arr):
        return arr.__array_interface__["data"][0]

    def transfer(self, arr):
        return devices.get(devices.device_of_array(arr)).to_host(arr)

    def seed(self, n):
        self.rng = np.random.default_rng(n)

    def rand(self, shape, dtype):
        return backend.uniform_samples(np, self.rng.random, shape, dtype)

    def randn(self, shape, dtype):
        return backend.normal_samples(self.rng.standard_normal, shape, dtype)

    @classmethod
    def import_dlpack(cls, obj, index):
        return np.from_dlpack(obj)

    @staticmethod
    def erf(x):
        return host_erf(x)

    @staticmethod
    def scatter_add(out, key, values):
        np.add.at(out, key, values)


def host_erf(x):
    """The error function of a NumPy array, in its dtype."""
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
