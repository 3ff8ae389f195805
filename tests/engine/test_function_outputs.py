"""gg.Function with several outputs: forward returns a tuple, backward takes one gradient per
output (None for an output no gradient reached), jvp returns one tangent per output."""

import numpy as np
import pytest

import gpugrad as gg
from conftest import host

X = np.array([0.5, -1.0, 2.0, 0.3])
Y = np.array([1.5, 2.0, -0.3, 0.7])


def f64(values, device=None, requires_grad=False):
    return gg.tensor(values, dtype="float64", device=device, requires_grad=requires_grad)


class SinMul(gg.Function):
    """(sin x, x * y); backward records which gradients it was given."""

    seen = []

    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return ctx.xp.sin(x), x * y

    @staticmethod
    def backward(ctx, g_sin, g_mul):
        SinMul.seen.append((g_sin is not None, g_mul is not None))
        x, y = ctx.saved_tensors
        gx = gy = None
        if g_sin is not None:
            gx = g_sin * gg.cos(x)
        if g_mul is not None:
            gx = g_mul * y if gx is None else gx + g_mul * y
            gy = g_mul * x
        return gx, gy

    @staticmethod
    def jvp(ctx, tx, ty):
        x, y = ctx.saved_tensors
        return tx * gg.cos(x), tx * y + x * ty


class ExpPair(gg.Function):
    """(exp x, exp 2x), whose backward and jvp read the saved outputs: their history is what
    makes second order and forward over reverse right."""

    @staticmethod
    def forward(ctx, x):
        e1, e2 = ctx.xp.exp(x), ctx.xp.exp(2 * x)
        ctx.save_for_backward(e1, e2)
        return e1, e2

    @staticmethod
    def backward(ctx, g1, g2):
        e1, e2 = ctx.saved_tensors
        out = 0
        if g1 is not None:
            out = out + g1 * e1
        if g2 is not None:
            out = out + 2 * g2 * e2
        return out

    @staticmethod
    def jvp(ctx, t):
        e1, e2 = ctx.saved_tensors
        return t * e1, 2 * t * e2


class MaxWithIndex(gg.Function):
    """The maximum of each row and where it is (an integer output, which takes no gradient)."""

    seen = []

    @staticmethod
    def forward(ctx, x):
        xp = ctx.xp
        idx = xp.argmax(x, axis=1)
        ctx.save_for_backward(idx)
        ctx.shape = x.shape
        return xp.take_along_axis(x, idx[:, None], axis=1)[:, 0], idx

    @staticmethod
    def backward(ctx, g, g_idx):
        MaxWithIndex.seen.append(g_idx)
        (idx,) = ctx.saved_tensors
        onehot = gg.tensor(np.eye(ctx.shape[1])[host(idx)], dtype=g.dtype, device=g.device)
        return onehot * gg.reshape(g, (-1, 1))


def _combined(x, y):
    s, p = SinMul.apply(x, y)
    return s * 2.0 + p * s


def test_both_outputs_used_and_one_only(device):
    x, y = f64(X, device, True), f64(Y, device, True)
    SinMul.seen.clear()
    with gg.autograd.record():
        s, p = SinMul.apply(x, y)
        loss = (s * 3.0 + p).sum()
    assert isinstance(s, gg.Tensor) and isinstance(p, gg.Tensor)
    np.testing.assert_allclose(host(s), np.sin(X), rtol=1e-12)
    np.testing.assert_allclose(host(p), X * Y, rtol=1e-12)
    loss.backward()
    assert SinMul.seen == [(True, True)]
    np.testing.assert_allclose(host(x.grad), 3 * np.cos(X) + Y, rtol=1e-12)
    np.testing.assert_allclose(host(y.grad), X, rtol=1e-12)

    for used, expect_x, expect_y in [(0, np.cos(X), None), (1, Y, X)]:
        x, y = f64(X, device, True), f64(Y, device, True)
        SinMul.seen.clear()
        with gg.autograd.record():
            out = SinMul.apply(x, y)[used].sum()
        out.backward()
        assert SinMul.seen == [(used == 0, used == 1)]  # None for the output not used
        np.testing.assert_allclose(host(x.grad), expect_x, rtol=1e-12)
        expect_y = np.zeros(4) if expect_y is None else expect_y  # no gradient reached y
        np.testing.assert_allclose(host(y.grad), expect_y, rtol=1e-12)


