"""lstm_layer, gru_layer and rnn_layer: a whole recurrent layer over a sequence as one op, as cuDNN and
oneDNN run it: the input's projections of every step in one product, then per step one product
of the state and the cell's math (gg.lstm_cell's and gg.gru_cell's kernels on CUDA; tanh or
relu for the plain RNN); the backward runs the steps in reverse (through lstm_cell_backward,
gru_cell_backward, tanh_backward or relu_backward_from_output) and takes the weights' gradients of every step in one product each.

lstm_layer(x, w_ih, w_hh, b, h0, c0): x (T, batch, input), PyTorch's weights w_ih (4H, input)
and w_hh (4H, H), b (4H,) the two biases summed (or None), the initial state h0, c0 (batch, H);
the result stacks every step's h and c, (2, T, batch, H). rnn_layer(x, w_ih, w_hh, b, h0,
nonlinearity="tanh"|"relu"): the same for h_t = f(x_t w_ih^T + h_{t-1} w_hh^T + b), every
step's h, (T, batch, H); its backward reads the derivative from the output. gru_layer(x, w_ih,
w_hh, b_ih, b_hh, h0): PyTorch's GRU, every step's h, (T, batch, H).

The LSTM's forward keeps every step's gate pre-activations (T, batch, 4H), the GRU's the
projections of the input and of the state, which the backward reads at first order. Its rule is written once in `ops`: under create_graph and gg.jvp it computes the
same pre-activations again from the saved input and weights, with the same products in the same
order, so they carry the history the kept ones lack and their values are the same bits.
"""


from gpugrad import devices
from gpugrad import recording
from gpugrad import tensors
from gpugrad.devices.cuda import specs
from gpugrad.ops import recurrent
from gpugrad.ops.registry import defop


_GATES = {"lstm_layer": 4, "gru_layer": 3, "rnn_layer": 1}


def _checked(name, x, w_ih, w_hh, biases, h0, c0=None):
    """x, the weights, the biases ({name: array or None}), h0 (and c0 for the LSTM) in their
    common float dtype, or an error naming what does not fit."""
    gates = _GATES[name]
    arrays = {"x": x, "w_ih": w_ih, "w_hh": w_hh, **biases, "h0": h0}
    if gates == 4:
        arrays["c0"] = c0
    h = w_hh.shape[1] if w_hh.ndim == 2 else 0
    if not (h and x.ndim == 3 and x.shape[0] >= 1 and w_hh.shape == (gates * h, h)
            and w_ih.shape == (gates * h, x.shape[2]) and h0.shape == (x.shape[1], h)
            and all(b is None or b.shape == (gates * h,) for b in biases.values())
            and (gates != 4 or c0.shape == h0.shape)):
        g = f"{gates}H" if gates > 1 else "H"
        bias = " and ".join(biases)
        state = "h0 and c0" if gates == 4 else "h0"
        raise recording.ShapeError(
            f"{name}: x must be (T >= 1, batch, input), w_ih ({g}, input), w_hh ({g}, H), "
            f"{bias} ({g},) or None, {state} (batch, H); got {_shapes(arrays)}")
    return recurrent.in_common_float(list(arrays.values()))


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
    x, w_ih, w_hh, b, h0, c0 = _checked("lstm_layer", x, w_ih, w_hh, {"b": b}, h0, c0)
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
    steps, h = x.shape[0], h0.shape[-1]
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
    return (*_weight_grads(ops, dgates[::-1], x, w_ih, b, h0, y[0]), dh, dc)


def _tangents_in(ops, ts, x, w_ih, w_hh, b, h0, c0=None):
    """The tangents of the projections (T, batch, gates), of w_hh transposed, of h0 (and of c0),
    zeros where an input has none."""
    tx, twi, twh, tb, th, tc = (t if t is not None or x_ is None else ops.full_like(x_, 0)
                                for t, x_ in zip((*ts, None)[:6], (x, w_ih, w_hh, b, h0, c0)))
    steps, n, i = x.shape
    txw = ops.matmul(ops.reshape(tx, (steps * n, i)), ops.transpose(w_ih)) + ops.matmul(
        ops.reshape(x, (steps * n, i)), ops.transpose(twi))
    txw = ops.reshape(txw if tb is None else txw + tb, (steps, n, w_ih.shape[0]))
    return (txw, ops.transpose(twh), th) + (() if c0 is None else (tc,))


