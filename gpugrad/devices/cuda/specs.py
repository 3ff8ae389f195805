"""One KernelSpec per fused kernel: its launcher, which arrays it takes, and its reference.

The fixed kernels (relu's 1-bit mask kernels, softmax cross-entropy, SGD, the scaled add,
GradScaler's unscale and inf check, the LSTM and GRU cells) are
declared here, with their references from references.py; their ops call spec.reference where
the kernel does not run. The other activation kernels are declared by their rows in
gpugrad/ops/activation.py through activation_specs(), which holds the CUDA side (template,
launcher) so that a row gives only its functor name and its math.

Each launcher takes the array namespace first (CuPy, or the strict test device's) and returns
arrays of its inputs' shapes. Outputs come from xp.empty(shape, dtype): CuPy's empty_like
spends ~6 us in Python.
"""

import numpy as np

from gpugrad.devices import dtypes
from gpugrad.devices.cuda import kernels
from gpugrad.devices.cuda import references as ref
from gpugrad.devices.cuda.kernels import CTYPE, LABEL_CTYPE, KernelSpec

# ---------------------------------------------------------------------------- which arrays suit


def _contiguous_alike(arrays):
    """As same_dtype_and_shape, and C-contiguous: the kernel writes into them."""
    return kernels.same_dtype_and_shape(arrays) and all(a.flags.c_contiguous for a in arrays)


def _parameter_alike(arrays):
    """A parameter and its gradient as _contiguous_alike, and a velocity beside them (SGD with
    momentum) contiguous, of their shape and of the dtype the kernel computes in: float32 for
    a 16-bit parameter."""
    param, grad, *velocity = arrays
    return _contiguous_alike((param, grad)) and all(
        v.dtype == dtypes.accumulating(param.dtype) and v.shape == param.shape
        and v.flags.c_contiguous for v in velocity)


def _float_first(arrays):
    """The gradient of a float dtype a kernel takes; the packed mask beside it is checked by
    its op."""
    return arrays[0].dtype in CTYPE


def _rows(arrays):
    """Logits (N, C) of a float dtype a kernel takes, integer labels (N,), then (N,) arrays of
    the logits' dtype."""
    x, labels, *others = arrays
    return (x.ndim == 2 and x.dtype in CTYPE and labels.dtype in LABEL_CTYPE
            and labels.shape == (x.shape[0],)
            and all(o.dtype == x.dtype and o.shape == (x.shape[0],) for o in others))


def _scaled(arrays):
    """acc and x of one float dtype and shape, C-contiguous (acc is written), s 0-d of it."""
    acc, s, x = arrays
    return _contiguous_alike((acc, x)) and s.shape == () and s.dtype == acc.dtype


def _flat(xp, *arrays):
    """C-contiguous arrays, as the kernels index them (flat): the array itself when it is one
    (a kernel reads no shape), else a contiguous copy of the same shape."""
    return [a if a.flags.c_contiguous else xp.ascontiguousarray(a) for a in arrays]


def _vector(dtype):
    """Elements per 16-byte vector, as the elementwise kernels load them."""
    return 16 // dtype.itemsize


def _in_place(refusal, *arrays):
    """A kernel that writes into its arguments takes them as they are, never a copy."""
    if not all(a.flags.c_contiguous for a in arrays):
        raise ValueError(refusal)


# ---------------------------------------------------------------------------- activations
# act_fwd / act_bwd, instantiated with one row's functor each; then relu's mask kernels


def _activation_forward(name):
    def launch(xp, x, p0=0.0, p1=0.0):
        (x,) = _flat(xp, x)
        y = xp.empty(x.shape, x.dtype)
        kernels.launch(xp, name, x.size, (x, y), (p0, p1), per_thread=_vector(x.dtype))
        return y
    return launch


def _activation_backward(name):
    def launch(xp, g, saved, p0=0.0, p1=0.0):
        g, saved = _flat(xp, g, saved)
        dx = xp.empty(g.shape, g.dtype)
        kernels.launch(xp, name, g.size, (g, saved, dx), (p0, p1), per_thread=_vector(g.dtype))
        return dx
    return launch


