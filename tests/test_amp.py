"""Mixed precision: gg.autocast's table, its composition with recording, second order and
checkpoint, GradScaler against PyTorch's step for step, and the digits network trained in
bfloat16 against float32."""

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import nn
from gpugrad.nn import functional as F
from gpugrad.ops import autocasting
from conftest import host

R = np.random.default_rng(11)


def _model(device):
    gg.seed(4)
    return nn.Sequential(nn.Linear(8, 16, device=device), nn.Tanh(), nn.Linear(16, 3, device=device))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_the_table_picks_each_ops_dtype(dtype, device):
    low = gg.devices.as_dtype(dtype)
    x = gg.tensor(R.standard_normal((4, 8)), dtype="float32", device=device)
    w = gg.tensor(R.standard_normal((8, 3)), dtype="float32", device=device)
    with gg.autocast(dtype):
        assert gg.autocast is not None and gg.amp.autocast_dtype() == low
        assert (x @ w).dtype == low and gg.einsum("ij,jk", x, w).dtype == low
        assert gg.linear(x, w.T).dtype == low
        y = x @ w
        for f in (gg.softmax, gg.log_softmax, gg.sum, gg.mean, gg.exp, gg.logsumexp, gg.norm):
            assert f(y).dtype == np.float32, f.__name__
        assert gg.tanh(y).dtype == low and (y + x[:, :3]).dtype == np.float32  # follow: promote
        assert (gg.tensor(R.standard_normal((2, 2)), device=device) @
                gg.tensor(R.standard_normal((2, 2)), device=device)).dtype == np.float64
        with gg.autocast(dtype, enabled=False):
            assert (x @ w).dtype == np.float32
    assert gg.amp.autocast_dtype() is None and (x @ w).dtype == np.float32
    assert set(autocasting.POLICY) <= set(gg.OPS)
    with pytest.raises(TypeError, match="bfloat16 or float16"):
        with gg.autocast("float32"):
            pass


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_training_step_under_autocast(dtype, device):
    """Parameters stay float32 and take float32 gradients, close to float32's own."""
    model = _model(device)
    x = gg.tensor(R.standard_normal((6, 8)), dtype="float32", device=device)
    labels = [0, 1, 2, 0, 1, 2]
    grads = {}
    for cast in (True, False):
        for p in model.parameters():
            p.zero_grad()
        with gg.autograd.record(), gg.autocast(dtype, enabled=cast):
            loss = F.cross_entropy(model(x), labels)
        assert loss.dtype == np.float32
        loss.backward()
        grads[cast] = [host(p.grad) for p in model.parameters()]
    eps = gg.devices.epsilon(gg.devices.as_dtype(dtype))
    for p, a, b in zip(model.parameters(), grads[True], grads[False]):
        assert p.dtype == p.grad.dtype == np.float32
        np.testing.assert_allclose(a, b, atol=32 * eps * np.abs(b).max())


def test_autocast_composes_with_second_order_and_checkpoint(device):
    model = _model(device)
    x = gg.tensor(R.standard_normal((5, 8)), dtype="float32", device=device)

    def loss_of(inputs, forward):
        with gg.autocast("bfloat16"):
            return gg.sum(forward(inputs) ** 2)

    # second order through the casts: the Hessian-vector product is finite and differs from 0
    hvp = gg.grad(lambda t: gg.sum(gg.grad(lambda u: loss_of(u, model))(t) ** 2))(x)
    assert hvp.dtype == np.float32 and np.isfinite(host(hvp)).all() and np.abs(host(hvp)).max() > 0
    # checkpoint recomputes under the autocast of the first run: the same gradients, bitwise
    outs = []
    for forward in (model, lambda t: gg.checkpoint(model, t)):
        for p in model.parameters():
            p.zero_grad()
        with gg.autograd.record():
            loss = loss_of(x, forward)
        loss.backward()
        outs.append([host(p.grad) for p in model.parameters()])
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def test_the_saved_bytes_of_the_4_7_network_under_autocast():
    """At batch 1024 the ledger counts what the casts keep: the 16-bit input and weights for
    each linear layer, relu's 1-bit mask, and the float32 logits cross-entropy keeps."""
    from gpugrad.app import experiments

    model = experiments.mlp_4_7(784, 256, 10)
    loss_fn = experiments.loss_4_7(model, 1e-3)
    x = gg.randn(1024, 784)
    y = np.arange(1024) % 10
    with gg.autograd.record(), gg.autocast("bfloat16"):
        loss = loss_fn(model(x), y)
    saved = gg.memory.saved(loss, model.parameters()).activations
    formula = gg.memory.mlp_formula(784, 256, 10, 1024, autocast="bfloat16")["saved activations"]
    assert saved == formula
    f32 = gg.memory.mlp_formula(784, 256, 10, 1024)["saved activations"]
    assert saved < 0.6 * f32


