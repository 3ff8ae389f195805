"""gpugrad: reverse- and forward-mode automatic differentiation over NumPy and CuPy arrays."""

__version__ = "0.1.0"

from gpugrad import autograd, backend, cuda, functional, kernels, ops, testing
from gpugrad import data, memory, nn, optim  # noqa: E402  # noqa: E402
from gpugrad.backend import (  # noqa: E402
    DeviceError, default_device, device, get_default_dtype, seed, set_default_dtype,
)
from gpugrad.autograd import AnomalyError, GraphError, ShapeError, no_grad  # noqa: E402
from gpugrad.kernels import fused  # noqa: E402
from gpugrad.functional import (  # noqa: E402
    grad, hessian, hvp, jacfwd, jacobian, jacrev, jvp, value_and_grad, vjp,
)
from gpugrad.ops import *  # noqa: E402,F401,F403  (the op functions, OPS, Function)
from gpugrad import tensors  # noqa: E402
from gpugrad.tensors import (  # noqa: E402
    Tensor, arange, array, empty, eye, from_dlpack, full, ones, ones_like, rand, randn, tensor,
    zeros, zeros_like,
)
from gpugrad.testing import GradcheckError, gradcheck  # noqa: E402
from gpugrad.serialize import load, save  # noqa: E402
from gpugrad.recompute import checkpoint  # noqa: E402
from gpugrad import experiments  # noqa: E402
from gpugrad.drawing import graph_of  # noqa: E402