def activation_specs(kernel, functor, saves, forward, backward=None):
    """The kernels of one GG_ACTIVATIONS row of activations.cuh: <kernel>_fwd, y = f(x), and
    unless its backward reads a mask, <kernel>_bwd, dx from g and the saved x or y (`saves`).
    functor: the row's Functor name; forward(xp, x, p0, p1) and backward(xp, g, s, p0, p1):
    the row's math with the kernels' scalars."""
    out = [KernelSpec(f"{kernel}_fwd", "activations.cu", f"act_fwd<{{T}}, {functor}Fwd<{{C}}>>",
                      _activation_forward(f"{kernel}_fwd"), forward)]
    if backward is not None:
        template = f"act_bwd<{{T}}, {functor}BwdFrom{saves.upper()}<{{C}}>>"
        out.append(KernelSpec(f"{kernel}_bwd", "activations.cu", template,
                              _activation_backward(f"{kernel}_bwd"), backward))
    return out


def _relu_fwd_mask(xp, x, negative_slope=0.0):
    (x,) = _flat(xp, x)
    y = xp.empty(x.shape, x.dtype)
    mask = xp.empty((x.size + 31) // 32, np.uint32)  # the kernel writes every word
    kernels.launch(xp, "relu_fwd_mask", x.size, (x, y, mask), (negative_slope,))
    return y, mask


def _relu_bwd_mask(xp, g, mask, negative_slope=0.0):
    g, mask = _flat(xp, g, mask)
    dx = xp.empty(g.shape, g.dtype)
    kernels.launch(xp, "relu_bwd_mask", g.size, (g, mask, dx), (negative_slope,),
                  per_thread=_vector(g.dtype))
    return dx


def _relu_bwd_out(xp, g, y, negative_slope=0.0, leaky=False):
    g, y = _flat(xp, g, y)
    dx = xp.empty(g.shape, g.dtype)
    kernels.launch(xp, "relu_bwd_out", g.size, (g, y, dx), (negative_slope, np.int32(leaky)),
                  per_thread=_vector(g.dtype))
    return dx


# ---------------------------------------------------------------------------- the fixed kernels


def _softmax_xent_fwd(xp, logits, labels):
    n, c = logits.shape
    logits, labels = _flat(xp, logits, labels)
    loss = xp.empty(n, logits.dtype)
    kernels.launch(xp, "softmax_xent_fwd", n, (logits, labels, loss), (np.int64(c),), grid=(n,),
                  labels=labels.dtype)
    return loss


def _softmax_xent_bwd(xp, logits, labels, g):
    """A g broadcast from one value (a mean's gradient) is read with stride 0, not copied out."""
    n, c = logits.shape
    one = n > 1 and g.strides[0] == 0
    logits, labels, g = _flat(xp, logits, labels, g[:1] if one else g)
    dx = xp.empty(logits.shape, logits.dtype)
    kernels.launch(xp, "softmax_xent_bwd", n, (logits, labels, g, dx),
                  (np.int64(c), np.int64(not one)), grid=(n,), labels=labels.dtype)
    return dx


def _sgd_step(xp, param, grad, velocity, lr, momentum=0.0, weight_decay=0.0):
    _in_place("sgd_step updates in place: param, grad and velocity must be contiguous",
              param, grad, velocity)
    kernels.launch(xp, "sgd_step", param.size, (param, grad, velocity), (lr, momentum, weight_decay))
    return param


def _sgd_update(xp, param, grad, lr, weight_decay=0.0):
    _in_place("sgd_update updates in place: param and grad must be contiguous", param, grad)
    kernels.launch(xp, "sgd_update", param.size, (param, grad), (lr, weight_decay))
    return param


def _add_scaled(xp, acc, s, x):
    _in_place("add_scaled adds in place: acc and x must be contiguous", acc, x)
    kernels.launch(xp, "add_scaled", acc.size, (acc, s, x))
    return acc


def _gradient_and_flag(arrays):
    """A C-contiguous gradient of a float dtype a kernel takes, and a 0-d float32 flag."""
    g, found = arrays
    return (g.dtype in CTYPE and g.flags.c_contiguous and found.shape == ()
            and found.dtype == np.float32)


def _unscale_and_check(xp, g, found, inv):
    _in_place("unscale_and_check unscales in place: the gradient must be contiguous", g)
    kernels.launch(xp, "unscale_and_check", g.size, (g, found),
                   (dtypes.accumulating(g.dtype).type(inv),))
    return g


def _one_float_dtype(arrays):
    """Arrays of one float dtype a kernel takes (the recurrent cells: their op checked the
    shapes)."""
    first = arrays[0].dtype
    return first in CTYPE and all(a.dtype == first for a in arrays[1:])


def _wider(state, blocks):
    """The shape of `blocks` arrays of the state's shape side by side on the last axis."""
    return state.shape[:-1] + (blocks * state.shape[-1],)


def _cell(name, output):
    """The launcher of a recurrent cell kernel: the state (..., H) first, then the gates'
    projections and the gradient; `output(state, *others)` is the shape it writes."""
    def launch(xp, state, *others):
        state, *others = _flat(xp, state, *others)
        out = xp.empty(output(state, *others), state.dtype)
        kernels.launch(xp, name, state.size, (state, *others, out), (np.int64(state.shape[-1]),))
        return out
    return launch


RELU_FWD_MASK = KernelSpec("relu_fwd_mask", "activations.cu", "relu_fwd_mask<{T}>",
                           _relu_fwd_mask, ref.forward_with_mask, writes=2)
RELU_BWD_MASK = KernelSpec("relu_bwd_mask", "activations.cu", "relu_bwd_mask<{T}>",
                           _relu_bwd_mask, ref.backward_from_mask, accepts=_float_first)
RELU_BWD_OUT = KernelSpec("relu_bwd_out", "activations.cu", "relu_bwd_out<{T}>",
                          _relu_bwd_out, ref.backward_from_output)
SOFTMAX_XENT_FWD = KernelSpec("softmax_xent_fwd", "softmax_xent.cu", "softmax_xent_fwd<{T}, {L}>",
                              _softmax_xent_fwd, ref.softmax_xent_loss, accepts=_rows, sizes=1)
SOFTMAX_XENT_BWD = KernelSpec("softmax_xent_bwd", "softmax_xent.cu", "softmax_xent_bwd<{T}, {L}>",
                              _softmax_xent_bwd, ref.softmax_xent_grad, accepts=_rows, sizes=2)
SGD_STEP = KernelSpec("sgd_step", "sgd.cu", "sgd_step<{T}>", _sgd_step, ref.sgd_step,
                      accepts=_parameter_alike, writes=0)
SGD_UPDATE = KernelSpec("sgd_update", "sgd.cu", "sgd_update<{T}>", _sgd_update, ref.sgd_update,
                        accepts=_parameter_alike, writes=0)
ADD_SCALED = KernelSpec("add_scaled", "accumulate.cu", "add_scaled<{T}>", _add_scaled,
                        ref.add_scaled, accepts=_scaled, writes=0, carried=False)
# the reference computes a 16-bit g in float32 and checks the rounded result, as the kernel
UNSCALE_AND_CHECK = KernelSpec("unscale_and_check", "unscale.cu", "unscale_and_check<{T}>",
                               _unscale_and_check, ref.unscale_and_check,
                               accepts=_gradient_and_flag, writes=0, carried=False)
LSTM_CELL_FWD = KernelSpec("lstm_cell_fwd", "recurrent.cu", "lstm_cell_fwd<{T}>",
                           _cell("lstm_cell_fwd", lambda c, gates: (2,) + c.shape),
                           ref.lstm_cell, accepts=_one_float_dtype)
LSTM_CELL_BWD = KernelSpec("lstm_cell_bwd", "recurrent.cu", "lstm_cell_bwd<{T}>",
                           _cell("lstm_cell_bwd", lambda c, gates, g: _wider(c, 5)),
                           ref.lstm_cell_grads, accepts=_one_float_dtype)
GRU_CELL_FWD = KernelSpec("gru_cell_fwd", "recurrent.cu", "gru_cell_fwd<{T}>",
                          _cell("gru_cell_fwd", lambda h, gi, gh: h.shape),
                          ref.gru_cell, accepts=_one_float_dtype)
GRU_CELL_BWD = KernelSpec("gru_cell_bwd", "recurrent.cu", "gru_cell_bwd<{T}>",
                          _cell("gru_cell_bwd", lambda h, gi, gh, g: _wider(h, 7)),
                          ref.gru_cell_grads, accepts=_one_float_dtype)
for _spec in (RELU_FWD_MASK, RELU_BWD_MASK, RELU_BWD_OUT, SOFTMAX_XENT_FWD, SOFTMAX_XENT_BWD,
              SGD_STEP, SGD_UPDATE, ADD_SCALED, UNSCALE_AND_CHECK, LSTM_CELL_FWD, LSTM_CELL_BWD,
              GRU_CELL_FWD, GRU_CELL_BWD):
    kernels.declare(_spec)
del _spec
