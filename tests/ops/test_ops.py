"""Every op in the table: gradcheck in float64, first and second order, forward and reverse.

CASES maps each op name to the functions that exercise it; a meta-test fails if an op in OPS
has no case, so a new op cannot land untested.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gpugrad as gg
from gpugrad.ops import shape as sh
from gpugrad.devices.cuda import kernels
from gpugrad.ops.activation import ACTIVATIONS
from gpugrad import recording
from conftest import host

R = np.random.default_rng(0)


def n(*shape):
    return R.standard_normal(shape)


def pos(*shape):
    return R.uniform(0.5, 2.0, shape)


def away(*shape):
    """Normal samples kept at least 0.1 from 0 (kinks of abs, relu and friends)."""
    x = R.standard_normal(shape)
    return np.where(np.abs(x) < 0.1, np.sign(x + 1e-12) * 0.3, x)


def distinct(*shape):
    """No ties, within or across calls, and gaps far wider than the finite-difference step."""
    grid = R.permutation(np.arange(int(np.prod(shape)), dtype=np.float64)).reshape(shape)
    return grid * 0.1 + R.uniform(0.001, 0.099)


MASK_BITS = R.random(64) > 0.5


def _output(g, negative):
    """A fixed relu (negative 0) or leaky_relu output for g's elements, positive where the
    mask's bits are set."""
    out = np.where(MASK_BITS[: g.size].reshape(g.shape), 1.5, negative)
    return gg.tensor(out, dtype=g.dtype, device=g.device)


def _mask(g):
    """A fixed random 1-bit mask (packed as the relu forward packs it) for g's elements."""
    bits = MASK_BITS[: g.size].reshape(g.shape)
    return gg.tensor(kernels.pack_mask(np, bits), device=g.device)


def _labels(x):
    return gg.devices.get(x.device).asarray(np.array([0, 2, 1, 3][: x.shape[0]]))


