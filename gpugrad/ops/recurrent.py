"""The recurrent cells as ops of their own: lstm_cell and gru_cell, each one op with one backward
over the gates of a whole step, fused on CUDA (kernels/recurrent.cu) and one pass of NumPy
calls on the CPU (their references, gpugrad/devices/cuda/references.py).

lstm_cell(gates, c): gates (..., 4 H) are the pre-activations of PyTorch's gates i, f, g, o (the
two projections and their biases summed), c (..., H) the cell state; the result stacks the new
h and c, (2, ..., H). gru_cell(gi, gh, h): gi and gh (..., 3 H) are the projections of the input
and of h (r, z, n), each with its bias; the result is the new h. Both save only their inputs:
the backward recomputes the gates.

Each backward is an op of its own (lstm_cell_backward, gru_cell_backward; their results are the
input gradients side by side on the last axis), fused as the forward is, at first order and
recorded alike; their own rules are the second derivatives written out, so the cells have
derivatives of every order through the fused path.
"""

import numpy as np

from gpugrad import devices
from gpugrad import recording
from gpugrad.devices.cuda import specs
from gpugrad.ops.registry import defop


def _checked(name, state, *projections, blocks, gradient=None):
    """The state, the projections (and the gradient, last, with `gradient` the axes before the
    state's shape) in their common float dtype when they fit; else an error naming what does
    not."""
    g = None
    if gradient is not None:
        *projections, g = projections
    h = state.shape[-1] if state.ndim else None
    want = None if h is None else state.shape[:-1] + (blocks * h,)
    if want is None or any(p.shape != want for p in projections):
        got = ", ".join(str(p.shape) for p in projections)
        raise recording.ShapeError(
            f"{name}: the state must be (..., H) and the projections (..., {blocks} * H) with the "
            f"same leading dimensions; got state {state.shape} and projections {got}")
    if g is not None and g.shape != gradient + state.shape:
        raise recording.ShapeError(f"{name}: the gradient must have shape "
                                   f"{gradient + state.shape}, got {g.shape}")
    return in_common_float((state, *projections) + (() if g is None else (g,)))


def in_common_float(arrays):
    """The arrays (None passes through) in their common float dtype: mixed floats promote, as
    the elementwise ops do; anything not floating point is refused by name."""
    present = [a for a in arrays if a is not None]
    if not all(devices.is_float(a.dtype) for a in present):
        raise TypeError(f"inputs must be floating point, got "
                        f"{', '.join(sorted({str(a.dtype) for a in present}))}")
    dtype = np.result_type(*present)
    return tuple(a if a is None or a.dtype == dtype else a.astype(dtype) for a in arrays)


def run(spec, xp, *arrays):
    """The fused kernel where it takes the arrays, else its reference: a 16-bit dtype computed
    in float32 and each result rounded once, as the kernel computes it."""
    k = devices.fused(spec.name, xp, *arrays)
    if k:
        return k(*arrays)
    low = arrays[0].dtype.itemsize == 2
    if not low:
        return spec.reference(xp, *arrays)
    out = spec.reference(xp, *(a.astype(devices.accumulating(a.dtype)) for a in arrays))
    dtype = arrays[0].dtype
    return out.astype(dtype) if not isinstance(out, tuple) else tuple(o.astype(dtype) for o in out)


# ---------------------------------------------------------------------------- LSTM


def _lstm_forward(xp, gates, c):
    c, gates = _checked("lstm_cell", c, gates, blocks=4)
    return run(specs.LSTM_CELL_FWD, xp, c, gates)


def _lstm_backward_forward(xp, g, gates, c):
    c, gates, g = _checked("lstm_cell_backward", c, gates, g, blocks=4, gradient=(2,))
    return run(specs.LSTM_CELL_BWD, xp, c, gates, g)


def _lstm_gates(ops, gates, c):
    """i, f, g, o and c' (and their slopes s: sigmoid's s (1 - s), tanh's 1 - t^2)."""
    h = c.shape[-1]
    i, f = ops.sigmoid(gates[..., :h]), ops.sigmoid(gates[..., h:2 * h])
    g, o = ops.tanh(gates[..., 2 * h:3 * h]), ops.sigmoid(gates[..., 3 * h:])
    c2 = f * c + i * g
    t = ops.tanh(c2)
    slopes = i * (1 - i), f * (1 - f), 1 - g * g, o * (1 - o), 1 - t * t
    return (i, f, g, o, c2, t), slopes


def _blocks(x, k, h):
    return [x[..., j * h:(j + 1) * h] for j in range(k)]


