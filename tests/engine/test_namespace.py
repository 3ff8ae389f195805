"""Rules take the op namespace first: the ops' forwards on arrays at first order, the ops on
Tensors (recorded) under create_graph, one rule for both and no switch between them."""

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.ops import applying
from gpugrad.ops import namespace
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
    assert cube.rules_take_ops
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


def test_rules_taking_the_namespace_need_no_array_switch(device, monkeypatch):
    """A graph of ops whose rules take `ops` (arithmetic, where, reductions, matmul, linear)
    runs its first-order backward without the switch that makes ops given arrays return
    arrays, so without the path that switch opens."""
    def refused(op, inputs, params):
        raise AssertionError(f"{op.name} ran through the array switch")

    rng = np.random.default_rng(0)
    a, b, w = (gg.tensor(rng.standard_normal(s), device=device) for s in ((3, 4), (4,), (2, 4)))
    for t in (a, b, w):
        t.attach_grad()
    monkeypatch.setattr(applying, "_raw_apply", refused)
    with gg.autograd.record():
        h = gg.maximum(a * b, gg.exp(-a)) / (1 + gg.abs(b))
        z = gg.linear(h, w) @ gg.ones((2, 3), device=device)
        loss = gg.logsumexp(z, axis=1).sum() + gg.max(h, axis=0).mean() + gg.norm(gg.clip(w, -1, 1))
    loss.backward()
    assert all(np.isfinite(host(t.grad)).all() for t in (a, b, w))


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
