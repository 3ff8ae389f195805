"""Recording and backward semantics (API.md), errors, memory behaviour of the graph."""

import gc
import threading
import tracemalloc

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import autograd
from conftest import host


def leaf(values, device=None, **kw):
    t = gg.tensor(values, dtype="float64", device=device)
    t.attach_grad(**kw)
    return t


def test_nothing_is_recorded_outside_record(device):
    x = leaf([1.0, 2.0], device)
    y = x * x
    assert not y.requires_grad
    with pytest.raises(gg.GraphError, match="not computed inside autograd.record"):
        y.backward()


def test_pause_and_no_grad_stop_recording(device):
    x = leaf([1.0, 2.0], device)
    with gg.autograd.record():
        assert gg.autograd.is_recording() and gg.autograd.is_training()
        with gg.autograd.pause():
            assert not gg.autograd.is_recording() and not gg.autograd.is_training()
            a = x * 2
        with gg.no_grad():
            assert gg.autograd.is_training()
            b = x * 2
        c = x * 2
    assert not a.requires_grad and not b.requires_grad and c.requires_grad
    with gg.autograd.record(train_mode=False):
        assert gg.autograd.is_recording() and not gg.autograd.is_training()
    assert not gg.autograd.is_recording()


def test_recording_is_per_thread(device):
    seen = []
    with gg.autograd.record():
        t = threading.Thread(target=lambda: seen.append(gg.autograd.is_recording()))
        t.start()
        t.join()
        assert gg.autograd.is_recording()
    assert seen == [False]


def test_grad_req_write_add_null(device):
    x = leaf([1.0, 2.0], device)
    for _ in range(2):
        with gg.autograd.record():
            y = (x * x).sum()
        y.backward()
    np.testing.assert_array_equal(host(x.grad), [2, 4])  # write: overwritten

    x.attach_grad("add")
    for _ in range(3):
        with gg.autograd.record():
            y = (x * x).sum()
        y.backward()
    np.testing.assert_array_equal(host(x.grad), [6, 12])  # add: accumulated from zeros
    x.zero_grad()
    np.testing.assert_array_equal(host(x.grad), [0, 0])

    w = leaf([3.0], device, grad_req="null")
    assert w.grad is None and w.grad_req == "null" and not w.requires_grad
    with gg.autograd.record():
        y = (x * w).sum()
    y.backward()
    assert w.grad is None
    np.testing.assert_array_equal(host(x.grad), [3, 3])


def test_requires_grad_at_creation_means_attach_grad(device):
    x = gg.tensor([1.0, 2.0], device=device, requires_grad=True)
    assert x.requires_grad and x.grad_req == "write" and x.is_leaf
    np.testing.assert_array_equal(host(x.grad), [0, 0])


def test_non_scalar_output_is_summed(device):
    x = leaf([1.0, 2.0, 3.0], device)
    with gg.autograd.record():
        y = x * x
    y.backward()
    np.testing.assert_array_equal(host(x.grad), [2, 4, 6])


def test_gradients_of_a_shared_leaf_accumulate(device):
    x = leaf([1.0, 2.0], device)
    with gg.autograd.record():
        y = x * x + x + gg.sin(x)
    y.backward()
    np.testing.assert_allclose(host(x.grad), 2 * np.array([1, 2]) + 1 + np.cos([1, 2]))


