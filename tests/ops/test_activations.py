"""Every declared activation against PyTorch's module of the same name (its row's `module`):
values and gradients in float64 on a grid through the points where the branches meet."""

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.ops.activation import ACTIVATIONS, variant_params
from conftest import host

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")

# every quarter from -6 to 6 (so -3, 0 and 3 exactly), and beyond softplus' threshold
GRID = np.concatenate([np.linspace(-6, 6, 49), [-25.0, 25.0]])
# each kernel of each row at its declared defaults, with the variant that selects the kernel
KERNELS = [(a.name, {**dict(a.params), **fixed}) for a in ACTIVATIONS.values()
           for _, fixed in variant_params(a)]


@pytest.mark.parametrize("name,params", KERNELS, ids=[f"{n}-{p}" for n, p in KERNELS])
def test_activation_agrees_with_pytorch(name, params, device):
    theirs = getattr(torch.nn, ACTIVATIONS[name].module)(**params)
    xt = torch.tensor(GRID, requires_grad=True)
    yt = theirs(xt)
    head = np.linspace(-1, 1, GRID.size)
    yt.backward(torch.tensor(head))
    x = gg.tensor(GRID, dtype="float64", device=device, requires_grad=True)
    with gg.autograd.record():
        y = getattr(gg, name)(x, **params)
    y.backward(gg.tensor(head, dtype="float64", device=device))
    np.testing.assert_allclose(host(y), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(host(x.grad), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
