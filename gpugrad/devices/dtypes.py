"""The floating dtypes gpugrad computes in: float64, float32, and the two 16-bit ones,
float16 (IEEE half) and bfloat16 (8 exponent bits, 7 of mantissa: float32's range at a third of
its precision), which NumPy has through the ml_dtypes package (what JAX and CuPy use too).

NumPy calls bfloat16 a void kind ('V'), so "is this a float" is asked here, never of
dtype.kind. The 16-bit dtypes compute what accumulates (sums, products, contractions, their
running forms) in float32 and round the result once, as PyTorch and cuBLAS do.
"""

import ml_dtypes
import numpy as np

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
FLOAT16 = np.dtype(np.float16)
FLOAT32 = np.dtype(np.float32)
FLOAT64 = np.dtype(np.float64)
LOW_PRECISION = (FLOAT16, BFLOAT16)


def is_float(dtype):
    """Whether tensors of this dtype take gradients: float16, bfloat16, float32, float64."""
    return dtype.kind == "f" or dtype == BFLOAT16


def accumulating(dtype):
    """The dtype a sum or product over elements of `dtype` is carried in."""
    return FLOAT32 if dtype in LOW_PRECISION else dtype


def epsilon(dtype):
    """The spacing of floats of this dtype at 1 (2^-7 for bfloat16, 2^-10 for float16)."""
    return float(np.finfo(dtype).eps)