def _lstm_vjp(ops, g, gates, c, y):
    if g.shape != (2,) + c.shape:  # a gradient broadcast to the output (sum's head)
        g = ops.broadcast_to(g, (2,) + c.shape)
    d = ops.lstm_cell_backward(g, gates, c)
    return d[..., :4 * c.shape[-1]], d[..., 4 * c.shape[-1]:]


def lstm_jvp(ops, ts, gates, c, y):
    tg, tc = _zeros_for_none(ops, ts, (gates, c))
    (i, f, gg, o, c2, t), (si, sf, sg, so, st) = _lstm_gates(ops, gates, c)
    di, df, dg, do = (s * tk for s, tk in zip((si, sf, sg, so), _blocks(tg, 4, c.shape[-1])))
    dc2 = f * tc + c * df + i * dg + gg * di
    return ops.stack([o * st * dc2 + do * t, dc2])


def _lstm_backward_vjp(ops, u, g, gates, c, y):
    """The second derivatives: u's blocks against the backward's d gates (i, f, g, o), d c."""
    (i, f, gg, o, c2, t), (si, sf, sg, so, st) = _lstm_gates(ops, gates, c)
    ui, uf, ug, uo, uc = _blocks(u, 5, c.shape[-1])
    gh, gc = g[0], g[1]
    D = gc + gh * o * st  # the gradient of c', directly and through h'
    K = ui * gg * si + uf * c * sf + ug * i * sg + uc * f  # u against d(backward)/dD
    P = st * (uo * gh * so - 2 * K * gh * o * t)  # u against d(backward)/dc'
    da = [si * (D * (ui * gg * (1 - 2 * i) + ug * sg) + P * gg),
          sf * (D * (uf * c * (1 - 2 * f) + uc) + P * c),
          sg * (D * (ui * si - 2 * ug * i * gg) + P * i),
          so * (K * gh * st + uo * gh * t * (1 - 2 * o))]
    return (ops.stack([K * o * st + uo * t * so, K]), ops.concatenate(da, axis=-1),
            D * uf * sf + P * f)


def _lstm_backward_jvp(ops, ts, g, gates, c, y):
    tg, ta, tc = _zeros_for_none(ops, ts, (g, gates, c))
    (i, f, gg, o, c2, t), (si, sf, sg, so, st) = _lstm_gates(ops, gates, c)
    di, df, dg, do = (s * tk for s, tk in zip((si, sf, sg, so), _blocks(ta, 4, c.shape[-1])))
    gh, gc = g[0], g[1]
    D = gc + gh * o * st
    dc2 = f * tc + c * df + i * dg + gg * di
    dt = st * dc2
    dD = tg[1] + tg[0] * o * st + gh * do * st - 2 * gh * o * t * dt
    return ops.concatenate([si * (dD * gg + D * dg) + D * gg * (1 - 2 * i) * di,
                            sf * (dD * c + D * tc) + D * c * (1 - 2 * f) * df,
                            sg * (dD * i + D * di) - 2 * D * i * gg * dg,
                            so * (tg[0] * t + gh * dt) + gh * t * (1 - 2 * o) * do,
                            dD * f + D * df], axis=-1)


# ---------------------------------------------------------------------------- GRU


def _gru_forward(xp, gi, gh, h):
    h, gi, gh = _checked("gru_cell", h, gi, gh, blocks=3)
    return run(specs.GRU_CELL_FWD, xp, h, gi, gh)


def _gru_backward_forward(xp, g, gi, gh, h):
    h, gi, gh, g = _checked("gru_cell_backward", h, gi, gh, g, blocks=3, gradient=())
    return run(specs.GRU_CELL_BWD, xp, h, gi, gh, g)


def _gru_gates(ops, gi, gh, h):
    """r, z, n and their slopes; hn, the state's projection for n."""
    k = h.shape[-1]
    r = ops.sigmoid(gi[..., :k] + gh[..., :k])
    z = ops.sigmoid(gi[..., k:2 * k] + gh[..., k:2 * k])
    hn = gh[..., 2 * k:]
    n = ops.tanh(gi[..., 2 * k:] + r * hn)
    return (r, z, n, hn), (r * (1 - r), z * (1 - z), 1 - n * n)


def _gru_vjp(ops, g, gi, gh, h, y):
    if g.shape != h.shape:  # a gradient broadcast to the output (sum's head)
        g = ops.broadcast_to(g, h.shape)
    d = ops.gru_cell_backward(g, gi, gh, h)
    k = 3 * h.shape[-1]
    return d[..., :k], d[..., k:2 * k], d[..., 2 * k:]


