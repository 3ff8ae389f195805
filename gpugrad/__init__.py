"""gpugrad: reverse- and forward-mode automatic differentiation over NumPy and CuPy arrays."""

__version__ = "0.1.0"

from gpugrad import amp, autograd, backends, cuda, data, devices, memory, nn, ops, optim, testing
from gpugrad.amp import autocast
from gpugrad.cuda.compiled import CompiledStep, compile  # noqa: A004  (as torch.compile)

from gpugrad.devices.cuda.kernels import fused
from gpugrad.devices import (
    DeviceError, default_device, device, get_default_dtype, seed, set_default_dtype,
)
from gpugrad.devices.dtypes import BFLOAT16 as bfloat16, FLOAT16 as float16  # noqa: F401
from gpugrad.devices.dtypes import FLOAT32 as float32, FLOAT64 as float64  # noqa: F401
from gpugrad.autograd import AnomalyError, GraphError, ShapeError, no_grad
from gpugrad.engine.transforms import (
    grad, hessian, hvp, jacfwd, jacobian, jacrev, jvp, value_and_grad, vjp,
)
from gpugrad.ops import *  # noqa: F401,F403  (the op functions, OPS, Function)
from gpugrad import tensors
from gpugrad.tensors import (
    Tensor, arange, array, empty, eye, from_dlpack, full, ones, ones_like, rand, randn, tensor,
    zeros, zeros_like,
)
from gpugrad.testing import GradcheckError, gradcheck
from gpugrad.serialize import load, save
from gpugrad.engine.checkpoint import checkpoint
from gpugrad.drawing import graph_of
