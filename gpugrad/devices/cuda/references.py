"""The NumPy reference of each fixed fused kernel: softmax cross-entropy, SGD, the scaled add,
relu's and leaky_relu's 1-bit mask kernels, the LSTM and GRU cells; the same math as the CUDA
source, on arrays of any namespace xp.

Each reference is called as its kernel's launcher is, (xp, *arrays, *scalars), and is both the
CPU path of its op and what the strict test device computes in place of the compiled kernel.
The other activations' references are their rows in gpugrad/ops/activation.py.
"""

import numpy as np

# NumPy reduces a short last axis of many rows faster over a transposed copy (about 5x at
# 1024 rows of 10 classes): the rows of a classifier's logits
_SHORT_ROWS = {"max": 32, "sum": 16}
_MANY_ROWS = 64


def _row_reduction(xp, how, x):
    """xp.max or xp.sum (`how`) of each row of x (N, C), kept as (N, 1)."""
    n, c = x.shape
    if xp is np and 0 < c <= _SHORT_ROWS[how] and n >= _MANY_ROWS:
        return getattr(np.ascontiguousarray(x.T), how)(axis=0).reshape(n, 1)
    return getattr(x, how)(axis=1, keepdims=True)


def _shifted_rows(xp, logits):
    """(x - m, sum(exp(x - m)) per row, kept) for m the row maximum, or 0 where that is not
    finite (an all -inf row is left to exp and log, as the kernel leaves it)."""
    m = _row_reduction(xp, "max", logits)
    shifted = logits - xp.where(xp.isfinite(m), m, 0)
    e = xp.exp(shifted)
    return shifted, e, _row_reduction(xp, "sum", e)


def _guarded(xp, labels, c, labels_in_range):
    """(rows whose label lies in [0, c), or None when the caller checked them all; labels
    clipped into range for indexing). The kernel cannot raise: a row with a label out of
    range gives NaN."""
    if labels_in_range:
        return None, labels
    return (labels >= 0) & (labels < c), xp.clip(labels, 0, c - 1)


def softmax_xent_loss(xp, logits, labels, labels_in_range=False):
    """Per-row loss log(sum(exp(x - m))) - (x[label] - m) of logits (N, C) and integer labels
    (N,): m is never added back before it is taken off, so nothing cancels at large |x|."""
    valid, labels = _guarded(xp, labels, logits.shape[1], labels_in_range)
    shifted, _, sums = _shifted_rows(xp, logits)
    loss = xp.log(sums)[:, 0] - shifted[xp.arange(logits.shape[0]), labels]
    if valid is None:
        return loss
    return xp.where(valid, loss, xp.nan).astype(logits.dtype, copy=False)


def softmax_xent_grad(xp, logits, labels, g, labels_in_range=False):
    """d loss_i / d logits = (softmax(x_i) - onehot(label_i)) * g_i, for g one value per row
    (N,) or one value for every row (1,)."""
    valid, labels = _guarded(xp, labels, logits.shape[1], labels_in_range)
    _, e, sums = _shifted_rows(xp, logits)
    dx = e / sums  # a new array: the one-hot is taken off in place
    dx[xp.arange(logits.shape[0]), labels] -= 1
    if g.dtype == dx.dtype:
        dx *= g[:, None]
    else:  # the product's dtype, as NumPy promotes it
        dx = dx * g[:, None]
    if valid is None:
        return dx
    return xp.where(valid[:, None], dx, xp.nan).astype(logits.dtype, copy=False)


def _decayed(grad, param, weight_decay):
    """grad + weight_decay * param, as a new array; without weight decay grad itself: the term
    is left out, not multiplied by 0, so an infinite parameter stays infinite."""
    if not weight_decay:
        return grad
    d = weight_decay * param
    d += grad
    return d


def sgd_step(xp, param, grad, velocity, lr, momentum=0.0, weight_decay=0.0):
    """In place: velocity = momentum * velocity + (grad + weight_decay * param);
    param -= lr * velocity. Returns param."""
    velocity *= momentum
    velocity += _decayed(grad, param, weight_decay)
    param -= lr * velocity
    return param


def sgd_update(xp, param, grad, lr, weight_decay=0.0):
    """In place: param -= lr * (grad + weight_decay * param) (SGD without momentum)."""
    param -= lr * _decayed(grad, param, weight_decay)
    return param


def add_scaled(xp, acc, s, x):
    """In place: acc += s * x, s a 0-d array; the product and the sum each rounded."""
    acc += s * x
    return acc


def unscale_and_check(xp, g, found, inv):
    """In place: g = g * inv (a 16-bit g computed in float32 and rounded once), and found (a
    0-d float32 flag) set to 1 where g then holds inf or NaN: GradScaler's unscale_."""
    with np.errstate(over="ignore", invalid="ignore"):  # what overflows is what it looks for
        if g.dtype.itemsize == 2:
            g[...] = g.astype(np.float32) * np.float32(inv)
        else:
            g *= g.dtype.type(inv)
    found[...] = xp.maximum(found, (~xp.isfinite(g).all()).astype(found.dtype))
    return g