# fmt: off
CASES = {
    "add":          [(lambda a, b: a + b, [n(3, 4), n(4)]),   (lambda a: 2 + a, [n(3)])],
    "subtract":     [(lambda a, b: a - b, [n(3, 1), n(1, 4)]), (lambda a: 2 - a, [n(3)])],
    "multiply":     [(lambda a, b: a * b, [n(2, 3, 4), n(3, 1)]), (lambda a: a * 3, [n(3)])],
    "divide":       [(lambda a, b: a / b, [n(3, 4), pos(4)]),  (lambda a: 1 / a, [pos(3)])],
    "power":        [(lambda a, b: a ** b, [pos(3, 4), n(3, 4)]), (lambda a: a ** 3, [n(3)]),
                     (lambda a: 2 ** a, [n(4)])],
    "maximum":      [(lambda a, b: gg.maximum(a, b), [distinct(3, 4), distinct(4)])],
    "minimum":      [(lambda a, b: gg.minimum(a, b), [distinct(3, 4), distinct(1, 4)])],
    "where":        [(lambda a, b: gg.where(a > 0, a, b), [away(3, 4), n(4)])],
    "negative":     [(lambda a: -a, [n(3, 2)])],
    "exp":          [(gg.exp, [n(3, 2)])],
    "expm1":        [(gg.expm1, [n(3, 2)])],
    "log":          [(gg.log, [pos(3, 2)])],
    "log1p":        [(gg.log1p, [pos(3, 2)])],
    "sqrt":         [(gg.sqrt, [pos(3, 2)])],
    "abs":          [(gg.abs, [away(3, 2)])],
    "sin":          [(gg.sin, [n(3, 2)])],
    "cos":          [(gg.cos, [n(3, 2)])],
    "tan":          [(gg.tan, [R.uniform(-1, 1, (3, 2))])],
    "tanh":         [(gg.tanh, [n(3, 2)])],
    "erf":          [(gg.erf, [n(3, 2)])],
    "clip":         [(lambda a: gg.clip(a, -0.5, 0.5), [away(4, 3)]),
                     (lambda a: gg.clip(a, a_min=0.2), [away(5)])],
    "sigmoid":      [(gg.sigmoid, [n(3, 2) * 3])],
    "relu":         [(gg.relu, [away(3, 4)])],
    "leaky_relu":   [(lambda a: gg.leaky_relu(a, 0.1), [away(3, 4)]),
                     (lambda a: gg.leaky_relu(a, negative_slope=-0.2), [away(3, 4)])],
    "elu":          [(gg.elu, [away(3, 4)]), (lambda a: gg.elu(a, alpha=-0.5), [away(3, 4)])],
    "gelu":         [(gg.gelu, [n(3, 4)]), (lambda a: gg.gelu(a, approximate="tanh"), [n(3, 4)])],
    "silu":         [(gg.silu, [n(3, 4)])],
    "softplus":     [(gg.softplus, [n(3, 4)]),
                     (lambda a: gg.softplus(a, beta=2.0, threshold=3.0), [n(3, 4) * 2])],
    "softsign":     [(gg.softsign, [away(3, 4) * 3])],
    "hardswish":    [(gg.hardswish, [np.linspace(-4.9, 4.9, 12).reshape(3, 4)])],  # no input at -3 or 3
    "relu_backward":     [(lambda g: gg.relu_backward(g, _mask(g)), [n(3, 5)]),
                          (lambda g: gg.relu_backward(g, _mask(g), negative_slope=0.1), [n(37)])],
    "relu_backward_from_output": [
        (lambda g: gg.relu_backward_from_output(g, _output(g, 0.0)), [n(3, 5)]),
        (lambda g: gg.relu_backward_from_output(g, _output(g, -0.3), negative_slope=0.1, leaky=True), [n(37)])],
    "elu_backward":      [(lambda g, y: gg.elu_backward(g, y, alpha=1.0), [n(3, 4), away(3, 4)])],
    "gelu_backward":     [(lambda g, x: gg.gelu_backward(g, x), [n(3, 4), n(3, 4)]),
                          (lambda g, x: gg.gelu_backward(g, x, approximate="tanh"), [n(3, 4), n(3, 4)])],
    "silu_backward":     [(gg.silu_backward, [n(3, 4), n(3, 4)])],
    "softplus_backward": [(lambda g, x: gg.softplus_backward(g, x, beta=2.0, threshold=3.0), [n(3, 4), n(3, 4) * 2])],
    "sigmoid_backward":  [(gg.sigmoid_backward, [n(3, 4), R.uniform(0.05, 0.95, (3, 4))])],
    "tanh_backward":     [(gg.tanh_backward, [n(3, 4), R.uniform(-0.95, 0.95, (3, 4))])],
    "softsign_backward": [(gg.softsign_backward, [n(3, 4), away(3, 4) * 2])],
    "softmax_cross_entropy":          [(lambda x: gg.softmax_cross_entropy(x, labels=_labels(x)), [n(3, 4)])],
    "softmax_cross_entropy_backward": [(lambda g, x: gg.softmax_cross_entropy_backward(g, x, labels=_labels(x)),
                                        [n(3), n(3, 4)])],
    "softmax":      [(lambda a: gg.softmax(a, axis=1), [n(3, 4)]), (lambda a: gg.softmax(a, 0), [n(3, 2)])],
    "log_softmax":  [(lambda a: gg.log_softmax(a, axis=-1), [n(3, 4)])],
    "sum":          [(gg.sum, [n(3, 4)]), (lambda a: a.sum(axis=(0, 2), keepdims=True), [n(2, 3, 2)]),
                     (lambda a: gg.sum(a, 1), [n(2, 3)])],
    "mean":         [(gg.mean, [n(3, 4)]), (lambda a: a.mean(axis=0), [n(3, 4)])],
    "max":          [(gg.max, [distinct(3, 4)]), (lambda a: a.max(axis=1, keepdims=True), [distinct(3, 4)])],
    "min":          [(gg.min, [distinct(3, 4)]), (lambda a: a.min(axis=0), [distinct(3, 4)])],
    "logsumexp":    [(gg.logsumexp, [n(3, 4)]), (lambda a: gg.logsumexp(a, axis=1), [n(3, 4)])],
    "norm":         [(gg.norm, [n(3, 4)]), (lambda a: gg.norm(a, axis=1, keepdims=True), [n(3, 4)])],
    "reshape":      [(lambda a: a.reshape(4, 3) * gg.arange(3, dtype="float64"), [n(3, 4)])],
    "transpose":    [(lambda a: a.transpose(2, 0, 1) * gg.arange(3, dtype="float64"), [n(2, 3, 3)]),
                     (lambda a: a.T, [n(2, 3)])],
    "broadcast_to": [(lambda a: gg.broadcast_to(a, (2, 3, 4)), [n(3, 1)])],
    "concatenate":  [(lambda a, b: gg.concatenate([a, b], axis=1), [n(2, 3), n(2, 2)])],
    "stack":        [(lambda a, b: gg.stack([a, b], axis=-1), [n(2, 3), n(2, 3)])],
    "getitem":      [(lambda a: a[1:, ::2], [n(3, 4)]), (lambda a: a[[0, 2, 0, 0]], [n(3, 2)]),
                     (lambda a: a[a > 0], [away(3, 4)]), (lambda a: a[..., None, 1], [n(2, 3)])],
    "scatter":      [(lambda g: sh.scatter(g, key=(np.array([0, 1, 0]),), shape=(3, 2)), [n(3, 2)])],
    "take":         [(lambda a: gg.take(a, [2, 0, 2], axis=1), [n(2, 3)]),
                     (lambda a: gg.take(a, np.array([[5, 1], [5, 5]])), [n(2, 3)])],
    "astype":       [(lambda a: a.astype("float64") * 2, [n(3)])],
    "copy":         [(lambda a: a.copy() * a, [n(3)])],
    "to_device":    [(lambda a: a.to(a.device) * 2 + sh.to_device(a, device=a.device), [n(3)])],
    "linear":       [(lambda x, w, b: gg.linear(x, w, b), [n(4, 3), n(5, 3), n(5)]),
                     (lambda x, w: gg.linear(x, w), [n(2, 4, 3), n(5, 3)]),
                     (lambda x, w: gg.linear(x, w), [n(3), n(2, 3)])],
    "half_sum_squares": [(lambda a, b: gg.half_sum_squares([a, b]), [n(3, 4), n(5)]),
                         # a gradient before its own, as a weight has from its layer: its
                         # rule adds into that one (vjp_into)
                         (lambda a, b: gg.sum(a * b) + gg.half_sum_squares([a, b]), [n(3, 4), n(3, 4)])],
    "square":       [(gg.square, [n(3, 4)])],
    "reciprocal":   [(gg.reciprocal, [pos(3, 2)]), (lambda a: 1 / gg.reciprocal(-a), [pos(2)])],
    "rsqrt":        [(gg.rsqrt, [pos(3, 2)])],
    "cbrt":         [(gg.cbrt, [away(3, 2)])],
    "exp2":         [(gg.exp2, [n(3, 2)])],
    "log2":         [(gg.log2, [pos(3, 2)])],
    "log10":        [(gg.log10, [pos(3, 2)])],
    "sinh":         [(gg.sinh, [n(3, 2)])],
    "cosh":         [(gg.cosh, [n(3, 2)])],
    "arcsin":       [(gg.arcsin, [R.uniform(-0.8, 0.8, (3, 2))])],
    "arccos":       [(gg.arccos, [R.uniform(-0.8, 0.8, (3, 2))])],
    "arctan":       [(gg.arctan, [n(3, 2)])],
    "arcsinh":      [(gg.arcsinh, [n(3, 2)])],
    "arccosh":      [(gg.arccosh, [R.uniform(1.2, 3.0, (3, 2))])],
    "arctanh":      [(gg.arctanh, [R.uniform(-0.8, 0.8, (3, 2))])],
    "deg2rad":      [(gg.deg2rad, [n(3, 2)])],
    "rad2deg":      [(gg.rad2deg, [n(3, 2)])],
    # quotients kept 0.1 or more from an integer: the derivative in b jumps there
    "remainder":    [(gg.remainder, [R.uniform(0.1, 0.9, (3, 2)) * 1.5 + np.array([[1.5], [3.0], [-4.5]]), np.full(2, 1.5)]),
                     (lambda a: a % 0.7, [R.uniform(0.1, 0.6, 4) + 0.7 * np.arange(-2, 2)])],
    "fmod":         [(gg.fmod, [R.uniform(0.1, 0.9, (3, 2)) * 1.5 + np.array([[1.5], [3.0], [-4.5]]), np.full(2, 1.5)])],
    "lerp":         [(gg.lerp, [n(3, 2), n(2), R.uniform(0, 1, (3, 1))]),
                     (lambda a, b: gg.lerp(a, b, 0.75), [n(3), n(3)])],
    "prod":         [(gg.prod, [n(2, 3)]), (lambda a: gg.prod(a, axis=1, keepdims=True), [n(3, 4)]),
                     (lambda a: gg.prod(a, axis=(0, 2)), [n(2, 3, 2)]),
                     (lambda a: a.prod(axis=1), [np.array([[0.0, 1.5, -2.0], [0.0, 0.0, 3.0], [1.2, 0.7, -0.4]])])],
    "var":          [(gg.var, [n(3, 4)]), (lambda a: gg.var(a, axis=0, ddof=1), [n(3, 4)]),
                     (lambda a: a.var(axis=(0, 2), keepdims=True), [n(2, 3, 2)])],
    "std":          [(gg.std, [n(3, 4)]), (lambda a: gg.std(a, axis=1, ddof=1, keepdims=True), [n(3, 4)])],
    "cumsum":       [(gg.cumsum, [n(3, 4)]), (lambda a: gg.cumsum(a, axis=0), [n(3, 4)]),
                     (lambda a: a.cumsum(axis=-1), [n(2, 3)])],
    "cumprod":      [(gg.cumprod, [n(3, 4)]), (lambda a: gg.cumprod(a, axis=1), [n(3, 4)]),
                     (lambda a: a.cumprod(axis=1), [np.array([[0.0, 1.5, -2.0, 0.5], [1.1, 0.0, 3.0, 0.0], [1.2, 0.7, -0.4, 2.0]])])],
    "linear_recurrence": [(lambda b, a: gg.linear_recurrence(b, a), [n(3, 5), n(3, 5)]),
                          (lambda b, a: gg.linear_recurrence(b, a, axis=0), [n(4, 2), np.array([[0.5, 0.0], [0.0, 1.2], [-0.8, 0.0], [1.5, 0.3]])])],
    "einsum":       [(lambda a, b: gg.einsum("ij,jk->ik", a, b), [n(2, 3), n(3, 4)]),
                     (lambda a: gg.einsum("ii->i", a), [n(3, 3)]),
                     (lambda a, b: gg.einsum("...ij,...jk", a, b), [n(2, 2, 3), n(3, 2)]),
                     (lambda a, b, c: gg.einsum("ij,jk,kl->il", a, b, c), [n(2, 3), n(3, 2), n(2, 2)]),
                     (lambda a, b: gg.einsum("iij,k->jk", a, b), [n(2, 2, 3), n(2)]),
                     (lambda a: gg.einsum("ijk->kj", a), [n(2, 3, 2)]),
                     (lambda a, b: gg.einsum(",ij", a, b), [n(), n(2, 2)]),
                     (lambda a, b: gg.einsum("...ij,...jk", a, b), [n(1, 2, 3), n(4, 3, 2)])],  # a batch axis of 1
    "matmul":       [(lambda a, b: a @ b, [n(3, 4), n(4, 2)]), (lambda a, b: a @ b, [n(2, 1, 3, 4), n(5, 4, 2)]),
                     (lambda a, b: a @ b, [n(4), n(2, 4, 3)]), (lambda a, b: a @ b, [n(2, 3, 4), n(4)]),
                     (lambda a, b: gg.dot(a, b), [n(4), n(4)])],
    # the recurrent cells (last, so that the cases above keep their random inputs)
    "lstm_cell":           [(gg.lstm_cell, [n(3, 8), n(3, 2)]), (gg.lstm_cell, [n(2, 1, 12), n(2, 1, 3)]),
                            (gg.lstm_cell, [n(4), n(1)])],
    "lstm_cell_backward":  [(gg.lstm_cell_backward, [n(2, 3, 2), n(3, 8), n(3, 2)])],
    "gru_cell":            [(gg.gru_cell, [n(3, 6), n(3, 6), n(3, 2)]),
                            (gg.gru_cell, [n(2, 1, 9), n(2, 1, 9), n(2, 1, 3)])],
    "gru_cell_backward":   [(gg.gru_cell_backward, [n(3, 2), n(3, 6), n(3, 6), n(3, 2)])],
    "lstm_layer":          [(gg.lstm_layer, [n(3, 2, 2), n(8, 2), n(8, 2), n(8), n(2, 2), n(2, 2)]),
                            (lambda x, wi, wh, h, c: gg.lstm_layer(x, wi, wh, None, h, c),
                             [n(2, 1, 3), n(4, 3), n(4, 1), n(1, 1), n(1, 1)])],
    "gru_layer":           [(gg.gru_layer, [n(3, 2, 2), n(6, 2), n(6, 2), n(6), n(6), n(2, 2)]),
                            (lambda x, wi, wh, h: gg.gru_layer(x, wi, wh, None, None, h),
                             [n(2, 1, 3), n(3, 3), n(3, 1), n(1, 1)])],
    "rnn_layer":           [(gg.rnn_layer, [n(3, 2, 2), n(3, 2), n(3, 3) * 0.5, n(3), n(2, 3)]),
                            (lambda x, wi, wh, h: gg.rnn_layer(x, wi, wh, None, h, nonlinearity="relu"),
                             [away(2, 2, 3), n(2, 3), n(2, 2) * 0.5, away(2, 2)])],
}
# fmt: on