def test_the_kept_head_of_ones_never_leaks_into_a_gradient(device):
    """A scalar loss's implicit head gradient is one 0-d array kept per device and dtype (no
    fill kernel per step); nothing a caller receives may share it, or a change there would
    change every later backward."""
    x = leaf(2.0, device)
    with gg.autograd.record():
        y = x * 1.0
    y.backward()
    x.grad.data[...] = 7.0  # the caller's gradient array, changed in place
    x.zero_grad()
    for make in (lambda: x, lambda: x + 0.0):  # the head reaches the leaf as it is
        x.grad = None
        with gg.autograd.record():
            y = make()
        y.backward(retain_graph=True)
        np.testing.assert_array_equal(host(x.grad), 1.0)
        x.grad.data[...] = 5.0
        (g,) = gg.autograd.grad(y, [x], retain_graph=True)
        np.testing.assert_array_equal(host(g), 1.0)
        g.data[...] = 3.0
        y.backward(create_graph=True)
        x.grad.data[...] = 9.0
    w = leaf([1.0, 2.0], device)
    with gg.autograd.record():
        z = (w * w).sum()
    z.backward()
    np.testing.assert_array_equal(host(w.grad), [2.0, 4.0])  # still a head of 1


def test_second_backward_needs_retain_graph(device):
    x = leaf([1.0, 2.0], device)
    with gg.autograd.record():
        y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(host(x.grad), [2, 4])
    with pytest.raises(gg.GraphError, match="already been freed.*retain_graph=True"):
        y.backward()


def test_backward_frees_saved_arrays(device):
    x = leaf(np.ones(4), device)
    with gg.autograd.record():
        y = gg.exp(x)
        z = (y * x).sum()
    z.backward()
    assert z._node.freed and z._node.saved is None and y._node.saved is None


def test_create_graph_gives_differentiable_gradients(device):
    x = leaf([0.5, 1.5], device)
    with gg.autograd.record():
        y = (x ** 3).sum()
    (g,) = gg.autograd.grad(y, [x], create_graph=True)
    np.testing.assert_allclose(host(g), 3 * np.array([0.5, 1.5]) ** 2)
    with gg.autograd.record():
        s = g.sum()
    s.backward()
    np.testing.assert_allclose(host(x.grad), 6 * np.array([0.5, 1.5]))


def test_backward_with_create_graph_writes_a_differentiable_grad(device):
    x = leaf([2.0], device)
    with gg.autograd.record():
        y = gg.sin(x) * x
    y.backward(create_graph=True)
    first = x.grad
    assert first.requires_grad
    (second,) = gg.autograd.grad(first, [x])
    v = 2.0
    np.testing.assert_allclose(host(second), [2 * np.cos(v) - v * np.sin(v)])


def test_autograd_grad_leaves_dot_grad_alone(device):
    x = leaf([1.0, 2.0], device)
    w = leaf([3.0, 4.0], device)
    with gg.autograd.record():
        h = x * w
        y = (h * h).sum()
    gx, gh = gg.autograd.grad(y, [x, h])
    np.testing.assert_array_equal(host(gx), 2 * np.array([3, 8]) * np.array([3, 4]))
    np.testing.assert_array_equal(host(gh), 2 * np.array([3, 8]))
    np.testing.assert_array_equal(host(x.grad), [0, 0])
    with pytest.raises(gg.GraphError, match="freed"):
        gg.autograd.grad(y, [x])


def test_autograd_grad_of_an_unused_variable_is_zero(device):
    x, u = leaf([1.0], device), leaf([5.0, 6.0], device)
    with gg.autograd.record():
        y = x * 2
    gx, gu = gg.autograd.grad(y, [x, u])
    assert host(gx).tolist() == [2] and host(gu).tolist() == [0, 0]


def test_comparisons_do_not_require_grad(device):
    x = leaf([1.0, -2.0], device)
    with gg.autograd.record():
        for m in (x > 0, x < 0, x >= 0, x <= 0, x == 1, x != 1, gg.sign(x)):
            assert not m.requires_grad
    assert host(x > 0).tolist() == [True, False]


def test_int_results_are_not_recorded(device):
    x = leaf([1.5, 2.5], device)
    with gg.autograd.record():
        i = x.astype("int64")
    assert i.dtype == np.int64 and not i.requires_grad


