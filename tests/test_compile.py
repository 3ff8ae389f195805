"""gg.compile: a step recorded once and replayed, under gg.cuda.graph's contract.

On the CPU the second call records the step's NumPy calls and later calls replay them: the
same calls on the same memory, so every replay equals the eager step bit for bit. On the strict
device the step runs eagerly under capture's rules; on CUDA it is a CUDA graph.
"""

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import nn
from gpugrad import optim
from gpugrad.nn import functional as F
from gpugrad.devices import tape_plan
from conftest import host

# the plan's passes run where reference counts tell which arrays the program owns
PLANNED = pytest.mark.skipif(not tape_plan._COUNTS_REFERENCES,
                             reason="a free-threaded Python: the program replays as recorded")

OPTIMIZERS = {
    "sgd": lambda ps: optim.SGD(ps, lr=0.05),
    "sgd-momentum": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-2),
    "adam": lambda ps: optim.Adam(ps, lr=0.01, weight_decay=1e-2),
}


def _records(device):
    return gg.devices.get(device).xp is np


def _twins(device, sizes, optimizer="sgd", dtype="float32", lam=1e-3, clip=None):
    """Two equal (parameters, optimizer, step) triples: one to run eagerly, one to compile. The
    step is section 4.7's: cross-entropy + lam * L2 penalty, backward, update."""
    out = []
    for _ in range(2):
        gg.seed(0)
        model = nn.MLP(sizes, bias=False, device=device, dtype=dtype)
        params = model.parameters()
        opt = OPTIMIZERS[optimizer](params)

        def step(x, y, model=model, params=params, opt=opt):
            with gg.autograd.record():
                loss = F.cross_entropy(model(x), y) + lam * F.l2_penalty(params)
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm(params, clip)
            opt.step()
            return loss
        out.append((params, opt, step))
    return out


def _batches(n, batch, features, classes, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((batch, features)).astype(dtype),
             rng.integers(0, classes, batch)) for _ in range(n)]


def _bits(t):
    return host(t).tobytes()


def _same(got, want, device):
    """Bit for bit where the step records (the same NumPy calls); elsewhere (the capture's
    matmul and label guards on strict and CUDA) to rounding."""
    if _records(device):
        assert _bits(got) == _bits(want)
    else:
        tol = 1e-5 if host(want).dtype == np.float32 else 1e-12
        np.testing.assert_allclose(host(got), host(want), rtol=tol, atol=tol)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("sizes", [[784, 256, 10], [784, 1024, 1024, 1024, 10]],
                         ids=["4.7", "deep"])
