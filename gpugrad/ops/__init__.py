"""The table of differentiable ops: `OPS` maps each name to its declaration."""

from gpugrad.ops import activation, elementwise, function, linalg, loss, reduce, shape
from gpugrad.ops import contraction, cumulative, joining, rearrange, transcendental
from gpugrad.ops import methods  # noqa: F401  (installs Tensor's operators and methods)
from gpugrad.ops.registry import CONSTANTS, OPS
from gpugrad.ops.elementwise import (
    add, subtract, multiply, divide, power, square, maximum, minimum, where, negative, exp, expm1, log,
    log1p, sqrt, abs, sin, cos, tan, erf, clip, sign, equal, not_equal, less, less_equal,
    greater, greater_equal, logical_and, logical_or, logical_not, isfinite, floor, ceil, trunc,
    round, remainder, mod, fmod, lerp,
)
from gpugrad.ops.transcendental import (
    reciprocal, rsqrt, cbrt, exp2, log2, log10, sinh, cosh, arcsin, arccos, arctan, arcsinh,
    arccosh, arctanh, deg2rad, rad2deg,
)
from gpugrad.ops.activation import softmax, log_softmax
globals().update(activation.DECLARED)  # the declared activations and their backward ops
from gpugrad.ops.reduce import (
    sum, mean, prod, max, min, var, std, logsumexp, norm, half_sum_squares,
)
from gpugrad.ops.cumulative import cumsum, cumprod, linear_recurrence
from gpugrad.ops.shape import (
    reshape, transpose, broadcast_to, concatenate, stack, getitem, scatter, take, astype, copy,
    to_device,
)
from gpugrad.ops.linalg import matmul, linear
from gpugrad.ops.contraction import einsum, tensordot, inner, outer, kron, dot
from gpugrad.ops.rearrange import (
    flip, fliplr, flipud, roll, repeat, tile, pad, tril, triu, diagonal, diag, trace,
    take_along_axis, gather,
)
from gpugrad.ops.joining import (
    split, array_split, hsplit, vsplit, dsplit, hstack, vstack, dstack, column_stack, append,
    atleast_1d, atleast_2d, atleast_3d, ravel, flatten, squeeze, expand_dims, unsqueeze,
)
from gpugrad.ops.loss import softmax_cross_entropy, softmax_cross_entropy_backward
from gpugrad.ops.recurrent import lstm_cell, lstm_cell_backward, gru_cell, gru_cell_backward
from gpugrad.ops.recurrent_layer import lstm_layer, gru_layer, rnn_layer
from gpugrad.ops.function import Function
from gpugrad.ops import interop  # noqa: F401 (installs the NumPy protocols)

_INTERNAL = {"getitem", "scatter", "to_device"}  # reached through t[...], t.to(), backward
__all__ = ["OPS", "CONSTANTS", "Function", *contraction.BUILT, *rearrange.BUILT,
           *joining.BUILT, "mod"] + [
    name for name in (*OPS, *CONSTANTS, "where", "take") if name not in _INTERNAL
]
del _INTERNAL
__all__ = list(dict.fromkeys(__all__))
