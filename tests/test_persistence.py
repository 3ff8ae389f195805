"""Saving and resuming: optimizer state_dicts that resume training bit for bit, gg.save/gg.load
of nested state, saves over read-only files and through symbolic links, damaged files refused
with StateFileError, and the memory ledger counting a view by its own bytes."""

import io
import json
import math
import os
import shutil
import struct
import tempfile
import traceback
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import devices
from gpugrad import nn
from gpugrad.nn import functional as F
from conftest import host

HERE = gg.default_device()
OTHER = "strict" if HERE != "strict" else "cpu"  # a device that is always there, not the default
StateFileError = gg.serialize.StateFileError


def _bits(a):
    """An array's bytes, for comparing bit for bit (NaN and -0.0 included)."""
    a = np.asarray(a)
    return a.dtype.str, a.shape, a.reshape(-1).view(np.uint8).tobytes()


def _assert_same(got, want, device, where="obj"):
    """got (from gg.load onto `device`) is want: same types, same keys in the same order, and
    tensors and arrays bit for bit, on `device`."""
    if isinstance(want, gg.Tensor):
        assert isinstance(got, gg.Tensor), f"{where}: {type(got).__name__}"
        assert got.device == device, f"{where} is on {got.device}, not {device}"
        assert _bits(host(got)) == _bits(host(want)), where
    elif isinstance(want, np.generic):
        assert type(got) is type(want) and _bits(got) == _bits(want), f"{where}: {got!r}"
    elif devices.is_backend_array(want):
        assert devices.is_backend_array(got), f"{where}: {type(got).__name__}"
        assert devices.device_of_array(got) == device, f"{where} is not on {device}"
        assert _bits(host(got)) == _bits(host(want)), where
    elif isinstance(want, dict):
        assert type(got) is dict and list(got) == list(want), f"{where}: {got!r:.200}"
        for key in want:
            _assert_same(got[key], want[key], device, f"{where}[{key!r}]")
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want), f"{where}: {got!r:.200}"
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same(g, w, device, f"{where}[{i}]")
    elif isinstance(want, float):
        assert type(got) is float, f"{where}: {got!r}"
        assert (math.isnan(got) and math.isnan(want)) or (
            got == want and math.copysign(1, got) == math.copysign(1, want)), f"{where}: {got}"
    else:
        assert type(got) is type(want) and got == want, f"{where}: {got!r} is not {want!r}"


def _leftovers(directory, keep):
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


# ---------------------------------------------------------------------------- optimizers

OPTIMIZERS = {
    "sgd": lambda params, lr=0.05: gg.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-3),
    "adam": lambda params, lr=0.01: gg.optim.Adam(params, lr=lr, betas=(0.8, 0.99), eps=1e-7,
                                                  weight_decay=1e-3),
}


def _model(dtype, seed=0):
    gg.seed(seed)
    return nn.MLP([6, 8, 3], dtype=dtype)


def _batches(dtype, steps, seed=1):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((5, 6)).astype(dtype), rng.integers(0, 3, 5))
            for _ in range(steps)]


def _train(model, opt, batches):
    for x, y in batches:
        with gg.autograd.record():
            loss = F.cross_entropy(model(gg.tensor(x)), y)
        loss.backward()
        opt.step()


def _stepped(kind, dtype="float32", steps=2, seed=0):
    model = _model(dtype, seed)
    opt = OPTIMIZERS[kind](model.parameters())
    _train(model, opt, _batches(dtype, steps, seed=seed + 1))
    return model, opt


def _snapshot(opt):
    """The optimizer's hyperparameters and buffers, copied to the host."""
    buffers = [{name: _bits(host(arr)) for name, arr in st.items()} for st in opt.state]
    return opt.state_dict()["param_groups"][0], buffers


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_training_resumed_from_saved_state_equals_training_straight_through(kind, dtype,
                                                                            tmp_path):
    batches = _batches(dtype, 7)
    straight = _model(dtype)
    straight_opt = OPTIMIZERS[kind](straight.parameters())
    _train(straight, straight_opt, batches)

    first = _model(dtype)
    first_opt = OPTIMIZERS[kind](first.parameters())
    _train(first, first_opt, batches[:4])
    path = tmp_path / "checkpoint.npz"
    gg.save({"model": first.state_dict(), "optimizer": first_opt.state_dict(), "step": 4}, path)
    del first, first_opt

    # fresh objects: another initialization and another learning rate, both replaced by the file
    resumed = _model(dtype, seed=99)
    resumed_opt = OPTIMIZERS[kind](resumed.parameters(), lr=0.5)
    state = gg.load(path)
    resumed.load_state_dict(state["model"])
    resumed_opt.load_state_dict(state["optimizer"])
    assert state["step"] == 4
    _train(resumed, resumed_opt, batches[4:])

    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        assert _bits(host(a)) == _bits(host(b)), name
    assert _snapshot(resumed_opt) == _snapshot(straight_opt)
    for p, st in zip(resumed.parameters(), resumed_opt.state):
        assert all(devices.device_of_array(arr) == p.device for arr in st.values())


