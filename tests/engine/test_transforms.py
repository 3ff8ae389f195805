"""Transforms composed in every order, with several inputs and outputs, against PyTorch's
torch.func (float64) where it is installed, and against finite differences everywhere."""

import numpy as np
import pytest

import gpugrad as gg
from conftest import host

R = np.random.default_rng(7)
X, W, V = R.standard_normal(3), R.standard_normal((2, 3)), R.standard_normal(3)


def f64(a):
    return gg.tensor(np.asarray(a, dtype=np.float64), dtype="float64")


def scalar(lib, x, w):
    """The same scalar function in gpugrad and PyTorch: both libraries spell these alike."""
    return (lib.tanh(w @ x) ** 2).sum() + lib.sin(x).sum() * lib.exp(w).sum()


def pair(lib, x, w):
    return (w @ x, lib.sin(x) * x)


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")


def close(ours, theirs, rtol=1e-12):
    np.testing.assert_allclose(host(ours), theirs.detach().numpy(), rtol=rtol, atol=1e-13)


def test_hessian_over_one_and_two_arguments(torch):
    tx, tw = torch.tensor(X), torch.tensor(W)
    close(gg.hessian(lambda x, w: scalar(gg, x, w))(f64(X), f64(W)),
          torch.func.hessian(lambda x, w: scalar(torch, x, w))(tx, tw))
    ours = gg.hessian(lambda x, w: scalar(gg, x, w), argnums=(0, 1))(f64(X), f64(W))
    theirs = torch.func.hessian(lambda x, w: scalar(torch, x, w), argnums=(0, 1))(tx, tw)
    for i in range(2):
        for j in range(2):
            close(ours[i][j], theirs[i][j])


@pytest.mark.parametrize("name", ["jacrev", "jacfwd"])
def test_jacobians_of_several_outputs_and_arguments(name, torch):
    ours = getattr(gg, name)(lambda x, w: pair(gg, x, w), argnums=(0, 1))(f64(X), f64(W))
    theirs = getattr(torch.func, name)(lambda x, w: pair(torch, x, w), argnums=(0, 1))(
        torch.tensor(X), torch.tensor(W))
    assert isinstance(ours, tuple) and len(ours) == 2
    for i in range(2):
        for j in range(2):
            assert ours[i][j].shape == tuple(theirs[i][j].shape)
            close(ours[i][j], theirs[i][j])


def test_vjp_and_jvp_with_two_outputs(torch):
    out, vjp_fn = gg.vjp(lambda x, w: pair(gg, x, w), f64(X), f64(W))
    assert isinstance(out, tuple) and len(out) == 2
    cts = (R.standard_normal(2), R.standard_normal(3))
    ours = vjp_fn(tuple(f64(c) for c in cts))
    _, t_vjp = torch.func.vjp(lambda x, w: pair(torch, x, w), torch.tensor(X), torch.tensor(W))
    for a, b in zip(ours, t_vjp(tuple(torch.tensor(c) for c in cts))):
        close(a, b)
    (y1, y2), (t1, t2) = gg.jvp(lambda x, w: pair(gg, x, w), (f64(X), f64(W)), (f64(V), f64(W)))
    _, theirs = torch.func.jvp(lambda x, w: pair(torch, x, w), (torch.tensor(X), torch.tensor(W)),
                               (torch.tensor(V), torch.tensor(W)))
    close(t1, theirs[0])
    close(t2, theirs[1])
    assert not y1.requires_grad and y1._tangent is None  # the level's tangent is handed out


def test_forward_over_reverse_nested_forward_and_reverse_over_forward(torch):
    tf, tx, tw, tv = torch.func, torch.tensor(X), torch.tensor(W), torch.tensor(V)
    f = lambda x, w: scalar(gg, x, w)  # noqa: E731
    ft = lambda x, w: scalar(torch, x, w)  # noqa: E731
    _, ours = gg.jvp(gg.grad(f, argnums=(0, 1)), (f64(X), f64(W)), (f64(V), f64(W)))
    _, theirs = tf.jvp(tf.grad(ft, argnums=(0, 1)), (tx, tw), (tv, tw))
    close(ours[0], theirs[0])
    close(ours[1], theirs[1])
    u = V[::-1].copy()
    ours = gg.jvp(lambda x: gg.jvp(lambda y: f(y, f64(W)), (x,), (f64(V),))[1], (f64(X),),
                  (f64(u),))[1]
    theirs = tf.jvp(lambda x: tf.jvp(lambda y: ft(y, tw), (x,), (tv,))[1], (tx,),
                    (torch.tensor(u),))[1]
    close(ours, theirs)
    ours = gg.grad(lambda x: gg.jvp(lambda y: f(y, f64(W)), (x,), (f64(V),))[1])(f64(X))
    theirs = tf.grad(lambda x: tf.jvp(lambda y: ft(y, tw), (x,), (tv,))[1])(tx)
    close(ours, theirs)


