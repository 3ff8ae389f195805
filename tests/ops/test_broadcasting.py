"""Broadcasting of every op in the table, on its cases (tests/ops/test_ops.py):

- every argument position broadcasts: an input of a smaller broadcastable shape (0-d, size-1
  dimensions, fewer leading dimensions) gives the values and gradients of the same op on inputs
  broadcast by hand, whose gradients NumPy sums back here;
- batched matmul with a contracted dimension of 1 against PyTorch and finite differences.
"""

import zlib

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.ops.activation import ACTIVATIONS
from conftest import host
from test_ops import CASE_LIST, IDS

F64 = "float64"


def _tensors(arrays):
    return [gg.tensor(a, dtype=F64) for a in arrays]


def _rng(name, i):
    """A generator of its own per case, so a case's numbers do not depend on which tests ran."""
    return np.random.default_rng(zlib.crc32(f"{name}-{i}".encode()))


# ---------------------------------------------------------------------------------------------
# broadcasting in every argument position, against inputs broadcast by hand

# the activations' backward ops are elementwise over (g, x) though the table calls them general
ACTIVATION_BACKWARDS = {f"{a.name}_backward" for a in ACTIVATIONS.values() if a.backward is not None}
BATCHED = {"matmul"}        # the batch dimensions broadcast; the matrix ones must align
BIAS = {"linear"}           # the bias broadcasts over the output features
PER_ROW = {"softmax_cross_entropy_backward"}  # g, one value per row, broadcasts over the rows
NOT_BROADCASTING = {        # inputs that never meet elementwise; each is still wrapped below
    "concatenate": "inputs are joined along an axis; the others must be equal",
    "stack": "inputs are stacked; their shapes must be equal",
    "half_sum_squares": "a sum of squares over a list of unrelated arrays",
    "einsum": "operands meet by their labels; a size-1 axis under the ellipsis broadcasts "
              "(a case of its own in tests/ops/test_ops.py)",
    "linear_recurrence": "b and a have one shape (refused otherwise)",
    "lstm_cell": "gates (..., 4H) and c (..., H) share their leading dimensions (refused otherwise)",
    "lstm_cell_backward": "g is (2, ..., H) beside gates (..., 4H) and c (..., H) (refused otherwise)",
    "gru_cell": "gi, gh (..., 3H) and h (..., H) share their leading dimensions (refused otherwise)",
    "gru_cell_backward": "g and h (..., H) beside gi, gh (..., 3H) (refused otherwise)",
    "lstm_layer": "a sequence, weights and a state of the shapes PyTorch's LSTM takes (refused "
                  "otherwise)",
    "gru_layer": "a sequence, weights and a state of the shapes PyTorch's GRU takes (refused "
                 "otherwise)",
    "rnn_layer": "a sequence, weights and a state of the shapes PyTorch's RNN takes (refused "
                 "otherwise)",
}


def _elementwise(name):
    return gg.OPS[name].kind == "elementwise" or name in ACTIVATION_BACKWARDS


def _smaller_shapes(shape):
    """Proper shapes that broadcast to `shape`: 0-d, fewer leading dimensions (the first of
    them also as 1), and each dimension, then all of them, set to 1."""
    shape = tuple(shape)
    found = {()}
    for d in range(1, len(shape)):
        found |= {shape[d:], (1,) + shape[d + 1:]}
    for k in range(len(shape)):
        found.add(shape[:k] + (1,) + shape[k + 1:])
    found.add((1,) * len(shape))
    found.discard(shape)
    return sorted(found, key=lambda s: (len(s), s))


def _shrink(a, shape):
    """a's leading elements in the smaller shape `shape`, which broadcasts back to a.shape."""
    lead = (0,) * (a.ndim - len(shape))
    return a[lead + tuple(slice(0, 1) if s == 1 else slice(None) for s in shape)].copy()


def _sum_to(g, shape):
    """g summed over the axes that broadcasting added to an input of `shape`."""
    g = g.sum(axis=tuple(range(g.ndim - len(shape))))
    axes = tuple(k for k, s in enumerate(shape) if s == 1 and g.shape[k] != 1)
    return g.sum(axis=axes, keepdims=True).reshape(shape)


