"""NumPy's wider core on tensors: the functions built from the table's ops (each checked for
NumPy's values and its gradients to second order, on every device), the new table ops against
PyTorch where PyTorch has them, exactness at zeros, errors, the memory they save, and the
Tensor methods."""

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.ops import contraction, joining, rearrange
from gpugrad.nn import functional as F
from conftest import host

R = np.random.default_rng(7)


def n(*shape):
    return R.standard_normal(shape)


IDX = np.array([[0, 2, 2], [1, 1, 0]])

# name -> [(gpugrad's function, NumPy's (or the reference's) function, inputs)]
# fmt: off
BUILT = {
    "tensordot":   [(lambda a, b: gg.tensordot(a, b, axes=([1, 0], [0, 1])),
                     lambda a, b: np.tensordot(a, b, axes=([1, 0], [0, 1])), [n(3, 4, 2), n(4, 3)]),
                    (lambda a, b: gg.tensordot(a, b, 1), lambda a, b: np.tensordot(a, b, 1), [n(2, 3), n(3, 2)]),
                    (lambda a, b: gg.tensordot(a, b, 0), lambda a, b: np.tensordot(a, b, 0), [n(2), n(3)])],
    "inner":       [(gg.inner, np.inner, [n(2, 3), n(4, 3)]), (gg.inner, np.inner, [n(), n(3)])],
    "outer":       [(gg.outer, np.outer, [n(2, 3), n(4)])],
    "kron":        [(gg.kron, np.kron, [n(2, 3), n(2, 2)]), (gg.kron, np.kron, [n(3), n(2, 2)])],
    "dot":         [(gg.dot, np.dot, [n(2, 3), n(4, 3, 2)]), (gg.dot, np.dot, [n(3), n(3)]),
                    (gg.dot, np.dot, [n(2, 3), n(3, 2)]), (gg.dot, np.dot, [n(), n(2)])],
    "flip":        [(lambda a: gg.flip(a, (0, 2)), lambda a: np.flip(a, (0, 2)), [n(2, 3, 2)]),
                    (gg.flip, np.flip, [n(2, 3)])],
    "fliplr":      [(gg.fliplr, np.fliplr, [n(2, 3)])],
    "flipud":      [(gg.flipud, np.flipud, [n(3, 2)])],
    "roll":        [(lambda a: gg.roll(a, (1, -2), (0, 1)), lambda a: np.roll(a, (1, -2), (0, 1)), [n(3, 4)]),
                    (lambda a: gg.roll(a, 5), lambda a: np.roll(a, 5), [n(3, 4)])],
    "repeat":      [(lambda a: gg.repeat(a, [1, 0, 2], axis=0), lambda a: np.repeat(a, [1, 0, 2], axis=0), [n(3, 2)]),
                    (lambda a: gg.repeat(a, 2), lambda a: np.repeat(a, 2), [n(2, 2)])],
    "tile":        [(lambda a: gg.tile(a, (2, 1, 3)), lambda a: np.tile(a, (2, 1, 3)), [n(2, 3)]),
                    (lambda a: gg.tile(a, 2), lambda a: np.tile(a, 2), [n(2, 2)])],
    "pad":         [(lambda a: gg.pad(a, ((1, 2), (0, 1)), constant_values=1.5),
                     lambda a: np.pad(a, ((1, 2), (0, 1)), constant_values=1.5), [n(2, 3)])]
                   + [(lambda a, m=m: gg.pad(a, ((2, 1), (1, 2)), mode=m),
                       lambda a, m=m: np.pad(a, ((2, 1), (1, 2)), mode=m), [n(3, 4)])
                      for m in ("edge", "reflect", "symmetric", "wrap")],
    "tril":        [(lambda a: gg.tril(a, -1), lambda a: np.tril(a, -1), [n(2, 3, 4)])],
    "triu":        [(gg.triu, np.triu, [n(3, 4)]), (lambda a: gg.triu(a, 1), lambda a: np.triu(a, 1), [n(4, 3)])],
    "diagonal":    [(lambda a: gg.diagonal(a, 1, 2, 0), lambda a: np.diagonal(a, 1, 2, 0), [n(3, 2, 4)]),
                    (gg.diagonal, np.diagonal, [n(3, 3)])],
    "diag":        [(lambda a: gg.diag(a, -1), lambda a: np.diag(a, -1), [n(3)]),
                    (lambda a: gg.diag(a, 1), lambda a: np.diag(a, 1), [n(3, 4)])],
    "trace":       [(gg.trace, np.trace, [n(3, 3)]), (lambda a: gg.trace(a, 1, 1, 2), lambda a: np.trace(a, 1, 1, 2), [n(2, 3, 4)])],
    "take_along_axis": [(lambda a: gg.take_along_axis(a, IDX, 1), lambda a: np.take_along_axis(a, IDX, 1), [n(2, 3)]),
                        (lambda a: gg.take_along_axis(a, np.array([[[1]], [[-2]]]), 1),
                         lambda a: np.take_along_axis(a, np.array([[[1]], [[-2]]]), 1), [n(2, 3, 4)])],
    "gather":      [(lambda a: gg.gather(a, 0, np.array([[0, 1], [1, 0]])),
                     lambda a: np.take_along_axis(a[:, :2], np.array([[0, 1], [1, 0]]), 0), [n(2, 3)])],
    "split":       [(lambda a: gg.split(a, [1, 3], axis=1)[1] * 2, lambda a: np.split(a, [1, 3], axis=1)[1] * 2, [n(2, 4)]),
                    (lambda a: gg.split(a, 2)[1], lambda a: np.split(a, 2)[1], [n(4, 2)])],
    "array_split": [(lambda a: gg.array_split(a, 3, axis=1)[0], lambda a: np.array_split(a, 3, axis=1)[0], [n(2, 4)])],
    "hsplit":      [(lambda a: gg.hsplit(a, 2)[1], lambda a: np.hsplit(a, 2)[1], [n(3, 4)])],
    "vsplit":      [(lambda a: gg.vsplit(a, [1])[1], lambda a: np.vsplit(a, [1])[1], [n(3, 4)])],
    "dsplit":      [(lambda a: gg.dsplit(a, 2)[0], lambda a: np.dsplit(a, 2)[0], [n(2, 2, 4)])],
    "hstack":      [(lambda a, b: gg.hstack([a, b]), lambda a, b: np.hstack([a, b]), [n(2, 3), n(2, 1)]),
                    (lambda a, b: gg.hstack([a, b]), lambda a, b: np.hstack([a, b]), [n(3), n(2)])],
    "vstack":      [(lambda a, b: gg.vstack([a, b]), lambda a, b: np.vstack([a, b]), [n(3), n(2, 3)])],
    "dstack":      [(lambda a, b: gg.dstack([a, b]), lambda a, b: np.dstack([a, b]), [n(2, 3), n(2, 3)])],
    "column_stack": [(lambda a, b: gg.column_stack([a, b]), lambda a, b: np.column_stack([a, b]), [n(3), n(3, 2)])],
    "append":      [(gg.append, np.append, [n(2, 2), n(3)]),
                    (lambda a, b: gg.append(a, b, axis=0), lambda a, b: np.append(a, b, axis=0), [n(2, 2), n(1, 2)])],
    "atleast_1d":  [(gg.atleast_1d, np.atleast_1d, [n()])],
    "atleast_2d":  [(gg.atleast_2d, np.atleast_2d, [n(3)])],
    "atleast_3d":  [(gg.atleast_3d, np.atleast_3d, [n(3)]), (gg.atleast_3d, np.atleast_3d, [n(2, 3)])],
    "ravel":       [(gg.ravel, np.ravel, [n(2, 3)])],
    "flatten":     [(gg.flatten, lambda a: a.flatten(), [n(2, 3)])],
    "squeeze":     [(gg.squeeze, np.squeeze, [n(1, 3, 1)]), (lambda a: gg.squeeze(a, 0), lambda a: np.squeeze(a, 0), [n(1, 3, 1)])],
    "expand_dims": [(lambda a: gg.expand_dims(a, (0, -1)), lambda a: np.expand_dims(a, (0, -1)), [n(2, 3)])],
    "unsqueeze":   [(lambda a: gg.unsqueeze(a, 1), lambda a: np.expand_dims(a, 1), [n(2, 3)])],
    "mod":         [(lambda a: gg.mod(a, 0.7), lambda a: np.mod(a, 0.7), [R.uniform(0.1, 0.6, 4) + 0.7 * np.arange(-2, 2)])],
}
# fmt: on
CASES = [(name, i, f, ref, xs) for name, cases in BUILT.items() for i, (f, ref, xs) in enumerate(cases)]
IDS = [f"{name}-{i}" for name, i, *_ in CASES]