def _backward_cases_from_the_activations():
    """<name>_backward's case where it has none of its own: at the default parameters, on the
    input of <name>'s first case and what its declaration says the backward reads (that input
    or the activation's output)."""
    for a in ACTIVATIONS.values():
        name = f"{a.name}_backward"
        if name in gg.OPS and name not in CASES:
            x = CASES[a.name][0][1][0]
            saved = x if a.saves == "x" else a.forward(np, x, **dict(a.params))
            CASES[name] = [(getattr(gg, name), [n(*x.shape), saved])]


_backward_cases_from_the_activations()
CASE_LIST = [(name, i, f, xs) for name, cases in CASES.items() for i, (f, xs) in enumerate(cases)]
IDS = [f"{name}-{i}" for name, i, _, _ in CASE_LIST]


def test_every_op_in_the_table_has_a_gradient_case():
    missing = sorted(set(gg.OPS) - set(CASES))
    unknown = sorted(set(CASES) - set(gg.OPS))
    assert not missing, f"ops without a gradcheck case in tests/ops/test_ops.py: {missing}"
    assert not unknown, f"cases for ops that are not in the table: {unknown}"


@pytest.mark.parametrize("name,i,f,xs", CASE_LIST, ids=IDS)
def test_gradcheck_first_order(name, i, f, xs, device):
    inputs = [gg.tensor(x, dtype="float64", device=device) for x in xs]
    assert gg.gradcheck(f, inputs)