def _native_variants(name, f, xs):
    """(label, f, inputs, shapes the inputs are broadcast to by hand), in the positions where
    the op itself broadcasts: one input in a smaller shape, one with an extra leading 1 (so
    that the others are the smaller ones), and for elementwise ops all smaller at once."""
    shapes = [np.shape(x) for x in xs]
    if len(xs) < 2:  # nothing for a smaller input to broadcast against
        return []
    if _elementwise(name):
        full = np.broadcast_shapes(*shapes)
        targets = [full] * len(xs)
        small = {k: _smaller_shapes(full) for k in range(len(xs))}
        longer = {k: (1,) + full for k in range(len(xs))}
    elif name in BATCHED:
        batch = np.broadcast_shapes(*(s[:-2] for s in shapes if len(s) >= 2))
        targets = [batch + s[-2:] if len(s) >= 2 else s for s in shapes]
        # only where the other operand has a batch to carry the broadcast
        both = len(shapes[0]) >= 2 and len(shapes[1]) >= 2
        small = {k: [b + shapes[k][-2:] for b in _smaller_shapes(batch)] for k in (0, 1)
                 if both and batch}
        longer = {k: (1,) + batch + shapes[k][-2:] for k in (0, 1) if both}
    elif name in BIAS:
        targets, small, longer = shapes, {2: _smaller_shapes(shapes[2])} if len(xs) == 3 else {}, {}
    elif name in PER_ROW:
        targets, small, longer = shapes, {0: _smaller_shapes(shapes[0])}, {}
    else:
        return []
    base = [np.broadcast_to(x, t).copy() for x, t in zip(xs, targets)]
    variants = [(f"input {k} of shape {s}", f, base[:k] + [_shrink(base[k], s)] + base[k + 1:],
                 targets)
                for k, smaller in small.items() for s in smaller]
    for k, shape in longer.items():
        grown = [(1,) + t if j == k or len(t) >= 2 else t for j, t in enumerate(targets)]
        variants.append((f"input {k} of shape {shape}", f,
                         base[:k] + [base[k].reshape(shape)] + base[k + 1:], grown))
    if _elementwise(name):  # every input smaller at once, each keeping other axes of the output
        n = len(xs)
        for shift in range(n):
            split = [tuple(m if (j - k - shift) % n == 0 else 1 for j, m in enumerate(full))
                     for k in range(n)]
            variants.append((f"inputs of shapes {split}", f,
                             [_shrink(b, s) for b, s in zip(base, split)], targets))
    return variants


def _wrapped_variants(rng, f, xs):
    """Every input k replaced by x_k * c (c near 1, so domains hold), with x_k or c in turn in
    a smaller shape: the op's gradient then reaches a broadcast in every argument position."""
    variants = []
    for k, x in enumerate(xs):
        def f_scaled(*args, k=k):
            *inputs, c = args
            return f(*inputs[:k], inputs[k] * c, *inputs[k + 1:])
        c = rng.uniform(0.8, 1.25, np.shape(x))
        targets = [np.shape(a) for a in xs] + [np.shape(x)]
        for s in _smaller_shapes(np.shape(x)):
            variants.append((f"input {k} of shape {s} times c", f_scaled,
                             [*xs[:k], _shrink(x, s), *xs[k + 1:], c], targets))
            variants.append((f"input {k} times c of shape {s}", f_scaled, [*xs, _shrink(c, s)],
                             targets))
    return variants


def _values_and_gradients(f, arrays, u):
    """f's value, its gradients for the cotangent u, and its gradients through sum()."""
    inputs = _tensors(arrays)
    y, vjp_fn = gg.vjp(f, *inputs)
    with_u = vjp_fn(gg.tensor(u, dtype=F64))
    through_sum = gg.grad(lambda *t: gg.sum(f(*t)), argnums=tuple(range(len(inputs))))(*inputs)
    return host(y), [host(g) for g in with_u], [host(g) for g in through_sum]


def _mismatch(got, expected):
    """None if got equals expected to rounding, else what differs (shapes, or the worst
    element)."""
    if got.shape != expected.shape:
        return f"shape {got.shape}, expected {expected.shape}"
    if np.allclose(got, expected, rtol=1e-12, atol=1e-12):
        return None
    worst = np.unravel_index(np.argmax(np.abs(got - expected)), got.shape) if got.ndim else ()
    return f"at {worst} {got[worst]!r}, expected {expected[worst]!r}"