def test_every_built_function_has_a_case():
    names = {*contraction.BUILT, *rearrange.BUILT, *joining.BUILT, "mod"}
    assert names == set(BUILT), sorted(names ^ set(BUILT))
    assert all(callable(getattr(gg, name)) for name in names)


@pytest.mark.parametrize("name,i,f,ref,xs", CASES, ids=IDS)
def test_values_equal_numpys(name, i, f, ref, xs, device):
    for dtype in ("float32", "float64"):
        got = f(*[gg.tensor(x, dtype=dtype, device=device) for x in xs])
        expected = ref(*[x.astype(dtype) for x in xs])
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_allclose(host(got), expected, rtol=1e-5 if dtype == "float32" else 1e-12)


@pytest.mark.parametrize("name,i,f,ref,xs", CASES, ids=IDS)
def test_gradients_to_second_order(name, i, f, ref, xs, device):
    inputs = [gg.tensor(x, dtype="float64", device=device) for x in xs]
    assert gg.gradcheck(f, inputs, order=2)


# against PyTorch -----------------------------------------------------------------------


def _torch():
    return pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")


ZEROS = np.array([[0.0, 1.5, -2.0, 0.5], [1.1, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 2.0], [1.2, 0.7, -0.4, 2.0]])

# name -> (gpugrad's function, PyTorch's function, inputs)
# fmt: off
AGAINST_TORCH = {
    "einsum-matmul":   (lambda a, b: gg.einsum("ij,jk->ik", a, b), lambda t, a, b: t.einsum("ij,jk->ik", a, b), [n(2, 3), n(3, 4)]),
    "einsum-diagonal": (lambda a, b: gg.einsum("iij,jk->ik", a, b), lambda t, a, b: t.einsum("iij,jk->ik", a, b), [n(3, 3, 2), n(2, 4)]),
    "einsum-ellipsis": (lambda a, b: gg.einsum("...ij,...jk", a, b), lambda t, a, b: t.einsum("...ij,...jk", a, b), [n(2, 2, 3), n(3, 2)]),
    "einsum-three":    (lambda a, b, c: gg.einsum("ij,jk,kl->li", a, b, c), lambda t, a, b, c: t.einsum("ij,jk,kl->li", a, b, c),
                        [n(2, 3), n(3, 2), n(2, 4)]),
    "tensordot":       (lambda a, b: gg.tensordot(a, b, axes=([1, 0], [0, 1])), lambda t, a, b: t.tensordot(a, b, dims=([1, 0], [0, 1])),
                        [n(3, 4, 2), n(4, 3)]),
    "kron":            (gg.kron, lambda t, a, b: t.kron(a, b), [n(2, 3), n(2, 2)]),
    "outer":           (gg.outer, lambda t, a, b: t.outer(a, b), [n(3), n(4)]),
    "var-correction":  (lambda a: gg.var(a, axis=0, ddof=1), lambda t, a: t.var(a, dim=0, correction=1), [n(3, 4)]),
    "std":             (lambda a: gg.std(a, axis=(0, 2)), lambda t, a: t.std(a, dim=(0, 2), correction=0), [n(2, 3, 4)]),
    "prod-zeros":      (lambda a: gg.prod(a, axis=1), lambda t, a: t.prod(a, dim=1), [ZEROS]),
    "prod-all-zeros":  (gg.prod, lambda t, a: t.prod(a), [ZEROS[:2, 1:]]),
    "cumprod-zeros":   (lambda a: gg.cumprod(a, axis=1), lambda t, a: t.cumprod(a, dim=1), [ZEROS]),
    "cumsum":          (lambda a: gg.cumsum(a, axis=0), lambda t, a: t.cumsum(a, dim=0), [n(3, 4)]),
    "remainder":       (gg.remainder, lambda t, a, b: t.remainder(a, b), [n(3, 4) * 3, -R.uniform(0.5, 2, 4)]),
    "fmod":            (gg.fmod, lambda t, a, b: t.fmod(a, b), [n(3, 4) * 3, R.uniform(0.5, 2, 4)]),
    "lerp":            (gg.lerp, lambda t, a, b, w: t.lerp(a, b, w), [n(3, 4), n(4), R.uniform(-0.5, 1.5, (3, 1))]),
    "flip":            (lambda a: gg.flip(a, (0, 2)), lambda t, a: t.flip(a, (0, 2)), [n(2, 3, 2)]),
    "roll":            (lambda a: gg.roll(a, (1, -2), (0, 1)), lambda t, a: t.roll(a, (1, -2), (0, 1)), [n(3, 4)]),
    "tril":            (lambda a: gg.tril(a, -1), lambda t, a: t.tril(a, -1), [n(2, 3, 4)]),
    "diagonal":        (lambda a: gg.diagonal(a, 1, 2, 0), lambda t, a: t.diagonal(a, 1, 2, 0), [n(3, 2, 4)]),
    "trace":           (gg.trace, lambda t, a: t.trace(a), [n(3, 3)]),
    "tile":            (lambda a: gg.tile(a, (2, 1, 3)), lambda t, a: t.tile(a, (2, 1, 3)), [n(2, 3)]),
    "repeat":          (lambda a: gg.repeat(a, [1, 0, 2], axis=0),
                        lambda t, a: t.repeat_interleave(a, t.tensor([1, 0, 2]), dim=0), [n(3, 2)]),
    "take_along_axis": (lambda a: gg.take_along_axis(a, IDX, 1), lambda t, a: t.take_along_dim(a, t.tensor(IDX), 1), [n(2, 3)]),
    "gather":          (lambda a: gg.gather(a, 1, IDX[:, :2]), lambda t, a: t.gather(a, 1, t.tensor(IDX[:, :2])), [n(2, 3)]),
    "pad":             (lambda a: gg.pad(a, ((1, 2), (0, 1)), constant_values=1.5),
                        lambda t, a: t.nn.functional.pad(a, (0, 1, 1, 2), value=1.5), [n(2, 3)]),
    "pad-reflect":     (lambda a: gg.pad(a, ((0, 0), (2, 1)), mode="reflect"),
                        lambda t, a: t.nn.functional.pad(a[None], (2, 1), mode="reflect")[0], [n(2, 4)]),
    "split":           (lambda a: gg.array_split(a, 3, axis=1)[2], lambda t, a: t.tensor_split(a, 3, dim=1)[2], [n(2, 5)]),
    "hstack":          (lambda a, b: gg.hstack([a, b]), lambda t, a, b: t.hstack([a, b]), [n(2, 3), n(2, 1)]),
    "column_stack":    (lambda a, b: gg.column_stack([a, b]), lambda t, a, b: t.column_stack([a, b]), [n(3), n(3, 2)]),
}
# fmt: on
for _name in ("reciprocal", "rsqrt", "exp2", "log2", "log10", "sinh", "cosh", "arctan", "arcsinh",
              "deg2rad", "rad2deg"):
    AGAINST_TORCH[_name] = (getattr(gg, _name), lambda t, a, nm=_name: getattr(t, nm)(a), [R.uniform(0.5, 2, (3, 4))])
