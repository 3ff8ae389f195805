"""gg.cuda.graph: a training step captured once and replayed.

The tests taking the `device` fixture run on the default device: on the CPU they check the
contract (static arguments, no host reads or random numbers, baked settings), which a graphed
step keeps on every device; run with GPUGRAD_DEVICE=cuda they capture real CUDA graphs. The
cuda-marked tests capture on a GPU whatever the default device is.
"""

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import nn
from gpugrad import optim
from gpugrad.nn import functional as F
from conftest import host


def _model_and_step(device, optimizer="sgd", seed=0, clip=None):
    gg.seed(seed)
    model = nn.MLP([6, 16, 3], device=device, dtype="float64")
    params = model.parameters()
    opt = (optim.SGD(params, lr=0.1, momentum=0.9) if optimizer == "sgd"
           else optim.Adam(params, lr=0.01))

    def step(x, y):
        with gg.autograd.record():
            loss = F.cross_entropy(model(x), y) + 1e-3 * F.l2_penalty(params)
        loss.backward()
        norm = nn.utils.clip_grad_norm(params, clip) if clip else None
        opt.step()
        return loss if norm is None else (loss, norm)

    return model, opt, step


def _twin_steps(device, sizes, dtype, make_optimizer, scales):
    """Two equal (model, step) pairs, one to run eagerly and one to graph: each step runs a
    backward of scale * cross-entropy per scale, then the optimizer."""
    twins = []
    for _ in range(2):
        gg.seed(0)
        model = nn.MLP(sizes, device=device, dtype=dtype)
        opt = make_optimizer(model.parameters())

        def step(x, y, model=model, opt=opt):
            for scale in scales:
                with gg.autograd.record():
                    loss = scale * F.cross_entropy(model(x), y)
                loss.backward()
            opt.step()
            return loss
        twins.append((model, step))
    return twins


def _batches(n, batch=5, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((batch, 6)), rng.integers(0, 3, batch)) for _ in range(n)]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_graphed_steps_equal_eager_steps(device, optimizer):
    model_a, _, eager = _model_and_step(device, optimizer)
    model_b, _, step = _model_and_step(device, optimizer)
    graphed = gg.cuda.graph(step)
    for x, y in _batches(4):
        xa = gg.tensor(x, device=device)
        want = eager(xa, y)
        got = graphed(xa, y)
        np.testing.assert_allclose(host(got), host(want), rtol=1e-12, atol=1e-14)
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        np.testing.assert_allclose(host(pb), host(pa), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(host(pb.grad), host(pa.grad), rtol=1e-12, atol=1e-14)
    assert graphed.captured == device.startswith("cuda")
    assert graphed.replays == (3 if graphed.captured else 0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("make_optimizer", [
    lambda ps: optim.SGD(ps, lr=0.1, weight_decay=1e-2),                # one fused update kernel
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-2),  # with velocity
    lambda ps: optim.Adam(ps, lr=0.01, weight_decay=1e-2),
], ids=["sgd", "sgd-momentum", "adam"])
def test_deep_graphed_steps_with_weight_decay_equal_eager_in_both_dtypes(device, dtype,
                                                                        make_optimizer):
    """The deep MLP (three relu layers, fused cross-entropy), weight decay in the update, and
    then prediction alone (a forward under no_grad) graphed too."""
    (model_a, eager), (model_b, step) = _twin_steps(device, [6, 16, 16, 16, 3], dtype,
                                                    make_optimizer, scales=(1.0,))
    graphed = gg.cuda.graph(step)
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-14}
    for x, y in _batches(3):
        xa = gg.tensor(x, dtype=dtype, device=device)
        np.testing.assert_allclose(host(graphed(xa, y)), host(eager(xa, y)), **tol)
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        np.testing.assert_allclose(host(pb), host(pa), **tol)

    def predict(x):
        with gg.no_grad():
            return model_b(x)
    predict_graphed = gg.cuda.graph(predict)
    for x, _ in _batches(2, seed=1):
        xb = gg.tensor(x, dtype=dtype, device=device)
        np.testing.assert_allclose(host(predict_graphed(xb)), host(predict(xb)), **tol)