def _against_broadcast_by_hand(f, arrays, targets, rng):
    """What differs between f on `arrays` and f on them broadcast to `targets` by hand (their
    gradients summed back by NumPy), with a random cotangent and through sum()."""
    by_hand = [np.broadcast_to(a, t).copy() for a, t in zip(arrays, targets)]
    with gg.autograd.pause():
        out_shape = f(*_tensors(by_hand)).shape
    u = rng.standard_normal(out_shape)
    y, grads_u, grads_sum = _values_and_gradients(f, arrays, u)
    y_ref, grads_u_ref, grads_sum_ref = _values_and_gradients(f, by_hand, u)
    problems = [f"value: {m}" for m in [_mismatch(y, y_ref)] if m]
    for k, a in enumerate(arrays):
        for head, got, ref in (("cotangent u", grads_u, grads_u_ref),
                               ("through sum()", grads_sum, grads_sum_ref)):
            m = _mismatch(got[k], _sum_to(ref[k], np.shape(a)))
            problems += [f"gradient of input {k} ({head}): {m}"] if m else []
    return problems


@pytest.mark.parametrize("name,i,f,xs", CASE_LIST, ids=IDS)
def test_every_argument_broadcasts_as_if_broadcast_by_hand(name, i, f, xs):
    rng = _rng(name, i)
    failures = []
    variants = _native_variants(name, f, xs) + _wrapped_variants(rng, f, xs)
    for label, fn, arrays, targets in variants:
        try:
            problems = _against_broadcast_by_hand(fn, arrays, targets, rng)
            failures += [f"{label}: {p}" for p in problems]
        except Exception as e:  # every variant's failure, not the first: the pattern names the bug
            failures.append(f"{label}: {type(e).__name__}: {str(e).strip().splitlines()[0]}")
    assert not failures, f"{len(failures)} differences:\n" + "\n".join(failures)


def test_every_op_with_several_inputs_says_how_they_broadcast():
    """A new op with several inputs must be placed in one of the families above."""
    known = ACTIVATION_BACKWARDS | BATCHED | BIAS | PER_ROW | set(NOT_BROADCASTING)
    unplaced = sorted({name for name, _, _, xs in CASE_LIST
                       if len(xs) > 1 and not _elementwise(name) and name not in known})
    assert not unplaced, f"ops with several inputs and no broadcasting family: {unplaced}"


def _cond():
    return gg.tensor(np.array([True, False]))


# (label, f, inputs, expected gradients) worked by hand: a 0-d or size-1 leaf gets the sum over
# every element it was broadcast to, and a leaf with a leading 1 keeps it in its gradient
HAND_CASES = [
    ("0-d leaf b in (ones((2, 3)) + b).sum()", lambda b: gg.sum(gg.ones((2, 3), dtype=F64) + b),
     [np.array(2.0)], [np.array(6.0)]),
    ("(a(1, 3) * b(3,)).sum()", lambda a, b: gg.sum(a * b),
     [np.array([[1.0, 2.0, 3.0]]), np.array([4.0, 5.0, 6.0])],
     [np.array([[4.0, 5.0, 6.0]]), np.array([1.0, 2.0, 3.0])]),
    ("where(cond(2,), x(1, 2), 0).sum()", lambda x: gg.sum(gg.where(_cond(), x, 0)),
     [np.array([[7.0, 8.0]])], [np.array([[1.0, 0.0]])]),
    ("0-d leaf b in (b * ones((2, 3))).mean()", lambda b: gg.mean(b * gg.ones((2, 3), dtype=F64)),
     [np.array(2.0)], [np.array(1.0)]),
    ("(a(2, 3) - b(1, 1)).sum()", lambda a, b: gg.sum(a - b),
     [np.ones((2, 3)), np.array([[5.0]])], [np.ones((2, 3)), np.array([[-6.0]])]),
]


@pytest.mark.parametrize("label,f,xs,expected", HAND_CASES, ids=[c[0] for c in HAND_CASES])
def test_broadcast_gradients_worked_by_hand(label, f, xs, expected):
    inputs = _tensors(xs)
    for x in inputs:
        x.attach_grad()
    with gg.autograd.record():
        loss = f(*inputs)
    loss.backward()
    for k, (x, e) in enumerate(zip(inputs, expected)):
        assert x.grad.shape == e.shape, f"input {k}"
        np.testing.assert_allclose(host(x.grad), e, rtol=1e-12, err_msg=f"input {k}")


# ---------------------------------------------------------------------------------------------
# batched matmul whose contracted dimension is 1, against PyTorch and finite differences

