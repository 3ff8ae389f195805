"""The fuzzer's kinds for the recurrent cells and layer (tests/engine/fuzz.py registers them):
lstm_cell and gru_cell against PyTorch's own equations, their backward ops against
torch.func.vjp of those equations, so that the fuzzer's gradients of the backward ops check the
cells' second derivatives against PyTorch's, and lstm_layer against a loop of the equations."""

import numpy as np

import gpugrad as gg


def register(f):
    """Add the kinds to fuzz's table; f is the fuzz module (torch is f.torch at call time)."""
    f.kind("lstm_cell", ["lstm_cell"], _build(f, "lstm_cell", 4),
           lambda x, p: gg.lstm_cell(*x), lambda x, p: _pt_lstm(f, *f._pt_same(*x)))
    f.kind("lstm_cell_backward", ["lstm_cell_backward"], _build(f, "lstm_cell_backward", 4),
           lambda x, p: gg.lstm_cell_backward(*x),
           lambda x, p: _pt_backward(f, _pt_lstm, *f._pt_same(*x)))
    f.kind("gru_cell", ["gru_cell"], _build(f, "gru_cell", 3),
           lambda x, p: gg.gru_cell(*x), lambda x, p: _pt_gru(f, *f._pt_same(*x)))
    f.kind("gru_cell_backward", ["gru_cell_backward"], _build(f, "gru_cell_backward", 3),
           lambda x, p: gg.gru_cell_backward(*x),
           lambda x, p: _pt_backward(f, _pt_gru, *f._pt_same(*x)))
    f.kind("lstm_layer", ["lstm_layer"], _layer_build(4),
           lambda x, p: gg.lstm_layer(*_with_bias(x, p)),
           lambda x, p: _pt_layer(f, *_with_bias(f._pt_same(*x), p)))
    f.kind("gru_layer", ["gru_layer"], _layer_build(3),
           lambda x, p: gg.gru_layer(*_with_biases(x, p)),
           lambda x, p: _pt_gru_layer(f, *_with_biases(f._pt_same(*x), p)))
    f.kind("rnn_layer", ["rnn_layer"], _layer_build(1),
           lambda x, p: gg.rnn_layer(*_with_bias(x, p), nonlinearity=p["nonlinearity"]),
           lambda x, p: _pt_rnn_layer(f, *_with_bias(f._pt_same(*x), p), p["nonlinearity"]),
           kink=_rnn_kink)


def _build(f, name, blocks):
    """The state (..., H) from the program or new; the projections (and the gradient of a
    backward op) of the shapes that fit it."""
    lstm, backward = blocks == 4, name.endswith("_backward")

    def build(b):
        s = b.operand(lambda v: len(v.shape) >= 1 and v.shape[-1] <= 3,
                      shape=lambda: b.shape(min_rank=1, max_size=6))
        state = b.values[s].shape
        wide = state[:-1] + (blocks * state[-1],)
        projections = [b.bounded(b.exact(wide), 3.0) for _ in range(1 if lstm else 2)]
        args = projections + [s]  # the op's order: gates, c / gi, gh, h
        out_bound = b.values[s].bound + 1
        shape = ((2,) if lstm else ()) + state
        if backward:
            g = b.exact(((2,) if lstm else ()) + state)
            args = [g] + args
            shape = state[:-1] + ((5 if lstm else 7) * state[-1],)
            out_bound = 2 * b.values[g].bound * (b.values[s].bound + 3)
        return b.step(name, args, {}, shape, out_bound)
    return build


def _pt_lstm(f, gates, c):
    torch = f.torch
    i, fg, g, o = gates.chunk(4, dim=-1)
    c2 = torch.sigmoid(fg) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.stack([torch.sigmoid(o) * torch.tanh(c2), c2])


