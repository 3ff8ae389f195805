"""gg.backends: switches of the libraries underneath, as torch.backends.

gg.backends.matmul.allow_tf32 (False, as PyTorch's default): whether float32 matrix products on
an NVIDIA GPU of compute capability 8.0 or later may run on TF32 tensor cores (inputs rounded
to a 10-bit mantissa, sums in float32; about 1e-3 relative error instead of 1e-7). It sets
CuPy's compute type for float32 (what CUPY_TF32=1 sets at import) and the math mode of
gpugrad's own cuBLAS handles (the capturable matmul of graphed steps). It has no effect on the
CPU, where NumPy has no TF32.
"""

from gpugrad import devices


class _Matmul:
    _allow_tf32 = False

    @property
    def allow_tf32(self):
        return self._allow_tf32

    @allow_tf32.setter
    def allow_tf32(self, value):
        if not isinstance(value, bool):
            raise TypeError(f"gg.backends.matmul.allow_tf32 is True or False, got {value!r}")
        devices.set_tf32(value)
        type(self)._allow_tf32 = value

    def __repr__(self):
        return f"gg.backends.matmul(allow_tf32={self.allow_tf32})"


matmul = _Matmul()
