"""lstm_layer: a whole LSTM layer's recurrence over a sequence as one op, as cuDNN and oneDNN
run it: the input's projections of every step in one product, then per step one product of the
state and gg.lstm_cell's math (its kernel on CUDA); the backward runs the steps in reverse
through lstm_cell_backward and takes the weights' gradients of every step in one product each.

lstm_layer(x, w_ih, w_hh, b, h0, c0): x (T, batch, input), PyTorch's weights w_ih (4H, input)
and w_hh (4H, H), b (4H,) the two biases summed (or None), the initial state h0, c0 (batch, H);
the result stacks every step's h and c, (2, T, batch, H).

The forward keeps every step's gate pre-activations (T, batch, 4H), which the backward reads
at first order. Its rule is written once in `ops`: under create_graph and gg.jvp it computes the
same pre-activations again from the saved input and weights, with the same products in the same
order, so they carry the history the kept ones lack and their values are the same bits.
"""

import numpy as np

from gpugrad import devices
from gpugrad import recording
from gpugrad import tensors
from gpugrad.devices.cuda import specs
from gpugrad.ops import recurrent
from gpugrad.ops.registry import defop


def _checked(x, w_ih, w_hh, b, h0, c0):
    """The arrays in their common float dtype, or an error naming what does not fit."""
    arrays = {"x": x, "w_ih": w_ih, "w_hh": w_hh, "b": b, "h0": h0, "c0": c0}
    h = w_hh.shape[1] if w_hh.ndim == 2 else 0
    if not (h and x.ndim == 3 and x.shape[0] >= 1 and w_hh.shape == (4 * h, h)
            and w_ih.shape == (4 * h, x.shape[2]) and (b is None or b.shape == (4 * h,))
            and h0.shape == (x.shape[1], h) and c0.shape == h0.shape):
        raise recording.ShapeError(
            f"lstm_layer: x must be (T >= 1, batch, input), w_ih (4H, input), w_hh (4H, H), b "
            f"(4H,) or None, h0 and c0 (batch, H); got {_shapes(arrays)}")
    present = [a for a in arrays.values() if a is not None]
    if not all(devices.is_float(a.dtype) for a in present):
        raise TypeError(f"inputs must be floating point, got "
                        f"{', '.join(sorted({str(a.dtype) for a in present}))}")
    dtype = np.result_type(*present)
    return [a if a is None or a.dtype == dtype else a.astype(dtype) for a in arrays.values()]


def _shapes(arrays):
    return ", ".join(f"{k} {None if a is None else a.shape}" for k, a in arrays.items())


def _projections(xp, x, w_ih, b):
    """x's projections at every step, (T, batch, 4H), in one product (bias added in place)."""
    t, n, _ = x.shape
    xw = devices.matmul(xp, x.reshape(t * n, x.shape[2]), w_ih.T)
    if b is not None:
        xw += b
    return xw.reshape(t, n, xw.shape[-1])


def _forward_saving(xp, x, w_ih, w_hh, b, h0, c0):
    x, w_ih, w_hh, b, h0, c0 = _checked(x, w_ih, w_hh, b, h0, c0)
    xw = _projections(xp, x, w_ih, b)
    steps = x.shape[0]
    y = xp.empty((2, steps) + h0.shape, xw.dtype)
    gates = xp.empty(xw.shape, xw.dtype)
    h, c, w = h0, c0, w_hh.T
    for t in range(steps):
        xp.add(xw[t], devices.matmul(xp, h, w), out=gates[t])
        y[:, t] = recurrent.run(specs.LSTM_CELL_FWD, xp, c, gates[t])
        h, c = y[0, t], y[1, t]
    return y, {"gates": gates}


def _forward(xp, x, w_ih, w_hh, b, h0, c0):
    return _forward_saving(xp, x, w_ih, w_hh, b, h0, c0)[0]