def test_outputs_used_several_times_and_retained(device):
    """Each output's gradient is summed over its uses before the Function's backward runs,
    once; retain_graph runs it again."""
    x, y = f64(X, device, True), f64(Y, device, True)
    SinMul.seen.clear()
    with gg.autograd.record():
        s, p = SinMul.apply(x, y)
        loss = (s * s + s + p * p).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    assert SinMul.seen == [(True, True), (True, True)]
    gx = (2 * np.sin(X) + 1) * np.cos(X) + 2 * X * Y * Y
    np.testing.assert_allclose(host(x.grad), gx, rtol=1e-12)
    np.testing.assert_allclose(host(y.grad), 2 * X * Y * X, rtol=1e-12)


def test_gradcheck_first_and_second_order(device):
    x, y = f64(X, device), f64(Y, device)
    assert gg.gradcheck(_combined, [x, y])
    assert gg.gradcheck(_combined, [x, y], order=2)
    for k in (0, 1):
        assert gg.gradcheck(lambda a, b, k=k: SinMul.apply(a, b)[k], [x, y])
        assert gg.gradcheck(lambda a, b, k=k: SinMul.apply(a, b)[k], [x, y], order=2)
    assert gg.gradcheck(lambda a: ExpPair.apply(a)[1], [x], order=2)
    # both outputs used, by the loss and by the backward reading them: second order hears
    # from each output twice (its use, and its reading under create_graph)
    product = lambda a: (lambda e: e[0] * e[1])(ExpPair.apply(a))  # noqa: E731
    assert gg.gradcheck(product, [x])
    assert gg.gradcheck(product, [x], order=2)


def test_second_order_through_saved_outputs(device):
    """The backward reads the saved outputs; under create_graph they carry their history, so
    the second derivative of sum(exp x + exp 2x) is exp x + 4 exp 2x."""
    x = f64(X, device, True)
    with gg.autograd.record():
        e1, e2 = ExpPair.apply(x)
        loss = (e1 + e2).sum()
        (g,) = gg.autograd.grad(loss, [x], create_graph=True)
        total = g.sum()
    np.testing.assert_allclose(host(g), np.exp(X) + 2 * np.exp(2 * X), rtol=1e-12)
    total.backward()
    np.testing.assert_allclose(host(x.grad), np.exp(X) + 4 * np.exp(2 * X), rtol=1e-12)
    hvp = gg.hvp(lambda a: ExpPair.apply(a)[1].sum(), f64(X, device), f64(np.ones(4), device))
    np.testing.assert_allclose(host(hvp), 4 * np.exp(2 * X), rtol=1e-12)


def test_vjp_and_jvp(device):
    x, y = f64(X, device), f64(Y, device)
    (s, p), vjp_fn = gg.vjp(SinMul.apply, x, y)
    u, w = f64([1.0, 2.0, 3.0, 4.0], device), f64([0.5, -1.0, 0.25, 2.0], device)
    gx, gy = vjp_fn((u, w))
    np.testing.assert_allclose(host(gx), host(u) * np.cos(X) + host(w) * Y, rtol=1e-12)
    np.testing.assert_allclose(host(gy), host(w) * X, rtol=1e-12)
    tx, ty = f64([1.0, 0.0, -1.0, 2.0], device), f64([0.5, 1.0, 1.0, -1.0], device)
    (s2, p2), (ts, tp) = gg.jvp(SinMul.apply, (x, y), (tx, ty))
    np.testing.assert_allclose(host(s2), np.sin(X), rtol=1e-12)
    np.testing.assert_allclose(host(ts), host(tx) * np.cos(X), rtol=1e-12)
    np.testing.assert_allclose(host(tp), host(tx) * Y + X * host(ty), rtol=1e-12)
    # a tangent along one input only: the other's is zeros
    _, (ts, tp) = gg.jvp(lambda a: SinMul.apply(a, y), (x,), (tx,))
    np.testing.assert_allclose(host(tp), host(tx) * Y, rtol=1e-12)