# ---------------------------------------------------------------------------- 1-bit masks


def pack_mask(xp, cond):
    """A boolean array -> uint32 words, element i at bit i % 32 of word i // 32 (as the CUDA
    kernels write it), so a mask costs 1 bit per element on either backend."""
    flat = cond.reshape(-1)
    if xp is np:
        packed = np.packbits(flat, bitorder="little")
        words = np.zeros((flat.size + 31) // 32, np.uint32)
        words.view(np.uint8)[: packed.size] = packed
        return words
    padded = xp.zeros(((flat.size + 31) // 32) * 32, xp.uint32)
    padded[: flat.size] = flat
    return (padded.reshape(-1, 32) << xp.arange(32, dtype=xp.uint32)).sum(axis=1, dtype=xp.uint32)


def unpack_mask(xp, words, shape):
    """pack_mask's inverse: uint32 words -> a boolean array of `shape`."""
    n = int(np.prod(shape, dtype=np.int64))
    if xp is np:
        bits = np.unpackbits(words.view(np.uint8), count=n, bitorder="little")
    else:
        bits = ((words[:, None] >> xp.arange(32, dtype=xp.uint32)) & 1).reshape(-1)[:n]
    return bits.reshape(shape).view(bool) if xp is np else bits.reshape(shape).astype(bool)


# ---------------------------------------------------------------------------- relu, leaky_relu
# The two activations whose backward reads a 1-bit mask (or the output) instead of x or y.


def relu(xp, x):
    return xp.maximum(x, 0)  # NaN stays NaN, as in the kernel


def leaky_relu(xp, x, negative_slope):
    if 0 <= negative_slope <= 1:  # the same values; where() over a random mask is ~10x slower
        return xp.maximum(x, x * negative_slope)
    return xp.where(x > 0, x, x * negative_slope)


def relu_mask(xp, x):
    """Where relu's gradient passes: !(x <= 0), so NaN passes it on, as PyTorch's relu does."""
    return ~(x <= 0)


def leaky_relu_mask(xp, x):
    """Where leaky_relu's gradient is 1, not the slope: x > 0, so NaN takes the slope, as
    PyTorch's leaky_relu does."""
    return x > 0


def forward_with_mask(xp, x, negative_slope=0.0):
    """relu (a zero slope) or leaky_relu of x, and its mask packed: relu_fwd_mask."""
    if negative_slope == 0:
        return relu(xp, x), pack_mask(xp, relu_mask(xp, x))
    return leaky_relu(xp, x, negative_slope), pack_mask(xp, leaky_relu_mask(xp, x))


def backward_from_mask(xp, g, mask, negative_slope=0.0):
    """relu's (a zero slope) or leaky_relu's backward from the packed mask: relu_bwd_mask."""
    return _through_bits(xp, g, unpack_mask(xp, mask, g.shape), negative_slope)


def backward_from_output(xp, g, out, negative_slope=0.0, leaky=False):
    """relu's (leaky: leaky_relu's) backward with its mask's bits tested on the output y, equal
    to x's for y = relu(x) and for leaky_relu with a slope >= 0: relu_bwd_out."""
    if not leaky and not negative_slope:  # relu's mask is !(y <= 0): zero where y <= 0
        return kept_where(xp, g, out <= 0, False)
    bits = leaky_relu_mask(xp, out) if leaky else relu_mask(xp, out)
    return _through_bits(xp, g, bits, negative_slope)


def _through_bits(xp, g, bits, negative_slope):
    """g where bits (bool, g's shape) are set, else the slope times g (+0 for relu)."""
    if negative_slope:  # multiplying is ~8x faster than where() on a random mask
        scale = bits.astype(g.dtype)
        scale *= 1 - negative_slope
        scale += negative_slope
        return g * scale
    return kept_where(xp, g, bits, True)


def kept_where(xp, a, cond, keep):
    """a where the bool array cond (a's shape) is `keep`, and +0 elsewhere, even where a is inf
    or NaN (a product would give NaN there): all-ones or all-zeros words and-ed with a's bits,
    with no host-side check. One pass either way, so a caller holding the complement of the
    bits it wants passes that, not its inverse."""
    word = np.dtype(f"uint{8 * a.dtype.itemsize}")
    words = xp.asarray(cond).view(xp.uint8).astype(word)  # NumPy compares 0-d arrays to scalars
    if keep:
        xp.negative(words, out=words)  # 1 -> all ones
    else:
        words -= 1  # 0 -> all ones
    xp.bitwise_and(words, a.view(word), out=words)
    return words.view(a.dtype)


# ---------------------------------------------------------------------------- recurrent cells
# gates in PyTorch's order: LSTM i, f, g, o; GRU r, z, n. The `hidden` a kernel takes is read
# from the shapes here. The backward passes recompute the gates, as the kernels do.


def _sigmoid_into(xp, x, out):
    """1 / (1 + e^-x) into out, as gpugrad's sigmoid computes it on arrays."""
    xp.negative(x, out=out)
    xp.exp(out, out=out)
    out += 1
    return xp.divide(1, out, out=out)


def _unit_blocks(xp, a, k):
    """a (..., k H) seen as (k, ..., H), block j being a[..., j H:(j + 1) H]: a view where a
    reshapes to one."""
    lead = a.ndim - 1
    blocks = a.reshape(a.shape[:-1] + (k, a.shape[-1] // k))
    return blocks.transpose((lead,) + tuple(range(lead)) + (lead + 1,))


def _times_slope(xp, d, s, out=None, tanh=False):
    """d s (1 - s) for a sigmoid's output s, or d (1 - s^2) for a tanh's, into out (or d)."""
    slope = s * s if tanh else xp.subtract(1, s)
    if tanh:
        xp.subtract(1, slope, out=slope)
    else:
        slope *= s
    return xp.multiply(d, slope, out=d if out is None else out)


def _lstm_gates(xp, c, gates):
    """The gates i, f, g, o (contiguous blocks of one new array) and the new cell state c'."""
    a = _unit_blocks(xp, gates, 4)
    act = _sigmoid_into(xp, a, xp.empty(a.shape, xp.result_type(gates, c)))
    xp.tanh(a[2], out=act[2])
    i, f, g, o = act
    c2 = f * c
    c2 += i * g
    return i, f, g, o, c2


def lstm_cell(xp, c, gates, hidden=None):
    """h' = o tanh(c') and c' = f c + i g, stacked (2, *c.shape), from gates (..., 4 H)."""
    i, f, g, o, c2 = _lstm_gates(xp, c, gates)
    y = xp.empty((2,) + c2.shape, c2.dtype)
    y[1] = c2
    xp.tanh(c2, out=y[0])
    y[0] *= o
    return y


def lstm_cell_grads(xp, c, gates, g, hidden=None):
    """d gates and d c side by side, (..., 5 H), from g (2, *c.shape): the gradients of h'
    and c'."""
    i, f, gg, o, c2 = _lstm_gates(xp, c, gates)
    t = xp.tanh(c2, out=c2)
    d = xp.empty(c.shape[:-1] + (5 * c.shape[-1],), c2.dtype)
    out = _unit_blocks(xp, d, 5)
    _times_slope(xp, g[0] * t, o, out[3])
    dct = _times_slope(xp, g[0] * o, t, tanh=True)  # c' reaches the loss directly and via h'
    dct += g[1]
    _times_slope(xp, dct * gg, i, out[0])
    _times_slope(xp, dct * c, f, out[1])
    _times_slope(xp, dct * i, gg, out[2], tanh=True)
    xp.multiply(dct, f, out=out[4])
    return d


def _gru_gates(xp, h, gi, gh):
    """r, z (views of one new array) and n."""
    k = h.shape[-1]
    rz = gi[..., :2 * k] + gh[..., :2 * k]
    _sigmoid_into(xp, rz, rz)
    r = rz[..., :k]
    n = gh[..., 2 * k:] * r
    n += gi[..., 2 * k:]
    return r, rz[..., k:], xp.tanh(n, out=n)


def gru_cell(xp, h, gi, gh, hidden=None):
    """h' = n + z (h - n), from the projections gi and gh (..., 3 H) of the input and of h."""
    _, z, n = _gru_gates(xp, h, gi, gh)
    y = h - n
    y *= z
    y += n
    return y


def gru_cell_grads(xp, h, gi, gh, g, hidden=None):
    """d gi, d gh and d h side by side, (..., 7 H), from g, the gradient of h'."""
    r, z, n = _gru_gates(xp, h, gi, gh)
    k = h.shape[-1]
    d = xp.empty(h.shape[:-1] + (7 * k,), n.dtype)
    dgi, dgh = d[..., :3 * k], d[..., 3 * k:6 * k]
    din = _times_slope(xp, xp.multiply(g, xp.subtract(1, z), out=dgi[..., 2 * k:]), n, tanh=True)
    _times_slope(xp, xp.multiply(din, gh[..., 2 * k:], out=dgi[..., :k]), r)
    _times_slope(xp, xp.multiply(g, xp.subtract(h, n), out=dgi[..., k:2 * k]), z)
    dgh[..., :2 * k] = dgi[..., :2 * k]
    xp.multiply(din, r, out=dgh[..., 2 * k:])
    xp.multiply(g, z, out=d[..., 6 * k:])
    return d