def test_gradient_keeps_the_leaf_dtype(device):
    x = gg.tensor([1.0, 2.0], dtype="float32", device=device)
    x.attach_grad()
    with gg.autograd.record():
        y = (x * gg.tensor([1.0, 2.0], dtype="float64", device=device)).sum()
    assert y.dtype == np.float64
    y.backward()
    assert x.grad.dtype == np.float32


# ---------------------------------------------------------------- errors


def test_shape_mismatch_names_both_shapes(device):
    a, b = gg.ones((2, 3), device=device), gg.ones((4,), device=device)
    with pytest.raises(gg.ShapeError, match=r"add: shapes \(2, 3\) and \(4,\) cannot be broadcast"):
        a + b
    with pytest.raises(gg.ShapeError, match=r"matmul: shapes \(2, 3\) and \(4, 5\) are not aligned"):
        gg.ones((2, 3), device=device) @ gg.ones((4, 5), device=device)
    with pytest.raises(ValueError, match=r"reshape: .* \(input shapes \(2, 3\)\)"):
        a.reshape(4, 2)


def test_tensors_on_different_devices_do_not_mix():
    a = gg.ones(3, device="cpu")
    b = gg.tensors.wrap(np.ones(3), "cuda:0")  # a tensor that claims another device
    with pytest.raises(gg.DeviceError, match="add: tensors are on different devices, 'cpu' and 'cuda:0'"):
        a + b


def test_attach_grad_on_an_integer_tensor(device):
    x = gg.tensor([1, 2], dtype="int64", device=device)
    with pytest.raises(TypeError, match="only floating-point tensors.*int64"):
        x.attach_grad()
    with pytest.raises(ValueError, match="grad_req must be one of"):
        gg.ones(2, device=device).attach_grad("sometimes")


def test_head_grad_of_the_wrong_shape(device):
    x = leaf([1.0, 2.0], device)
    with gg.autograd.record():
        y = x * 2
    with pytest.raises(gg.ShapeError, match=r"head_grad has shape \(3,\) but the output has shape \(2,\)"):
        y.backward(gg.ones(3, device=device))


def test_a_rule_that_reads_what_was_not_saved_fails_by_name():
    from gpugrad.ops import registry

    bad = registry.Op("bad_square", lambda xp, x: x * x, "", "general",
                      vjp=(lambda ops, g, x, y: 2 * g * x,), jvp=None)
    x = leaf([1.0])
    with gg.autograd.record():
        y = gg.autograd.apply(bad, (x,), {})
    with pytest.raises(gg.GraphError, match="bad_square did not save x"):
        y.backward()


def test_a_rule_that_returns_no_array_fails_by_name(device):
    from gpugrad.ops import registry

    bad = registry.Op("bad_rule", lambda xp, x: x * 2, "", "general",
                      vjp=(lambda ops, g, x, y: [1.0, 2.0],), jvp=None)
    x = leaf([1.0, 2.0], device)
    with gg.autograd.record():
        y = gg.autograd.apply(bad, (x,), {})
    with pytest.raises(gg.GraphError, match="bad_rule: the gradient rule for x returned list, not an array"):
        y.backward(retain_graph=True)
    with pytest.raises(gg.GraphError, match="bad_rule: the gradient rule for x returned list, not a Tensor"):
        y.backward(create_graph=True)