def test_nested_jvp_and_forward_over_reverse(device):
    """jvp of jvp and the Hessian (jacfwd over jacrev) read the tangents of the saved outputs
    at the outer level."""
    x = np.array([0.3, -0.4])
    inner = lambda v: gg.jvp(lambda a: sum(ExpPair.apply(a)), (v,), (v,))[1]  # noqa: E731
    t_inner, t_outer = gg.jvp(inner, (f64(x, device),), (f64(np.ones(2), device),))
    np.testing.assert_allclose(host(t_inner), x * np.exp(x) + 2 * x * np.exp(2 * x), rtol=1e-12)
    np.testing.assert_allclose(host(t_outer), (1 + x) * np.exp(x) + (2 + 4 * x) * np.exp(2 * x),
                               rtol=1e-12)
    hess = gg.hessian(lambda a: (ExpPair.apply(a)[0] * ExpPair.apply(a)[1]).sum())(f64(x, device))
    np.testing.assert_allclose(host(hess), np.diag(9 * np.exp(3 * x)), rtol=1e-12)


def test_an_integer_output_takes_no_gradient(device):
    x_np = np.array([[1.0, 5.0, 2.0], [7.0, -1.0, 3.0]])
    x = f64(x_np, device, True)
    MaxWithIndex.seen.clear()
    with gg.autograd.record():
        m, idx = MaxWithIndex.apply(x)
        loss = (m * gg.tensor([2.0, 3.0], dtype="float64", device=device)).sum()
    assert idx.dtype.kind == "i" and not idx.requires_grad and m.requires_grad
    assert host(idx).tolist() == [1, 0]
    loss.backward()
    assert MaxWithIndex.seen == [None]
    np.testing.assert_array_equal(host(x.grad), [[0, 2, 0], [3, 0, 0]])
    assert gg.gradcheck(lambda a: MaxWithIndex.apply(a)[0], [f64(x_np, device)], order=2)


def test_save_for_backward_of_inputs_outputs_and_others(device):
    class Mixed(gg.Function):
        @staticmethod
        def forward(ctx, x):
            xp = ctx.xp
            sq, scale = x * x, xp.full(x.shape, 3.0)
            ctx.save_for_backward(x, sq, scale)
            return sq, x * scale

        @staticmethod
        def backward(ctx, g_sq, g_scaled):
            x, sq, scale = ctx.saved_tensors
            assert scale._node is None  # a constant
            return g_sq * 2 * sq / x + g_scaled * scale

    def both(a):
        sq, scaled = Mixed.apply(a)
        return sq * scaled + sq

    x = f64(X, device)
    assert gg.gradcheck(both, [x], forward=False)
    assert gg.gradcheck(both, [x], order=2)