def _scaler_run(lib, torch, steps=8):
    """A float32 least-squares fit with SGD under a GradScaler (growth every 2 clean steps),
    with inf injected into the gradient at steps 2 and 3: (scales, parameters) after each."""
    w0 = np.array([0.5, -1.0, 2.0], np.float32)
    data = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    scales, params = [], []
    if lib == "gg":
        w = gg.tensor(w0, requires_grad=True)
        opt, scaler = gg.optim.SGD([w], lr=0.01), gg.amp.GradScaler(init_scale=1024.0, growth_interval=2)
    else:
        w = torch.tensor(w0, requires_grad=True)
        opt = torch.optim.SGD([w], lr=0.01)
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=2)
    for step in range(steps):
        opt.zero_grad()
        if lib == "gg":
            with gg.autograd.record():
                loss = gg.sum((gg.tensor(data) @ w) ** 2)
            scaler.scale(loss).backward()
            if step in (2, 3):
                w.grad.data[1] = np.inf
        else:
            loss = ((torch.tensor(data) @ w) ** 2).sum()
            scaler.scale(loss).backward()
            if step in (2, 3):
                w.grad[1] = float("inf")
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
        params.append(np.array(w.detach().numpy() if lib == "torch" else w.numpy()))
    return scales, params


def test_grad_scaler_equals_pytorchs_step_for_step():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
    ours, theirs = _scaler_run("gg", None), _scaler_run("torch", torch)
    assert ours[0] == theirs[0]  # the scale after each step: backed off twice, grown back
    assert ours[0][:6] == [1024.0, 2048.0, 1024.0, 512.0, 512.0, 1024.0]
    for a, b in zip(ours[1], theirs[1]):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_grad_scaler_skips_the_step_and_keeps_its_state(device, tmp_path):
    w = gg.tensor([1.0, 2.0], device=device, requires_grad=True)
    opt = gg.optim.SGD([w], lr=0.1)
    scaler = gg.amp.GradScaler(init_scale=8.0, growth_interval=3)
    with gg.autograd.record():
        loss = gg.sum(w * w)
    scaler.scale(loss).backward()
    w.grad.data[0] = np.nan
    scaler.step(opt)
    scaler.update()
    np.testing.assert_array_equal(host(w), [1.0, 2.0])  # skipped
    assert scaler.get_scale() == 4.0
    gg.save(scaler.state_dict(), tmp_path / "s.gg")
    other = gg.amp.GradScaler()
    other.load_state_dict(gg.load(tmp_path / "s.gg"))
    assert other.state_dict() == scaler.state_dict()
    with pytest.raises(RuntimeError, match="no step"):
        gg.amp.GradScaler().update()
    with pytest.raises(ValueError, match="growth_factor"):
        gg.amp.GradScaler(growth_factor=0.5)


def test_the_digits_network_trained_under_autocast_learns_as_float32_does(device):
    """Section 4.7's network on the digits, 5 epochs of SGD: under bf16 (and fp16 with loss
    scaling) autocast the last epoch's loss is within 1% of float32's and the test accuracy
    within 0.5 points; an fp16 run resumed from its checkpoint (scaler included) continues
    bit for bit."""
    pytest.importorskip("sklearn", reason="the digits come with scikit-learn (pip install 'gpugrad[data]')")
    from gpugrad.app import training

    dataset = training.load_dataset("digits")
    runs = {p: training.train(dataset, epochs=5, device=device, precision=p)[1]
            for p in ("fp32", "bf16", "fp16")}
    ref = runs["fp32"][-1]
    for p in ("bf16", "fp16"):
        last = runs[p][-1]
        assert abs(last["loss"] - ref["loss"]) <= 0.01 * ref["loss"], (p, last["loss"], ref["loss"])
        assert abs(last["test accuracy"] - ref["test accuracy"]) <= 0.005, p
    kept = {}
    training.train(dataset, epochs=3, device=device, precision="fp16",
                   on_checkpoint=lambda state: kept.update(state=state))
    assert "scaler" in kept["state"]
    resumed, _ = training.train(dataset, epochs=2, device=device, precision="fp16",
                                resume=kept["state"])
    straight, _ = training.train(dataset, epochs=5, device=device, precision="fp16")
    for a, b in zip(resumed.parameters(), straight.parameters()):
        np.testing.assert_array_equal(host(a), host(b))