def _jvp(ops, ts, x, w_ih, w_hh, b, h0, c0, y, gates=None):
    txw, tw, th, tc = _tangents_in(ops, ts, x, w_ih, w_hh, b, h0, c0)
    xw, w = _projections_in(ops, x, w_ih, b), ops.transpose(w_hh)
    h_prev, c_prev, hs, cs = h0, c0, [], []
    for t in range(x.shape[0]):
        pre = xw[t] + ops.matmul(h_prev, w)
        tpre = txw[t] + ops.matmul(th, w) + ops.matmul(h_prev, tw)
        out = recurrent.lstm_jvp(ops, (tpre, tc), pre, c_prev, None)
        th, tc = out[0], out[1]
        hs.append(th)
        cs.append(tc)
        h_prev, c_prev = y[0, t], y[1, t]
    return ops.stack([ops.stack(hs), ops.stack(cs)])


# ---------------------------------------------------------------------------- plain RNN

_ACTIVATION = {"tanh": lambda xp, z, out: xp.tanh(z, out=out),
               "relu": lambda xp, z, out: xp.maximum(z, 0, out=out)}  # NaN stays NaN, as relu
# the backward of each from its output, as ops
_FROM_OUTPUT = {"tanh": lambda ops, g, y: ops.tanh_backward(g, y),
                "relu": lambda ops, g, y: ops.relu_backward_from_output(g, y)}


