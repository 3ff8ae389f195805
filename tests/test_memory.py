"""Memory accounting: saved bytes equal the analytic formula exactly; prediction saves nothing."""

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import devices
from gpugrad import nn
from gpugrad.nn import functional as F
from gpugrad.app import experiments
from conftest import host


def net_4_7(d, h, q, activation="relu", dtype="float32", bias=False):
    gg.seed(0)
    act = nn.ACTIVATIONS[activation]()
    return nn.Sequential(nn.Linear(d, h, bias=bias, dtype=dtype), act, nn.Linear(h, q, bias=bias, dtype=dtype))


def loss_4_7(model, lam=1e-3):
    return lambda o, y: F.cross_entropy(o, y) + lam * F.l2_penalty([model[0].weight, model[2].weight])


@pytest.mark.parametrize("activation", sorted(gg.ops.activation.ACTIVATIONS))  # every declared one
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch", [1, 7, 64, 256])
def test_measured_saved_activations_equal_the_formula(batch, dtype, activation, device):
    d, h, q = 50, 33, 10
    model = net_4_7(d, h, q, activation, dtype)
    x = gg.randn(batch, d, dtype=dtype, device=device)
    y = np.random.default_rng(batch).integers(0, q, batch)
    opt = gg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    report = gg.memory.compare(model, x, y, loss_4_7(model), opt)
    f = gg.memory.mlp_formula(d, h, q, batch, dtype=dtype, activation=activation, optimizer="sgd-momentum")
    assert report.train["saved activations"] == f["saved activations"], (report.buffers, f["saved"])
    assert report.train["parameters"] == f["parameters"] == report.predict["parameters"]
    assert report.train["gradients"] == f["gradients"]
    assert report.train["optimizer state"] == f["optimizer state"]
    assert report.predict["saved activations"] == 0 and report.predict["gradients"] == 0
    # what must be alive at once bounds the measured peaks from below: at the end of the step
    # the new gradients and momentum buffers; at the end of the forward the saved activations
    # the step itself allocated (x and the labels existed before it)
    made_in_step = f["saved activations"] - f["saved"]["x"] - f["saved"]["labels"]
    assert report.train["transient peak"] >= max(f["gradients"] + f["optimizer state"], made_in_step)
    live_before = f["parameters"] + x.data.nbytes
    assert report.train["total peak"] - report.train["transient peak"] == live_before
    assert report.train["total peak"] >= live_before + made_in_step


def test_prediction_peak_matches_the_formula():
    """Prediction keeps nothing: its peak is parameters + x + z and h alive together. The
    measured figure also counts Python objects (tracemalloc): a few KB at most here."""
    d, h, q, batch = 200, 128, 10, 256
    model = net_4_7(d, h, q)
    x = gg.randn(batch, d)
    r = gg.memory.compare(model, x, np.zeros(batch, np.int64), loss_4_7(model))
    expected = gg.memory.mlp_formula(d, h, q, batch)["predict peak (parameters + x + largest live pair)"]
    assert expected <= r.predict["total peak"] <= expected + 8192, (r.predict, expected)


def test_prediction_outside_record_saves_nothing():
    model = net_4_7(20, 8, 3)
    out = model(gg.randn(4, 20))
    assert out._node is None
    assert gg.memory.saved(out).activations == 0


def test_a_buffer_saved_by_several_nodes_or_viewed_is_counted_once():
    x = gg.randn(100, dtype="float64", requires_grad=True)
    with gg.autograd.record():
        y = gg.exp(x)              # saves y
        z = y * y + y[10:] .sum()  # multiply saves y twice; getitem's view shares y's buffer
    r = gg.memory.saved(z)
    assert r.activations == 100 * 8, r.buffers
    with gg.autograd.record():
        w = gg.tanh(x) * gg.sin(x)  # tanh saves y1, sin saves x (a leaf: not a parameter here)
    assert gg.memory.saved(w).activations == 100 * 8 * 2 + 100 * 8  # tanh's y, x, and multiply's sin(x)