def _projections_in(ops, x, w_ih, b):
    """_projections as ops: the same products and sum, so the same bits, with history."""
    t, n, i = x.shape
    xw = ops.matmul(ops.reshape(x, (t * n, i)), ops.transpose(w_ih))
    if b is not None:
        xw = xw + b
    return ops.reshape(xw, (t, n, xw.shape[-1]))


def _vjp(ops, g, x, w_ih, w_hh, b, h0, c0, y, gates):
    steps, n, i = x.shape
    h = h0.shape[-1]
    if g.shape != y.shape:  # a gradient broadcast to the output (sum's head)
        g = ops.broadcast_to(g, y.shape)
    kept = not isinstance(g, tensors.Tensor)  # first order: the forward's own pre-activations
    xw = None if kept else _projections_in(ops, x, w_ih, b)
    w = ops.transpose(w_hh)
    dh, dc = g[0, steps - 1], g[1, steps - 1]
    dgates = []
    for t in reversed(range(steps)):
        h_prev, c_prev = (h0, c0) if t == 0 else (y[0, t - 1], y[1, t - 1])
        pre = gates[t] if kept else xw[t] + ops.matmul(h_prev, w)
        d = ops.lstm_cell_backward(ops.stack([dh, dc]), pre, c_prev)
        dgates.append(d[..., :4 * h])
        dh, dc = ops.matmul(dgates[-1], w_hh), d[..., 4 * h:]
        if t:
            dh, dc = dh + g[0, t - 1], dc + g[1, t - 1]
    dxw = ops.reshape(ops.stack(dgates[::-1]), (steps * n, 4 * h))
    hs = ops.concatenate([ops.reshape(h0, (1, n, h)), y[0, :steps - 1]])
    dxw_t = ops.transpose(dxw)
    return (ops.reshape(ops.matmul(dxw, w_ih), x.shape),
            ops.matmul(dxw_t, ops.reshape(x, (steps * n, i))),
            ops.matmul(dxw_t, ops.reshape(hs, (steps * n, h))),
            None if b is None else ops.sum(dxw, axis=0), dh, dc)


def _jvp(ops, ts, x, w_ih, w_hh, b, h0, c0, y, gates=None):
    tx, twi, twh, tb, th, tc = (t if t is not None or x_ is None else ops.full_like(x_, 0)
                                for t, x_ in zip(ts, (x, w_ih, w_hh, b, h0, c0)))
    steps, n, i = x.shape
    xw = _projections_in(ops, x, w_ih, b)
    txw = ops.matmul(ops.reshape(tx, (steps * n, i)), ops.transpose(w_ih)) + ops.matmul(
        ops.reshape(x, (steps * n, i)), ops.transpose(twi))
    txw = ops.reshape(txw if tb is None else txw + tb, xw.shape)
    w, tw = ops.transpose(w_hh), ops.transpose(twh)
    h_prev, c_prev, hs, cs = h0, c0, [], []
    for t in range(steps):
        pre = xw[t] + ops.matmul(h_prev, w)
        tpre = txw[t] + ops.matmul(th, w) + ops.matmul(h_prev, tw)
        out = recurrent.lstm_jvp(ops, (tpre, tc), pre, c_prev, None)
        th, tc = out[0], out[1]
        hs.append(th)
        cs.append(tc)
        h_prev, c_prev = y[0, t], y[1, t]
    return ops.stack([ops.stack(hs), ops.stack(cs)])


lstm_layer = defop(
    "lstm_layer", _forward, save="x w_ih w_hh b h0 c0 y gates", vjp_all=_vjp, jvp=_jvp, optional=("b",),
    forward_saving=_forward_saving, aux=("gates",),
    doc="A whole LSTM layer over a sequence: x (T, batch, input), w_ih (4H, input), w_hh (4H, H), "
        "b (4H,) (both biases summed, or None), h0 and c0 (batch, H) -> every step's h and c, "
        "stacked (2, T, batch, H).")
