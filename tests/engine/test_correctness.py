"""Derivatives of ordinary programs that a shortcut in an engine gets wrong (a scalar bias under
a sum, batched matmul with a unit dimension, forward over reverse, ...): one test each, with the
right answer worked out by hand (and by PyTorch where it is installed)."""

import math

import numpy as np
import pytest

import gpugrad as gg
from conftest import host


def f64(v):
    return gg.tensor(np.asarray(v, dtype=np.float64), dtype="float64")


def leaf(v):
    return gg.tensor(np.asarray(v, dtype=np.float64), dtype="float64", requires_grad=True)


def grads_of(f, *leaves):
    with gg.autograd.record():
        y = f(*leaves)
    y.backward()
    return [host(x.grad) for x in leaves]


# ---------------------------------------------------------------------------- broadcasting


@pytest.mark.parametrize("reduce, expected", [(gg.sum, 6.0), (gg.mean, 1.0)])
@pytest.mark.parametrize("op, sign", [(gg.add, 1.0), (gg.subtract, -1.0)])
def test_a_0d_bias_under_a_reduction_gets_every_copy(op, sign, reduce, expected):
    """A 0-d b broadcast over (2, 3): d sum(ones + b)/db counts all six copies."""
    (gb,) = grads_of(lambda b: reduce(op(f64(np.ones((2, 3))), b)), leaf(0.5))
    assert gb.shape == ()
    np.testing.assert_allclose(gb, sign * expected, rtol=1e-15)


@pytest.mark.parametrize("op", [gg.multiply, gg.divide])
def test_a_size_1_dimension_against_a_missing_one(op):
    """(1, 3) with (3,), both leaves: each gets its own shape back, summed over nothing."""
    a, b = np.array([[1.0, 2.0, 3.0]]), np.array([2.0, 4.0, 5.0])
    ga, gb = grads_of(lambda x, y: op(x, y).sum(), leaf(a), leaf(b))
    if op is gg.multiply:
        np.testing.assert_allclose(ga, b[None, :])
        np.testing.assert_allclose(gb, a[0])
    else:
        np.testing.assert_allclose(ga, 1 / b[None, :])
        np.testing.assert_allclose(gb, -a[0] / b ** 2)


def test_where_with_a_condition_of_lower_rank():
    cond = gg.tensor(np.array([True, False]))
    (gx,) = grads_of(lambda x: gg.where(cond, x, 0.0).sum(), leaf([[1.0, 2.0]]))
    np.testing.assert_array_equal(gx, [[1.0, 0.0]])


@pytest.mark.parametrize("a_shape, b_shape", [
    ((3, 2, 1), (1, 3)),     # a batch of column vectors times one row: dW sums 3 * 2 ones
    ((2, 3, 1), (1, 3)),
    ((2, 1), (3, 1, 4)),     # the mirror: a is broadcast over the batch of b
    ((1,), (2, 1, 3)),       # a 1-D operand with a contracted dimension of 1
    ((2, 3, 1), (1,)),
])
def test_batched_matmul_with_a_contracted_dimension_of_1(a_shape, b_shape):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    ga, gb = grads_of(lambda x, y: gg.matmul(x, y).sum(), leaf(a), leaf(b))
    # d sum(a @ b) by hand: the product broadcast out explicitly, then summed back
    a2 = a[:, None] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    ones = np.ones(np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]) + (a2.shape[-2], b2.shape[-1]))
    da = ones @ np.swapaxes(b2, -1, -2)
    db = np.swapaxes(a2, -1, -2) @ ones
    da = da.reshape((-1,) + a2.shape).sum(axis=0) if da.ndim > a2.ndim else da
    db = db.reshape((-1,) + b2.shape).sum(axis=0) if db.ndim > b2.ndim else db
    np.testing.assert_allclose(ga, da.reshape(a.shape), rtol=1e-12)
    np.testing.assert_allclose(gb, db.reshape(b.shape), rtol=1e-12)
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    torch.matmul(ta, tb).sum().backward()
    np.testing.assert_allclose(ga, ta.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-12)


def test_linear_with_one_output_feature_on_3d_input_at_second_order():
    """Linear(out_features=1) on (batch, time, features): the weight's gradient of the gradient's
    norm, through matmuls with a dimension of 1, against finite differences."""
    rng = np.random.default_rng(1)
    x = f64(rng.standard_normal((2, 3, 4)))
    w = f64(rng.standard_normal((1, 4)))

    def f(w):
        g = gg.grad(lambda w: gg.tanh(gg.linear(x, w)).sum())(w)
        return (g * g).sum()
    assert gg.gradcheck(f, [w])


# ---------------------------------------------------------------------------- rules


def test_softplus_takes_the_forwards_branch_at_a_low_threshold():
    """threshold=1, x=0.8: beta x is below it, so the derivative is sigmoid(0.8), though the
    output (1.17) is above it."""
    x = np.array([0.8, 1.5, -0.3])
    (gx,) = grads_of(lambda t: gg.softplus(t, threshold=1.0).sum(), leaf(x))
    expected = np.where(x > 1.0, 1.0, 1 / (1 + np.exp(-x)))
    np.testing.assert_allclose(gx, expected, rtol=1e-14)
    _, tangent = gg.jvp(lambda t: gg.softplus(t, beta=2.0, threshold=1.0), (f64(x),),
                        (f64(np.ones(3)),))
    np.testing.assert_allclose(host(tangent), np.where(2 * x > 1, 1.0, 1 / (1 + np.exp(-2 * x))),
                               rtol=1e-14)
    assert gg.gradcheck(lambda t: gg.softplus(t, beta=2.0, threshold=1.0), [f64(x)], order=2)