def test_state_dict_has_pytorchs_layout_and_names():
    w = gg.tensor(np.ones((2, 3), np.float32), requires_grad=True)
    unused = gg.tensor(np.ones(4, np.float32), requires_grad=True)
    sgd = gg.optim.SGD([w, unused], lr=0.1, momentum=0.9, weight_decay=1e-4)
    adam = gg.optim.Adam([w, unused], lr=0.002, betas=(0.8, 0.9), eps=1e-6)
    assert sgd.state_dict() == {"state": {}, "param_groups": [
        {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "params": [0, 1]}]}
    with gg.autograd.record():
        loss = (w * w).sum()
    loss.backward()
    unused.grad = None  # no gradient: step() passes it by, and it has no buffers
    sgd.step()
    adam.step()
    state = sgd.state_dict()["state"]
    assert list(state) == [0] and list(state[0]) == ["momentum_buffer"]
    velocity = np.float32(2) + np.float32(1e-4) * np.float32(1)  # g + weight_decay * w
    np.testing.assert_array_equal(host(state[0]["momentum_buffer"]), np.full((2, 3), velocity))
    sd = adam.state_dict()
    assert sd["param_groups"] == [{"lr": 0.002, "betas": (0.8, 0.9), "eps": 1e-6,
                                   "weight_decay": 0.0, "params": [0, 1]}]
    assert list(sd["state"]) == [0] and list(sd["state"][0]) == ["step", "exp_avg", "exp_avg_sq"]
    assert sd["state"][0]["step"].item() == 1.0 and sd["state"][0]["step"].dtype == np.float64
    # the tensors share the optimizer's buffers, as PyTorch's do
    assert sd["state"][0]["exp_avg"].data is adam.state[0]["exp_avg"]


def _good_and_target(kind):
    """A state_dict of a stepped optimizer, and another stepped optimizer (other values) to
    load it into."""
    _, source = _stepped(kind, seed=0)
    _, target = _stepped(kind, seed=5)
    return source.state_dict(), target


def _other_class_state():
    return _stepped("adam")[1].state_dict()