def test_gradients_stay_in_their_tensors(device):
    """Each p.grad stays the same Tensor and holds the latest call's gradient; once captured,
    its array is the graph's, written in place by every replay (no copy node in the graph)."""
    model_a, _, eager = _model_and_step(device)
    model_b, _, step = _model_and_step(device)
    graphed = gg.cuda.graph(step)
    first = arrays = None
    for x, y in _batches(3):
        eager(gg.tensor(x, device=device), y)
        graphed(gg.tensor(x, device=device), y)
        grads = [p.grad for p in model_b.parameters()]
        first = first or grads
        assert all(g is f for g, f in zip(grads, first))
        for pa, pb in zip(model_a.parameters(), model_b.parameters()):
            np.testing.assert_allclose(host(pb.grad), host(pa.grad), rtol=1e-12, atol=1e-14)
        if graphed.replays:
            arrays = arrays or [g.data for g in grads]
            assert all(g.data is a for g, a in zip(grads, arrays))
    assert (arrays is not None) == graphed.captured


def test_a_step_with_two_backwards_keeps_the_last_gradient_from_the_first_call_on(device):
    """Each backward swaps a new array into p.grad; after a CUDA capture each .grad is filled
    from the eager step's array, not from the capture's first (still empty) one."""
    # the second backward's gradient is the one kept
    (model_a, eager), (model_b, step) = _twin_steps(
        device, [6, 16, 3], "float64", lambda ps: optim.SGD(ps, lr=0.1), scales=(2.0, 1.0))
    graphed = gg.cuda.graph(step)
    for x, y in _batches(3):
        eager(gg.tensor(x, device=device), y)
        graphed(gg.tensor(x, device=device), y)
        for pa, pb in zip(model_a.parameters(), model_b.parameters()):
            np.testing.assert_allclose(host(pb.grad), host(pa.grad), rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(host(pb), host(pa), rtol=1e-12, atol=1e-14)


def test_only_the_first_swap_of_a_gradient_in_a_capture_is_noted():
    from gpugrad.devices import capture

    t, first, later = gg.tensor([1.0]), np.array([2.0]), np.array([3.0])
    noted = {}
    with capture.graph_step(capturing=True, swapped=noted):
        capture.swapped_in(t, first)
        capture.swapped_in(t, later)
    assert list(noted.values()) == [(t, first)]
    capture.swapped_in(t, later)  # outside a capture: nothing to note, nothing fails


def test_the_nodes_of_a_captured_step(device):
    """What one replay launches, read from the captured graph: kernels, and no copies (the
    gradients are the graph's own arrays). Before a capture, and where nothing is captured,
    the error says why."""
    _, _, step = _model_and_step(device)
    graphed = gg.cuda.graph(step)
    with pytest.raises(gg.cuda.GraphStepError, match=r"call the step once"):
        graphed.nodes()
    x, y = _batches(1)[0]
    graphed(gg.tensor(x, device=device), y)
    if not graphed.captured:
        with pytest.raises(gg.cuda.GraphStepError, match=r"runs eagerly; only CUDA captures"):
            graphed.nodes()
        return
    nodes = graphed.nodes()
    assert nodes.get("kernel", 0) >= 10 and "memcpy" not in nodes, nodes


def test_clip_grad_norm_inside_a_graphed_step_clips_on_the_device(device):
    model_a, _, eager = _model_and_step(device, clip=0.05)
    model_b, _, step = _model_and_step(device, clip=0.05)
    graphed = gg.cuda.graph(step)
    for x, y in _batches(3):
        _, want = eager(gg.tensor(x, device=device), y)
        _, got = graphed(gg.tensor(x, device=device), y)
        assert isinstance(want, float) and isinstance(got, gg.Tensor) and got.shape == ()
        assert want > 0.05  # the clip was active
        np.testing.assert_allclose(got.item(), want, rtol=1e-12)
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        np.testing.assert_allclose(host(pb), host(pa), rtol=1e-12, atol=1e-14)


def test_arguments_are_copied_into_the_captured_buffers(device):
    seen = []

    def step(x):
        seen.append(x)
        return x * 2

    graphed = gg.cuda.graph(step)
    a = gg.tensor([1.0, 2.0], device=device)
    np.testing.assert_array_equal(host(graphed(a)), [2, 4])
    assert seen[0] is not a  # a buffer of the graph's own, not the caller's tensor
    a.data[...] = 0  # changing the caller's tensor does not reach the graph's copy
    np.testing.assert_array_equal(host(graphed(gg.tensor([3.0, 4.0], device=device))), [6, 8])


def test_argument_shapes_dtypes_and_values_are_fixed(device):
    graphed = gg.cuda.graph(lambda x, scale: x * scale)
    graphed(gg.zeros((2, 3), device=device), 2.0)
    with pytest.raises(gg.ShapeError, match=r"argument 0 has shape \(4, 3\) but the step was "
                                            r"captured for \(2, 3\)"):
        graphed(gg.zeros((4, 3), device=device), 2.0)
    with pytest.raises(TypeError, match="argument 0 has dtype float64 but the step was captured "
                                        "for float32"):
        graphed(gg.zeros((2, 3), dtype="float64", device=device), 2.0)
    with pytest.raises(gg.cuda.GraphStepError, match="argument 1 is 3.0 but the step was "
                                                     "captured with 2.0"):
        graphed(gg.zeros((2, 3), device=device), 3.0)
    with pytest.raises(gg.cuda.GraphStepError, match=r"called with arguments \['0'\] but "
                                                     r"captured with \['0', '1'\]"):
        graphed(gg.zeros((2, 3), device=device))
    with pytest.raises(TypeError, match="argument 0 was a Tensor at capture, now a list"):
        graphed([[0.0] * 3] * 2, 2.0)


def test_parameters_are_not_arguments(device):
    w = gg.ones(3, device=device)
    w.attach_grad()
    with pytest.raises(ValueError, match="argument 0 has a gradient attached"):
        gg.cuda.graph(lambda w: w * 2)(w)
    with pytest.raises(TypeError, match="argument 0 is a list holding arrays"):
        gg.cuda.graph(lambda xs: xs[0])([gg.ones(2, device=device)])


@pytest.mark.parametrize("read", [
    ("item()", lambda t: t.sum().item()),
    (r"numpy\(\)", lambda t: t.numpy()),
    (r"bool\(tensor\)", lambda t: bool(t.sum() > 0)),
    (r"item\(\)", lambda t: float(t.sum())),
    (r"any\(\)", lambda t: t.any()),
])
def test_host_reads_inside_a_step_fail_on_every_device(device, read):
    what, fn = read
    graphed = gg.cuda.graph(fn)
    with pytest.raises(gg.cuda.GraphStepError, match=f"reading a tensor's values on the host "
                                                     f"\\({what}"):
        graphed(gg.ones(3, device=device))
    # outside a graphed step the same reads work
    fn(gg.ones(3, device=device))


def test_printing_a_tensor_inside_a_step_does_not_read_it(device):
    shown = []
    graphed = gg.cuda.graph(lambda t: shown.append(repr(t)))
    graphed(gg.ones(3, device=device))
    # a captured step's Python runs twice on the first call: the eager pass, then the capture
    assert shown == [f"tensor(<values unreadable inside a graphed step>, shape=(3,), "
                     f"dtype=float32, device='{device}')"] * (2 if graphed.captured else 1)


def test_random_numbers_inside_a_step_fail(device):
    with pytest.raises(gg.cuda.GraphStepError, match="random numbers inside a graphed step"):
        gg.cuda.graph(lambda x: x + gg.rand(3, device=device))(gg.ones(3, device=device))

    def with_dropout(x):
        with gg.autograd.record():
            return F.dropout(x, 0.5)

    with pytest.raises(gg.cuda.GraphStepError, match="pass them in as an argument"):
        gg.cuda.graph(with_dropout)(gg.ones(3, device=device))


def test_a_changed_learning_rate_needs_a_recapture(device):
    model_a, opt_a, eager = _model_and_step(device)
    model_b, opt_b, step = _model_and_step(device)
    graphed = gg.cuda.graph(step)
    (x0, y0), (x1, y1) = _batches(2)
    eager(gg.tensor(x0, device=device), y0)
    graphed(gg.tensor(x0, device=device), y0)
    opt_a.lr = opt_b.lr = 0.05
    with pytest.raises(gg.cuda.GraphStepError, match=r"SGD.lr changed from 0.1 to 0.05 since "
                                                     r"the step was captured.*\.recapture\(\)"):
        graphed(gg.tensor(x1, device=device), y1)
    graphed.recapture()
    assert not graphed.captured
    eager(gg.tensor(x1, device=device), y1)
    graphed(gg.tensor(x1, device=device), y1)
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        np.testing.assert_allclose(host(pb), host(pa), rtol=1e-12, atol=1e-14)


def test_a_failed_first_call_starts_over(device):
    calls = []

    def step(x):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return x + 1

    graphed = gg.cuda.graph(step)
    with pytest.raises(RuntimeError, match="boom"):
        graphed(gg.ones(2, device=device))
    # the failed call left nothing behind: another shape is a new first call
    np.testing.assert_array_equal(host(graphed(gg.ones(3, device=device))), [2, 2, 2])


def test_graph_needs_a_callable():
    with pytest.raises(TypeError, match="needs a callable step"):
        gg.cuda.graph(3)


# ---------------------------------------------------------------------------- on a GPU


@pytest.mark.cuda
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_cuda_graph_replays_equal_eager_steps(optimizer):
    test_graphed_steps_equal_eager_steps("cuda:0", optimizer)


@pytest.mark.cuda
def test_cuda_graph_outputs_are_the_same_tensors_on_every_replay():
    _, _, step = _model_and_step("cuda:0")
    graphed = gg.cuda.graph(step)
    batches = _batches(3)
    first = graphed(gg.tensor(batches[0][0], device="cuda"), batches[0][1])
    second = graphed(gg.tensor(batches[1][0], device="cuda"), batches[1][1])
    third = graphed(gg.tensor(batches[2][0], device="cuda"), batches[2][1])
    assert graphed.captured and second is third and first is not second


@pytest.mark.cuda
def test_cuda_graph_labels_out_of_range_give_nan_on_replay():
    """Inside a capture the labels cannot be checked on the host: a bad label makes the loss
    NaN (fused and unfused), never a silently wrong number."""
    for fused in (True, False):
        with gg.fused(fused):
            _, _, step = _model_and_step("cuda:0")
            graphed = gg.cuda.graph(step)
            x, y = _batches(1)[0]
            graphed(gg.tensor(x, device="cuda"), y)
            bad = y.copy()
            bad[0] = 7
            assert np.isnan(graphed(gg.tensor(x, device="cuda"), bad).item())


@pytest.mark.cuda
def test_cuda_graph_capture_of_a_synchronizing_step_fails_clearly():
    def step(x):
        return x.data.sum().get()  # a raw CuPy host read, which the capture cannot hold

    with pytest.raises(gg.cuda.GraphStepError, match="capturing the step failed"):
        gg.cuda.graph(step)(gg.ones(3, device="cuda"))


def test_inside_a_capture_bad_labels_and_indices_become_nan_not_errors():
    """What the code does while a CUDA stream captures (it cannot read labels or indices on the
    host), run here on NumPy: the unfused loss and Embedding mark bad rows with NaN."""
    from gpugrad import devices

    logits = gg.tensor(np.zeros((3, 4)), dtype="float64")
    logits.attach_grad()
    emb = nn.Embedding(5, 2)
    # on the device before the capture: a capture cannot copy host data
    labels, indices = gg.tensor(np.array([0, 9, -1])), gg.tensor(np.array([1, 5]))
    with devices.graph_step(capturing=True):
        with gg.autograd.record():
            loss = F.cross_entropy(logits, labels, reduction="none")
        loss.backward()
        rows = emb(indices)
    np.testing.assert_array_equal(np.isnan(host(loss)), [False, True, True])
    np.testing.assert_allclose(host(loss)[0], np.log(4))
    np.testing.assert_array_equal(np.isnan(host(logits.grad)).all(axis=1), [False, True, True])
    np.testing.assert_array_equal(host(rows)[0], host(emb.weight)[1])
    assert np.isnan(host(rows)[1]).all()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        F.cross_entropy(logits, np.array([0, 9, -1]))  # outside a capture: checked


def test_inside_a_graphed_step_device_indices_are_refused_and_host_indices_checked():
    """CuPy wraps an index out of range around, and a graphed step cannot read device indices
    to check them: indexing with them is refused there; host indices are checked as always
    (while the step runs eagerly; a capture refuses copying them to the device)."""
    from gpugrad import devices

    x = gg.tensor(np.arange(6.0).reshape(2, 3))
    for mode in (False, True):
        with devices.graph_step(capturing=mode):
            with pytest.raises(gg.cuda.GraphStepError, match="indexing with a device tensor of indices"):
                x[:, gg.tensor(np.array([0, 2]))]
            with pytest.raises(gg.cuda.GraphStepError, match="take with a device tensor of indices"):
                gg.take(x, gg.tensor(np.array([1])), axis=0)
            if not mode:  # a capture cannot copy host indices to the device at all
                picked = x[:, [0, 2]]
                with pytest.raises(IndexError, match="index 3 is out of bounds for axis 1 with size 3"):
                    x[:, [0, 3]]
    np.testing.assert_array_equal(host(picked), [[0, 2], [3, 5]])


@pytest.mark.cuda
def test_cuda_graph_memory_outlives_a_dropped_graph():
    """Gradients and optimizer state allocated in a graph's pool stay valid after the graph is
    recaptured or collected (the pool is retired, not freed under them)."""
    import gc

    model, _, step = _model_and_step("cuda:0")
    graphed = gg.cuda.graph(step)
    for x, y in _batches(2):
        graphed(gg.tensor(x, device="cuda"), y)
    grads = [host(p.grad) for p in model.parameters()]
    graphed.recapture()
    del graphed
    gc.collect()
    gg.zeros((1 << 20,), device="cuda").data.fill(7)  # reuse of freed memory would show here
    for p, g in zip(model.parameters(), grads):
        np.testing.assert_array_equal(host(p.grad), g)