for _name, _theirs in (("arcsin", "asin"), ("arccos", "acos"), ("arctanh", "atanh")):
    AGAINST_TORCH[_name] = (getattr(gg, _name), lambda t, a, nm=_theirs: getattr(t, nm)(a), [R.uniform(-0.9, 0.9, (3, 4))])
AGAINST_TORCH["arccosh"] = (gg.arccosh, lambda t, a: t.acosh(a), [R.uniform(1.1, 3, (3, 4))])


@pytest.mark.parametrize("name", sorted(AGAINST_TORCH))
def test_values_gradients_and_second_order_equal_pytorchs(name, device):
    """Values, the gradient under a random head, and the Hessian-vector product of that
    gradient's sum (second order), in float64."""
    torch = _torch()
    f, theirs, xs = AGAINST_TORCH[name]
    ours = [gg.tensor(x, dtype="float64", device=device) for x in xs]
    tt = [torch.tensor(x, requires_grad=True) for x in xs]
    y_t = theirs(torch, *tt)
    head = R.standard_normal(tuple(y_t.shape))
    grads_t = torch.autograd.grad(y_t, tt, torch.tensor(head), create_graph=True)
    squares = sum((g * g).sum() for g in grads_t)
    second_t = [torch.zeros_like(t) if d is None else d for t, d in zip(tt, torch.autograd.grad(
        squares, tt, allow_unused=True))] if squares.requires_grad else [torch.zeros_like(t) for t in tt]

    def loss(*a):
        return gg.sum(f(*a) * gg.tensor(head, dtype="float64", device=device))
    y = f(*ours)
    np.testing.assert_allclose(host(y), y_t.detach().numpy(), rtol=1e-12, atol=1e-12)
    grads = gg.grad(loss, argnums=tuple(range(len(xs))))(*ours)
    for g, gt in zip(grads, grads_t):
        np.testing.assert_allclose(host(g), gt.detach().numpy(), rtol=1e-10, atol=1e-12)
    second = gg.grad(lambda *a: sum(gg.sum(g * g) for g in gg.grad(loss, argnums=tuple(range(len(xs))))(*a)),
                     argnums=tuple(range(len(xs))))(*ours)
    for g, gt in zip(second, second_t):
        np.testing.assert_allclose(host(g), gt.detach().numpy(), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", ["prod", "cumprod"])
def test_prod_and_cumprod_are_exact_at_zeros_to_second_order(name, device):
    """Where elements are zero, dividing by the input would give inf * 0; the gradients here
    are products of the other elements, exact to every order: the Hessian at inputs with one,
    two and three zeros in a row equals the one finite differences of the exact gradient give."""
    w = n(4, 4)

    def f(a):
        out = gg.prod(a, axis=1) if name == "prod" else gg.cumprod(a, axis=1)
        weights = gg.tensor(w[:, 0] if name == "prod" else w, dtype="float64", device=device)
        return gg.sum(out * weights)

    def exact_grad(a):  # the gradient written out: products of the other elements
        g = np.zeros_like(a)
        for r in range(a.shape[0]):
            for k in range(a.shape[1]):
                if name == "prod":
                    g[r, k] = w[r, 0] * np.prod(np.delete(a[r], k))
                else:
                    g[r, k] = sum(w[r, j] * np.prod(np.delete(a[r, : j + 1], k)) for j in range(k, a.shape[1]))
        return g

    x = gg.tensor(ZEROS, dtype="float64", device=device)
    np.testing.assert_allclose(host(gg.grad(f)(x)), exact_grad(ZEROS), rtol=1e-12, atol=1e-12)
    hessian = host(gg.hessian(f)(x)).reshape(16, 16)
    h = 1e-6
    fd = np.stack([(exact_grad(ZEROS + h * e.reshape(4, 4)) - exact_grad(ZEROS - h * e.reshape(4, 4))).ravel()
                   / (2 * h) for e in np.eye(16)], axis=1)
    np.testing.assert_allclose(hessian, fd, rtol=1e-6, atol=1e-7)


# errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("call,error,words", [
    (lambda x: gg.einsum("ij,jk", x), ValueError, "name 2 operand(s), got 1"),
    (lambda x: gg.einsum("ijk", x), gg.ShapeError, "shape (3, 4) but its subscripts 'ijk' name 3 axes"),
    (lambda x: gg.einsum("ij,jk", x, x), ValueError, "(input shapes (3, 4), (3, 4))"),
    (lambda x: gg.einsum("i1", x), ValueError, "labels are letters"),
    (lambda x: gg.einsum("ij->ii", x), ValueError, "output label 'i'"),
    (lambda x: gg.einsum(["ij"], x), TypeError, "subscripts are a string"),
    (lambda x: gg.var(x[:1], axis=0, ddof=1), ValueError, "ddof=1 leaves no degrees of freedom over 1"),
    (lambda x: gg.pad(x, 1, mode="median"), ValueError, "mode 'median' is not supported"),
    (lambda x: gg.pad(x, -1), ValueError, "non-negative"),
    (lambda x: gg.split(x, 3, axis=1), ValueError, "does not split into 3 equal sections"),
    (lambda x: gg.tril(x[0]), ValueError, "needs at least 2 dimensions"),
    (lambda x: gg.diagonal(x, 0, 1, -1), ValueError, "axis1 and axis2 are both axis 1"),
    (lambda x: gg.gather(x, 1, np.zeros((4, 1), int)), gg.ShapeError, "larger than the tensor's (3, 4)"),
    (lambda x: gg.take_along_axis(x, np.zeros(2, int), 1), gg.ShapeError, "indices have 1 dimension(s)"),
    (lambda x: gg.repeat(x, -1), ValueError, "non-negative integers"),
    (lambda x: gg.tensordot(x, x, axes=([0], [1])), gg.ShapeError, "differ in length"),
    (lambda x: gg.linear_recurrence(x, x[:1]), gg.ShapeError, "must be equal"),
    (lambda x: gg.squeeze(x, 0), ValueError, "has length 3, not 1"),
    (lambda x: gg.flip(x, 2), ValueError, "axis 2 is out of range"),
])
def test_bad_input_is_named(call, error, words, device):
    x = gg.tensor(n(3, 4), device=device)
    with pytest.raises(error) as info:
        call(x)
    assert words in str(info.value)