BAD_STATE_DICTS = [
    # (id, optimizer, change to a good state_dict (returns the bad one), error, message)
    ("not a dict", "sgd", lambda sd: list(sd.items()), TypeError, r"expected a dict"),
    ("an unknown top-level key", "sgd", lambda sd: {**sd, "extra": 1}, KeyError,
     r"unknown key\(s\) 'extra'"),
    ("no param_groups", "sgd", lambda sd: {"state": sd["state"]}, KeyError,
     r"missing key\(s\) 'param_groups'"),
    ("two param groups", "sgd", lambda sd: {**sd, "param_groups": sd["param_groups"] * 2},
     ValueError, r"a list of one group"),
    ("fewer parameters", "sgd", lambda sd: {
        "state": {i: s for i, s in sd["state"].items() if i < 3},
        "param_groups": [{**sd["param_groups"][0], "params": [0, 1, 2]}]},
     ValueError, r"for 3 parameter\(s\) but this optimizer has 4"),
    ("an unknown hyperparameter", "sgd", lambda sd: {**sd, "param_groups": [
        {**sd["param_groups"][0], "nesterov": True}]}, KeyError, r"unknown key\(s\) 'nesterov'"),
    ("a negative learning rate", "adam", lambda sd: {**sd, "param_groups": [
        {**sd["param_groups"][0], "lr": -1.0}]}, ValueError, r"lr must be finite and in \(0"),
    ("betas that are not a pair", "adam", lambda sd: {**sd, "param_groups": [
        {**sd["param_groups"][0], "betas": 0.9}]}, TypeError, r"betas must be a pair"),
    ("Adam's state_dict into SGD", "sgd", lambda sd: _other_class_state(), TypeError,
     r"from Adam \(its hyperparameters are lr, betas, eps, weight_decay\), not SGD"),
    ("SGD's state_dict into Adam", "adam", lambda sd: _stepped("sgd")[1].state_dict(),
     TypeError, r"from SGD .* not Adam"),
    ("a buffer of the wrong shape", "sgd", lambda sd: _with_buffer(
        sd, 3, "momentum_buffer", np.zeros(4, np.float32)), ValueError,
     r"state\[3\]\['momentum_buffer'\] has shape \(4,\) but parameter 3 has shape \(3,\)"),
    ("a buffer of the wrong dtype", "adam", lambda sd: _with_buffer(
        sd, 3, "exp_avg_sq", np.zeros(3, np.float64)), TypeError,
     r"state\[3\]\['exp_avg_sq'\] has dtype float64 but parameter 3 has dtype float32"),
    ("an unknown buffer", "sgd", lambda sd: _with_buffer(sd, 3, "exp_avg", np.zeros(3)),
     KeyError, r"state\[3\] has unknown key\(s\) 'exp_avg'"),
    ("a missing buffer", "adam", lambda sd: {**sd, "state": {**sd["state"], 3: {
        k: v for k, v in sd["state"][3].items() if k != "exp_avg_sq"}}}, KeyError,
     r"state\[3\] has missing key\(s\) 'exp_avg_sq'"),
    ("a position past the last parameter", "sgd", lambda sd: {**sd, "state": {
        **sd["state"], 4: sd["state"][3]}}, ValueError, r"entry for parameter 4 but this "
                                                          r"optimizer has 4 parameters"),
    ("a position that is not an integer", "sgd", lambda sd: {**sd, "state": {
        **sd["state"], "3": sd["state"][3]}}, TypeError, r"positions \(integers\), got '3'"),
    ("a buffer that is a list", "sgd", lambda sd: _with_buffer(
        sd, 3, "momentum_buffer", [0.0, 0.0, 0.0]), TypeError, r"must be a tensor or an array"),
    ("a buffer on the meta device", "sgd", lambda sd: _with_buffer(
        sd, 3, "momentum_buffer", gg.zeros(3, device="meta")), TypeError, r"meta device"),
    ("a negative step count", "adam", lambda sd: _with_buffer(
        sd, 3, "step", np.float64(-2)), ValueError, r"whole number of steps"),
    ("a step count that is a vector", "adam", lambda sd: _with_buffer(
        sd, 3, "step", np.ones(2)), TypeError, r"must be a number of steps"),
]


def _with_buffer(sd, position, name, value):
    """sd with one buffer replaced, and a new learning rate: a loader that assigned as it
    checked would have changed the hyperparameters and positions 0 to 2 by then."""
    group = {**sd["param_groups"][0], "lr": 0.123}
    return {"state": {**sd["state"], position: {**sd["state"][position], name: value}},
            "param_groups": [group]}


@pytest.mark.parametrize("case, kind, make_bad, error, message", BAD_STATE_DICTS,
                         ids=[c[0] for c in BAD_STATE_DICTS])
def test_a_bad_state_dict_is_refused_by_name_and_changes_nothing(case, kind, make_bad, error,
                                                                 message):
    good, target = _good_and_target(kind)
    good = {"state": good["state"], "param_groups": [{**good["param_groups"][0], "lr": 0.123}]}
    before = _snapshot(target)
    with pytest.raises(error, match=message):
        target.load_state_dict(make_bad(good))
    assert _snapshot(target) == before


def test_load_state_dict_copies_the_state_onto_each_parameters_device():
    for source_device, target_device in [(OTHER, HERE), (HERE, OTHER)]:
        with gg.device(source_device):
            _, source = _stepped("adam")
        with gg.device(target_device):
            model = _model("float32", seed=3)
            target = OPTIMIZERS["adam"](model.parameters())
        sd = source.state_dict()
        target.load_state_dict(sd)
        for p, st, src in zip(model.parameters(), target.state, source.state):
            assert p.device == target_device
            for name, arr in st.items():
                assert devices.device_of_array(arr) == target_device, name
                assert arr is not src[name]  # a copy: later steps of either do not move the other
                assert _bits(host(arr)) == _bits(host(src[name])), name


def test_loading_into_an_optimizer_with_buffers_writes_into_them():
    """A step captured by gg.cuda.graph holds the buffers: they must take the loaded values,
    not be replaced."""
    _, source = _stepped("sgd", seed=0)
    _, target = _stepped("sgd", seed=5)
    held = [st["momentum_buffer"] for st in target.state]
    target.load_state_dict(source.state_dict())
    for kept, st, src in zip(held, target.state, source.state):
        assert st["momentum_buffer"] is kept
        assert _bits(host(kept)) == _bits(host(src["momentum_buffer"]))


# ---------------------------------------------------------------------------- gg.save / gg.load


