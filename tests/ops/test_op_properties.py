"""Properties of every op in the table beyond gradcheck's (tests/ops/test_ops.py), on its cases:

- forward and reverse mode agree to rounding, <u, J v> = <J^T u, v>, per input and together;
- second derivatives, reverse over reverse and forward over reverse, agree with central
  differences of the first derivative (the vjp with a fixed cotangent, as a function of x).
Broadcasting in every argument position: tests/ops/test_broadcasting.py.
"""

import zlib

import numpy as np
import pytest

import gpugrad as gg
from conftest import host
from test_ops import CASE_LIST, IDS

F64 = "float64"


def _tensors(arrays):
    return [gg.tensor(a, dtype=F64) for a in arrays]


def _rng(name, i):
    """A generator of its own per case, so a case's numbers do not depend on which tests ran."""
    return np.random.default_rng(zlib.crc32(f"{name}-{i}".encode()))


def _inner(a, b):
    """<a, b>, and the sum of |a_k b_k|: the size that bounds its rounding error."""
    products = np.asarray(a) * np.asarray(b)
    return float(products.sum()), float(np.abs(products).sum())


def _directions(rng, xs):
    """Random tangents: nonzero in one input at a time (so one input's wrong rule cannot hide
    behind another's), then in all inputs together."""
    vs = [rng.standard_normal(np.shape(x)) for x in xs]
    one_at_a_time = [(f"input {k}", [v if j == k else np.zeros_like(v) for j, v in enumerate(vs)])
                     for k in range(len(xs))]
    return one_at_a_time + ([("all inputs", vs)] if len(xs) > 1 else [])


# ---------------------------------------------------------------------------------------------
# 1. forward mode against reverse mode


@pytest.mark.parametrize("name,i,f,xs", CASE_LIST, ids=IDS)
def test_jvp_and_vjp_agree_per_input_and_together(name, i, f, xs):
    """<u, J v> from gg.jvp equals <J^T u, v> from gg.vjp to float64 rounding (gradcheck
    compares them only to its finite-difference tolerance, and summed over the inputs)."""
    rng = _rng(name, i)
    inputs = _tensors(xs)
    y, vjp_fn = gg.vjp(f, *inputs)
    u = rng.standard_normal(y.shape)
    reverse = [host(g) for g in vjp_fn(gg.tensor(u, dtype=F64))]
    for which, vs in _directions(rng, xs):
        y_fwd, t = gg.jvp(f, inputs, _tensors(vs))
        assert t.shape == y.shape and y_fwd.shape == y.shape, which
        np.testing.assert_allclose(host(y_fwd), host(y), rtol=1e-12, atol=1e-12,
                                   err_msg=f"jvp's primal, {which}")
        forward, forward_size = _inner(u, host(t))
        by_input = [_inner(g, v) for g, v in zip(reverse, vs)]
        backward = sum(p for p, _ in by_input)
        size = forward_size + sum(s for _, s in by_input)
        assert abs(forward - backward) <= 1e-10 * size, (
            f"tangent in {which}: <u, J v> = {forward!r} but <J^T u, v> = {backward!r}")


# ---------------------------------------------------------------------------------------------
# 2. second order against finite differences of the first derivative

STEP = 1e-4  # small beside the inputs' distance from kinks and ties (0.1 in test_ops' helpers)


def _first_derivative(f, u):
    """x -> f's vjp at x with the fixed cotangent u, every input's gradient in one flat vector.
    Called while recording (inside an outer transform) it records its own backward."""
    def first_derivative(*xs):
        _, vjp_fn = gg.vjp(f, *xs)
        return gg.concatenate([gg.reshape(g, (-1,)) for g in vjp_fn(u)])
    return first_derivative


def _difference_along(fn, xs, vs):
    """fn's derivative at xs along vs by the fourth-order central difference (error ~STEP**4,
    so the comparisons can be tighter than gradcheck's)."""
    def at(s):
        return host(fn(*_tensors([x + s * v for x, v in zip(xs, vs)])))
    h = STEP
    return (at(-2 * h) - 8 * at(-h) + 8 * at(h) - at(2 * h)) / (12 * h)


def _fixed_cotangent(rng, f, inputs):
    """A random cotangent of f's output shape, which defines the first derivative."""
    with gg.autograd.pause():
        shape = f(*inputs).shape
    return gg.tensor(rng.standard_normal(shape), dtype=F64)


@pytest.mark.parametrize("name,i,f,xs", CASE_LIST, ids=IDS)
def test_reverse_over_reverse_matches_differences_of_the_first_derivative(name, i, f, xs):
    """The vjp of the first derivative (create_graph through gg.vjp) against central
    differences of the first derivative, projected on a random w and a tangent per input."""
    rng = _rng(name, i)
    inputs = _tensors(xs)
    first = _first_derivative(f, _fixed_cotangent(rng, f, inputs))
    d1, outer_vjp = gg.vjp(first, *inputs)
    w = rng.standard_normal(d1.shape)
    second = [host(g) for g in outer_vjp(gg.tensor(w, dtype=F64))]
    for which, vs in _directions(rng, xs):
        numeric, numeric_size = _inner(w, _difference_along(first, xs, vs))
        by_input = [_inner(s, v) for s, v in zip(second, vs)]
        analytic = sum(p for p, _ in by_input)
        size = numeric_size + sum(s for _, s in by_input)
        assert abs(analytic - numeric) <= 1e-7 * size + 1e-9, (
            f"tangent in {which}: <w, d(vjp)/dx v> reverse over reverse {analytic!r}, "
            f"finite differences {numeric!r}")


@pytest.mark.parametrize("name,i,f,xs", CASE_LIST, ids=IDS)
def test_forward_over_reverse_matches_differences_of_the_first_derivative(name, i, f, xs):
    """gg.jvp of the first derivative (its tangent carried through gg.vjp's backward) is the
    whole vector d(vjp)/dx v; central differences of the first derivative give it too."""
    rng = _rng(name, i)
    inputs = _tensors(xs)
    first = _first_derivative(f, _fixed_cotangent(rng, f, inputs))
    for which, vs in _directions(rng, xs):
        _, tangent = gg.jvp(first, inputs, _tensors(vs))
        numeric = _difference_along(first, xs, vs)
        np.testing.assert_allclose(host(tangent), numeric, rtol=1e-6,
                                   atol=1e-7 * (1 + np.abs(numeric).max(initial=0)),
                                   err_msg=f"forward over reverse, tangent in {which}")


def test_forward_over_reverse_gives_the_hessian_times_v():
    """The smallest case of the two tests above: d/dx of grad(sum(x**3)) along v is 6 x v."""
    x, v = np.array([1.0, 2.0, -0.5]), np.array([1.0, -1.0, 2.0])
    _, hv = gg.jvp(gg.grad(lambda t: gg.sum(t ** 3)), _tensors([x]), _tensors([v]))
    np.testing.assert_allclose(host(hv), 6 * x * v, rtol=1e-12)
