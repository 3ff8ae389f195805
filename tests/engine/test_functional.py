"""grad, value_and_grad, vjp, jvp, jacobian, hvp, and gg.Function."""

import numpy as np
import pytest

import gpugrad as gg
from conftest import host


def f64(v):
    return gg.tensor(v, dtype="float64")


def test_grad_and_value_and_grad():
    f = lambda x, y: (x * x * y).sum()  # noqa: E731
    x, y = f64([1.0, 2.0]), f64([3.0, 4.0])
    np.testing.assert_array_equal(host(gg.grad(f)(x, y)), [6, 16])
    gx, gy = gg.grad(f, argnums=(0, 1))(x, y)
    np.testing.assert_array_equal(host(gy), [1, 4])
    v, g = gg.value_and_grad(f, argnums=1)(x, y)
    assert v.item() == 19 and host(g).tolist() == [1, 4]
    with pytest.raises(ValueError, match="one element"):
        gg.grad(lambda x: x * 2)(x)


def test_grad_composes_to_third_order():
    f = lambda x: gg.sin(x) * x  # noqa: E731
    d3 = gg.grad(gg.grad(gg.grad(f)))(f64(0.7))
    v = 0.7
    np.testing.assert_allclose(d3.item(), -3 * np.sin(v) - v * np.cos(v), rtol=1e-12)


def test_vjp_and_jvp_agree():
    rng = np.random.default_rng(0)
    f = lambda a, b: gg.tanh(a @ b) * gg.exp(b.sum())  # noqa: E731
    a, b = f64(rng.standard_normal((2, 3))), f64(rng.standard_normal((3, 4)))
    u = f64(rng.standard_normal((2, 4)))
    ta, tb = f64(rng.standard_normal((2, 3))), f64(rng.standard_normal((3, 4)))
    y, vjp_fn = gg.vjp(f, a, b)
    ga, gb = vjp_fn(u)
    y2, t = gg.jvp(f, (a, b), (ta, tb))
    np.testing.assert_allclose(host(y), host(y2))
    lhs = (host(t) * host(u)).sum()
    rhs = (host(ga) * host(ta)).sum() + (host(gb) * host(tb)).sum()
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


def test_jacobian_both_modes():
    f = lambda x: gg.stack([x[0] * x[1], gg.sin(x[2]), x.sum()])  # noqa: E731
    x = f64([1.0, 2.0, 3.0])
    expected = [[2, 1, 0], [0, 0, np.cos(3.0)], [1, 1, 1]]
    np.testing.assert_allclose(host(gg.jacobian(f)(x)), expected)
    np.testing.assert_allclose(host(gg.jacobian(f, mode="fwd")(x)), expected)
    with pytest.raises(ValueError, match="mode"):
        gg.jacobian(f, mode="sideways")


def test_hvp_matches_the_hessian():
    f = lambda x: (x[0] ** 2 * x[1] + gg.exp(x[1])).sum()  # noqa: E731
    x, v = f64([1.0, 2.0]), f64([0.5, -1.0])
    hessian = np.array([[2 * 2.0, 2 * 1.0], [2 * 1.0, np.exp(2.0)]])
    np.testing.assert_allclose(host(gg.hvp(f, x, v)), hessian @ [0.5, -1.0])


def test_nested_jvp_differentiates_the_inner_tangent():
    """jvp inside jvp: the outer one differentiates x -> cos(x) * x, the inner tangent, to
    cos(x) - x sin(x), and its primal is that inner tangent."""
    x = np.array([0.3, -1.2, 2.0])
    inner, outer = gg.jvp(lambda v: gg.jvp(gg.sin, (v,), (v,))[1], (f64(x),), (f64(np.ones(3)),))
    np.testing.assert_allclose(host(inner), np.cos(x) * x, rtol=1e-12)
    np.testing.assert_allclose(host(outer), np.cos(x) - x * np.sin(x), rtol=1e-12)


class Cube(gg.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * g * x * x

    @staticmethod
    def jvp(ctx, t):
        (x,) = ctx.saved_tensors
        return 3 * t * x * x


class ScaledAdd(gg.Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.scale = 2.0
        return a + ctx.scale * b

    @staticmethod
    def backward(ctx, g):
        return g, ctx.scale * g


def test_function_first_and_second_order(device):
    x = gg.tensor([0.5, -1.0, 2.0], dtype="float64", device=device)
    assert gg.gradcheck(Cube.apply, [x])
    assert gg.gradcheck(Cube.apply, [x], order=2)  # backward written in Tensor ops differentiates
    a, b = gg.tensor([1.0, 2.0], dtype="float64"), gg.tensor([3.0], dtype="float64")
    assert gg.gradcheck(ScaledAdd.apply, [a, b], forward=False)
    with pytest.raises(TypeError, match="defines no jvp"):
        gg.jvp(ScaledAdd.apply, (a, b), (a, b))


def test_function_used_inside_record(device):
    x = gg.tensor([2.0], requires_grad=True, device=device)
    with gg.autograd.record():
        y = Cube.apply(x) * 2
    y.backward()
    assert host(x.grad).tolist() == [24]