def test_outputs_of_different_float_dtypes(device):
    class Split(gg.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2, (x * 3).astype("float32")

        @staticmethod
        def backward(ctx, g2, g3):
            assert g3 is None or g3.dtype == np.float32
            out = 0
            if g2 is not None:
                out = out + g2 * 2
            if g3 is not None:
                out = out + g3.astype("float64") * 3
            return out

    x = f64(X, device, True)
    with gg.autograd.record():
        a, b = Split.apply(x)
        loss = a.sum() + b.sum().astype("float64")
    assert (a.dtype, b.dtype) == (np.float64, np.float32)
    loss.backward()
    np.testing.assert_allclose(host(x.grad), np.full(4, 5.0))


def test_outside_record_and_through_constants(device):
    s, p = SinMul.apply(f64(X, device), f64(Y, device))
    assert not s.requires_grad and not p.requires_grad
    x = f64(X, device, True)
    with gg.autograd.record():
        (s, p) = SinMul.apply(x, f64(Y, device))
        loss = s.sum() + p.sum()
    loss.backward()
    np.testing.assert_allclose(host(x.grad), np.cos(X) + Y, rtol=1e-12)


def test_anomaly_mode_and_checkpoint_pass_through(device):
    x = f64(X, device, True)
    with gg.autograd.detect_anomaly():
        with gg.autograd.record():
            loss = _combined(x, f64(Y, device)).sum()
        loss.backward()
    expected = host(x.grad)
    x2 = f64(X, device, True)
    with gg.autograd.record():
        loss = gg.checkpoint(lambda a: _combined(a, f64(Y, device)), x2).sum()
    loss.backward()
    np.testing.assert_allclose(host(x2.grad), expected, rtol=1e-12)

    class NanBackward(gg.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1, x * 2

        @staticmethod
        def backward(ctx, g1, g2):
            return g2 * float("nan")

    with gg.autograd.detect_anomaly():
        with gg.autograd.record():
            loss = NanBackward.apply(x)[1].sum()
        with pytest.raises(gg.autograd.AnomalyError, match="NanBackward"):
            loss.backward()


# ---------------------------------------------------------------------------- errors


def test_backward_returning_the_wrong_number_of_gradients(device):
    class TooFew(gg.Function):
        @staticmethod
        def forward(ctx, x, y):
            return x + y, x - y

        @staticmethod
        def backward(ctx, g1, g2):
            return (g1,)

    x, y = f64(X, device, True), f64(Y, device, True)
    with gg.autograd.record():
        loss = TooFew.apply(x, y)[0].sum()
    with pytest.raises(TypeError, match=r"TooFew.backward returned 1 gradient\(s\) for 2 input"):
        loss.backward()


def test_a_gradient_of_the_wrong_shape(device):
    class WrongShape(gg.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2, x * 3

        @staticmethod
        def backward(ctx, g1, g2):
            return gg.reshape(g2, (2, 2))

    x = f64(X, device, True)
    with gg.autograd.record():
        loss = WrongShape.apply(x)[1].sum()
    with pytest.raises(gg.GraphError, match=r"WrongShape: gradient for input 0 has shape "
                                            r"\(2, 2\) but the input has shape \(4,\)"):
        loss.backward()


def test_forward_returning_an_empty_tuple_is_refused(device):
    class Nothing(gg.Function):
        @staticmethod
        def forward(ctx, x):
            return ()

    with pytest.raises(TypeError, match="Nothing: forward returned an empty tuple"):
        Nothing.apply(f64(X, device))


def test_jvp_errors(device):
    class NoJvp(gg.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2, x * 3

        @staticmethod
        def backward(ctx, g1, g2):
            return g1

    class OneTangent(NoJvp):
        @staticmethod
        def jvp(ctx, t):
            return t * 2

    x = f64(X, device)
    with pytest.raises(TypeError, match="NoJvp defines no jvp"):
        gg.jvp(NoJvp.apply, (x,), (x,))
    with pytest.raises(TypeError, match=r"OneTangent.jvp returned 1 tangent\(s\) for 2 output"):
        gg.jvp(OneTangent.apply, (x,), (x,))


# ---------------------------------------------------------------------------- PyTorch


def test_against_torch_autograd_function():
    torch = pytest.importorskip("torch")

    class TorchSinMul(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            ctx.save_for_backward(x, y)
            return torch.sin(x), x * y

        @staticmethod
        def backward(ctx, g_sin, g_mul):  # PyTorch gives zeros for an unused output
            x, y = ctx.saved_tensors
            return g_sin * torch.cos(x) + g_mul * y, g_mul * x

    class TorchExpPair(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            e1, e2 = torch.exp(x), torch.exp(2 * x)
            ctx.save_for_backward(e1, e2)
            return e1, e2

        @staticmethod
        def backward(ctx, g1, g2):
            e1, e2 = ctx.saved_tensors
            return g1 * e1 + 2 * g2 * e2

    rng = np.random.default_rng(0)
    x_np, y_np, w = rng.standard_normal(5), rng.standard_normal(5), rng.standard_normal(5)

    def ours_and_theirs(ours, theirs):
        xs = [f64(x_np, requires_grad=True), f64(y_np, requires_grad=True)]
        ts = [torch.tensor(v, requires_grad=True) for v in (x_np, y_np)]
        with gg.autograd.record():
            g = gg.autograd.grad(ours(*xs, gg), xs, create_graph=True)
            (g[0] * g[0] + g[1]).sum().backward()
        tg = torch.autograd.grad(theirs(*ts, torch), ts, create_graph=True)
        (tg[0] * tg[0] + tg[1]).sum().backward()
        for a, b in zip(g, tg):
            np.testing.assert_allclose(host(a), b.detach().numpy(), rtol=1e-10, atol=1e-12)
        for a, b in zip(xs, ts):
            np.testing.assert_allclose(host(a.grad), b.grad.numpy(), rtol=1e-10, atol=1e-12)

    def both(x, y, lib):
        fn = SinMul if lib is gg else TorchSinMul
        pair = ExpPair if lib is gg else TorchExpPair
        s, p = fn.apply(x, y)
        e1, e2 = pair.apply(p)
        wt = f64(w) if lib is gg else torch.tensor(w)
        return (s * wt + p * s + e1 * e2).sum()

    def first_only(x, y, lib):
        fn = SinMul if lib is gg else TorchSinMul
        pair = ExpPair if lib is gg else TorchExpPair
        return (fn.apply(x, y)[0] * pair.apply(y)[1]).sum() + (y * 0).sum()

    ours_and_theirs(both, both)
    ours_and_theirs(first_only, first_only)