def test_report_prints_a_table():
    model = net_4_7(30, 12, 4)
    r = gg.memory.compare(model, gg.randn(5, 30), [0, 1, 2, 3, 0], loss_4_7(model))
    text = str(r)
    for row in gg.memory.ROWS:
        assert row in text
    assert "linear" in text and r.as_dict()["train"]["saved activations"] > 0


def test_relu_family_saves_32x_less_than_its_input():
    x = gg.randn(64, 1024, requires_grad=True)
    for f in (gg.relu, gg.leaky_relu):
        with gg.autograd.record():
            y = f(x)
        assert gg.memory.saved(y, [x]).activations * 32 == x.data.nbytes


def _segment_model():
    gg.seed(7)
    return nn.MLP([12, 32, 32, 32, 4], activation="tanh", dtype="float64")


def _step(model, x, y, checkpointed):
    for p in model.parameters():
        p.attach_grad()
    with gg.autograd.record():
        h = model[0](x)
        middle = lambda t: model[5](model[4](model[3](model[2](model[1](t)))))  # noqa: E731
        h = gg.checkpoint(middle, h) if checkpointed else middle(h)
        loss = F.cross_entropy(model[6](h), y) + 0.01 * F.l2_penalty([model[2].weight])
    report = gg.memory.saved(loss, model.parameters())
    loss.backward()
    return [p.grad.numpy() for p in model.parameters()], report


def test_checkpoint_gives_identical_gradients_and_saves_less(device):
    model = _segment_model().to(device)
    x = gg.randn(16, 12, dtype="float64", device=device)
    y = np.arange(16) % 4
    plain, r_plain = _step(model, x, y, False)
    ckpt, r_ckpt = _step(model, x, y, True)
    for a, b in zip(plain, ckpt):  # model[2].weight is used inside and outside the segment
        np.testing.assert_array_equal(a, b)
    # inside the segment the plain run keeps two tanh outputs (the third, the segment's output,
    # is kept by the next layer either way); the checkpoint keeps only the segment's input
    assert r_plain.activations - r_ckpt.activations == (2 - 1) * 16 * 32 * 8
    assert r_ckpt.by_op.get("checkpoint") == 16 * 32 * 8


def test_checkpoint_second_order_and_captured_tensors():
    w = gg.tensor([0.3, -1.2, 0.7], dtype="float64")
    f = lambda x, w: gg.checkpoint(lambda t: gg.sin(t * w) * t, x)  # noqa: E731
    assert gg.gradcheck(f, [gg.tensor([0.5, 1.0, -2.0], dtype="float64"), w], order=2)
    a = gg.tensor([1.0, 2.0], dtype="float64", requires_grad=True)
    with gg.autograd.record():
        u = gg.exp(a)  # an intermediate of the outer graph, captured by fn
        out = gg.checkpoint(lambda t: t * u, gg.tensor([3.0, 4.0], dtype="float64")).sum()
    out.backward()
    np.testing.assert_allclose(a.grad.numpy(), [3 * np.e, 4 * np.e ** 2])


def test_checkpoint_outside_record_is_a_plain_call():
    x = gg.tensor([1.0, 2.0])
    out = gg.checkpoint(lambda t: t * 2, x)
    assert out._node is None and out.tolist() == [2, 4]
    with pytest.raises(TypeError, match="one Tensor"):
        with gg.autograd.record():
            gg.checkpoint(lambda t: (t, t), gg.tensor([1.0], requires_grad=True))