def test_compiled_steps_equal_eager_steps_bit_for_bit(device, sizes, optimizer):
    # where the step is not recorded (a capture's own matmul), float64 keeps Adam's division
    # by the root of tiny second moments from magnifying rounding past any tolerance
    dtype = "float32" if _records(device) else "float64"
    (p_eager, _, eager), (p_compiled, _, step) = _twins(device, sizes, optimizer, dtype)
    compiled = gg.compile(step)
    for x, y in _batches(4, 32, sizes[0], sizes[-1], dtype):
        want = eager(gg.tensor(x, device=device), gg.tensor(y, device=device))
        got = compiled(gg.tensor(x, device=device), gg.tensor(y, device=device))
        _same(got, want, device)
        for a, b in zip(p_eager, p_compiled):
            _same(b, a, device)
            _same(b.grad, a.grad, device)
    assert compiled.recorded == _records(device)
    assert compiled.replays == (2 if _records(device) or compiled.captured else 0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_host_arrays_as_arguments_clipping_and_both_dtypes(device, dtype):
    """Data given as host arrays (copied into the step's buffers), clip_grad_norm inside the
    step (its scale computed on the device), momentum with weight decay."""
    (p_eager, _, eager), (p_compiled, _, step) = _twins(device, [12, 9, 5, 4], "sgd-momentum",
                                                        dtype, clip=0.5)
    compiled = gg.compile(step, device=device)
    for x, y in _batches(5, 7, 12, 4, dtype):
        want = eager(gg.tensor(x, device=device), y)
        _same(compiled(x, y), want, device)
    for a, b in zip(p_eager, p_compiled):
        _same(b, a, device)


def test_outputs_gradients_and_state_stay_the_same_objects(device):
    """A replay returns the objects the recording returned, its values overwritten; each
    p.grad and the optimizer's buffers stay the arrays they were, written in place; nothing the
    recording saw through its faces is left behind."""
    (p_eager, opt_eager, eager), (params, opt, step) = _twins(device, [6, 8, 3], "adam")
    compiled = gg.compile(step)
    outs, grads = [], []
    for x, y in _batches(4, 5, 6, 3):
        want = eager(gg.tensor(x, device=device), y)
        outs.append(compiled(gg.tensor(x, device=device), y))
        grads.append([p.grad.data for p in params])
        _same(outs[-1], want, device)
    if _records(device):
        assert outs[1] is outs[2] is outs[3]
        assert all(a is b for a, b in zip(grads[1], grads[3]))
        for t in [outs[1], *params, *(p.grad for p in params)]:
            assert type(t.data) is np.ndarray
        for st in opt.state:
            assert all(type(a) is np.ndarray for a in st.values())
    for sa, sb in zip(opt_eager.state, opt.state):
        for k in sa:  # Adam's step count advanced too
            _same(sb[k], sa[k], device)


def test_replays_run_no_python_of_the_step(device):
    ran = []

    def step(x):
        ran.append(1)
        return (x * 2).sum()

    compiled = gg.compile(step)
    for v in range(4):
        assert host(compiled(gg.full((3,), float(v), device=device))) == 6 * v
    assert len(ran) == (2 if _records(device) or compiled.captured else 4)
    if _records(device):
        assert compiled.calls == 2  # the product and the sum: nothing else replays


def test_values_of_arguments_are_fixed_and_shapes_too_where_nothing_records(device):
    compiled = gg.compile(lambda x, scale: x * scale)
    compiled(gg.ones((2, 3), device=device), 2.0)
    compiled(gg.ones((2, 3), device=device), 2.0)
    if not _records(device):  # a CUDA graph's shapes are fixed; the CPU records again
        with pytest.raises(gg.ShapeError, match=r"shape \(4, 3\) but the step was captured "
                                                r"for \(2, 3\)"):
            compiled(gg.ones((4, 3), device=device), 2.0)
        with pytest.raises(TypeError, match="dtype float64"):
            compiled(gg.ones((2, 3), dtype="float64", device=device), 2.0)
    with pytest.raises(gg.cuda.GraphStepError, match="is 3.0 but the step was captured with 2.0"):
        compiled(gg.ones((2, 3), device=device), 3.0)
    assert host(compiled(gg.full((2, 3), 5.0, device=device), 2.0)).tolist() == [[10.0] * 3] * 2


def test_new_shapes_and_dtypes_record_again_and_each_recording_is_kept():
    """Batches of several sizes (and a dtype) through one compiled training step: each new
    shape records the step once (a real step), later calls replay the recording for their
    shapes, with p.grad holding the latest call's gradient; every step equals the eager one bit
    for bit. Beyond KEPT recordings the oldest is dropped and recorded again when needed."""
    (p_eager, _, eager), (params, _, step) = _twins("cpu", [12, 9, 5, 4], "adam")
    ran = []

    def counted(x, y):
        ran.append(x.shape[0])
        return step(x, y)

    compiled = gg.compile(counted, device="cpu")
    compiled.KEPT = 3
    rng = np.random.default_rng(1)
    sizes = [5, 5, 7, 5, 7, 3, 3, 2, 5, 7, 5]
    for i, n in enumerate(sizes):
        dtype = "float64" if n == 2 else "float32"
        x, y = rng.standard_normal((n, 12)).astype(dtype), rng.integers(0, 4, n)
        want = eager(gg.tensor(x, device="cpu"), y)
        _same(compiled(x, y), want, "cpu")
        for a, b in zip(p_eager, params):
            _same(b, a, "cpu")
            _same(b.grad, a.grad, "cpu")
    # the eager first call, then one recording per new shape and per shape dropped and needed
    # again (KEPT = 3: 5 is dropped when 2 comes, 7 when 5 comes back)
    assert ran == [5, 5, 7, 3, 2, 5, 7]
    assert compiled.replays == len(sizes) - len(ran)


def _buffers(program):
    """The distinct memory (root arrays) a replay's calls touch."""
    from gpugrad.devices import tape_plan
    return {id(tape_plan._root(a)) for entry in program for a in tape_plan.arrays_in(entry)}


@PLANNED
def test_calls_whose_results_nothing_reads_are_dropped_and_what_the_step_keeps_is_not():
    """A replay runs no call whose result nothing reads; a result the step stored (whole or
    a view of it) is another matter: it is written on every replay, as eagerly."""
    stored = []

    def step(x):
        gg.exp(x * 3)  # read by nothing: dropped
        kept = x + 1
        stored.append((kept, kept[1:]))  # the step keeps it and a view of it: both written
        return (x * 2).sum()

    compiled = gg.compile(step, device="cpu")
    for v in range(4):
        x = gg.full((3,), float(v), device="cpu")
        assert host(compiled(x)) == 6 * v
        kept, first = stored[-1]
        assert host(kept).tolist() == [v + 1.0] * 3 and host(first).tolist() == [v + 1.0] * 2
    assert compiled.calls == 3 and len(stored) == 2  # x + 1, x * 2 and the sum


@PLANNED
def test_a_call_repeated_on_unchanged_arrays_runs_once():
    """The same call on the same arrays, with nothing written to them between, runs once and
    its result is read twice; after an in-place write, or with another constant (-0.0 is not
    0.0), it runs again."""
    def step(x):
        y = x * 2
        a = gg.exp(y) + gg.exp(y)  # once: exp(y) twice, unchanged
        y.data += 1  # written in place: exp(y) below is another value
        b = gg.exp(y) + 0.5
        zeros = x * 0.0 + x * -0.0  # two constants: two calls
        return a, b, zeros

    compiled = gg.compile(step, device="cpu")
    rng = np.random.default_rng(0)
    for _ in range(4):
        x = rng.standard_normal(5).astype(np.float32)
        want = step(gg.tensor(x, device="cpu"))
        got = compiled(gg.tensor(x, device="cpu"))
        assert all(_bits(g) == _bits(w) for g, w in zip(got, want))
    # x * 2, exp(y), the sum, y += 1, exp(y), + 0.5, x * 0.0, x * -0.0 and their sum
    assert compiled.calls == 9


@PLANNED
def test_intermediates_share_buffers_only_where_their_lives_do_not_overlap():
    """Arrays of one shape die one after another along a chain and may share a buffer; one read
    at the end (`a`), one returned (`out`) and one stored in a view (`seen`) must keep theirs.
    Every replay equals the eager step bit for bit, and the program touches fewer buffers than
    it has results."""
    seen = []

    def step(x):
        a = x * 2  # read again at the very end
        b = gg.exp(((a + 1) * 3 - 1) * 0.5)  # a chain: each link dead once the next is made
        c = gg.tanh(b * 1.5 + 2)
        seen.append(c[1:])
        out = c * 0.25  # returned
        return (out + a).sum(), out

    compiled = gg.compile(step, device="cpu")
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.standard_normal((4, 6)).astype(np.float32)
        want_sum, want_out = step(gg.tensor(x, device="cpu"))
        want_seen = host(seen.pop())
        got_sum, got_out = compiled(gg.tensor(x, device="cpu"))
        assert _bits(got_sum) == _bits(want_sum) and _bits(got_out) == _bits(want_out)
        # the view the recording stored, rewritten by every replay
        assert host(seen[-1]).tobytes() == want_seen.tobytes()
    assert len(seen) == 2
    results = [entry for entry in compiled._program if "out" in entry[2]]
    assert len(_buffers(compiled._program)) < len(results)


@pytest.mark.parametrize("read", [
    (r"item\(\)", lambda loss: float(loss)),
    (r"numpy\(\)", lambda loss: print(loss.numpy())),
    (r"bool\(tensor\)", lambda loss: bool(loss > 0)),
])
def test_host_reads_inside_the_step_are_refused_by_name(device, read):
    what, fn = read
    (_, _, step), _ = _twins(device, [6, 8, 3])

    def reading(x, y):
        loss = step(x, y)
        fn(loss)
        return loss

    compiled = gg.compile(reading)
    x, y = _batches(1, 5, 6, 3)[0]
    with pytest.raises(gg.cuda.GraphStepError, match=f"on the host \\({what}"):
        compiled(gg.tensor(x, device=device), y)


def test_a_host_read_of_raw_arrays_is_refused_when_the_step_records():
    """A data-dependent branch on a parameter's array: NumPy reads it on the first (eager)
    call, but a recording cannot replay a branch; refused by name, and the next call starts
    over with NumPy and Tensor.data as they were."""
    (params, _, step), _ = _twins("cpu", [6, 8, 3])

    def branching(x, y):
        loss = step(x, y)
        if (params[0].data > 0).any():
            return loss * 1
        return loss

    compiled = gg.compile(branching, device="cpu")
    x, y = _batches(1, 5, 6, 3)[0]
    compiled(gg.tensor(x, device="cpu"), y)
    with pytest.raises(gg.cuda.GraphStepError, match=r"on the host \(__bool__\) inside a "
                                                     r"compiled step \(gg.compile\)"):
        compiled(gg.tensor(x, device="cpu"), y)
    assert not compiled.recorded and type(params[0].data) is np.ndarray
    assert type(np.zeros(2)) is np.ndarray and type(gg.ones(2, device="cpu").data) is np.ndarray


def test_random_numbers_inside_the_step_are_refused(device):
    with pytest.raises(gg.cuda.GraphStepError, match="random numbers inside a graphed step"):
        gg.compile(lambda x: x + gg.rand(3, device=device))(gg.ones(3, device=device))

    def with_dropout(x):
        with gg.autograd.record():
            return F.dropout(x, 0.5)

    with pytest.raises(gg.cuda.GraphStepError, match="pass them in as an argument"):
        gg.compile(with_dropout)(gg.ones(3, device=device))


def test_a_changed_learning_rate_needs_a_recapture_then_records_again(device):
    (p_eager, opt_eager, eager), (params, opt, step) = _twins(device, [6, 8, 3], "sgd-momentum")
    compiled = gg.compile(step)
    batches = _batches(5, 5, 6, 3)
    for x, y in batches[:3]:
        eager(gg.tensor(x, device=device), y)
        compiled(gg.tensor(x, device=device), y)
    opt_eager.lr = opt.lr = 0.01
    with pytest.raises(gg.cuda.GraphStepError, match=r"SGD.lr changed from 0.05 to 0.01"):
        compiled(gg.tensor(batches[3][0], device=device), batches[3][1])
    compiled.recapture()
    for x, y in batches[3:]:
        want = eager(gg.tensor(x, device=device), y)
        _same(compiled(gg.tensor(x, device=device), y), want, device)
    for a, b in zip(p_eager, params):
        _same(b, a, device)


def test_labels_out_of_range_give_nan_on_replay():
    """As in a CUDA graph: a replay cannot stop to check labels, so a bad one gives NaN."""
    (_, _, step), _ = _twins("cpu", [6, 8, 3])
    compiled = gg.compile(step, device="cpu")
    x, y = _batches(1, 5, 6, 3)[0]
    compiled(x, y)
    compiled(x, y)
    assert np.isfinite(host(compiled(x, y)))
    assert np.isnan(host(compiled(x, np.array([0, 1, 2, 7, 0]))))


def test_calls_before_recording_say_why():
    compiled = gg.compile(lambda x: x + 1, device="cpu")
    with pytest.raises(gg.cuda.GraphStepError, match="the second call records"):
        compiled.calls


@pytest.mark.cuda
def test_on_cuda_compile_is_the_cuda_graph():
    (p_eager, _, eager), (params, _, step) = _twins("cuda", [6, 8, 3])
    compiled = gg.compile(step, device="cuda")
    for x, y in _batches(3, 5, 6, 3):
        want = eager(gg.tensor(x, device="cuda"), y)
        np.testing.assert_allclose(host(compiled(gg.tensor(x, device="cuda"), y)), host(want),
                                   rtol=1e-5)
    assert compiled.captured and not compiled.recorded and compiled.replays == 2


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_a_recurrent_training_step_compiled_equals_eager(kind, device):
    """A truncated-BPTT step through gg.nn's recurrent layers (the bench's rnn step: hundreds
    of small calls a step) replays as it ran eagerly, parameters and loss, step after step."""
    runs = []
    for compiled in (False, True):
        gg.seed(0)
        layer = getattr(nn, kind)(7, 16, device=device)
        head = nn.Linear(16, 7, device=device)
        params = layer.parameters() + head.parameters()
        opt = optim.SGD(params, lr=0.1, momentum=0.9)

        def step(x, y, layer=layer, head=head, opt=opt):
            with gg.autograd.record():
                out, _ = layer(x)
                loss = F.cross_entropy(head(out.reshape(-1, 16)), y)
            loss.backward()
            opt.step()
            return loss
        run = gg.compile(step, device=device) if compiled else step
        rng = np.random.default_rng(1)
        losses = []
        for _ in range(5):
            x = rng.standard_normal((9, 4, 7)).astype(np.float32)
            y = rng.integers(0, 7, 36)
            losses.append(host(run(x if compiled else gg.tensor(x, device=device), y)))
        runs.append((losses, [host(p) for p in params]))
    (eager_losses, eager_params), (losses, params_after) = runs
    for got, want in zip(losses + params_after, eager_losses + eager_params):
        _same(got, want, device)


ACTIVATIONS = [("relu", {}), ("leaky_relu", {}), ("elu", {}), ("gelu", {}),
               ("gelu", {"approximate": "tanh"}), ("silu", {}), ("softplus", {}), ("sigmoid", {}),
               ("tanh", {}), ("softsign", {}), ("hardswish", {})]


@pytest.mark.parametrize("name, p", ACTIVATIONS, ids=str)
def test_a_step_through_the_numba_activations_replays_them(device, monkeypatch, name, p):
    """The CPU's numba kernels are no NumPy call: the tape keeps them (tape.foreign), and every
    replay runs them again into the same buffers. A step through each activation, forward and
    backward, equals the eager step bit for bit over replays with new inputs."""
    from gpugrad.ops import activation_numba

    monkeypatch.setattr(activation_numba, "SMALLEST", 0)  # the step's small arrays take them
    monkeypatch.setenv("GPUGRAD_NUMBA", "1")
    numba = _records(device) and activation_numba.enabled()
    if _records(device) and not numba:
        pytest.skip(f"numba kernels unavailable: {activation_numba.status()}")
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((6, 5)).astype("float32")
    ws = [gg.tensor(w0, device=device, requires_grad=True) for _ in range(2)]

    def step(x, w):
        with gg.autograd.record():
            loss = (getattr(gg, name)(x @ w, **p) * x[:, :5]).sum()
        loss.backward()
        return loss, w.grad

    compiled = gg.compile(lambda x: step(x, ws[1]))
    before = sum(activation_numba.calls.values())
    for _ in range(4):
        x = gg.tensor(3 * rng.standard_normal((7, 6)).astype("float32"), device=device)
        want, got = step(x, ws[0]), compiled(x)
        for a, b in zip(got, want):
            _same(a, b, device)
    assert (sum(activation_numba.calls.values()) > before) == numba
    assert compiled.replays == (2 if _records(device) or compiled.captured else 0)
