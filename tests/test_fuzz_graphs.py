"""Random graphs: hypothesis draws a program of up to 10 ops over up to three inputs (each op
reading any earlier value, so values fan out and gradients accumulate), and its gradients are
checked against central finite differences in float64, to second order for some, and against
PyTorch's autograd on the same program where PyTorch is installed. README's Guarantees section
quotes the number of graphs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpugrad as gg
from conftest import host

SIDE = 3  # every value is (3, 3), or (3, 1) / (1, 3) after a keepdims reduction

# name -> (arity, gpugrad, PyTorch (torch module passed in), takes square matrices only)
OPS = {
    "sin": (1, gg.sin, lambda t, a: t.sin(a), False),
    "tanh": (1, gg.tanh, lambda t, a: t.tanh(a), False),
    "sigmoid": (1, gg.sigmoid, lambda t, a: t.sigmoid(a), False),
    "softplus": (1, gg.softplus, lambda t, a: t.nn.functional.softplus(a), False),
    "gelu": (1, gg.gelu, lambda t, a: t.nn.functional.gelu(a), False),
    "silu": (1, gg.silu, lambda t, a: t.nn.functional.silu(a), False),
    "exp_tanh": (1, lambda a: gg.exp(gg.tanh(a)), lambda t, a: t.exp(t.tanh(a)), False),
    "square": (1, gg.square, lambda t, a: a * a, False),
    "softmax": (1, lambda a: gg.softmax(a, axis=1), lambda t, a: t.softmax(a, dim=1), True),
    "log_softmax": (1, lambda a: gg.log_softmax(a, axis=0), lambda t, a: t.log_softmax(a, dim=0), True),
    "sum_keep": (1, lambda a: a.sum(axis=0, keepdims=True), lambda t, a: a.sum(0, keepdim=True), False),
    "mean_keep": (1, lambda a: a.mean(axis=1, keepdims=True), lambda t, a: a.mean(1, keepdim=True), False),
    "logsumexp": (1, lambda a: gg.logsumexp(a, axis=1, keepdims=True),
                  lambda t, a: t.logsumexp(a, 1, keepdim=True), True),
    "transpose": (1, lambda a: a.T, lambda t, a: a.T, True),
    "add": (2, gg.add, lambda t, a, b: a + b, False),
    "subtract": (2, gg.subtract, lambda t, a, b: a - b, False),
    "multiply": (2, gg.multiply, lambda t, a, b: a * b, False),
    "divide": (2, lambda a, b: a / (b * b + 1), lambda t, a, b: a / (b * b + 1), False),
    "matmul": (2, lambda a, b: gg.matmul(a, b) / SIDE, lambda t, a, b: (a @ b) / SIDE, True),
}


@st.composite
def programs(draw, max_ops=10):
    """(number of inputs, [(op name, operand indices)], output indices)."""
    n_inputs = draw(st.integers(1, 3))
    shapes = [(SIDE, SIDE)] * n_inputs
    steps = []
    for _ in range(draw(st.integers(1, max_ops))):
        name = draw(st.sampled_from(sorted(OPS)))
        arity, _, _, square_only = OPS[name]
        candidates = [i for i, s in enumerate(shapes) if s == (SIDE, SIDE)] if square_only \
            else list(range(len(shapes)))
        args = [draw(st.sampled_from(candidates)) for _ in range(arity)]
        steps.append((name, args))
        out = _shape_after(name, [shapes[i] for i in args])
        shapes.append(out)
    outputs = draw(st.lists(st.integers(n_inputs, len(shapes) - 1), min_size=1, max_size=3,
                            unique=True))
    return n_inputs, steps, outputs


def _shape_after(name, shapes):
    if name in ("sum_keep",):
        return (1, shapes[0][1])
    if name in ("mean_keep", "logsumexp"):
        return (shapes[0][0], 1)
    if len(shapes) == 2:
        return tuple(max(a, b) for a, b in zip(*shapes))
    return shapes[0]


def _run(program, inputs, library, torch=None):
    """The program's scalar output: sum of the chosen values (each weighted, so that every
    output's gradient differs)."""
    _, steps, outputs = program
    values = list(inputs)
    for name, args in steps:
        _, ours, theirs, _ = OPS[name]
        operands = [values[i] for i in args]
        values.append(ours(*operands) if library == "gpugrad" else theirs(torch, *operands))
    total = None
    for k, i in enumerate(outputs):
        term = (values[i] * (k + 1.5)).sum()
        total = term if total is None else total + term
    return total


def _inputs(n, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((SIDE, SIDE)) for _ in range(n)]


FUZZ_EXAMPLES = 300


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(program=programs(), seed=st.integers(0, 2**16))
def test_random_graphs_match_finite_differences(program, seed):
    xs = [gg.tensor(a, dtype="float64") for a in _inputs(program[0], seed)]
    gg.gradcheck(lambda *t: _run(program, t, "gpugrad"), xs, rtol=1e-4, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(program=programs(max_ops=5), seed=st.integers(0, 2**16))
def test_random_graphs_second_order(program, seed):
    xs = [gg.tensor(a, dtype="float64") for a in _inputs(program[0], seed)]
    gg.gradcheck(lambda *t: _run(program, t, "gpugrad"), xs, rtol=1e-4, atol=1e-6, order=2)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(program=programs(), seed=st.integers(0, 2**16))
def test_random_graphs_match_pytorch(program, seed):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
    arrays = _inputs(program[0], seed)
    ours = [gg.tensor(a, dtype="float64", requires_grad=True) for a in arrays]
    with gg.autograd.record():
        y = _run(program, ours, "gpugrad")
    y.backward()
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    ty = _run(program, theirs, "torch", torch)
    ty.backward()
    np.testing.assert_allclose(y.item(), ty.item(), rtol=1e-10, atol=1e-10)
    for o, t in zip(ours, theirs):
        expected = t.grad.numpy() if t.grad is not None else np.zeros_like(t.detach().numpy())
        np.testing.assert_allclose(o.grad.numpy(), expected, rtol=1e-9, atol=1e-10)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(program=programs(), seed=st.integers(0, 2**16), dtype=st.sampled_from(["float32", "float64"]))
def test_random_graphs_rules_on_arrays_equal_the_recorded_rules(program, seed, dtype):
    """Where values fan out and gradients accumulate, backward on arrays (first order, sums
    made in place) gives the bits that the same rules recorded as Tensor ops give."""
    xs = [gg.tensor(a, dtype=dtype, requires_grad=True) for a in _inputs(program[0], seed)]
    with gg.autograd.record():
        y = _run(program, xs, "gpugrad")
    recorded = gg.autograd.grad(y, xs, retain_graph=True, create_graph=True)
    on_arrays = gg.autograd.grad(y, xs)
    for a, b in zip(on_arrays, recorded):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_array_equal(host(a), host(b))