@pytest.mark.parametrize("name,i,f,xs", CASE_LIST, ids=IDS)
def test_gradcheck_second_order(name, i, f, xs, device):
    inputs = [gg.tensor(x, dtype="float64", device=device) for x in xs]
    assert gg.gradcheck(f, inputs, order=2)


def test_gradcheck_catches_a_wrong_rule(device):
    """A Function with a deliberately wrong backward must fail gradcheck (it is not vacuous)."""
    class WrongSquare(gg.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * x  # should be 2 * g * x

    x = gg.tensor(n(4), dtype="float64", device=device)
    with pytest.raises(gg.GradcheckError, match="worst element"):
        gg.gradcheck(WrongSquare.apply, [x], forward=False)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,i,f,xs", CASE_LIST, ids=IDS)
def test_rules_run_on_arrays_give_the_recorded_rules_gradients_bitwise(name, i, f, xs, dtype,
                                                                       device, monkeypatch):
    """At first order the engine runs each rule on arrays (no Tensor, no node); under
    create_graph it records the same rule as Tensor ops. Both give the same bits, with a random
    head gradient and with the uniform one sum() hands back (which some rules take as 0-d)."""
    inputs = [gg.tensor(x, dtype=dtype, device=device) for x in xs]
    for x in inputs:
        x.attach_grad()
    for head in ("random", "through sum"):
        with gg.autograd.record():
            y = f(*inputs) if head == "random" else gg.sum(f(*inputs))
        u = None  # sum's head: grad() makes the ones
        if head == "random":
            u = gg.tensor(np.random.default_rng(i).standard_normal(y.shape), dtype=dtype,
                          device=device)
        # a head in the graph, so that even a linear op's recorded gradient has history
        u_leaf = (gg.ones_like(y) if u is None else u.copy()).detach()
        u_leaf.attach_grad()
        recorded = gg.autograd.grad(y, inputs, head_grads=u_leaf, retain_graph=True,
                                    create_graph=True)
        assert all(r._node is not None for r in recorded), "create_graph recorded nothing"
        made = {"tensors": 0, "nodes": 0}

        def counting(kind, make):
            def counted(*args, **kwargs):
                made[kind] += 1
                return make(*args, **kwargs)
            return counted

        with monkeypatch.context() as m:
            m.setattr(gg.tensors, "wrap", counting("tensors", gg.tensors.wrap))
            m.setattr(recording, "Node", counting("nodes", recording.Node))
            on_arrays = gg.autograd.grad(y, inputs, head_grads=u)
        assert made["nodes"] == 0
        # the gradients handed back (and the head of ones grad() makes for None), nothing else
        assert made["tensors"] <= len(inputs) + (u is None)
        for k, (a, b) in enumerate(zip(on_arrays, recorded)):
            assert a.dtype == b.dtype and a.shape == b.shape, (head, k)
            np.testing.assert_array_equal(host(a), host(b), err_msg=f"{head}, input {k}")


def test_the_l2_gradient_is_added_into_the_pending_gradient(device, monkeypatch):
    """half_sum_squares' rule adds g * w into the gradient w already has (its layer's), in
    place, where the engine alone holds that array: the same values, one pass fewer."""
    op = gg.OPS["half_sum_squares"]
    added = []
    real = op.vjp_into

    def counting(acc, g, x, y):
        out = real(acc, g, x, y=y)
        added.append(out is None)
        return out

    monkeypatch.setattr(op, "vjp_into", counting)
    w = gg.tensor(n(3, 4), device=device)
    v = gg.tensor(n(3, 4), device=device)
    w.attach_grad()
    with gg.autograd.record():
        loss = gg.sum(w * v) + 0.5 * gg.half_sum_squares([w])
    loss.backward()
    assert added == [True]
    np.testing.assert_allclose(host(w.grad), host(v) + 0.5 * host(w), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_recorded_relu_gives_the_unrecorded_output_and_the_mask_of_x(dtype, device):
    """relu recorded (its forward also makes the 1-bit mask) gives bit for bit what relu
    unrecorded gives, -0, NaN of either sign and infinities included, and the mask !(x <= 0),
    with and without the fused kernels; its backward then passes g where the bit is set."""
    specials = np.array([0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 1e-30, -1e-30, 2.0, -2.0])
    x = np.concatenate([specials, n(45)]).astype(dtype)
    for on in (True, False):
        with gg.fused(on):
            plain = host(gg.relu(gg.tensor(x, device=device)))
            xt = gg.tensor(x, device=device)
            xt.attach_grad()
            with gg.autograd.record():
                y = gg.relu(xt)
            bits = np.unpackbits(host(y._node.saved["mask"]).view(np.uint8), bitorder="little")
            assert np.array_equal(host(y).view(f"u{x.itemsize}"), plain.view(f"u{x.itemsize}"))
            np.testing.assert_array_equal(plain, np.maximum(x, 0))  # -0 == +0 here
            assert np.array_equal(bits[: x.size].astype(bool), ~(x <= 0)) and not bits[x.size:].any()
            y.backward(gg.tensor(np.full(x.size, np.inf), dtype=dtype, device=device))
            np.testing.assert_array_equal(host(xt.grad), np.where(x <= 0, 0.0, np.inf))


@pytest.mark.parametrize("shape", [(1024, 10), (64, 5, 2), (700, 1), (0, 4), (80, 32), (80, 33),
                                   (90, 17), (6, 200), (4, 4)])
@pytest.mark.parametrize("how", ["max", "sum"])
def test_a_kept_reduction_equals_the_array_librarys(how, shape, device):
    """reduce.kept_reduction, which on NumPy reduces a short last axis of many rows over a
    transposed copy (5x faster at 1024 rows of 10): the array library's own reduction, NaN and infinities
    included (sums to rounding: the order of the additions differs), along every axis."""
    from gpugrad.ops import reduce

    be = gg.devices.get(device)
    x = R.standard_normal(shape).astype(np.float32)
    if x.size:
        x.reshape(-1)[::7] = np.inf
        x.reshape(-1)[::11] = -np.inf
        x.reshape(-1)[3::13] = np.nan
    with be.active, np.errstate(invalid="ignore"):  # inf - inf in a sum
        xd = be.xp.asarray(x)
        for axis in [*range(-len(shape), len(shape))]:
            if how == "max" and shape[axis] == 0:  # no identity: an error either way
                with pytest.raises(ValueError):
                    reduce.kept_reduction(be.xp, how, xd, axis)
                continue
            got = host(reduce.kept_reduction(be.xp, how, xd, axis))
            expected = getattr(np, how)(x, axis=axis, keepdims=True)
            assert got.shape == expected.shape and got.dtype == expected.dtype
            np.testing.assert_allclose(got, expected, rtol=0 if how == "max" else 1e-6)


BINARY = {
    "add": gg.add, "subtract": gg.subtract, "multiply": gg.multiply,
    "divide": lambda a, b: a / (b * b + 0.5), "maximum": gg.maximum, "minimum": gg.minimum,
    "power": lambda a, b: (a * a + 0.5) ** b,
}


@pytest.mark.parametrize("name", sorted(BINARY))
@settings(max_examples=12, deadline=None)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
       seed=st.integers(0, 2**16))
def test_binary_ops_under_broadcasting(name, shapes, seed):
    """Gradients are summed back to each input's shape for any broadcastable pair."""
    rng = np.random.default_rng(seed)
    a, b = (gg.tensor(rng.standard_normal(s) + 0.01 * np.arange(int(np.prod(s))).reshape(s),
                      dtype="float64") for s in shapes.input_shapes)
    gg.gradcheck(BINARY[name], [a, b])
    _, vjp_fn = gg.vjp(BINARY[name], a, b)
    ga, gb = vjp_fn(gg.ones(shapes.result_shape, dtype="float64"))
    assert ga.shape == a.shape and gb.shape == b.shape


@settings(max_examples=15, deadline=None)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4), data=st.data())
def test_reductions_over_random_axes(shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    keepdims = data.draw(st.booleans())
    x = gg.tensor(np.random.default_rng(len(shape)).standard_normal(shape), dtype="float64")
    for f in (gg.sum, gg.mean, gg.logsumexp, gg.softmax, gg.log_softmax):
        kwargs = {"axis": axis} if f in (gg.softmax, gg.log_softmax) else {"axis": axis, "keepdims": keepdims}
        gg.gradcheck(lambda t: f(t, **kwargs), [x])


@pytest.mark.parametrize("name,i,f,xs", CASE_LIST, ids=IDS)
def test_gradient_through_sum_equals_an_explicit_ones_head(name, i, f, xs, device):
    """sum()'s backward hands a uniform (broadcast) gradient to the op before it; some ops take
    it as 0-d. The result must be the same as with a materialised head gradient of ones."""
    inputs = [gg.tensor(x, dtype="float64", device=device) for x in xs]
    out, vjp_fn = gg.vjp(f, *inputs)
    explicit = vjp_fn(gg.ones_like(out))
    via_sum = gg.vjp(lambda *t: gg.sum(f(*t)), *inputs)[1](gg.tensor(1.0, dtype="float64", device=device))
    for a, b in zip(explicit, via_sum):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-12)