def test_memory_command(tmp_path, capsys):
    import json

    from gpugrad.app import cli

    out, plot = tmp_path / "m.json", tmp_path / "m.png"
    assert cli.main(["memory", "--d", "30", "--h", "16", "--q", "5", "--batch", "1,8,32",
                     "--checkpoint", "--compare-torch", "--json", str(out), "--plot", str(plot)]) in (0, 2)
    printed = capsys.readouterr()
    if "needs PyTorch" in printed.err:
        pytest.skip("PyTorch is not installed (pip install torch==2.13.0)")
    rows = json.loads(out.read_text())["rows"]
    assert "equal at every batch size" in printed.out
    for r in rows:
        assert r["saved (formula)"] == r["saved (measured)"] == r["saved (estimate)"]
        # relu's backward reads its mask from the output the next layer keeps, as PyTorch's
        # does: no more than PyTorch saves, which adds its 0-d scalars (nll_loss's total_weight)
        assert r["saved (torch)"] - 16 <= r["saved (measured)"] <= r["saved (torch)"]
        assert r["train peak"] > r["predict peak"] and r["checkpoint step time ratio"] > 0
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_checkpointing_hidden_layers_saves_memory_in_a_deeper_net():
    model = experiments.mlp_4_7(40, 64, 5, layers=4, activation="tanh", dtype="float64")
    x, y = gg.randn(32, 40, dtype="float64"), np.arange(32) % 5
    loss_fn = experiments.loss_4_7(model, 1e-3)
    row = experiments._checkpoint_row(model, x, y, loss_fn, "cpu")
    plain = gg.memory.compare(model, x, y, loss_fn).train["saved activations"]
    # tanh outputs of the two inner hidden layers and a linear input are recomputed instead
    assert row["saved (checkpoint)"] < plain


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
@pytest.mark.parametrize("layers", [2, 4])
@pytest.mark.parametrize("batch", [1, 33, 128])
def test_estimate_equals_the_measured_saved_bytes(batch, layers, activation):
    model = experiments.mlp_4_7(40, 24, 6, layers=layers, activation=activation)
    loss_fn = experiments.loss_4_7(model, 1e-3)
    y = np.arange(batch) % 6
    est = gg.memory.estimate(model, (batch, 40), loss_fn, labels=y)
    measured = gg.memory.compare(model, gg.randn(batch, 40), y, loss_fn)
    assert est["saved activations"] == measured.train["saved activations"]
    assert est["saved by op"] == measured.by_op
    assert est["parameters"] == measured.train["parameters"]
    # estimating ran on the meta device and left the parameters where they were
    assert all(p.device == gg.default_device() and devices.device_of_array(p.data) == p.device
               for p in model.parameters())


def test_estimate_works_for_recurrent_models_and_checkpointed_forwards():
    gg.seed(8)
    lstm, head = nn.LSTM(5, 7), nn.Linear(7, 3)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.head = lstm, head

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.head(out[-1])
    model = Model()
    est = gg.memory.estimate(model, (6, 4, 5), F.cross_entropy, labels=np.array([0, 1, 2, 0]))
    x = gg.randn(6, 4, 5)
    with gg.autograd.record():
        loss = F.cross_entropy(model(x), [0, 1, 2, 0])
    assert est["saved activations"] == gg.memory.saved(loss, model.parameters()).activations
    mlp = experiments.mlp_4_7(30, 16, 4, layers=4, activation="tanh")
    loss_fn = experiments.loss_4_7(mlp, 0.0)
    ck = gg.memory.estimate(mlp, (8, 30), loss_fn, forward=experiments.checkpointed_forward(mlp))
    plain = gg.memory.estimate(mlp, (8, 30), loss_fn)
    assert ck["saved activations"] == plain["saved activations"] - 8 * 16 * 4  # one tanh output


def test_estimate_allocates_no_array_data():
    """A batch whose activations would take gigabytes is estimated in a few KB of arrays."""
    import tracemalloc

    model = experiments.mlp_4_7(784, 256, 10)
    tracemalloc.start()
    try:
        est = gg.memory.estimate(model, (1_000_000, 784), experiments.loss_4_7(model, 1e-3))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert est["saved activations"] == gg.memory.mlp_formula(784, 256, 10, 1_000_000)["saved activations"]
    assert est["saved activations"] > 4e9 and peak < 64e6, peak