def _values():
    """(id, a function making the value) for everything gg.save stores, alone and nested."""
    def t():
        return gg.tensor(np.arange(6, dtype=np.float32).reshape(2, 3))

    def model_state():
        gg.seed(3)
        return nn.MLP([3, 4, 2]).state_dict()

    return [
        ("None", lambda: None), ("True", lambda: True), ("False", lambda: False),
        ("zero", lambda: 0), ("negative int", lambda: -7), ("a big int", lambda: 2 ** 80),
        ("a float", lambda: 1.5), ("-0.0", lambda: -0.0), ("inf", lambda: float("inf")),
        ("nan", lambda: float("nan")), ("a subnormal", lambda: 5e-324),
        ("empty string", lambda: ""), ("a string", lambda: "naïve ☃\n\"quoted\" [x] {y}"),
        ("float32 tensor", t),
        ("float64 tensor", lambda: gg.tensor([1.0, -0.0, np.nan], dtype="float64")),
        ("float16 tensor", lambda: gg.tensor([0.5, 65504.0], dtype="float16")),
        ("int64 tensor", lambda: gg.tensor(np.array([2 ** 62, -1]))),
        ("uint8 tensor", lambda: gg.tensor(np.array([0, 255], np.uint8))),
        ("bool tensor", lambda: gg.tensor(np.array([True, False]))),
        ("0-d tensor", lambda: gg.tensor(np.float64(3.25))),
        ("empty tensor", lambda: gg.zeros((0, 3))), ("transposed tensor", lambda: t().T),
        ("tensor on the other device", lambda: gg.tensor([1.0, 2.0], device=OTHER)),
        ("numpy array", lambda: np.arange(5, dtype=np.int32)),
        ("Fortran-order array", lambda: np.asfortranarray(np.arange(6.0).reshape(2, 3))),
        ("0-d array", lambda: np.array(7, np.int8)),
        ("empty array", lambda: np.zeros((2, 0), bool)),
        ("device array", lambda: gg.arange(3, dtype="float64").data),
        ("other device's array", lambda: gg.arange(3, device=OTHER).data),
        ("numpy float32", lambda: np.float32(2.5)), ("numpy int64", lambda: np.int64(-3)),
        ("numpy bool", lambda: np.bool_(True)), ("numpy nan", lambda: np.float64("nan")),
        ("empty list", lambda: []), ("empty tuple", lambda: ()), ("empty dict", lambda: {}),
        ("nested empties", lambda: [[], {}, ((),), {"a": {}}]),
        ("a nested mixture",
         lambda: [1, (2.5, "x", None), {"k": [t(), {"deep": np.int8(1)}]}]),
        ("integer keys", lambda: {0: "a", -3: None, 2 ** 40: t()}),
        ("keys 0 and '0'", lambda: {"0": 1, 0: 2}),
        ("keys no file name can be", lambda: {
            "": t(), "a/b": t(), "..": t(), "x\\y": t(), "[0]": t(), "model": {"0.weight": t()},
            "model/0.weight": t()}),
        ("a model's state_dict and the epoch", lambda: {"model": model_state(), "epoch": 3}),
        ("an optimizer's state_dict", lambda: _stepped("sgd")[1].state_dict()),
        ("50 levels deep", lambda: _nested(50)),
    ]


def _nested(depth):
    value = gg.tensor([1.0])
    for i in range(depth):
        value = {"level": i, "inner": [value]}
    return value


VALUES = _values()


@pytest.mark.parametrize("make", [make for _, make in VALUES], ids=[name for name, _ in VALUES])
def test_save_and_load_round_trip_every_kind_of_value(make, tmp_path):
    value = make()
    path = tmp_path / "state.npz"
    gg.save(value, path)
    _assert_same(gg.load(path), value, HERE)
    _assert_same(gg.load(path, device=OTHER), value, OTHER)
    gg.save({"wrapped": [value]}, path)
    _assert_same(gg.load(path), {"wrapped": [value]}, HERE)


def test_a_state_dict_file_stays_readable_by_numpy(tmp_path):
    gg.seed(0)
    model = nn.MLP([3, 4, 2])
    path = tmp_path / "checkpoint.npz"
    gg.save({"model": model.state_dict(), "epoch": 3}, path)
    with np.load(path, allow_pickle=False) as arrays:
        np.testing.assert_array_equal(arrays["model/0.weight"], host(model[0].weight))


