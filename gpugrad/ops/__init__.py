"""The table of differentiable ops: `OPS` maps each name to its declaration."""

from gpugrad.ops import activation, elementwise, function, linalg, reduce, shape
from gpugrad.ops.registry import CONSTANTS, OPS

# fmt: off
from gpugrad.ops.elementwise import (  # noqa: E402
    add, subtract, multiply, divide, power, maximum, minimum, where, negative, exp, expm1, log,
    log1p, sqrt, abs, sin, cos, tan, tanh, erf, clip, sign, equal, not_equal, less, less_equal,
    greater, greater_equal, logical_and, logical_or, logical_not, isfinite,
)
from gpugrad.ops.activation import (  # noqa: E402
    sigmoid, relu, leaky_relu, elu, gelu, silu, softplus, softmax, log_softmax,
)
from gpugrad.ops.reduce import sum, mean, max, min, logsumexp, norm  # noqa: E402
from gpugrad.ops.shape import (  # noqa: E402
    reshape, transpose, broadcast_to, concatenate, stack, getitem, scatter, take, astype, copy,
    to_device,
)
from gpugrad.ops.linalg import matmul, dot  # noqa: E402
from gpugrad.ops.function import Function, FunctionCtx  # noqa: E402
# fmt: on

__all__ = ["OPS", "CONSTANTS", "activation", "elementwise", "function", "linalg", "reduce",
           "shape"]