def test_fit_checkpoints_to_a_budget_and_keeps_the_gradients():
    gg.seed(9)
    model = experiments.mlp_4_7(20, 32, 5, layers=9, activation="tanh", dtype="float64")
    loss_fn = experiments.loss_4_7(model, 0.0)
    x, y = gg.randn(16, 20, dtype="float64"), np.arange(16) % 5
    plain = gg.memory.fit(model, (16, 20), loss_fn, 10**9, labels=y)
    assert plain.segments == [] and plain.saved_bytes == plain.plain_bytes
    budget = plain.plain_bytes * 2 // 3
    plan = gg.memory.fit(model, (16, 20), loss_fn, budget, labels=y)
    assert plan.segments and plan.peak_bytes <= budget < plan.plain_bytes
    assert 2 <= len(plan.segments) <= 6 and plan.recomputed_layers == plan.layers - 1

    def grads(forward):
        for p in model.parameters():
            p.attach_grad()
        with gg.autograd.record():
            loss = loss_fn(forward(x), y)
        kept = gg.memory.saved(loss, model.parameters()).activations
        loss.backward()
        return [p.grad.numpy() for p in model.parameters()], kept
    g_plain, _ = grads(model)
    g_plan, kept = grads(plan.forward)
    assert kept == plan.saved_bytes  # the estimate is what the real run keeps
    for a, b in zip(g_plain, g_plan):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="no checkpoint plan fits 1,000 bytes; the least is"):
        gg.memory.fit(model, (16, 20), loss_fn, 1000, labels=y)


# ---------------------------------------------------------------- no double saves


def _relu_node_saved(y):
    node = y._node
    return {k: v.nbytes for k, v in node.saved.items()}


@pytest.mark.parametrize("act", [gg.relu, lambda t: gg.leaky_relu(t, 0.2)])
def test_an_activation_whose_output_the_next_op_keeps_drops_its_mask(act, device):
    rng = np.random.default_rng(0)
    x_host = rng.standard_normal((8, 40))
    x_host[0, :3] = [np.nan, np.inf, -np.inf]
    w_host = rng.standard_normal((5, 40))
    grads = []
    for shared in (True, False):
        x = gg.tensor(x_host, dtype="float64", device=device, requires_grad=True)
        w = gg.tensor(w_host, dtype="float64", device=device, requires_grad=True)
        with gg.autograd.record():
            h = act(x)
            # linear keeps h for dW; through "+ 0" it keeps another tensor, and h its own mask
            out = F.linear(h if shared else h + 0, w)
            loss = gg.where(gg.isfinite(out), out, 0.0).sum()
        saved = _relu_node_saved(h)
        if shared:
            assert "mask" not in saved and saved["y"] == x_host.size * 8
        else:
            assert list(saved) == ["mask"] and saved["mask"] == 4 * ((x_host.size + 31) // 32)
        loss.backward(retain_graph=True)
        first = host(x.grad).copy()
        loss.backward()  # the mask is made again from h on every backward
        np.testing.assert_array_equal(host(x.grad), first)
        grads.append(first)
    np.testing.assert_array_equal(grads[0], grads[1])  # bitwise, NaN and inf rows included
    # once the consumer's backward lets the output go, the activation keeps its mask again
    # (1 bit per element until its own backward, not the output)
    x = gg.tensor(x_host, dtype="float64", device=device, requires_grad=True)
    w = gg.tensor(w_host, dtype="float64", device=device, requires_grad=True)
    with gg.autograd.record():
        h = act(x)
        loss = F.linear(h, w).sum()
    assert "mask" not in _relu_node_saved(h)
    gg.autograd.grad(loss, [h, w])  # walks the linear only, and frees it
    assert list(_relu_node_saved(h)) == ["mask"]


def test_the_mask_stays_where_it_stands_alone_or_the_slope_is_negative(device):
    x = gg.randn(1000, device=device, requires_grad=True)
    w = gg.randn(1000, device=device, requires_grad=True)
    with gg.autograd.record():
        alone = gg.relu(x).sum()                   # sum keeps nothing
        flipped = gg.leaky_relu(x, -0.5) * w       # multiply keeps the output, but y > 0 != x > 0
    report = gg.memory.saved(alone)
    assert report.activations == 4 * 32 < x.size * 4  # 1 bit per element, not the output
    assert list(flipped._node.parents[0].saved) == ["mask"]
    assert gg.gradcheck(lambda t: F.linear(gg.relu(t), gg.tensor(np.eye(3), dtype="float64",
                                                                   device=device)).sum() ** 2,
                        [gg.tensor([0.5, -0.3, 2.0], dtype="float64", device=device)], order=2)