# memory ----------------------------------------------------------------------------------


def test_what_the_new_ops_save(device):
    """einsum keeps its operands (an intermediate of three is an operand of the next pair),
    cumsum nothing, prod its input, cumprod its input and output: the ledger counts exactly
    those buffers."""
    a, b, c = (gg.tensor(n(*s), device=device, requires_grad=True) for s in [(8, 16), (16, 4), (4, 2)])
    with gg.autograd.record():
        pair = gg.einsum("ij,jk->ik", a, b)
        three = gg.einsum("ij,jk,kl->il", a, b, c)
        summed = gg.cumsum(a, axis=1)
        product = gg.prod(b, axis=0)
        running = gg.cumprod(c, axis=0)
    params = [a, b, c]
    assert gg.memory.saved(pair, params).activations == 0  # its operands are leaves
    saved = {op: sum(buf[4] for buf in gg.memory.saved(t, params).buffers if buf[0] == op)
             for t, op in [(pair, "einsum"), (summed, "cumsum"), (product, "prod"), (running, "cumprod")]}
    assert saved == {"einsum": a.data.nbytes + b.data.nbytes, "cumsum": 0, "prod": b.data.nbytes,
                     "cumprod": 2 * c.data.nbytes}
    # three operands: the product of the pair contracted first is kept for the second
    kept = [buf for buf in gg.memory.saved(three, params).buffers if not buf[5]]
    assert [(op, shape) for op, _, shape, *_ in kept] in ([("einsum", (16, 2))], [("einsum", (8, 4))])
    assert gg.memory.saved(three, params).activations == kept[0][4] == np.prod(kept[0][2]) * a.data.itemsize