def test_a_function_backward_runs_on_tensors_at_first_order(device):
    """The engine runs built-in rules on the op namespace's array forwards at first order; a
    gg.Function's backward is user code and keeps the public behaviour: Tensors in, and gg ops
    on arrays return Tensors."""
    seen = []

    class Twice(gg.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            seen.append((type(g), type(gg.exp(ctx.xp.zeros(2)))))
            return g * 2

    x = leaf([1.0, 2.0], device)
    with gg.autograd.record():
        y = gg.tanh(Twice.apply(x)).sum()
    y.backward()
    assert seen == [(gg.Tensor, gg.Tensor)]
    np.testing.assert_allclose(host(x.grad), 2 * (1 - np.tanh([2.0, 4.0]) ** 2), rtol=1e-12)
    assert isinstance(gg.exp(np.zeros(2)), gg.Tensor)  # nothing of the backward's mode is left


def test_setitem_on_a_recorded_tensor_is_refused(device):
    x = leaf([1.0, 2.0], device)
    with gg.autograd.record():
        y = x * 2
    with pytest.raises(gg.GraphError, match="in-place"):
        y[0] = 5
    z = gg.zeros(3, device=device)
    z[1] = 7
    assert host(z).tolist() == [0, 7, 0]


# ---------------------------------------------------------------- engine scale and memory


def test_a_10000_node_chain_differentiates(device):
    x = leaf([1.0], device)
    with gg.autograd.record():
        y = x
        for _ in range(10_000):
            y = y * 1.0001
    y.backward()
    np.testing.assert_allclose(host(x.grad), [1.0001 ** 10_000], rtol=1e-9)
    del y
    gc.collect()


def _live_graph_objects():
    gc.collect()
    return sum(type(o) is gg.Tensor or type(o) is autograd.Node for o in gc.get_objects())


def test_no_leak_over_1000_record_backward_iterations():
    rng = np.random.default_rng(0)
    w = gg.tensor(rng.standard_normal((32, 16)), requires_grad=True)
    x = gg.tensor(rng.standard_normal((8, 32)))

    def step():
        with gg.autograd.record():
            loss = (gg.tanh(x @ w) ** 2).mean() + gg.relu(w).sum()
        loss.backward()

    for _ in range(20):  # warm up caches
        step()
    tracemalloc.start()
    try:
        objects = _live_graph_objects()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(1000):
            step()
        gc.collect()
        after_objects = _live_graph_objects()
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)])
        array_bytes = sum(s.size for s in snapshot.statistics("filename"))
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after_objects <= objects, f"live tensors/nodes grew from {objects} to {after_objects}"
    assert array_bytes <= 3 * w.data.nbytes, f"{array_bytes} bytes of arrays are still alive"
    assert after - before < 64 * 1024, f"traced memory grew by {after - before} bytes"


def test_the_graph_dies_with_its_output():
    import weakref

    x = leaf(np.ones(1000))
    with gg.autograd.record():
        y = gg.exp(x) * 2
    node = weakref.ref(y._node)
    del y
    assert node() is None  # no reference cycles keep it alive until a gc pass


def test_autograd_grad_leaves_the_graph_beyond_its_variables_alone():
    x = leaf([1.0, 2.0])
    with gg.autograd.record():
        h = gg.exp(x)
        y = (h * h).sum()
    (gh,) = gg.autograd.grad(y, [h])
    np.testing.assert_allclose(host(gh), 2 * np.exp([1.0, 2.0]))
    assert not h._node.freed  # exp is upstream of the variable: untouched
    h.backward()
    np.testing.assert_allclose(host(x.grad), np.exp([1.0, 2.0]))


def test_in_place_accumulation_never_touches_shared_arrays():
    """Gradients are summed in place only into arrays the engine alone holds."""
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    with gg.autograd.record():
        s = a + b          # add passes the same gradient to both inputs
        y = (s + a + b * 2 + a * b).sum()
    y.backward()
    np.testing.assert_array_equal(host(a.grad), [2 + 3, 2 + 4])
    np.testing.assert_array_equal(host(b.grad), [3 + 1, 3 + 2])
    a.grad.data[0] = 100.0  # the two gradients are separate arrays
    assert host(b.grad)[0] == 4

    class ReturnsSaved(gg.Function):  # a backward that hands back an array it saved
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * 1

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return x

    w = leaf([5.0, 6.0])
    with gg.autograd.record():
        z = (ReturnsSaved.apply(w) + ReturnsSaved.apply(w) + w * w).sum()
    z.backward()
    np.testing.assert_array_equal(host(w), [5, 6])  # the saved input is untouched
    np.testing.assert_array_equal(host(w.grad), [5 + 5 + 10, 6 + 6 + 12])