@pytest.mark.parametrize("obj, error, message", [
    ({"a": [1, {2}]}, TypeError, r"obj\['a'\]\[1\] is of type set"),
    ({"a": object()}, TypeError, r"obj\['a'\] is of type object; .*never a pickled object"),
    ({"z": 1 + 2j}, TypeError, r"obj\['z'\] is of type complex"),
    ({"b": b"bytes"}, TypeError, r"obj\['b'\] is of type bytes"),
    ({"z": np.ones(2, complex)}, TypeError, r"obj\['z'\] has dtype complex128"),
    ({"m": gg.zeros(2, device="meta")}, TypeError, r"obj\['m'\] is on the meta device"),
    ({True: 1}, TypeError, r"keys must be strings or integers; obj has the key True"),
    ({"x": {1.5: 1}}, TypeError, r"obj\['x'\] has the key 1.5"),
    ({(1, 2): 1}, TypeError, r"has the key \(1, 2\)"),
    ({gg.serialize.MANIFEST: 1}, ValueError, r"cannot be a key"),
], ids=["set", "object", "complex", "bytes", "complex array", "meta tensor", "bool key",
        "float key", "tuple key", "the manifest's name"])
def test_what_cannot_be_stored_is_refused_by_where_it_is_before_writing(obj, error, message,
                                                                      tmp_path):
    path = tmp_path / "m.npz"
    gg.save({"kept": 1}, path)
    with pytest.raises(error, match=message):
        gg.save(obj, path)
    assert gg.load(path) == {"kept": 1}
    assert _leftovers(tmp_path, {"m.npz"}) == []


def test_a_list_that_contains_itself_is_refused(tmp_path):
    loop = [1]
    loop.append({"again": loop})
    with pytest.raises(ValueError, match=r"obj\[1\]\['again'\] contains itself"):
        gg.save(loop, tmp_path / "m.npz")


def _zip(path, members):
    """A zip of (name, bytes) members, stored, with correct CRCs."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def _npy(arr=None, header=None, data=None):
    """The bytes of a .npy member; `header` and `data` replace what `arr` would give."""
    fp = io.BytesIO()
    if arr is not None:
        np.lib.format.write_array(fp, arr, allow_pickle=False)
        if header is None and data is None:
            return fp.getvalue()
        fp = io.BytesIO()
        header = np.lib.format.header_data_from_array_1_0(arr) if header is None else header
        data = arr.tobytes() if data is None else data
    np.lib.format.write_array_header_1_0(fp, header)
    return fp.getvalue() + data


def _manifest_member(manifest):
    return (gg.serialize.MANIFEST + ".npy", _npy(np.array(json.dumps(manifest))))


def test_files_of_the_first_format_still_load(tmp_path):
    w = np.arange(4, dtype=np.float32)
    path = _zip(tmp_path / "v1.npz", [
        _manifest_member({"format": "gpugrad-state", "version": 1,
                          "arrays": {"w": [[4], "<f4"]}}),
        ("w.npy", _npy(w))])
    loaded = gg.load(path)
    assert list(loaded) == ["w"] and loaded["w"].device == HERE
    np.testing.assert_array_equal(host(loaded["w"]), w)
    future = _zip(tmp_path / "v9.npz", [_manifest_member(
        {"format": "gpugrad-state", "version": 9, "arrays": {}, "tree": None})])
    with pytest.raises(StateFileError, match=r"of version 9; this gpugrad reads versions 1 and 2"):
        gg.load(future)


# ---------------------------------------------------------------------------- read-only targets


def _attempt_over_read_only(path, new_state):
    """Whether open() may write `path`, and what gg.save over it does: None (it saved) or
    [message, filename] of the PermissionError."""
    try:
        open(path, "r+b").close()
        can_open = True
    except PermissionError:
        can_open = False
    try:
        gg.save(new_state, path)
        return can_open, None
    except PermissionError as e:
        return can_open, [str(e), e.filename]


def _as_unprivileged_user(function):
    """function() in a forked child that has given up root for the user 'nobody' (65534):
    what it returns, through a pipe as JSON."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(reader)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(writer, json.dumps(function()).encode())
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(writer)
    chunks = []
    while chunk := os.read(reader, 65536):
        chunks.append(chunk)
    os.close(reader)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged child failed"
    return json.loads(b"".join(chunks))


@pytest.mark.skipif(not hasattr(os, "fork") or not hasattr(os, "geteuid"),
                    reason="needs POSIX users, permission bits and fork")