def test_the_memory_estimate_is_exact_on_a_network_that_uses_einsum():
    """gg.memory.estimate (shapes on the meta device) equals the ledger of a real step on a
    model whose layers are einsum contractions."""
    from gpugrad import nn

    class Bilinear(nn.Module):
        def __init__(self):
            super().__init__()
            gg.seed(3)
            self.w = nn.Parameter(gg.randn(12, 6, 5) * 0.1)
            self.v = nn.Parameter(gg.randn(5, 3) * 0.1)

        def forward(self, x):
            h = gg.tanh(gg.einsum("bi,bj,ijk->bk", x, x[:, :6], self.w))
            return gg.einsum("bk,kc->bc", h, self.v)

    model = Bilinear()
    labels = np.arange(9) % 3
    est = gg.memory.estimate(model, (9, 12), F.cross_entropy, labels=labels)
    x = gg.randn(9, 12)
    with gg.autograd.record():
        loss = F.cross_entropy(model(x), labels)
    report = gg.memory.saved(loss, model.parameters())
    assert est["saved activations"] == report.activations > 0
    assert est["saved by op"] == report.by_op and "einsum" in report.by_op


# Tensor methods ------------------------------------------------------------------------------


def test_tensor_methods(device):
    a = n(2, 1, 3)
    t = gg.tensor(a, dtype="float64", device=device)
    for got, expected in [
        (t.ravel(), a.ravel()), (t.flatten(), a.flatten()), (t.squeeze(), a.squeeze()),
        (t.squeeze(1), a.squeeze(1)), (t.unsqueeze(0), a[None]),
        (t.repeat(2, axis=2), a.repeat(2, axis=2)), (t.var(), a.var()), (t.std(axis=2, ddof=1), a.std(axis=2, ddof=1)),
        (t.prod(axis=0), a.prod(axis=0)), (t.cumsum(axis=2), a.cumsum(axis=2)), (t.cumprod(), a.cumprod()),
        (t % 0.5, a % 0.5), (1.5 % (t * t + 1), 1.5 % (a * a + 1)),
        (t[:, 0].diagonal(), a[:, 0].diagonal()), (t[:, 0, :2].trace(), a[:, 0, :2].trace()),
    ]:
        assert got.shape == expected.shape
        np.testing.assert_allclose(host(got), expected, rtol=1e-12)
    assert gg.gradcheck(lambda x: x.cumprod(axis=2) * x.var(axis=2, keepdims=True), [t], order=2)