def _rnn_forward(xp, x, w_ih, w_hh, b, h0, *, nonlinearity="tanh"):
    if nonlinearity not in _ACTIVATION:
        raise ValueError(f"rnn_layer: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    x, w_ih, w_hh, b, h0 = _checked("rnn_layer", x, w_ih, w_hh, {"b": b}, h0)
    xw = _projections(xp, x, w_ih, b)
    y = xp.empty((x.shape[0],) + h0.shape, xw.dtype)
    h, w, act = h0, w_hh.T, _ACTIVATION[nonlinearity]
    for t in range(x.shape[0]):
        h = act(xp, xp.add(xw[t], devices.matmul(xp, h, w), out=y[t]), y[t])
    return y


def _rnn_vjp(ops, g, x, w_ih, w_hh, b, h0, y, nonlinearity):
    if g.shape != y.shape:  # a gradient broadcast to the output (sum's head)
        g = ops.broadcast_to(g, y.shape)
    steps = x.shape[0]
    dh, dzs, from_output = g[steps - 1], [], _FROM_OUTPUT[nonlinearity]
    for t in reversed(range(steps)):
        dzs.append(from_output(ops, dh, y[t]))
        dh = ops.matmul(dzs[-1], w_hh)
        if t:
            dh = dh + g[t - 1]
    return (*_weight_grads(ops, dzs[::-1], x, w_ih, b, h0, y), dh)


def _weight_grads(ops, dzs, x, w_ih, b, h0, hs_after, dzs_h=None):
    """The gradients of x, w_ih, w_hh and b from every step's gradient of its pre-activations
    (and of its state's projections, dzs_h, where those differ: the GRU's): one product each
    over all the steps."""
    steps, n, i = x.shape
    h = h0.shape[-1]
    dz = ops.reshape(ops.stack(dzs), (steps * n, dzs[0].shape[-1]))
    dz_h = dz if dzs_h is None else ops.reshape(ops.stack(dzs_h), dz.shape)
    hs = ops.concatenate([ops.reshape(h0, (1, n, h)), hs_after[:steps - 1]])
    return (ops.reshape(ops.matmul(dz, w_ih), x.shape),
            ops.matmul(ops.transpose(dz), ops.reshape(x, (steps * n, i))),
            ops.matmul(ops.transpose(dz_h), ops.reshape(hs, (steps * n, h))),
            None if b is None else ops.sum(dz, axis=0))


def _rnn_jvp(ops, ts, x, w_ih, w_hh, b, h0, y, nonlinearity):
    txw, tw, th = _tangents_in(ops, ts, x, w_ih, w_hh, b, h0)
    w, from_output, hs = ops.transpose(w_hh), _FROM_OUTPUT[nonlinearity], []
    h_prev = h0
    for t in range(x.shape[0]):
        th = from_output(ops, txw[t] + ops.matmul(th, w) + ops.matmul(h_prev, tw), y[t])
        hs.append(th)
        h_prev = y[t]
    return ops.stack(hs)


rnn_layer = defop(
    "rnn_layer", _rnn_forward, save="x w_ih w_hh b h0 y", vjp_all=_rnn_vjp, jvp=_rnn_jvp,
    optional=("b",),
    doc="A whole RNN layer over a sequence: x (T, batch, input), w_ih (H, input), w_hh (H, H), "
        "b (H,) (both biases summed, or None), h0 (batch, H), nonlinearity 'tanh' or 'relu' -> "
        "every step's h, (T, batch, H).")
# ---------------------------------------------------------------------------- GRU


def _gru_forward_saving(xp, x, w_ih, w_hh, b_ih, b_hh, h0):
    x, w_ih, w_hh, b_ih, b_hh, h0 = _checked("gru_layer", x, w_ih, w_hh,
                                             {"b_ih": b_ih, "b_hh": b_hh}, h0)
    xw = _projections(xp, x, w_ih, b_ih)
    y = xp.empty((x.shape[0],) + h0.shape, xw.dtype)
    gh = xp.empty(xw.shape, xw.dtype)
    h, w = h0, w_hh.T
    for t in range(x.shape[0]):
        product = devices.matmul(xp, h, w)
        if b_hh is None:
            gh[t] = product
        else:
            xp.add(product, b_hh, out=gh[t])
        y[t] = recurrent.run(specs.GRU_CELL_FWD, xp, h, xw[t], gh[t])
        h = y[t]
    return y, {"xw": xw, "gh": gh}


def _gru_layer_forward(xp, x, w_ih, w_hh, b_ih, b_hh, h0):
    return _gru_forward_saving(xp, x, w_ih, w_hh, b_ih, b_hh, h0)[0]


def _state_projection(ops, h, w, b_hh):
    product = ops.matmul(h, w)
    return product if b_hh is None else product + b_hh


def _gru_layer_vjp(ops, g, x, w_ih, w_hh, b_ih, b_hh, h0, y, xw, gh):
    steps, h = x.shape[0], h0.shape[-1]
    if g.shape != y.shape:  # a gradient broadcast to the output (sum's head)
        g = ops.broadcast_to(g, y.shape)
    kept = not isinstance(g, tensors.Tensor)  # first order: the forward's own projections
    if not kept:
        xw, w = _projections_in(ops, x, w_ih, b_ih), ops.transpose(w_hh)
    dh, dgi, dgh = g[steps - 1], [], []
    for t in reversed(range(steps)):
        h_prev = h0 if t == 0 else y[t - 1]
        gh_t = gh[t] if kept else _state_projection(ops, h_prev, w, b_hh)
        d = ops.gru_cell_backward(dh, xw[t], gh_t, h_prev)
        dgi.append(d[..., :3 * h])
        dgh.append(d[..., 3 * h:6 * h])
        dh = d[..., 6 * h:] + ops.matmul(dgh[-1], w_hh)
        if t:
            dh = dh + g[t - 1]
    grads = _weight_grads(ops, dgi[::-1], x, w_ih, b_ih, h0, y, dzs_h=dgh[::-1])
    db_hh = None if b_hh is None else ops.sum(ops.stack(dgh), axis=(0, 1))
    return (*grads, db_hh, dh)


def _gru_layer_jvp(ops, ts, x, w_ih, w_hh, b_ih, b_hh, h0, y, xw=None, gh=None):
    tx, twi, twh, tbi, tbh, th = ts
    txw, tw, th = _tangents_in(ops, (tx, twi, twh, tbi, th), x, w_ih, w_hh, b_ih, h0)
    xw, w = _projections_in(ops, x, w_ih, b_ih), ops.transpose(w_hh)
    h_prev, hs = h0, []
    for t in range(x.shape[0]):
        tgh = ops.matmul(th, w) + ops.matmul(h_prev, tw)
        tgh = tgh if tbh is None else tgh + tbh
        th = recurrent.gru_jvp(ops, (txw[t], tgh, th), xw[t],
                               _state_projection(ops, h_prev, w, b_hh), h_prev, None)
        hs.append(th)
        h_prev = y[t]
    return ops.stack(hs)


gru_layer = defop(
    "gru_layer", _gru_layer_forward, save="x w_ih w_hh b_ih b_hh h0 y xw gh",
    vjp_all=_gru_layer_vjp, jvp=_gru_layer_jvp, optional=("b_ih", "b_hh"), forward_saving=_gru_forward_saving,
    aux=("xw", "gh"),
    doc="A whole GRU layer over a sequence: x (T, batch, input), w_ih and w_hh (3H, input / H), "
        "b_ih and b_hh (3H,) (or None), h0 (batch, H) -> every step's h, (T, batch, H).")
lstm_layer = defop(
    "lstm_layer", _forward, save="x w_ih w_hh b h0 c0 y gates", vjp_all=_vjp, jvp=_jvp, optional=("b",),
    forward_saving=_forward_saving, aux=("gates",),
    doc="A whole LSTM layer over a sequence: x (T, batch, input), w_ih (4H, input), w_hh (4H, H), "
        "b (4H,) (both biases summed, or None), h0 and c0 (batch, H) -> every step's h and c, "
        "stacked (2, T, batch, H).")