def test_third_order_by_composition():
    """d3/dx3 of sum(x^4) along ones, three ways: jvp(jvp(grad)), grad(grad(grad)) summed,
    and jacfwd(hessian) contracted."""
    x = f64(X)
    fourth = lambda q: (q ** 4).sum()  # noqa: E731
    ones = f64(np.ones(3))
    a = gg.jvp(lambda p: gg.jvp(gg.grad(fourth), (p,), (ones,))[1], (x,), (ones,))[1]
    np.testing.assert_allclose(host(a), 24 * X, rtol=1e-13)
    b = gg.grad(lambda p: gg.grad(lambda q: gg.grad(fourth)(q).sum())(p).sum())(x)
    np.testing.assert_allclose(host(b), 24 * X, rtol=1e-13)
    t = gg.jacfwd(gg.hessian(fourth))(x)
    assert t.shape == (3, 3, 3)
    np.testing.assert_allclose(np.einsum("iij->j", host(t)), 24 * X, rtol=1e-13)


def test_structures_argnums_and_aux():
    params = {"w": f64(W), "layers": [f64(X), f64(2 * X)]}

    def loss(p, scale):
        return (p["w"] @ p["layers"][0]).sum() * scale + (p["layers"][1] ** 2).sum(), "aux"
    (g, aux) = gg.grad(loss, has_aux=True)(params, 3.0)
    assert aux == "aux" and set(g) == {"w", "layers"} and len(g["layers"]) == 2
    np.testing.assert_allclose(host(g["w"]), 3 * np.outer(np.ones(2), X))
    np.testing.assert_allclose(host(g["layers"][0]), 3 * W.sum(axis=0))
    np.testing.assert_allclose(host(g["layers"][1]), 4 * X)
    (value, _), g = gg.value_and_grad(loss, argnums=0, has_aux=True)(params, 1.0)
    assert not value.requires_grad
    with pytest.raises(ValueError, match="argnums 2 is out of range for 2 argument"):
        gg.grad(loss, argnums=2)(params, 1.0)
    with pytest.raises(TypeError, match="has_aux=True: f must return a pair"):
        gg.grad(lambda x: x.sum(), has_aux=True)(f64(X))


def test_vjp_and_jvp_refuse_mismatched_structures():
    _, vjp_fn = gg.vjp(lambda x: (x * 2, x * 3), f64(X))
    with pytest.raises(ValueError, match="f returned 2 output"):
        vjp_fn(f64(X))
    with pytest.raises(gg.ShapeError, match="cotangent of shape"):
        vjp_fn((f64(X), f64(np.ones(2))))
    with pytest.raises(gg.ShapeError, match="tangent of shape"):
        gg.jvp(gg.sin, (f64(X),), (f64(np.ones(2)),))
    with pytest.raises(TypeError, match="f must return a Tensor"):
        gg.jvp(lambda x: 3.0, (f64(X),), (f64(X),))


def test_hessian_against_finite_differences_of_the_gradient():
    """Where PyTorch is absent, too: the Hessian's columns are differences of the gradient."""
    f = lambda x: scalar(gg, x, f64(W))  # noqa: E731
    H = host(gg.hessian(f)(f64(X)))
    grad = gg.grad(f)
    eps = 1e-6
    for j in range(3):
        e = np.zeros(3)
        e[j] = eps
        column = (host(grad(f64(X + e))) - host(grad(f64(X - e)))) / (2 * eps)
        np.testing.assert_allclose(H[:, j], column, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(H, H.T, rtol=1e-12, atol=1e-14)