def test_gpugrad_memory_under_autocast_beside_pytorchs_autocast(capsys):
    """`gpugrad memory --autocast bf16`: formula, meta-device estimate and ledger equal to the
    byte, and beside PyTorch under torch.autocast (where installed) within one scalar."""
    from gpugrad.app import cli

    assert cli.main(["memory", "--batch", "1024", "--autocast", "bf16"]
                    + (["--compare-torch"] if _has_torch() else [])) == 0
    out = capsys.readouterr().out
    assert "under autocast bf16" in out and "equal at every batch size" in out
    from gpugrad.app import experiments

    row = experiments.experiment(784, 256, 10, [1024], autocast="bfloat16", with_torch=_has_torch())[0]
    # x and h in bfloat16, W2's bfloat16 copy, the float32 logits, the int64 labels
    by_hand = 1024 * 784 * 2 + 1024 * 256 * 2 + 10 * 256 * 2 + 1024 * 10 * 4 + 1024 * 8
    assert row["saved (formula)"] == row["saved (measured)"] == row["saved (estimate)"] == by_hand
    # and by dtype, as `gpugrad memory` prints them
    assert row["saved by dtype"] == {"bfloat16": 1024 * 784 * 2 + 1024 * 256 * 2 + 10 * 256 * 2,
                                     "float32": 1024 * 10 * 4, "int64": 1024 * 8}
    assert "saved by dtype at the largest batch: bfloat16 2,135,040, float32 40,960, int64 8,192" in out
    if _has_torch():
        assert 0 <= row["saved (torch)"] - row["saved (measured)"] <= 8


def _has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def test_the_tf32_switch(monkeypatch, capsys):
    """gg.backends.matmul.allow_tf32: off by default, a bool, reported by gpugrad info, and
    handed to CuPy's compute type for float32 where CuPy is loaded (a stand-in CuPy here: the
    GPU's own effect is for a GPU run to measure)."""
    import sys
    import types

    from gpugrad.app import cli

    assert gg.backends.matmul.allow_tf32 is False
    with pytest.raises(TypeError, match="True or False"):
        gg.backends.matmul.allow_tf32 = 1
    calls = []
    linalg = types.SimpleNamespace(COMPUTE_TYPE_TF32="tf32", COMPUTE_TYPE_DEFAULT="default",
                                   set_compute_type=lambda dtype, kind: calls.append((dtype, kind)))
    core = types.ModuleType("cupy._core")
    core._routines_linalg = linalg
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "cupy", types.ModuleType("cupy"))
        m.setitem(sys.modules, "cupy._core", core)
        m.setitem(sys.modules, "cupy._core._routines_linalg", linalg)
        gg.backends.matmul.allow_tf32 = True
        gg.backends.matmul.allow_tf32 = False
    assert calls == [(np.float32, "tf32"), (np.float32, "default")]
    try:
        gg.backends.matmul.allow_tf32 = True
        assert cli.main(["info"]) == 0
        assert "tf32 matmul               on" in capsys.readouterr().out
    finally:
        gg.backends.matmul.allow_tf32 = False


def test_bfloat16_on_a_cupy_too_old_for_it_is_refused_by_name():
    from gpugrad.devices import cupy as cupy_device

    for old in ("13.6.0", "12.3.0", "not a version"):
        refusal = cupy_device.bfloat16_refusal(old)
        assert isinstance(refusal, gg.DeviceError) and "CuPy 14 or later" in str(refusal)
    assert cupy_device.bfloat16_refusal("14.0.0") is None
    gg.devices.get("cpu").check_dtype(gg.bfloat16)  # NumPy holds it: no error