@pytest.mark.parametrize("who", ["this process", "an unprivileged user"])
def test_a_save_over_a_read_only_file_does_what_open_would(who):
    """gg.save renames over its target, which needs only the folder's permission; it asks the
    question open() asks first. Root may write a 0o444 file, as open() lets it; any other
    user is refused, naming the file, and the file is left as it was. As root, the second case
    runs in a child process that has dropped to 'nobody'."""
    drop = who == "an unprivileged user" and os.geteuid() == 0
    # a world-writable folder the unprivileged child can reach (pytest's tmp_path is 0o700)
    folder = tempfile.mkdtemp(prefix="gg-read-only-")
    try:
        os.chmod(folder, 0o777)
        path = os.path.join(folder, "m.npz")
        gg.save({"w": np.zeros(3, np.float32)}, path)
        if drop:
            os.chown(path, 65534, 65534)  # the child's own file, made read-only
        os.chmod(path, 0o444)
        new_state = {"w": np.ones(3, np.float32)}
        gg.save({"warm": np.zeros(1)}, os.path.join(folder, "warm.npz"))  # imports done here
        if drop:
            can_open, refused = _as_unprivileged_user(
                lambda: _attempt_over_read_only(path, new_state))
        else:
            can_open, refused = _attempt_over_read_only(path, new_state)
        if who == "an unprivileged user":
            assert not can_open  # the premise: open() refuses this user
        if can_open:
            assert refused is None
            np.testing.assert_array_equal(host(gg.load(path)["w"]), new_state["w"])
        else:
            assert refused is not None, "gg.save replaced a file that open() may not write"
            message, filename = refused
            assert filename == path and "read-only (mode 444)" in message, message
            np.testing.assert_array_equal(host(gg.load(path)["w"]), np.zeros(3, np.float32))
        assert os.stat(path).st_mode & 0o777 == 0o444
        assert sorted(os.listdir(folder)) == ["m.npz", "warm.npz"]  # no temporary file left
    finally:
        shutil.rmtree(folder)


# ---------------------------------------------------------------------------- symbolic links


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_a_save_through_a_symlink_writes_its_target_from_the_targets_folder(tmp_path,
                                                                          monkeypatch):
    real_dir, link_dir = tmp_path / "real", tmp_path / "links"
    real_dir.mkdir()
    link_dir.mkdir()
    target = real_dir / "m.npz"
    gg.save({"w": np.zeros(2)}, target)
    os.chmod(target, 0o640)
    link = link_dir / "m.npz"
    os.symlink(os.path.relpath(target, link_dir), link)  # a relative link
    chain = link_dir / "chain.npz"
    os.symlink(link, chain)  # a link to the link
    folders = []
    real_mkstemp = tempfile.mkstemp

    def spy(*args, **kwargs):
        folders.append(kwargs.get("dir"))
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(gg.serialize.writer.tempfile, "mkstemp", spy)
    gg.save({"w": np.ones(2)}, chain)
    assert folders == [str(real_dir)]  # the temporary file beside the real file
    assert os.path.islink(link) and os.readlink(link) == os.path.relpath(target, link_dir)
    assert os.path.islink(chain) and not os.path.islink(target)
    for path in (target, link, chain):
        np.testing.assert_array_equal(host(gg.load(path)["w"]), np.ones(2))
    assert os.stat(target).st_mode & 0o777 == 0o640

    # interrupted midway: the target keeps its state, nothing is left in either folder
    real_write = np.lib.format.write_array

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np.lib.format, "write_array", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gg.save({"w": np.full(2, 7.0)}, link)
    monkeypatch.setattr(np.lib.format, "write_array", real_write)
    np.testing.assert_array_equal(host(gg.load(link)["w"]), np.ones(2))
    assert _leftovers(real_dir, {"m.npz"}) == [] and _leftovers(link_dir, {"m.npz",
                                                                          "chain.npz"}) == []

    # a link to a file that does not exist yet creates it, as open() does
    dangling = link_dir / "new.npz"
    os.symlink(real_dir / "new.npz", dangling)
    gg.save({"w": np.ones(1)}, dangling)
    assert os.path.islink(dangling) and (real_dir / "new.npz").is_file()

    loop = link_dir / "loop.npz"
    os.symlink(loop, loop)
    with pytest.raises(OSError, match=r"cannot write .*loop.npz"):
        gg.save({"w": np.ones(1)}, loop)


# ---------------------------------------------------------------------------- damaged files


def _small_file(path):
    """A small state file with a tensor, an optimizer's buffer and plain values."""
    w = gg.tensor(np.arange(4, dtype=np.float32).reshape(2, 2), requires_grad=True)
    opt = gg.optim.SGD([w], lr=0.1, momentum=0.9)
    with gg.autograd.record():
        loss = (w * w).sum()
    loss.backward()
    opt.step()
    gg.save({"model": {"w": w.detach()}, "optimizer": opt.state_dict(), "epoch": 3}, path)
    return gg.load(path)


