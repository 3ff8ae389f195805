"""RNN, LSTM, GRU: BPTT against a direct NumPy implementation, truncation both ways, PyTorch."""

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import nn
from gpugrad.nn import functional as F
from conftest import host


def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def bptt_reference(U, V, W, x, y, truncate):
    """The BPTT article's tanh RNN, s_t = tanh(U x_t + W s_{t-1}), o_t = softmax(V s_t), with
    summed cross-entropy over the steps: gradients by hand, the error of step t sent back at
    most `truncate` steps."""
    T, H = len(x), W.shape[0]
    s = np.zeros((T + 1, H))  # s[-1] is the zero initial state
    o = np.zeros((T, V.shape[0]))
    for t in range(T):
        s[t] = np.tanh(U[:, x[t]] + W @ s[t - 1])
        o[t] = _softmax(V @ s[t])
    dU, dV, dW = np.zeros_like(U), np.zeros_like(V), np.zeros_like(W)
    delta_o = o.copy()
    delta_o[np.arange(T), y] -= 1
    for t in reversed(range(T)):
        dV += np.outer(delta_o[t], s[t])
        delta = (V.T @ delta_o[t]) * (1 - s[t] ** 2)
        for step in reversed(range(max(0, t - truncate), t + 1)):
            dW += np.outer(delta, s[step - 1])
            dU[:, x[step]] += delta
            delta = (W.T @ delta) * (1 - s[step - 1] ** 2)
    return dU, dV, dW


def _gpugrad_bptt(U, V, W, x, y, truncate):
    vocab, H = U.shape[1], U.shape[0]
    rnn = nn.RNN(vocab, H, bias=False, bptt_truncate=truncate, dtype="float64")
    out_layer = nn.Linear(H, vocab, bias=False, dtype="float64")
    rnn.load_state_dict({"weight_ih": U, "weight_hh": W})
    out_layer.load_state_dict({"weight": V})
    onehot = gg.tensor(np.eye(vocab)[x][:, None, :], dtype="float64")
    with gg.autograd.record():
        states, _ = rnn(onehot)
        loss = F.cross_entropy(out_layer(states.reshape(len(x), H)), y, reduction="sum")
    loss.backward()
    return host(rnn.weight_ih.grad), host(out_layer.weight.grad), host(rnn.weight_hh.grad)


@pytest.mark.parametrize("truncate", [None, 0, 1, 3])
def test_rnn_bptt_equals_the_numpy_reference(truncate):
    rng = np.random.default_rng(0)
    vocab, H, T = 6, 5, 9
    U, V, W = (rng.uniform(-0.6, 0.6, shape) for shape in ((H, vocab), (vocab, H), (H, H)))
    x, y = rng.integers(0, vocab, T), rng.integers(0, vocab, T)
    ours = _gpugrad_bptt(U, V, W, x, y, truncate)
    ref = bptt_reference(U, V, W, x, y, T if truncate is None else truncate)
    for name, a, b in zip("UVW", ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=f"d{name}")
    if truncate is not None:  # truncation really changed something
        full = bptt_reference(U, V, W, x, y, T)
        assert not np.allclose(ours[2], full[2])


def test_truncation_keeps_the_values():
    gg.seed(1)
    x = gg.randn(7, 3, 4, dtype="float64")
    for cls in (nn.RNN, nn.LSTM, nn.GRU):
        full = cls(4, 5, dtype="float64")
        cut = cls(4, 5, bptt_truncate=2, dtype="float64")
        cut.load_state_dict(full.state_dict())
        np.testing.assert_allclose(host(full(x)[0]), host(cut(x)[0]), rtol=1e-14)


def test_truncation_stops_the_gradient_k_steps_back():
    gg.seed(2)
    lstm = nn.LSTM(3, 4, bptt_truncate=1, dtype="float64")
    x = gg.randn(6, 1, 3, dtype="float64", requires_grad=True)
    with gg.autograd.record():
        out, _ = lstm(x)
        last = out[5].sum()
    (gx,) = gg.autograd.grad(last, [x])
    reach = np.abs(host(gx)).sum(axis=(1, 2))
    assert (reach[4:] > 0).all() and (reach[:4] == 0).all()


