"""Worked examples with their exact numbers: the MXNet autograd tutorial (a dot product, a
cube, detach, head gradients, attach_grad on an intermediate) and the computational graphs
e = (a+b)(b+1) and 2(xy + max(z, w))."""

import numpy as np

import gpugrad as gg
from conftest import host


def test_mxnet_tour_dot():
    x = gg.arange(4)
    x.attach_grad()
    with gg.autograd.record():
        y = 2 * gg.dot(x, x)
    y.backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(host(x.grad), [0, 4, 8, 12])


def test_cube():
    x = gg.arange(4)
    x.attach_grad()
    with gg.autograd.record():
        z = 3 * x * x * x
    z.backward()
    np.testing.assert_array_equal(host(x.grad), [0, 9, 36, 81])


def test_detach_stops_the_gradient():
    x = gg.arange(4)
    x.attach_grad()
    with gg.autograd.record():
        y = 3 * x * x
        t = y.detach()
        z = t * x
    z.backward()
    np.testing.assert_array_equal(host(x.grad), [0, 3, 12, 27])
    np.testing.assert_array_equal(host(x.grad), host(t))


def test_head_gradient_multiplies():
    """MXNet tutorial: z = (2x) * x, backward with a head gradient."""
    x = gg.tensor([[1, 2], [3, 4]])
    x.attach_grad()
    with gg.autograd.record():
        y = x * 2
        z = y * x
    z.backward(gg.tensor([[10, 1.0], [0.1, 0.01]]))
    np.testing.assert_allclose(host(x.grad), [[40, 8], [1.2, 0.16]], rtol=1e-6)


def test_head_gradient_chain_rule():
    """dz/dx in two steps: C = dz/dy from a leaf y, then t.backward(C) gives C * D."""
    x = gg.tensor([0.5, 1.0, 2.0])
    x.attach_grad()
    with gg.autograd.record():
        t = x * x  # D = dt/dx = 2x
    y = t.detach()
    y.attach_grad()
    with gg.autograd.record():
        z = gg.sin(y)  # C = dz/dy = cos(y)
    z.backward()
    t.backward(y.grad)
    xs = np.array([0.5, 1.0, 2.0], dtype=np.float32)
    np.testing.assert_allclose(host(x.grad), np.cos(xs * xs) * 2 * xs, rtol=1e-6)


def test_attach_grad_on_an_intermediate_cuts_history():
    x = gg.arange(4)
    x.attach_grad()
    with gg.autograd.record():
        y = x * 2
        y.attach_grad()
        z = (y * y).sum()
    z.backward()
    np.testing.assert_array_equal(host(y.grad), [0, 4, 8, 12])  # dz/dy = 2y
    np.testing.assert_array_equal(host(x.grad), [0, 0, 0, 0])  # x is not reached


def test_graph_example_e():
    a, b = gg.tensor(2.0), gg.tensor(1.0)
    a.attach_grad()
    b.attach_grad()
    with gg.autograd.record():
        e = (a + b) * (b + 1)
    e.backward()
    assert host(e) == 6
    assert a.grad.item() == 2 and b.grad.item() == 5


def test_graph_example_max():
    x, y, z, w = (gg.tensor(v) for v in (3.0, -4.0, 2.0, -1.0))
    for t in (x, y, z, w):
        t.attach_grad()
    with gg.autograd.record():
        a = 2 * (x * y + gg.maximum(z, w))
    a.backward()
    assert a.item() == -20
    assert [t.grad.item() for t in (x, y, z, w)] == [-8, 6, 2, 0]