def _pt_gru(f, gi, gh, h):
    torch = f.torch
    ir, iz, i_n = gi.chunk(3, dim=-1)
    hr, hz, hn = gh.chunk(3, dim=-1)
    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
    n = torch.tanh(i_n + r * hn)
    return (1 - z) * n + z * h


def _pt_backward(f, cell, g, *inputs):
    """The gradients of the cell's inputs for g, side by side on the last axis, as a
    differentiable function of g and the inputs."""
    _, vjp = f.torch.func.vjp(lambda *xs: cell(f, *xs), *inputs)
    return f.torch.cat(vjp(g), dim=-1)


def _layer_build(gates):
    """A sequence (from the program or new) and weights, bias (or none) and state that fit it;
    an RNN's nonlinearity."""
    def build(b):
        rng = b.rng
        x = b.operand(lambda v: len(v.shape) == 3 and v.shape[0] >= 1 and v.shape[2] <= 3,
                      shape=lambda: tuple(int(d) for d in rng.integers(1, 4, 3)))
        steps, n, i = b.values[x].shape
        h = int(rng.integers(1, 3))
        x = b.bounded(x, 3.0)
        args = [x, b.bounded(b.exact((gates * h, i)), 1.0),
                b.bounded(b.exact((gates * h, h)), 1.0 if gates == 4 else 0.5)]
        bias = bool(rng.random() < 0.7)
        if bias:  # the GRU's two
            args += [b.bounded(b.exact((gates * h,)), 1.0) for _ in range(2 if gates == 3 else 1)]
        params = {"bias": bias}
        if gates == 4:
            state = [b.exact((n, h)) for _ in range(2)]
            return b.step("lstm_layer", args + state, params, (2, steps, n, h),
                          b.values[state[1]].bound + steps)
        h0 = b.exact((n, h))
        if gates == 3:
            return b.step("gru_layer", args + [h0], params, (steps, n, h),
                          b.values[h0].bound + 1)
        params["nonlinearity"] = str(rng.choice(["tanh", "relu"]))
        bound = 1.0 if params["nonlinearity"] == "tanh" else (
            b.values[h0].bound + 3 * i + 2) * 2 ** steps
        return b.step("rnn_layer", args + [h0], params, (steps, n, h), bound)
    return build


def _rnn_kink(x, p, out):
    """relu's branch at every step, the sign of its output (tanh has none)."""
    out = np.asarray(out, dtype=np.float64)
    return np.zeros_like(out) if p["nonlinearity"] == "tanh" else np.sign(out)


def _with_biases(x, p):
    return list(x) if p["bias"] else list(x[:3]) + [None, None] + list(x[3:])


def _pt_gru_layer(f, x, w_ih, w_hh, b_ih, b_hh, h):
    hs = []
    for t in range(x.shape[0]):
        gi, gh = x[t] @ w_ih.T, h @ w_hh.T
        h = _pt_gru(f, gi if b_ih is None else gi + b_ih, gh if b_hh is None else gh + b_hh, h)
        hs.append(h)
    return f.torch.stack(hs)


def _with_bias(x, p):
    return list(x) if p["bias"] else list(x[:3]) + [None] + list(x[3:])


def _pt_layer(f, x, w_ih, w_hh, b, h, c):
    torch = f.torch
    hs, cs = [], []
    for t in range(x.shape[0]):
        gates = x[t] @ w_ih.T + h @ w_hh.T + (0 if b is None else b)
        out = _pt_lstm(f, gates, c)
        h, c = out[0], out[1]
        hs.append(h)
        cs.append(c)
    return torch.stack([torch.stack(hs), torch.stack(cs)])


def _pt_rnn_layer(f, x, w_ih, w_hh, b, h, nonlinearity):
    torch = f.torch
    act = torch.tanh if nonlinearity == "tanh" else torch.relu
    hs = []
    for t in range(x.shape[0]):
        h = act(x[t] @ w_ih.T + h @ w_hh.T + (0 if b is None else b))
        hs.append(h)
    return torch.stack(hs)