def test_detaching_the_carried_state_between_chunks():
    gg.seed(3)
    gru = nn.GRU(2, 3, dtype="float64")
    x = gg.randn(8, 2, 2, dtype="float64", requires_grad=True)
    whole, _ = gru(x)
    with gg.autograd.record():
        a, h = gru(x[:4])
        b, _ = gru(x[4:], h.detach())
        loss = b.sum()
    np.testing.assert_allclose(host(gg.concatenate([a, b])), host(whole), rtol=1e-14)
    (gx,) = gg.autograd.grad(loss, [x])
    assert (host(gx)[:4] == 0).all() and (np.abs(host(gx)[4:]) > 0).any()


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
def test_recurrent_layers_pass_gradcheck(cls):
    gg.seed(4)
    m = cls(3, 2, dtype="float64")
    x = gg.randn(3, 2, 3, dtype="float64")
    if cls is nn.LSTM:
        h0, c0 = gg.randn(2, 2, dtype="float64"), gg.randn(2, 2, dtype="float64")
        assert gg.gradcheck(lambda x, h, c: m(x, (h, c))[0], [x, h0, c0])
    else:
        h0 = gg.randn(2, 2, dtype="float64")
        assert gg.gradcheck(lambda x, h: m(x, h)[0], [x, h0])

    assert gg.gradcheck(lambda w1, w2: _with_weights(m, w1, w2, x), [m.weight_ih, m.weight_hh], forward=False)


def _with_weights(m, w_ih, w_hh, x):
    """m's output as a function of its two weight matrices (tensors with their own graph)."""
    saved = m._parameters["weight_ih"], m._parameters["weight_hh"]
    object.__setattr__(m, "weight_ih", w_ih)
    object.__setattr__(m, "weight_hh", w_hh)
    try:
        return m(x)[0]
    finally:
        object.__setattr__(m, "weight_ih", saved[0])
        object.__setattr__(m, "weight_hh", saved[1])


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_recurrent_layers_match_pytorch(name):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
    gg.seed(5)
    m = getattr(nn, name)(3, 4, dtype="float64")
    tm = getattr(torch.nn, name)(3, 4).double()
    with torch.no_grad():
        for n, p in m.named_parameters():
            getattr(tm, n + "_l0").copy_(torch.tensor(host(p)))
    x = np.random.default_rng(5).standard_normal((6, 2, 3))
    with gg.autograd.record():
        out, _ = m(gg.tensor(x, dtype="float64"))
        loss = (out * out).sum()
    loss.backward()
    tout, _ = tm(torch.tensor(x))
    (tout * tout).sum().backward()
    np.testing.assert_allclose(host(out), tout.detach().numpy(), rtol=1e-12, atol=1e-14)
    for n, p in m.named_parameters():
        np.testing.assert_allclose(host(p.grad), getattr(tm, n + "_l0").grad.numpy(), rtol=1e-10, atol=1e-12)


def test_bad_shapes_are_named():
    rnn = nn.RNN(3, 4)
    with pytest.raises(ValueError, match=r"input must be \(T, batch, 3\)"):
        rnn(gg.ones((5, 3)))
    with pytest.raises(ValueError, match=r"initial state must be 1 tensor\(s\) of shape \(2, 4\)"):
        rnn(gg.ones((5, 2, 3)), gg.ones((2, 5)))


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_each_recurrent_model_learns_a_delay_task(name):
    """Output the token seen two steps earlier: it needs memory, and each model learns it."""
    gg.seed(6)
    rng = np.random.default_rng(6)
    vocab, H, T, B, delay = 4, 24, 10, 32, 2
    rnn = getattr(nn, name)(vocab, H)
    head = nn.Linear(H, vocab)
    opt = gg.optim.Adam(rnn.parameters() + head.parameters(), lr=0.03)

    def batch():
        tokens = rng.integers(0, vocab, (T, B))
        return gg.tensor(np.eye(vocab)[tokens]), tokens[:-delay].reshape(-1)
    for _ in range(150):
        x, y = batch()
        with gg.autograd.record():
            out, _ = rnn(x)
            loss = F.cross_entropy(head(out[delay:].reshape(-1, H)), y)
        loss.backward()
        opt.step()
    x, y = batch()
    out, _ = rnn(x)
    acc = (host(head(out[delay:].reshape(-1, H))).argmax(1) == y).mean()
    assert acc > 0.9, f"{name} reached only {acc:.2%}"


