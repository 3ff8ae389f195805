"""Values and gradients of random compositions against PyTorch (float64, CPU)."""

import numpy as np
import pytest

import gpugrad as gg

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
F = torch.nn.functional

# (gpugrad, torch, domain): unary functions; the domain keeps inputs where both are smooth
UNARY = [
    (gg.exp, torch.exp, "small"), (gg.log, torch.log, "pos"), (gg.sqrt, torch.sqrt, "pos"),
    (gg.sin, torch.sin, "any"), (gg.cos, torch.cos, "any"), (gg.tanh, torch.tanh, "any"),
    (gg.sigmoid, torch.sigmoid, "any"), (gg.relu, torch.relu, "any"), (gg.abs, torch.abs, "any"),
    (lambda x: gg.leaky_relu(x, 0.2), lambda x: F.leaky_relu(x, 0.2), "any"),
    (lambda x: gg.elu(x, alpha=0.7), lambda x: F.elu(x, alpha=0.7), "any"),
    (gg.gelu, F.gelu, "any"), (lambda x: gg.gelu(x, approximate="tanh"),
                               lambda x: F.gelu(x, approximate="tanh"), "any"),
    (gg.silu, F.silu, "any"), (gg.softsign, F.softsign, "any"),
    (lambda x: gg.softplus(x, beta=2.0, threshold=4.0),
                               lambda x: F.softplus(x, beta=2.0, threshold=4.0), "any"),
    (gg.erf, torch.erf, "any"), (gg.expm1, torch.expm1, "small"), (gg.log1p, torch.log1p, "pos"),
    (lambda x: gg.clip(x, -0.5, 0.7), lambda x: torch.clamp(x, -0.5, 0.7), "any"),
    (lambda x: gg.softmax(x, axis=-1), lambda x: torch.softmax(x, -1), "any"),
    (lambda x: gg.log_softmax(x, axis=0), lambda x: torch.log_softmax(x, 0), "any"),
]
BINARY = [
    (gg.add, torch.add), (gg.subtract, torch.sub), (gg.multiply, torch.mul),
    (gg.maximum, torch.maximum), (gg.minimum, torch.minimum),
    (lambda a, b: a / (b * b + 1), lambda a, b: a / (b * b + 1)),
]
REDUCE = [
    (lambda x: gg.sum(x, axis=1), lambda x: x.sum(1)),
    (lambda x: gg.mean(x, axis=0, keepdims=True), lambda x: x.mean(0, keepdim=True)),
    (lambda x: gg.max(x, axis=1), lambda x: x.amax(1)),
    (lambda x: gg.logsumexp(x, axis=1), lambda x: torch.logsumexp(x, 1)),
    (lambda x: gg.norm(x, axis=1), lambda x: torch.linalg.vector_norm(x, dim=1)),
]


def _domain(x, kind):
    if kind == "pos":
        return np.abs(x) + 0.5
    if kind == "small":
        return np.clip(x, -3, 3)
    return x


def _into_domain(h, kind):
    """The same smooth map in both frameworks, so log/sqrt see positives and exp no overflow."""
    if kind == "pos":
        return h * h + 0.5
    if kind == "small":
        return h * 0.3
    return h


def _compare(gg_fn, torch_fn, arrays):
    xs = [gg.tensor(a, dtype="float64", requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    with gg.autograd.record():
        y = gg_fn(*xs)
    ty = torch_fn(*ts)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    head = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(gg.tensor(head, dtype="float64"))
    ty.backward(torch.tensor(head))
    for x, t in zip(xs, ts):
        np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("i", range(len(UNARY)))
def test_unary_against_torch(i):
    ours, theirs, dom = UNARY[i]
    x = _domain(np.random.default_rng(i).standard_normal((3, 5)) * 2, dom)
    _compare(ours, theirs, [x])


@pytest.mark.parametrize("seed", range(25))
def test_random_compositions_against_torch(seed):
    """matmul, then a random chain of unary, binary (broadcast) and reducing ops."""
    rng = np.random.default_rng(seed)
    steps = [(rng.integers(len(UNARY)), rng.integers(len(BINARY))) for _ in range(3)]
    reduce_i = rng.integers(len(REDUCE))
    a, b, c = rng.standard_normal((4, 3)), rng.standard_normal((3, 5)), rng.standard_normal(5)

    def build(mod):
        pick = 0 if mod == "gg" else 1

        def f(a, b, c):
            h = a @ b
            for u, bi in steps:
                h = UNARY[u][pick](_into_domain(h, UNARY[u][2]))
                h = BINARY[bi][pick](h, c)
            return REDUCE[reduce_i][pick](h)
        return f

    _compare(build("gg"), build("torch"), [a, b, c])


def test_composition_second_derivative_against_torch():
    rng = np.random.default_rng(5)
    a = rng.standard_normal(6)
    x = gg.tensor(a, dtype="float64")
    g2 = gg.grad(lambda x: gg.sum(gg.grad(lambda x: (gg.tanh(x) * gg.gelu(x)).sum())(x) * gg.sin(x)))(x)
    t = torch.tensor(a, requires_grad=True)
    (g1,) = torch.autograd.grad((torch.tanh(t) * F.gelu(t)).sum(), t, create_graph=True)
    (tg2,) = torch.autograd.grad((g1 * torch.sin(t)).sum(), t)
    np.testing.assert_allclose(g2.numpy(), tg2.numpy(), rtol=1e-9)