def test_einsum_inside_a_graphed_step_is_refused_by_name(device):
    """CuPy's einsum calls cuBLAS, which a stream capture refuses: refused on every device
    (as gg.cuda.graph refuses what cannot replay), with the capturable way named."""
    a, b = gg.tensor(n(2, 3), device=device), gg.tensor(n(3, 4), device=device)
    graphed = gg.cuda.graph(lambda a, b: gg.einsum("ij,jk->ik", a, b))
    with pytest.raises(gg.cuda.GraphStepError, match="einsum inside a graphed step.*gg.matmul"):
        graphed(a, b)
    np.testing.assert_allclose(host(gg.cuda.graph(lambda a, b: a @ b)(a, b)), host(a) @ host(b))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rows", [2, 3, 5, 7, 10])
def test_std_and_var_of_equal_elements_are_0_with_0_gradients(rows, dtype, device):
    """Equal elements (rows broadcast from one): var and std are exactly 0, and so is their
    gradient, as finite differences and PyTorch give (a mean rounded by its sum made the
    deviations an ulp, and std's gradient 0/0 noise of order 1); the second order is 0 up to
    the rounding of the rows' sum of (1 - 1/n) - 1/n - ..."""
    values = np.array([[-1.2607284784317017, -1.1042518615722656, 0.1, 3.3]])
    x = gg.tensor(values, dtype=dtype, device=device, requires_grad=True)
    w = gg.tensor(np.array([[0.88, -0.61, 0.5, 1.7]]), dtype=dtype, device=device)
    with gg.autograd.record():
        rows_of_x = gg.broadcast_to(gg.tanh(x), (rows, 4))
        s = gg.std(rows_of_x, axis=0, ddof=1, keepdims=True)
        v = gg.var(rows_of_x, axis=0, keepdims=True)
        head = (s * w).sum() + (v * w).sum()
        (g,) = gg.autograd.grad(head, [x], create_graph=True)
        second = (g * w).sum()
    assert not host(s).any() and not host(v).any()
    assert not host(g).any()
    (gg_of_g,) = gg.autograd.grad(second, [x])
    assert np.abs(host(gg_of_g)).max() <= 50 * np.finfo(dtype).eps
