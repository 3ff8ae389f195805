"""Every rule takes the op namespace first: the ops' forwards on arrays at first order, the ops
on Tensors (recorded) under create_graph, one rule for both and no switch between them."""

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.nn import functional as F
from gpugrad.ops import namespace
from gpugrad.ops import op as op_table
from gpugrad.ops import registry
from conftest import host


def _cube_op(seen):
    def rule(ops, g, x, y):
        seen.append(type(ops).__name__)
        return g * 3 * ops.square(x)

    return registry.Op("cube", lambda xp, x: x * x * x, "x", "general", vjp=(rule,),
                       jvp=lambda ops, ts, x, y: ts[0] * 3 * ops.square(x))


def test_a_rule_gets_array_ops_at_first_order_and_tensor_ops_when_recorded(device):
    seen = []
    cube = _cube_op(seen)
    assert all(op_table.takes_ops(rule) for rule in (*cube.vjp, cube.jvp))
    x = gg.tensor(np.array([0.5, -2.0, 3.0]), device=device)
    x.attach_grad()
    with gg.autograd.record():
        y = gg.autograd.apply(cube, (x,), {})
    (first,) = gg.autograd.grad(y, [x], retain_graph=True)
    (recorded,) = gg.autograd.grad(y, [x], create_graph=True)
    assert seen == ["ArrayOps", "TensorOps"]
    assert recorded._node is not None
    np.testing.assert_array_equal(host(first), host(recorded))
    np.testing.assert_allclose(host(first), 3 * host(x) ** 2)
    with gg.autograd.record():
        total = gg.sum(recorded)
    (second,) = gg.autograd.grad(total, [x])  # the recorded rule differentiates
    np.testing.assert_allclose(host(second), 6 * host(x))


def _refuse_applied_ops(monkeypatch):
    def refused(op, inputs, params):
        raise AssertionError(f"{op.name} was applied as an op on Tensors in a first-order backward")

    monkeypatch.setattr(registry, "apply", refused)  # the op functions look it up at call time


def test_a_first_order_backward_applies_no_op(device, monkeypatch):
    """Every rule runs on the namespace of array forwards at first order (arithmetic, where,
    reductions, matmul, linear), so the backward of a graph of them applies no op on Tensors."""
    rng = np.random.default_rng(0)
    a, b, w = (gg.tensor(rng.standard_normal(s), device=device) for s in ((3, 4), (4,), (2, 4)))
    for t in (a, b, w):
        t.attach_grad()
    with gg.autograd.record():
        h = gg.maximum(a * b, gg.exp(-a)) / (1 + gg.abs(b))
        z = gg.linear(h, w) @ gg.ones((2, 3), device=device)
        loss = gg.logsumexp(z, axis=1).sum() + gg.max(h, axis=0).mean() + gg.norm(gg.clip(w, -1, 1))
    _refuse_applied_ops(monkeypatch)
    loss.backward()
    assert all(np.isfinite(host(t.grad)).all() for t in (a, b, w))


def test_activation_loss_and_shape_rules_apply_no_op_at_first_order(device, monkeypatch):
    """The same for the activations (from the mask, from the output, through their backward
    ops, elu with a negative alpha), softmax, log_softmax, the fused cross-entropy and the ops
    that move elements (reshape, transpose, getitem, take, concatenate, stack)."""
    rng = np.random.default_rng(1)
    x = gg.tensor(rng.standard_normal((4, 6)), device=device)
    x.attach_grad()
    labels = np.array([0, 5, 2, 1])
    with gg.autograd.record():
        acts = [gg.relu(x) * 2, gg.leaky_relu(x), gg.gelu(x), gg.gelu(x, approximate="tanh"),
                gg.elu(x, alpha=-0.5), gg.elu(x), gg.silu(x), gg.softplus(x), gg.sigmoid(x),
                gg.tanh(x), gg.softsign(x), gg.hardswish(x), gg.softmax(x), gg.log_softmax(x)]
        h = gg.stack(acts).sum(axis=0)
        moved = gg.concatenate([h.T.reshape(4, 6), h[:, ::2].reshape(4, 3)], axis=1)
        loss = (F.cross_entropy(moved, labels) + gg.take(moved, [0, 7, 7], axis=None).sum()
                + gg.relu(moved).sum())
    _refuse_applied_ops(monkeypatch)
    loss.backward()
    assert np.isfinite(host(x.grad)).all()


def test_the_namespaces_call_ops_as_gg_does(device):
    x = gg.tensor(np.arange(6.0).reshape(2, 3), device=device)
    arrays = namespace.array_ops(device)
    on_arrays = arrays.sum(x.data, 1, keepdims=True)  # params by position, as gg.sum(x, 1)
    assert not isinstance(on_arrays, gg.Tensor)
    np.testing.assert_array_equal(host(gg.tensor(on_arrays, device=device)), [[3.0], [12.0]])
    on_tensors = namespace.TENSOR_OPS.sum(x, 1, keepdims=True)
    assert isinstance(on_tensors, gg.Tensor)
    np.testing.assert_array_equal(host(on_tensors), [[3.0], [12.0]])
    assert arrays.constant(x.data) is x.data and namespace.TENSOR_OPS.constant(x)._node is None
    with pytest.raises(AttributeError, match="no op 'nonesuch'"):
        arrays.nonesuch


def test_an_op_whose_rules_disagree_on_the_namespace_is_refused():
    with pytest.raises(TypeError, match="every rule takes the op namespace"):
        registry.Op("mixed", lambda xp, a, b: a * b, "a b", "general",
                    vjp=(lambda ops, g, a, b, y: g * b, lambda g, a, b, y: g * a), jvp=None)


def test_an_op_whose_rules_take_no_namespace_is_refused():
    with pytest.raises(TypeError, match="every rule takes the op namespace"):
        registry.Op("plain", lambda xp, x: x * 2, "", "general",
                    vjp=(lambda g, x, y: 2 * g,), jvp=None)
    with pytest.raises(TypeError, match="every rule takes the op namespace"):
        registry.Op("plain_jvp", lambda xp, x: x * 2, "", "general",
                    vjp=(lambda ops, g, x, y: 2 * g,), jvp=lambda ts, x, y: 2 * ts[0])
