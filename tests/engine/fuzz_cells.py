"""The fuzzer's kinds for the recurrent cells (tests/engine/fuzz.py registers them): lstm_cell and
gru_cell against PyTorch's own equations, and their backward ops against torch.func.vjp of those
equations, so that the fuzzer's gradients of the backward ops check the cells' second
derivatives against PyTorch's."""

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