def gru_jvp(ops, ts, gi, gh, h, y):
    tgi, tgh, th = _zeros_for_none(ops, ts, (gi, gh, h))
    (r, z, n, hn), (sr, sz, sn) = _gru_gates(ops, gi, gh, h)
    (ir, iz, i_n), (hr, hz, thn) = _blocks(tgi, 3, h.shape[-1]), _blocks(tgh, 3, h.shape[-1])
    dr, dz = sr * (ir + hr), sz * (iz + hz)
    dn = sn * (i_n + dr * hn + r * thn)
    return (1 - z) * dn + dz * (h - n) + z * th


def _gru_backward_vjp(ops, u, g, gi, gh, h, y):
    """The second derivatives: u's blocks against the backward's d gi, d gh (r, z, n), d h."""
    (r, z, n, hn), (sr, sz, sn) = _gru_gates(ops, gi, gh, h)
    vr, vz, vn, wr, wz, wn, uh = _blocks(u, 7, h.shape[-1])
    ur, uz = vr + wr, vz + wz  # r's and z's gradients go to both projections
    din = g * (1 - z) * sn
    E = vn + wn * r + ur * hn * sr  # u against d(backward)/d din
    P = -sn * (2 * n * E * g * (1 - z) + uz * g * sz)  # u against d(backward)/d(in + r hn)
    da_r = sr * (din * (wn + ur * hn * (1 - 2 * r)) + P * hn)
    da_z = sz * (-E * g * sn + uz * g * (h - n) * (1 - 2 * z) + uh * g)
    return ((1 - z) * sn * E + uz * (h - n) * sz + uh * z,
            ops.concatenate([da_r, da_z, P], axis=-1),
            ops.concatenate([da_r, da_z, din * ur * sr + P * r], axis=-1), uz * g * sz)


def _gru_backward_jvp(ops, ts, g, gi, gh, h, y):
    tg, tgi, tgh, th = _zeros_for_none(ops, ts, (g, gi, gh, h))
    (r, z, n, hn), (sr, sz, sn) = _gru_gates(ops, gi, gh, h)
    (ir, iz, i_n), (hr, hz, thn) = _blocks(tgi, 3, h.shape[-1]), _blocks(tgh, 3, h.shape[-1])
    dr, dz = sr * (ir + hr), sz * (iz + hz)
    dn = sn * (i_n + dr * hn + r * thn)
    din = g * (1 - z) * sn
    d_din = tg * (1 - z) * sn - g * dz * sn - 2 * g * (1 - z) * n * dn
    d_dr = d_din * hn * sr + din * thn * sr + din * hn * (1 - 2 * r) * dr
    d_dz = tg * (h - n) * sz + g * (th - dn) * sz + g * (h - n) * (1 - 2 * z) * dz
    return ops.concatenate([d_dr, d_dz, d_din, d_dr, d_dz, d_din * r + din * dr,
                            tg * z + g * dz], axis=-1)


def _zeros_for_none(ops, ts, xs):
    return [ops.full_like(x, 0) if t is None else t for t, x in zip(ts, xs)]


# fmt: off
lstm_cell = defop(
    "lstm_cell", _lstm_forward, save="gates c", vjp_all=_lstm_vjp, jvp=lstm_jvp,
    doc="One LSTM step: gates (..., 4H), the summed projections of the input and of h in "
        "PyTorch's order i, f, g, o, and the cell state c (..., H) -> the new h and c, stacked "
        "(2, ..., H).")
lstm_cell_backward = defop(
    "lstm_cell_backward", _lstm_backward_forward, save="g gates c", vjp_all=_lstm_backward_vjp,
    jvp=_lstm_backward_jvp,
    doc="lstm_cell's backward: g (2, ..., H), the gradients of the new h and c -> the gradients "
        "of gates and c side by side, (..., 5H).")
gru_cell = defop(
    "gru_cell", _gru_forward, save="gi gh h", vjp_all=_gru_vjp, jvp=gru_jvp,
    doc="One GRU step: the projections gi, gh (..., 3H) of the input and of the state h "
        "(..., H), each with its bias, in PyTorch's order r, z, n -> the new h.")
gru_cell_backward = defop(
    "gru_cell_backward", _gru_backward_forward, save="g gi gh h", vjp_all=_gru_backward_vjp,
    jvp=_gru_backward_jvp,
    doc="gru_cell's backward: g (..., H), the gradient of the new h -> the gradients of gi, gh "
        "and h side by side, (..., 7H).")
# fmt: on