def _load_or_refusal(path, original):
    """'loaded' (then it equals `original`, with no warning) or 'refused' (StateFileError
    naming the file); anything else fails the test."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            loaded = gg.load(path)
        except StateFileError as e:
            assert str(path) in str(e) and "pickl" not in str(e), str(e)
            return "refused"
    assert not caught, caught[0].message
    _assert_same(loaded, original, HERE)
    return "loaded"


def test_every_single_bit_flip_loads_the_same_state_or_is_refused(tmp_path):
    """Every bit of a small file flipped in turn: a flip in a byte nothing reads (a timestamp,
    the zip's version-made-by) loads the same state; any other is refused with StateFileError,
    never with zipfile's, NumPy's or an allocation's error (the zip's CRC-32 covers the data)."""
    path = tmp_path / "state.npz"
    original = _small_file(path)
    data = path.read_bytes()
    outcomes = {"loaded": 0, "refused": 0}
    fd = os.open(path, os.O_RDWR)
    try:
        for position in range(len(data)):
            for bit in range(8):
                os.pwrite(fd, bytes([data[position] ^ (1 << bit)]), position)
                try:
                    outcomes[_load_or_refusal(path, original)] += 1
                except AssertionError as e:
                    raise AssertionError(f"byte {position}, bit {bit}: {e}") from None
                os.pwrite(fd, data[position:position + 1], position)
    finally:
        os.close(fd)
    assert outcomes["loaded"] > 0 and outcomes["refused"] > 0, outcomes


def test_every_truncation_is_refused(tmp_path):
    path = tmp_path / "state.npz"
    _small_file(path)
    data = path.read_bytes()
    path.write_bytes(b"")
    with open(path, "ab") as grow:  # every prefix, the shortest first
        for length in range(len(data)):
            grow.flush()
            with pytest.raises(StateFileError) as refused:
                gg.load(path)
            assert str(path) in str(refused.value) and "pickl" not in str(refused.value)
            grow.write(data[length:length + 1])


def _central_entry(data, index=0):
    """Offset of the index-th central-directory header of a zip."""
    offset = -1
    for _ in range(index + 1):
        offset = data.index(b"PK\x01\x02", offset + 1)
    return offset


def _patched(data, offset, fmt, change):
    (value,) = struct.unpack_from(fmt, data, offset)
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, change(value))
    return bytes(out)


def _sizes_past_the_end(data):
    """Both sizes of the second member (compressed and not) grown by 1 GB: consistent, but
    past the end of the file."""
    entry = _central_entry(data, 1)
    grown = _patched(data, entry + 20, "<I", lambda v: v + 2 ** 30)
    return _patched(grown, entry + 24, "<I", lambda v: v + 2 ** 30)


@pytest.mark.parametrize("case, patch, message", [
    ("zip version 17.3", lambda d: _patched(d, _central_entry(d) + 6, "<H", lambda v: 173),
     r"its zip directory is damaged or truncated \(NotImplementedError: zip file version 17.3"),
    ("marked encrypted", lambda d: _patched(d, _central_entry(d) + 8, "<H", lambda v: v | 1),
     r"member __gpugrad_state__.npy: it is marked encrypted, which gg.save never writes"),
    ("a central directory offset past its place", lambda d: _patched(
        d, d.rindex(b"PK\x05\x06") + 16, "<I", lambda v: v + 256),
     r"member __gpugrad_state__.npy is damaged or truncated \(OSError"),
    ("deflate where nothing is compressed", lambda d: _patched(
        d, _central_entry(d, 1) + 10, "<H", lambda v: 8), r"compressed with zip method 8"),
    ("a size that differs from the other", lambda d: _patched(
        d, _central_entry(d, 1) + 20, "<I", lambda v: v + 2 ** 30),
     r"stored uncompressed but its sizes differ \(1,073,741,9\d\d and \d+ bytes\)"),
    ("sizes past the end of the file", _sizes_past_the_end,
     r"claims 1,073,741,9\d\d bytes at offset [\d,]+, past the end of the file"),
])
def test_the_damage_zipfile_reports_in_its_own_words_is_a_state_file_error(case, patch, message,
                                                                            tmp_path):
    for fmt in ("the current format", "the first format"):
        path = tmp_path / "state.npz"
        if fmt == "the current format":
            gg.save({"w": np.arange(4, dtype=np.float32)}, path)
        else:
            _zip(path, [_manifest_member({"format": "gpugrad-state", "version": 1,
                                          "arrays": {"w": [[4], "<f4"]}}),
                        ("w.npy", _npy(np.arange(4, dtype=np.float32)))])
        path.write_bytes(patch(path.read_bytes()))
        with pytest.raises(StateFileError, match=message) as refused:
            gg.load(path)
        assert str(path) in str(refused.value)


HUGE = (10 ** 11,)  # 400 GB of float32


@pytest.mark.parametrize("layout", ["current format", "first format", "plain numpy.savez"])
def test_a_header_declaring_more_than_the_file_holds_is_refused_before_allocating(layout,
                                                                                 tmp_path):
    """A 1 KB file whose .npy header declares 10^11 elements: the declared size is compared
    with the member's bytes before NumPy allocates anything."""
    member = _npy(header={"descr": "<f4", "fortran_order": False, "shape": HUGE},
                  data=bytes(1024))
    declared = {"w": [list(HUGE), "<f4"]}
    manifest = {"current format": {"format": "gpugrad-state", "version": 2, "arrays": declared,
                                   "tree": {"w": {"tensor": "w"}}},
                "first format": {"format": "gpugrad-state", "version": 1, "arrays": declared},
                "plain numpy.savez": None}[layout]
    members = ([] if manifest is None else [_manifest_member(manifest)]) + [("w.npy", member)]
    path = _zip(tmp_path / "huge.npz", members)
    assert path.stat().st_size < 2048
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy.savez's file warns that it has no manifest
            with pytest.raises(StateFileError, match=r"declares 400,000,000,000 bytes of array "
                                                     r"data .* holds (only )?[\d,]+ bytes"):
                gg.load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2 ** 20, peak