def test_rnn_grads_command(tmp_path, capsys):
    import json

    from gpugrad.app import cli

    out, plot = tmp_path / "g.json", tmp_path / "g.png"
    assert cli.main(["rnn-grads", "--steps", "25", "--hidden", "16", "--json", str(out),
                     "--plot", str(plot)]) == 0
    norms = json.loads(out.read_text())["norms"]
    assert set(norms) == {"tanh RNN", "ReLU RNN", "LSTM", "LSTM f+1"}
    for name, n in norms.items():
        assert len(n) == 25 and n[0] < n[-1], name  # less gradient reaches the earliest state
    # an open forget gate carries more gradient 20 steps back than the plain recurrences
    assert norms["LSTM f+1"][4] > max(norms["tanh RNN"][4], norms["ReLU RNN"][4])
    assert plot.read_bytes()[:4] == b"\x89PNG" and "per-step factor" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_a_recurrent_layer_takes_a_device_array_as_its_input(kind, device):
    """A raw array of the device (CuPy's carries a .device object of its own) gives the same
    outputs as the tensor over it."""
    gg.seed(0)
    layer = getattr(gg.nn, kind)(3, 5, device=device)
    x = gg.randn(4, 2, 3, device=device)
    from_array, _ = layer(x.data)
    from_tensor, _ = layer(x)
    np.testing.assert_array_equal(host(from_array), host(from_tensor))


def test_the_cells_name_what_does_not_fit():
    with pytest.raises(gg.ShapeError, match=r"lstm_cell: the state must be \(\.\.\., H\) and the "
                                            r"projections \(\.\.\., 4 \* H\).*\(3, 2\).*\(3, 7\)"):
        gg.lstm_cell(gg.zeros((3, 7)), gg.zeros((3, 2)))
    with pytest.raises(gg.ShapeError, match=r"gru_cell: .*\(3, 2\).*\(3, 6\), \(2, 6\)"):
        gg.gru_cell(gg.zeros((3, 6)), gg.zeros((2, 6)), gg.zeros((3, 2)))
    with pytest.raises(gg.ShapeError, match=r"gru_cell_backward: the gradient must have shape "
                                            r"\(3, 2\), got \(3, 1\)"):
        gg.gru_cell_backward(gg.zeros((3, 1)), gg.zeros((3, 6)), gg.zeros((3, 6)), gg.zeros((3, 2)))
    with pytest.raises(TypeError, match="lstm_cell: inputs must be floating point, got int64"):
        gg.lstm_cell(gg.zeros((3, 8), dtype="int64"), gg.zeros((3, 2), dtype="int64"))


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("truncate", [None, 1])
def test_recurrent_layers_under_autocast(name, truncate):
    """The products run in bfloat16. A whole layer is one op that autocast computes in bfloat16,
    as PyTorch's autocast does its RNNs; with bptt_truncate the steps are separate ops: an LSTM's
    or GRU's cell promotes its bfloat16 gates with the float32 state, as NumPy promotes them,
    and an RNN's tanh follows its bfloat16 input. Either way the outputs stay within bfloat16's
    error of float32's."""
    gg.seed(0)
    layer = getattr(gg.nn, name)(3, 8, bptt_truncate=truncate)
    x = gg.tensor(np.random.default_rng(0).standard_normal((6, 2, 3)), dtype="float32")
    out32, _ = layer(x)
    with gg.autocast("bfloat16"), gg.autograd.record():
        out, _ = layer(x)
        loss = out.sum()
    loss.backward()
    cell_promotes = truncate is not None and name != "RNN"
    assert out.dtype == (np.float32 if cell_promotes else gg.bfloat16)
    assert layer.weight_hh.grad.dtype == np.float32
    wide = host(out).astype(np.float32)
    np.testing.assert_allclose(wide, host(out32), atol=0.05)
    assert not np.allclose(wide, host(out32), atol=1e-6)  # the products did round
