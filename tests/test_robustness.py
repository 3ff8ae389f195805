"""Nothing lost, nothing silently wrong: atomic saves, checked loads, copies that train on their
own, all-or-nothing load_state_dict, bad input refused by name."""

import copy
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import warnings
import zipfile

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import nn
from conftest import host

torch_missing = "PyTorch is not installed (pip install torch==2.13.0)"


def _state(seed=0, sizes=(3, 5, 2)):
    gg.seed(seed)
    return nn.MLP(list(sizes)).state_dict()


def _assert_same_state(loaded, state):
    assert list(loaded) == list(state)
    for name in state:
        np.testing.assert_array_equal(host(loaded[name]), host(state[name]))


def _leftovers(directory, keep):
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


# ---------------------------------------------------------------------------- gg.save / gg.load


def test_a_save_interrupted_midway_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    good = _state(0)
    gg.save(good, path)
    calls = []
    real_write = np.lib.format.write_array

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the manifest and one array are written, then Ctrl-C
            raise KeyboardInterrupt
        return real_write(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gg.save(_state(1), path)
    monkeypatch.undo()
    _assert_same_state(gg.load(path), good)
    assert _leftovers(tmp_path, {"model.npz"}) == []  # no temporary file left behind


def test_a_save_onto_a_full_disk_fails_clearly_and_keeps_the_previous_file(tmp_path):
    """RLIMIT_FSIZE stands in for a full disk: writes past the limit fail with EFBIG."""
    path = tmp_path / "model.npz"
    good = _state(0)
    gg.save(good, path)
    script = textwrap.dedent(f"""
        import resource, signal
        import numpy as np
        import gpugrad as gg
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG as an error, not a signal
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
        try:
            gg.save({{"big": np.zeros(100_000, np.float32)}}, {str(path)!r})
        except OSError as e:
            print("ERROR", e)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert "ERROR" in run.stdout and "gg.save: could not write" in run.stdout, run.stdout
    assert "is unchanged" in run.stdout
    _assert_same_state(gg.load(path), good)
    assert _leftovers(tmp_path, {"model.npz"}) == []


def test_a_file_missing_a_declared_array_is_refused(tmp_path):
    """What an interrupted non-atomic save leaves: a valid zip holding only some arrays."""
    full, partial = tmp_path / "full.npz", tmp_path / "partial.npz"
    gg.save(_state(0), full)
    with zipfile.ZipFile(full) as src, zipfile.ZipFile(partial, "w") as dst:
        for name in src.namelist()[:-1]:
            dst.writestr(name, src.read(name))
    with pytest.raises(gg.serialize.StateFileError, match=r"incomplete: .* declares 4 arrays "
                                                          r"but 1 are missing \(2.bias\)"):
        gg.load(partial)


def test_a_truncated_file_is_refused(tmp_path):
    path = tmp_path / "m.npz"
    gg.save(_state(0), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="damaged or truncated"):
        gg.load(path)


def test_loading_what_is_not_a_gpugrad_state_file_says_what_it_is(tmp_path):
    npy = tmp_path / "a.npy"
    np.save(npy, np.arange(3))
    with pytest.raises(ValueError, match=r"single NumPy array \(.npy\), not a gpugrad state"):
        gg.load(npy)
    noise = tmp_path / "noise.bin"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="not a zip archive") as info:
        gg.load(noise)
    assert "pickle" not in str(info.value)
    fake_torch = tmp_path / "model.pt"
    with zipfile.ZipFile(fake_torch, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        zf.writestr("archive/version", b"3\n")
    with pytest.raises(ValueError, match=r"PyTorch file \(torch.save\)"):
        gg.load(fake_torch)
    objects = tmp_path / "objects.npz"
    np.savez(objects, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="never does"), pytest.warns(UserWarning, match="manifest"):
        gg.load(objects)
    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="zip archive but not a gpugrad state file"):
        gg.load(other_zip)


def test_loading_a_real_pytorch_file_is_refused_by_name(tmp_path):
    torch = pytest.importorskip("torch", reason=torch_missing)
    path = tmp_path / "m.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="PyTorch file"):
        gg.load(path)


def test_a_plain_numpy_savez_file_loads_with_a_warning(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, w=np.arange(4, dtype=np.float32))
    with pytest.warns(UserWarning, match="cannot be checked for completeness"):
        loaded = gg.load(path)
    np.testing.assert_array_equal(host(loaded["w"]), np.arange(4, dtype=np.float32))


def test_save_keeps_the_replaced_files_mode_and_refuses_bad_targets(tmp_path):
    path = tmp_path / "m.npz"
    gg.save(_state(0), path)
    os.chmod(path, 0o640)
    gg.save(_state(1), path)
    assert os.stat(path).st_mode & 0o777 == 0o640
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gg.save(_state(0), tmp_path / "missing" / "m.npz")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        gg.save(_state(0), tmp_path)
    with pytest.raises(TypeError, match="dtype complex128"):
        gg.save({"z": np.ones(2, complex)}, path)
    with pytest.raises(ValueError, match="cannot be a key"):
        gg.save({gg.serialize.MANIFEST: np.ones(2)}, path)


# ---------------------------------------------------------------------------- copies and pickling


def _train_steps(model, steps=3, seed=5):
    rng = np.random.default_rng(seed)
    opt = gg.optim.SGD(model.parameters(), lr=0.5)
    x = gg.tensor(rng.standard_normal((8, 3)).astype(np.float32))
    y = rng.integers(0, 2, 8)
    for _ in range(steps):
        with gg.autograd.record():
            loss = nn.functional.cross_entropy(model(x), y)
        model.zero_grad()
        loss.backward()
        opt.step()


def _values(model):
    return {n: host(p).copy() for n, p in model.named_parameters()}


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_model_trains_on_its_own(how):
    gg.seed(3)
    original = nn.MLP([3, 5, 2])
    clone = copy.deepcopy(original) if how == "deepcopy" else pickle.loads(pickle.dumps(original))
    before = _values(original)
    assert _values(clone).keys() == before.keys()
    for name, value in _values(clone).items():
        np.testing.assert_array_equal(value, before[name])
    _train_steps(clone)
    for name, value in _values(original).items():  # the original neither moved nor got gradients
        np.testing.assert_array_equal(value, before[name])
    assert all(not host(p.grad).any() for p in original.parameters())
    assert any(not np.array_equal(v, before[n]) for n, v in _values(clone).items())
    assert all(host(p.grad).any() for p in clone.parameters())
    # and the original still trains, into itself only
    trained_clone = _values(clone)
    _train_steps(original)
    for name, value in _values(clone).items():
        np.testing.assert_array_equal(value, trained_clone[name])
    for p, q in zip(original.parameters(), clone.parameters()):
        assert type(q) is nn.Parameter and q.grad_req == p.grad_req and q.device == p.device
        assert q.data is not p.data and q.grad.data is not p.grad.data


def test_deepcopy_keeps_shared_parameters_shared_and_copies_tensors_like_pytorch():
    lin = nn.Linear(2, 2)
    model = nn.Sequential(lin, nn.ReLU(), lin)  # one layer used twice
    clone = copy.deepcopy(model)
    assert clone[0] is clone[2] and clone[0].weight is not lin.weight
    t = gg.tensor([1.0, 2.0], requires_grad=True)
    t.attach_grad("add")
    c = copy.deepcopy(t)
    assert c.grad_req == "add" and c.is_leaf and c.data is not t.data
    plain = pickle.loads(pickle.dumps(gg.tensor([[1, 2]], dtype="int64")))
    assert plain.dtype == np.int64 and plain.grad_req == "null" and host(plain).tolist() == [[1, 2]]
    with gg.autograd.record():
        y = t * 2
    for attempt in (lambda: copy.deepcopy(y), lambda: pickle.dumps(y)):
        with pytest.raises(gg.GraphError, match="holds a graph, which cannot be copied"):
            attempt()
    np.testing.assert_array_equal(host(copy.deepcopy(y.detach())), [2.0, 4.0])


# ---------------------------------------------------------------------------- extreme logits

EXTREME_ROWS = {
    "float32": [[1e4, 1e4], [1e7, 1e7], [1e8, 1e8], [1e8, 1e8 - 64], [-1e8, -1e8], [3e38, 3e38],
                [0.0, -np.inf], [1e8, -1e8]],
    "float64": [[1e16, 1e16], [1e16, 1e16 - 4], [1e300, 1e300], [-1e300, -1e300], [0.0, -np.inf],
                [1e16, 1e16 + 2]],
}


def _reference(rows):
    """log_softmax, softmax and logsumexp in long double by the shifted formula (the inputs are
    exact in every precision used, so (x - max) is exact too)."""
    x = np.array(rows, dtype=np.longdouble)
    m = x.max(axis=1, keepdims=True)
    shifted = x - m
    log_sum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_p = shifted - log_sum
    return log_p, np.exp(log_p), (m + log_sum)[:, 0]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_logsumexp_family_is_exact_at_extreme_logits(dtype):
    rows = EXTREME_ROWS[dtype]
    log_p, p, lse = _reference(rows)
    labels = np.zeros(len(rows), dtype=np.int64)  # the first column: always finite
    eps = np.finfo(dtype).eps
    x = gg.tensor(np.array(rows, dtype=dtype), requires_grad=True)
    # values
    np.testing.assert_allclose(host(gg.log_softmax(x, axis=1)), log_p.astype(np.float64),
                               rtol=4 * eps, atol=4 * eps)
    np.testing.assert_allclose(host(gg.softmax(x, axis=1)), p.astype(np.float64), rtol=4 * eps,
                               atol=4 * eps)
    np.testing.assert_allclose(host(gg.logsumexp(x, axis=1)), lse.astype(np.float64),
                               rtol=4 * eps)
    xent = host(nn.functional.cross_entropy(x, labels, reduction="none"))
    np.testing.assert_allclose(xent, -log_p[:, 0].astype(np.float64), rtol=4 * eps, atol=4 * eps)
    # gradients: softmax - onehot for cross-entropy and -log_softmax[label], softmax for logsumexp
    onehot = np.eye(2)[labels]
    with gg.autograd.record():
        losses = {
            "cross_entropy": nn.functional.cross_entropy(x, labels, reduction="sum"),
            "log_softmax": -gg.log_softmax(x, axis=1)[:, 0].sum(),
            "logsumexp": gg.logsumexp(x, axis=1).sum(),
        }
    expected = {"cross_entropy": p - onehot, "log_softmax": p - onehot, "logsumexp": p}
    for name, loss in losses.items():
        g = gg.autograd.grad(loss, x)
        np.testing.assert_allclose(host(g), expected[name].astype(np.float64), rtol=4 * eps,
                                   atol=4 * eps, err_msg=name)


def test_extreme_logits_agree_with_pytorch():
    torch = pytest.importorskip("torch", reason=torch_missing)
    for dtype, rows in EXTREME_ROWS.items():
        xs = np.array(rows, dtype=dtype)
        labels = np.zeros(len(rows), dtype=np.int64)
        ours = host(nn.functional.cross_entropy(gg.tensor(xs), labels, reduction="none"))
        theirs = torch.nn.functional.cross_entropy(torch.from_numpy(xs), torch.from_numpy(labels),
                                                   reduction="none").numpy()
        np.testing.assert_array_equal(ours, theirs)
        np.testing.assert_array_equal(host(gg.log_softmax(gg.tensor(xs), axis=1)),
                                      torch.log_softmax(torch.from_numpy(xs), dim=1).numpy())


# ---------------------------------------------------------------------------- load_state_dict


@pytest.mark.parametrize("bad", ["shape", "dtype"])
def test_load_state_dict_is_all_or_nothing(bad):
    gg.seed(4)
    model = nn.MLP([3, 5, 2])
    before = _values(model)
    gg.seed(9)
    state = {n: host(p).copy() + 1 for n, p in model.named_parameters()}
    # the last entry is wrong: a loader that assigns as it goes has changed three already
    if bad == "shape":
        state["2.bias"] = np.zeros(3, np.float32)
        error, match = ValueError, r"2.bias has shape \(3,\) .* no parameter was changed"
    else:
        state["2.bias"] = state["2.bias"].astype(np.float64)
        error, match = TypeError, r"2.bias has dtype float64 .* no parameter was changed"
    with pytest.raises(error, match=match):
        model.load_state_dict(state)
    for name, value in _values(model).items():
        np.testing.assert_array_equal(value, before[name])
    with pytest.raises(TypeError, match="expected a dict"):
        model.load_state_dict([("0.weight", np.zeros((5, 3)))])


# ---------------------------------------------------------------------------- what a tensor holds


@pytest.mark.parametrize("data, what", [
    (np.array([1 + 2j]), "complex numbers"), ([1j, 2.0], "complex numbers"),
    (np.array(["x"]), "strings"), (["a", "b"], "strings"),
    (np.array([{"a": 1}], dtype=object), "Python objects"),
    (np.array(["2026-11-22"], dtype="datetime64[D]"), "dates"),
])
def test_tensors_refuse_what_is_not_a_real_number(data, what):
    with pytest.raises(TypeError, match=f"dtype .* \\({what}\\): gpugrad tensors hold booleans"):
        gg.tensor(data)


def test_complex_never_sneaks_in_through_ops_dtypes_or_dlpack():
    x = gg.tensor([1.0, 2.0])
    with pytest.raises(TypeError, match="complex numbers"):
        gg.sigmoid(np.array([1j]))  # refused, not cast to a wrong real number
    with pytest.raises(TypeError, match="complex numbers"):
        x * 1j
    with pytest.raises(TypeError, match="complex"):
        x.astype("complex64")
    with pytest.raises(TypeError, match="complex"):
        gg.tensor([1.0], dtype=complex)
    if gg.default_device() == "cpu":
        with pytest.raises(TypeError, match="complex numbers"):
            gg.from_dlpack(np.array([1j]))
    with pytest.raises(ValueError, match="nested lists have unequal lengths"):
        gg.tensor([[1.0], [1.0, 2.0]])


# ---------------------------------------------------------------------------- anomaly mode


def test_detect_anomaly_names_the_first_op_with_a_nan_gradient_and_its_line():
    x = gg.tensor([4.0, 0.0, 9.0], dtype="float64", requires_grad=True)
    with gg.autograd.detect_anomaly():
        assert gg.autograd.is_anomaly_enabled()
        with gg.autograd.record():
            y = x * 2
            root = gg.sqrt(y)  # the gradient of sqrt at 0 is inf
            loss = (root * 0.5).sum()
        with pytest.raises(gg.AnomalyError) as info:
            loss.backward()
    assert not gg.autograd.is_anomaly_enabled()
    message = str(info.value)
    assert "the gradient of 'sqrt' for its input x (shape (3,), float64) holds 0 NaN and 1 inf" \
        in message
    assert "coming into 'sqrt' (shape (3,)) was finite" in message
    assert "test_robustness.py" in message and "root = gg.sqrt(y)" in message
    # off (the default), the same backward runs through and gives the inf
    with gg.autograd.record():
        loss = (gg.sqrt(x * 2) * 0.5).sum()
    loss.backward()
    assert np.isinf(host(x.grad)).sum() == 1


def test_anomaly_mode_as_a_flag_and_inside_a_graph_of_a_graph():
    x = gg.tensor([1.0, -1.0], dtype="float64", requires_grad=True)
    gg.autograd.set_detect_anomaly(True)
    try:
        with gg.autograd.record():
            loss = gg.log(x).sum()  # NaN forward at -1: its gradient 1/x is finite, no anomaly
            y = (x * x).sum()
        loss.backward()
        (g,) = [gg.autograd.grad(y, x, create_graph=True)]
        with gg.autograd.record():
            z = gg.sqrt(g - g).sum()  # second order: sqrt(0) again
        with pytest.raises(gg.AnomalyError, match="'sqrt'"):
            z.backward()
    finally:
        gg.autograd.set_detect_anomaly(False)


# ---------------------------------------------------------------------------- a failed backward


class _OutOfMemoryInBackward(gg.Function):
    @staticmethod
    def forward(ctx, a):
        return a * 1

    @staticmethod
    def backward(ctx, grad):
        raise MemoryError("out of memory allocating 4 GiB")


def test_a_backward_that_failed_midway_says_so_on_retry():
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    with gg.autograd.record():
        c = (_OutOfMemoryInBackward.apply(x * 2) * 3).sum()  # frees two nodes, then fails
    with pytest.raises(MemoryError):
        c.backward()
    with pytest.raises(gg.GraphError) as info:
        c.backward()
    message = str(info.value)
    assert "an earlier backward freed in part and then failed (MemoryError at " in message
    assert "out of memory allocating 4 GiB" in message and "run the forward again" in message
    assert "retain_graph=True" not in message  # the usual advice would not help here
    # with retain_graph nothing was freed: after the failure the graph is still whole
    with gg.autograd.record():
        d = ((x * 2) * 3).sum()
    d.backward(retain_graph=True)
    d.backward()
    np.testing.assert_array_equal(host(x.grad), [6.0, 6.0])


# ---------------------------------------------------------------------------- NaN routing

NAN = float("nan")
A = np.array([NAN, 1.0, 2.0, NAN, 3.0])
B = np.array([1.0, NAN, 2.0, NAN, 1.0])

# op -> (gpugrad, PyTorch name, inputs, expected gradient of sum(op) for each input)
NAN_CASES = {
    # the output is NaN where either input is: both inputs get all of g there, as in PyTorch
    "maximum": (gg.maximum, "maximum", (A, B), ([1, 1, 0.5, 1, 1], [1, 1, 0.5, 1, 0])),
    "minimum": (gg.minimum, "minimum", (A, B), ([1, 1, 0.5, 1, 0], [1, 1, 0.5, 1, 1])),
    # a NaN maximum came from the NaN elements: they share g, as in PyTorch's max()
    "max": (lambda x: x.max(), "max", (A,), ([0.5, 0, 0, 0.5, 0],)),
    "min": (lambda x: x.min(), "min", (A,), ([0.5, 0, 0, 0.5, 0],)),
    # relu and elu pass g through a NaN (PyTorch tests their output), leaky_relu gives it the
    # slope (PyTorch tests its input)
    "relu": (gg.relu, "relu", (A,), ([1, 1, 1, 1, 1],)),
    "leaky_relu": (lambda x: gg.leaky_relu(x, 0.1), "leaky_relu", (A,), ([0.1, 1, 1, 0.1, 1],)),
    "elu": (gg.elu, "elu", (A,), ([1, 1, 1, 1, 1],)),
}


def _torch_op(torch, name):
    F = torch.nn.functional
    return {"maximum": torch.maximum, "minimum": torch.minimum, "max": torch.max,
            "min": torch.min, "relu": torch.relu, "leaky_relu": lambda x: F.leaky_relu(x, 0.1),
            "elu": F.elu}[name]


@pytest.mark.parametrize("name", sorted(NAN_CASES))
@pytest.mark.parametrize("fused", [True, False])
def test_nan_routing_of_extremes_and_the_relu_family(name, fused, monkeypatch):
    if not fused:
        monkeypatch.setenv("GPUGRAD_FUSED", "0")
    op, _, inputs, expected = NAN_CASES[name]
    for dtype in ("float32", "float64"):
        xs = [gg.tensor(a, dtype=dtype, requires_grad=True) for a in inputs]
        with gg.autograd.record():
            y = op(*xs)
            loss = y.sum()
        loss.backward()
        np.testing.assert_array_equal(np.isnan(host(y)), np.isnan(op(*[gg.tensor(a) for a in
                                                                       inputs]).numpy()))
        for x, want in zip(xs, expected):
            np.testing.assert_allclose(host(x.grad), want, rtol=1e-6, err_msg=f"{name} {dtype}")


@pytest.mark.parametrize("name", sorted(NAN_CASES))
def test_nan_routing_matches_pytorch(name):
    torch = pytest.importorskip("torch", reason=torch_missing)
    op, _, inputs, _ = NAN_CASES[name]
    theirs = [torch.tensor(a, requires_grad=True) for a in inputs]
    _torch_op(torch, name)(*theirs).sum().backward()
    ours = [gg.tensor(a, dtype="float64", requires_grad=True) for a in inputs]
    with gg.autograd.record():
        loss = op(*ours).sum()
    loss.backward()
    for o, t in zip(ours, theirs):
        np.testing.assert_array_equal(host(o.grad), t.grad.numpy())


def test_max_along_an_axis_shares_a_nan_like_the_full_max():
    """Documented difference: PyTorch's amax(dim) gives NaN there (0 / 0 ties); gpugrad routes
    a NaN result to the NaN elements along the axis, as for the reduction over everything."""
    x = gg.tensor([[NAN, 1.0], [2.0, 3.0], [NAN, NAN]], dtype="float64", requires_grad=True)
    with gg.autograd.record():
        loss = x.max(axis=1).sum()
    loss.backward()
    np.testing.assert_array_equal(host(x.grad), [[1, 0], [0, 1], [0.5, 0.5]])


# ---------------------------------------------------------------------------- soak

SOAK_STEPS = 2000


def test_two_thousand_training_steps_leak_nothing():
    """The section 4.7 step (cross-entropy + L2, backward, clipped Adam) run SOAK_STEPS times:
    no Tensor or graph Node outlives its step, and NumPy's live bytes do not grow."""
    import gc
    import tracemalloc

    from gpugrad import autograd

    gg.seed(0)
    model = nn.MLP([32, 16, 4])
    opt = gg.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    x = gg.tensor(rng.standard_normal((8, 32)).astype(np.float32))
    y = rng.integers(0, 4, 8)

    def step():
        with gg.autograd.record():
            loss = nn.functional.cross_entropy(model(x), y) + 1e-3 * nn.functional.l2_penalty(
                model.parameters())
        model.zero_grad()
        loss.backward()
        gg.nn.utils.clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        return loss

    def live():
        gc.collect()
        return sum(isinstance(o, (gg.Tensor, autograd.Node)) for o in gc.get_objects())

    first = step().item()
    for _ in range(20):  # caches and optimizer state settle
        step()
    tracemalloc.start()
    try:
        objects, before = live(), tracemalloc.get_traced_memory()[0]
        for _ in range(SOAK_STEPS):
            last = step()
        last = last.item()
        after_objects, after = live(), tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after_objects <= objects, f"live tensors/nodes grew from {objects} to {after_objects}"
    assert after - before < 256 * 1024, f"traced memory grew by {after - before} bytes"
    assert np.isfinite(last) and last < first  # and it trained all along


def test_threads_adding_into_one_leaf_lose_no_update(device):
    """Four threads, each running 30 backward passes into one grad_req="add" leaf of 1M
    elements: every element is 120. NumPy's in-place add releases the GIL, so without a lock
    one thread's sum can overwrite another's (leaving 110-119 in places)."""
    w = gg.zeros(1_000_000, dtype="float64", device=device)
    w.attach_grad("add")

    def work():
        for _ in range(30):
            with gg.autograd.record():
                y = (w * 1.0).sum()
            y.backward()
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    g = host(w.grad)
    assert g.min() == g.max() == 120.0


def test_gpugrad_computations_raise_no_numpy_warnings(device):
    """Forwards at extreme inputs (a softmax at +-3e38, log of 0, the branch a where() drops)
    and backwards whose gradients are inf or NaN warn no more than CuPy or PyTorch would: not
    at all. Anomaly mode, which the user asks for, reports them as an error."""
    huge = gg.tensor(np.array([[3e38, -3e38, 0.0]], dtype=np.float32), device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gg.softmax(huge, axis=1)
        gg.log_softmax(huge, axis=1)
        gg.logsumexp(huge, axis=1)
        gg.leaky_relu(gg.tensor([np.inf, -np.inf], device=device), 0.0)
        x = gg.tensor([0.0, 1.0], dtype="float64", device=device, requires_grad=True)
        with gg.autograd.record():
            y = (gg.sqrt(x) + gg.log(x)).sum()
        y.backward()
        assert np.isinf(host(x.grad)[0])
    with gg.autograd.detect_anomaly():
        with gg.autograd.record():
            y = gg.sqrt(x).sum()
        with pytest.raises(gg.AnomalyError):
            y.backward()