@pytest.mark.parametrize("layout", ["current format", "first format", "plain numpy.savez"])
def test_truncated_array_data_is_called_truncated_not_blamed_on_pickle(layout, tmp_path):
    full = np.arange(256, dtype=np.float32)
    member = _npy(full, data=full.tobytes()[:100])  # a whole header, 100 of 1,024 data bytes
    declared = {"w": [[256], "<f4"]}
    manifest = {"current format": {"format": "gpugrad-state", "version": 2, "arrays": declared,
                                   "tree": {"w": {"tensor": "w"}}},
                "first format": {"format": "gpugrad-state", "version": 1, "arrays": declared},
                "plain numpy.savez": None}[layout]
    members = ([] if manifest is None else [_manifest_member(manifest)]) + [("w.npy", member)]
    path = _zip(tmp_path / "short.npz", members)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(StateFileError, match=r"declares 1,024 bytes of array data .* holds "
                                                 r"(only )?[\d,]+ bytes: truncated") as refused:
            gg.load(path)
    assert "pickl" not in str(refused.value) and str(path) in str(refused.value)


# ---------------------------------------------------------------------------- memory ledger


@pytest.mark.parametrize("where", ["host", "device"])
def test_labels_that_are_a_slice_count_their_own_bytes(where):
    """Labels train_y[:256] of a 2,718-label set: the loss keeps 256 labels (2,048 bytes), not
    the whole set (21,744), as estimate() says."""
    gg.seed(0)
    model = nn.MLP([64, 32, 10])
    train_y = np.arange(2718) % 10
    labels = train_y[:256] if where == "host" else gg.tensor(train_y)[:256]
    report = gg.memory.compare(model, gg.randn(256, 64), labels, F.cross_entropy)
    estimate = gg.memory.estimate(model, (256, 64), F.cross_entropy, labels=train_y[:256])
    assert report.by_op["softmax_cross_entropy"] == 256 * 10 * 4 + 256 * 8 == 12_288
    assert report.train["saved activations"] == estimate["saved activations"]
    assert report.by_op == estimate["saved by op"]


def test_memory_kept_by_several_views_or_ops_is_counted_once():
    b = gg.randn(100, dtype="float64", requires_grad=True)
    c = gg.randn(60, dtype="float64", requires_grad=True)
    with gg.autograd.record():
        alone = (b[:60] * c).sum()  # a slice: 60 of b's 100 elements
    assert gg.memory.saved(alone).activations == 60 * 8 + 60 * 8
    with gg.autograd.record():  # two views of the same memory, and one overlapping them
        z = (b[:60] * c + b[:60] * c + b[40:] * c).sum()
    report = gg.memory.saved(z)
    assert report.activations == 100 * 8 + 60 * 8, report.buffers  # all of b, once; c once
    with gg.autograd.record():  # every other element: each view its own 50
        strided = (b[::2] * c[:50]).sum()
    assert gg.memory.saved(strided).activations == 50 * 8 + 50 * 8
    with gg.autograd.record():  # the two halves of b, interleaved, and b itself
        both = (b[::2] * b[1::2]).sum() + (b * b).sum()
    assert gg.memory.saved(both).activations == 100 * 8