# ---------------------------------------------------------------------------- in-place changes


def _recorded_product():
    w = leaf([1.0, 2.0, 3.0])
    x = gg.tensor([1.0, 1.0, 1.0], dtype="float64")
    with gg.autograd.record():
        y = (w * x * w).sum()  # saves w and x: the gradient 2 w x depends on both
    return w, x, y


@pytest.mark.parametrize("change", [
    lambda w, x: w.__setitem__(0, 10.0),            # the parameter, by item assignment
    lambda w, x: x.__setitem__(slice(0, 2), 5.0),   # a constant input
    lambda w, x: w.detach().__setitem__(1, 7.0),    # through another tensor on the same memory
    lambda w, x: x[0:2].__setitem__(0, 3.0),        # through a view (basic slicing shares memory)
])
def test_a_saved_array_changed_in_place_before_backward_is_refused(change):
    w, x, y = _recorded_product()
    change(w, x)
    with pytest.raises(gg.GraphError, match=r"backward: input (a|b) of 'multiply', saved for "
                                            r"its gradient, was changed in place"):
        y.backward()


def test_an_optimizer_step_between_two_backwards_is_refused():
    from gpugrad import optim

    w, x, y = _recorded_product()
    y.backward(retain_graph=True)
    np.testing.assert_array_equal(w.grad.numpy(), [2, 4, 6])
    optim.SGD([w], lr=0.1).step()
    with pytest.raises(gg.GraphError, match="changed in place"):
        y.backward()


def test_load_state_dict_between_forward_and_backward_is_refused():
    model = gg.nn.Sequential(gg.nn.Linear(3, 4), gg.nn.Tanh(), gg.nn.Linear(4, 2))
    state = {k: v.numpy() * 2 for k, v in model.state_dict().items()}
    with gg.autograd.record():
        y = model(gg.ones((4, 3))).sum()  # the second layer's weight is saved for dx
    model.load_state_dict(state)
    with pytest.raises(gg.GraphError, match="input w of 'linear'"):
        y.backward()


def test_changes_that_cannot_affect_the_gradient_are_allowed():
    w, x, y = _recorded_product()
    other = gg.zeros(3)
    other[0] = 1.0  # an unrelated tensor
    y.backward()
    np.testing.assert_array_equal(w.grad.numpy(), [2, 4, 6])
    w[0] = 5.0  # after backward
    x[0] = 2.0  # before the next recording
    with gg.autograd.record():
        z = (w * x).sum()
    w[1] = 9.0  # not saved: d(w x)/dw = x does not depend on w
    z.backward()
    np.testing.assert_array_equal(w.grad.numpy(), [2, 1, 1])


def test_parameters_take_applys_one_pass_over_the_inputs(device, monkeypatch):
    """A Parameter (a Tensor subclass) is read like a Tensor in apply's fast pass; the general
    coercion never runs, and the gradients reach the Parameter and the plain tensor alike."""
    from gpugrad.ops import applying

    def not_here(op, inputs):
        raise AssertionError(f"{op.name}: Parameters and Tensors went the general way")

    w = gg.nn.Parameter(np.array([1.0, -2.0, 3.0]), dtype="float64", device=device)
    x = leaf([0.5, 4.0, -1.5], device)
    monkeypatch.setattr(applying, "_other_inputs", not_here)
    with gg.autograd.record():
        y = (gg.tanh(w) * x + w * 2.0).sum()
    y.backward()
    wv, xv = np.array([1.0, -2.0, 3.0]), np.array([0.5, 4.0, -1.5])
    np.testing.assert_allclose(host(w.grad), (1 - np.tanh(wv) ** 2) * xv + 2.0, rtol=1e-12)
    np.testing.assert_allclose(host(x.grad), np.tanh(wv), rtol=1e-12)
