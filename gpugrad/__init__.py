"""gpugrad: reverse- and forward-mode automatic differentiation over NumPy and CuPy arrays."""

__version__ = "0.1.0"

from gpugrad import autograd, backend, cuda, functional, kernels, ops, testing
from gpugrad import data, memory, nn, optim  # noqa: E402  # noqa: E402
from gpugrad.backend import (  # noqa: E402
    DeviceError, default_device, device, get_default_dtype, seed, set_default_dtype,
)
from gpugrad.autograd import AnomalyError, GraphError, ShapeError, no_grad  # noqa: E402
from gpugrad.kernels import fused  # noqa: E402
from gpugrad.functional import grad, hvp, jacobian, jvp, value_and_grad, vjp  # noqa: E402
from gpugrad.ops import *  # noqa: E402,F401,F403  (the op functions, OPS, Function)
# gg.tensor is the module gpugrad.tensor, which is callable: gg.tensor(data, ...) makes a tensor
from gpugrad import tensor  # noqa: E402
from gpugrad.tensor import (  # noqa: E402
    Tensor, arange, empty, eye, from_dlpack, full, ones, ones_like, rand, randn, zeros, zeros_like,
)

array = tensor  # MXNet's nd.array
from gpugrad.testing import GradcheckError, gradcheck  # noqa: E402
from gpugrad.serialize import load, save  # noqa: E402
from gpugrad.recompute import checkpoint  # noqa: E402
from gpugrad import experiments  # noqa: E402
