"""The activations' array formulas (gpugrad/ops/activation_formulas.py), written in place and
without where(): each branch as the kernels and PyTorch take it, at the edges."""

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.ops.activation import ACTIVATIONS

PARAMS = {"elu": [{"alpha": 1.0}, {"alpha": 0.3}], "gelu": [{"approximate": "none"}, {"approximate": "tanh"}],
          "softplus": [{"beta": 1.0, "threshold": 20.0}, {"beta": 2.0, "threshold": 5.0}]}
CASES = [(name, p) for name in ("elu", "gelu", "silu", "softplus", "sigmoid", "tanh", "softsign", "hardswish")
         for p in PARAMS.get(name, [{}])]
EDGES = np.array([0.0, -0.0, 1e-30, -1e-30, 1.0, -1.0, 3.0, -3.0, 6.0, 7.5, 20.0, -20.0, 100.0,
                  -100.0, 1e4, -1e4, 1e30, -1e30, np.inf, -np.inf, np.nan])
# the limits each activation takes at -inf and +inf, and its derivative's there
LIMITS = {"elu": lambda p: (-p["alpha"], np.inf, 0.0, 1.0), "gelu": lambda p: (0.0, np.inf, 0.0, 1.0),
          "silu": lambda p: (0.0, np.inf, 0.0, 1.0), "softplus": lambda p: (0.0, np.inf, 0.0, 1.0),
          "sigmoid": lambda p: (0.0, 1.0, 0.0, 0.0), "tanh": lambda p: (-1.0, 1.0, 0.0, 0.0),
          "softsign": lambda p: (-1.0, 1.0, 0.0, 0.0), "hardswish": lambda p: (0.0, np.inf, 0.0, 1.0)}


def _run(name, p, x, g):
    a = ACTIVATIONS[name]
    y = a.forward(np, x, **p)
    return y, a.backward(np, g, y if a.saved(p) == "y" else x, **p)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, p", CASES, ids=str)
def test_limits_nan_and_the_dtype(name, p, dtype):
    """+-inf give the activation's limits (no inf * 0 NaN), NaN stays NaN, the dtype is kept,
    and every finite input gives a finite value and gradient."""
    with np.errstate(all="ignore"):
        y, dx = _run(name, p, EDGES.astype(dtype), np.ones(EDGES.size, dtype))
    assert y.dtype == dx.dtype == dtype
    lo, hi, dlo, dhi = LIMITS[name](p)
    np.testing.assert_allclose([y[-3], y[-2], dx[-3], dx[-2]], [hi, lo, dhi, dlo], atol=1e-7)
    assert np.isnan(y[-1]) and np.all(np.isfinite(y[:-3])) and np.all(np.isfinite(dx[:-3]))


@pytest.mark.parametrize("name, p", CASES, ids=str)
def test_a_0d_input_and_a_gradient_that_broadcasts(name, p):
    """0-d arrays stay arrays through the in-place steps; a backward takes g and the saved
    array broadcasting against each other, as its op allows."""
    x = np.asarray(np.float32(0.7))
    y, dx = _run(name, p, x, np.asarray(np.float32(2.0)))
    assert np.shape(y) == () and np.shape(dx) == ()
    a = ACTIVATIONS[name]
    xs = np.linspace(-4, 4, 12).reshape(3, 4)
    s = a.forward(np, xs, **p) if a.saved(p) == "y" else xs
    g = np.array([1.0, -2.0, 0.5, 3.0])
    np.testing.assert_array_equal(a.backward(np, g, s, **p),
                                  a.backward(np, np.broadcast_to(g, (3, 4)).copy(), s, **p))


def test_hardswish_and_elu_backward_branches():
    """hardswish's gradient is 0 up to -3 even for an infinite g (as the kernel and PyTorch
    give), and NaN passes g on; elu's passes g for y > 0 and NaN, exactly."""
    hs = ACTIVATIONS["hardswish"]
    x = np.array([-5.0, -3.0, -1.5, 0.0, 3.0, 9.0, np.nan])
    g = np.array([np.inf, np.inf, 2.0, 2.0, 2.0, 2.0, 2.0])
    with np.errstate(invalid="ignore"):  # as every op runs: inf * 0 is masked out after
        got = hs.backward(np, g, x)
    np.testing.assert_array_equal(got, [0.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0])
    elu = ACTIVATIONS["elu"]
    y = np.array([-0.25, 0.0, 0.5, np.nan])
    np.testing.assert_array_equal(elu.backward(np, np.full(4, 3.0), y, alpha=0.3),
                                  [3.0 * (-0.25 + 0.3), 3.0 * 0.3, 3.0, 3.0])


@pytest.mark.parametrize("name, p", CASES, ids=str)
def test_the_same_on_every_device(name, p, device):
    """The formulas in the device's xp (CuPy or the strict device's) give NumPy's values."""
    be = gg.devices.get(device)
    x = np.concatenate([EDGES[:-3], np.linspace(-6, 6, 50)])
    g = np.linspace(-1, 1, x.size)
    with np.errstate(all="ignore"):
        want_y, want_dx = _run(name, p, x, g)
        a = ACTIVATIONS[name]
        xd, gd = be.xp.asarray(x), be.xp.asarray(g)
        y = a.forward(be.xp, xd, **p)
        dx = a.backward(be.xp, gd, y if a.saved(p) == "y" else xd, **p)
    np.testing.assert_allclose(be.to_host(y), want_y, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(be.to_host(dx), want_dx, rtol=1e-12, atol=1e-300)