CONTRACTED_ONE = [((3, 2, 1), (1, 3)), ((2, 3, 1), (1, 3)), ((2, 1), (3, 1, 4)),
                  ((1,), (1, 3)), ((3, 1), (1,)), ((2, 3, 1), (1,)), ((1,), (2, 1, 4)),
                  ((1,), (1,)), ((2, 1, 1), (1, 1))]
CONTRACTED_IDS = [f"{a}@{b}" for a, b in CONTRACTED_ONE]


def _matmul_case(shapes):
    rng = np.random.default_rng(zlib.crc32(repr(shapes).encode()))
    a, b = (rng.standard_normal(s) for s in shapes)
    return a, b, rng.standard_normal(np.matmul(a, b).shape)


def _matmul_gradients(a, b, u):
    return [host(g) for g in gg.vjp(gg.matmul, *_tensors([a, b]))[1](gg.tensor(u, dtype=F64))]


def test_matmul_sums_a_contracted_dimension_of_one_over_the_batch_once():
    a, w = _tensors([np.ones((3, 2, 1)), np.ones((1, 3))])
    ga, gw = gg.grad(lambda a, w: gg.sum(gg.matmul(a, w)), argnums=(0, 1))(a, w)
    np.testing.assert_array_equal(host(gw), np.full((1, 3), 6.0))
    np.testing.assert_array_equal(host(ga), np.full((3, 2, 1), 3.0))
    a, b = _tensors([np.ones((2, 1)), np.ones((3, 1, 4))])
    ga, gb = gg.grad(lambda a, b: gg.sum(gg.matmul(a, b)), argnums=(0, 1))(a, b)
    np.testing.assert_array_equal(host(ga), np.full((2, 1), 12.0))
    np.testing.assert_array_equal(host(gb), np.full((3, 1, 4), 2.0))


@pytest.mark.parametrize("shapes", CONTRACTED_ONE, ids=CONTRACTED_IDS)
def test_matmul_with_a_contracted_dimension_of_one_against_finite_differences(shapes):
    a, b, u = _matmul_case(shapes)
    eps = 1e-6  # the loss is bilinear: central differences are exact but for rounding
    numeric = []
    for k, x in enumerate((a, b)):
        g = np.zeros_like(x)
        for j in np.ndindex(x.shape):
            plus, minus = [a.copy(), b.copy()], [a.copy(), b.copy()]
            plus[k][j] += eps
            minus[k][j] -= eps
            g[j] = (np.sum(u * np.matmul(*plus)) - np.sum(u * np.matmul(*minus))) / (2 * eps)
        numeric.append(g)
    for k, (got, expected) in enumerate(zip(_matmul_gradients(a, b, u), numeric)):
        assert got.shape == expected.shape, f"input {k}"
        np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-8, err_msg=f"input {k}")


@pytest.mark.parametrize("shapes", CONTRACTED_ONE, ids=CONTRACTED_IDS)
def test_matmul_with_a_contracted_dimension_of_one_against_torch(shapes):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for these gradients")
    a, b, u = _matmul_case(shapes)
    ta, tb = (torch.tensor(x, requires_grad=True) for x in (a, b))
    (torch.matmul(ta, tb) * torch.tensor(u)).sum().backward()
    for k, (got, expected) in enumerate(zip(_matmul_gradients(a, b, u), (ta.grad, tb.grad))):
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-12, atol=1e-12,
                                   err_msg=f"input {k}")


def _batch_broadcast_by_hand(shapes):
    batch = np.broadcast_shapes(*(s[:-2] for s in shapes if len(s) >= 2))
    return [batch + s[-2:] if len(s) >= 2 else s for s in shapes]


CONTRACTED_ONE_BATCHED = [s for s in CONTRACTED_ONE if _batch_broadcast_by_hand(s) != list(s)]


@pytest.mark.parametrize("shapes", CONTRACTED_ONE_BATCHED,
                         ids=[f"{a}@{b}" for a, b in CONTRACTED_ONE_BATCHED])
def test_matmul_with_a_contracted_dimension_of_one_against_its_batch_broadcast_by_hand(shapes):
    a, b, _ = _matmul_case(shapes)
    targets = _batch_broadcast_by_hand(shapes)
    problems = _against_broadcast_by_hand(gg.matmul, [a, b], targets, np.random.default_rng(0))
    assert not problems, "\n".join(problems)