def test_power_where_the_derivative_is_0():
    """x ** 0 has derivative 0 at x = 0 (not 0 * inf); so does x ** 1's second derivative;
    x ** y at x = y = 0 has 0 in both arguments (PyTorch's values)."""
    (gx,) = grads_of(lambda x: (x ** 0).sum(), leaf([0.0, 2.0]))
    np.testing.assert_array_equal(gx, [0.0, 0.0])
    second = gg.grad(lambda t: gg.grad(lambda s: (s ** 1).sum())(t).sum())(f64([0.0, 3.0]))
    np.testing.assert_array_equal(host(second), [0.0, 0.0])
    gx, gy = grads_of(lambda x, y: (x ** y).sum(), leaf([0.0, 2.0]), leaf([0.0, 3.0]))
    np.testing.assert_array_equal(gx, [0.0, 12.0])
    np.testing.assert_allclose(gy, [0.0, 8 * np.log(2)], rtol=1e-14)


def test_0d_tensors_through_gelu_and_a_relu_whose_output_is_kept():
    x = gg.tensor(np.float64(0.5))
    assert x.dtype == np.float64  # a NumPy scalar keeps its dtype, as an array does
    y = gg.gelu(x)
    assert y.shape == () and abs(float(host(y)) - 0.5 * 0.5 * (1 + math.erf(0.5 ** 0.5 / 2))) < 1e-15
    (gx,) = grads_of(lambda t: gg.relu(t) * gg.relu(t), leaf(0.5))
    assert gx.shape == () and gx == 1.0
    h = None

    def kept(t):
        nonlocal h
        h = gg.relu(t)
        return h * h
    (gx,) = grads_of(kept, leaf(-0.5))
    assert gx == 0.0


def test_l2_penalty_with_a_frozen_tensor():
    """A parameter that needs no gradient in the list: the others get theirs, it gets none."""
    w = leaf([1.0, -2.0, 3.0])
    frozen = f64([5.0, 6.0])
    with gg.autograd.record():
        loss = gg.nn.functional.l2_penalty([w, frozen]) + (w * frozen[0]).sum()
    loss.backward()
    np.testing.assert_array_equal(host(w.grad), [6.0, 3.0, 8.0])
    assert frozen.grad is None


@pytest.mark.parametrize("f", [gg.relu, gg.abs, lambda t: gg.clip(t, -1.0, 1.0),
                               lambda t: gg.nn.functional.dropout(t, 0.5, training=True)],
                         ids=["relu", "abs", "clip", "dropout"])
def test_the_second_derivative_of_a_piecewise_linear_function_is_zeros(f):
    x = leaf([0.5, -2.0, 0.25])
    with gg.autograd.record():
        y = f(x).sum()
        (first,) = gg.autograd.grad(y, [x], create_graph=True)
        (second,) = gg.autograd.grad(first.sum(), [x])
    np.testing.assert_array_equal(host(second), np.zeros(3))
    assert host(first).shape == (3,)


# ---------------------------------------------------------------------------- transforms


def test_forward_over_reverse():
    """jvp of the gradient of sum(t^3) is the Hessian 6 diag(t) times v."""
    x, v = f64([1.0, 2.0, 3.0]), f64([1.0, 0.0, 0.0])
    g, hv = gg.jvp(gg.grad(lambda t: (t ** 3).sum()), (x,), (v,))
    np.testing.assert_array_equal(host(g), [3.0, 12.0, 27.0])
    np.testing.assert_array_equal(host(hv), [6.0, 0.0, 0.0])


def test_value_and_grad_returns_a_detached_value_that_records_again():
    v, g = gg.value_and_grad(lambda t: (t * t).sum())(f64([1.0, 2.0]))
    assert not v.requires_grad and float(host(v)) == 5.0
    w = leaf([3.0])
    with gg.autograd.record():
        z = (w * v).sum()
    z.backward()
    np.testing.assert_array_equal(host(w.grad), [5.0])


def test_item_assignment_into_the_argument_being_differentiated_is_refused():
    caller = f64([1.0, 2.0, 3.0])

    def f(a):
        a[1] = 7.0
        return (a * a).sum()
    with pytest.raises(gg.GraphError, match="in-place assignment .* being differentiated"):
        gg.grad(f)(caller)
    np.testing.assert_array_equal(host(caller), [1.0, 2.0, 3.0])
    with pytest.raises(gg.GraphError, match="being differentiated"):
        gg.jvp(f, (caller,), (f64([1.0, 1.0, 1.0]),))
    np.testing.assert_array_equal(host(caller), [1.0, 2.0, 3.0])
    x = leaf([1.0, 2.0])
    with gg.autograd.record(), pytest.raises(gg.GraphError, match="being differentiated"):
        x[0] = 3.0
    x[0] = 3.0  # outside record() a leaf is the user's to set (initialisation, say)
    np.testing.assert_array_equal(host(x), [3.0, 2.0])


def test_stack_is_the_differentiable_way_to_make_a_tensor_of_tensors():
    x = f64([1.0, 2.0])
    g = gg.grad(lambda a: (gg.stack([a[0] * a[1], a[1]]) ** 2).sum())(x)
    np.testing.assert_array_equal(host(g), [2 * 1 * 4, 2 * 2 * 1 + 2 * 2])
    with pytest.raises(gg.GraphError, match="use gg.stack"):
        gg.grad(lambda a: gg.array([a[0], a[1]]).sum())(x)
    copied = gg.array([x[0], x[1]])  # outside any transform a copy of the values is asked for
    np.testing.assert_array_equal(host(copied), [1.0, 2.0])
