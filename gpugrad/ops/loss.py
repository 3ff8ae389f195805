"""Softmax cross-entropy per row, fused on CUDA (kernels/softmax_xent.cu), stable everywhere.

softmax_cross_entropy(logits, labels=...) is the per-row loss logsumexp(x) - x[label]; it saves
only the logits (the labels are a parameter), and its backward (softmax(x) - onehot) * g is an
op of its own so that second derivatives work through the fused path too. Without the kernel
both run the kernels' NumPy reference (their KernelSpecs, gpugrad/devices/cuda/specs.py).
"""

import numpy as np

from gpugrad import devices
from gpugrad import tensors
from gpugrad.devices.cuda import specs
from gpugrad.ops.registry import defop, jvp_of_two


def _onehot(xp, labels, c, dtype):
    out = xp.zeros((labels.shape[0], c), dtype)
    out[xp.arange(labels.shape[0]), labels] = 1
    return out


def _xent(xp, x, *, labels):
    k = devices.fused("softmax_xent_fwd", xp, x, labels)
    if k:
        return k(x, labels)
    checked = _labels_checked()
    if x.dtype.itemsize != 2:
        return specs.SOFTMAX_XENT_FWD.reference(xp, x, labels, labels_in_range=checked)
    # a 16-bit x in float32, rounded once, as the kernel computes it
    return devices.carried(lambda x: specs.SOFTMAX_XENT_FWD.reference(
        xp, x, labels, labels_in_range=checked), x)


def _xent_backward(xp, g, x, *, labels):
    if g.shape != (x.shape[0],):  # one gradient per row, also where it broadcasts to the rows
        g = xp.ascontiguousarray(xp.broadcast_to(g, (x.shape[0],)))
    k = devices.fused("softmax_xent_bwd", xp, x, labels, g)
    if k:
        return k(x, labels, g)
    checked = _labels_checked()
    if x.dtype.itemsize != 2 and g.dtype.itemsize != 2:
        return specs.SOFTMAX_XENT_BWD.reference(xp, x, labels, g, labels_in_range=checked)
    return devices.carried(lambda x, g: specs.SOFTMAX_XENT_BWD.reference(
        xp, x, labels, g, labels_in_range=checked), x, g)


def _labels_checked():
    """Whether check_labels has read every label: not inside a CUDA capture, which cannot read
    the device. There, as in the kernels, a row with a label outside [0, C) becomes NaN."""
    return not devices.capturing()


def _onehot_like(x, labels):
    """The labels' one-hot rows in x's dtype, as x comes: a constant Tensor, or an array (a
    rule run on arrays)."""
    if not isinstance(x, tensors.Tensor):
        return _onehot(devices.get(devices.device_of_array(x)).xp, labels, x.shape[1], x.dtype)
    be = devices.get(x.device)
    with be.active:
        return tensors.wrap(_onehot(be.xp, labels, x.shape[1], x.dtype), x.device)


def _xent_backward_grad_g(ops, h, g, x, y, labels):
    return ops.sum((ops.softmax(x, axis=1) - _onehot_like(x, labels)) * h, axis=1)


def _xent_backward_grad_x(ops, h, g, x, y, labels):
    hg = h * (ops.reshape(g, (g.shape[0], 1)) if g.ndim else g)  # softmax's vjp, cotangent h * g
    p = ops.softmax(x, axis=1)
    return p * (hg - ops.sum(hg * p, axis=1, keepdims=True))


# fmt: off
softmax_cross_entropy = defop(
    "softmax_cross_entropy", _xent, save="x",
    vjp=(lambda ops, g, x, y, labels: ops.softmax_cross_entropy_backward(g, x, labels=labels),),
    jvp=lambda ops, ts, x, y, labels: _xent_backward_grad_g(ops, ts[0], None, x, None, labels))
softmax_cross_entropy_backward = defop(
    "softmax_cross_entropy_backward", _xent_backward, save={"g": "x", "x": "g x"},
    vjp=(_xent_backward_grad_g, _xent_backward_grad_x),
    jvp=lambda ops, ts, g, x, y, labels: jvp_of_two(
        ts, lambda t: ops.softmax_cross_entropy_backward(t, x, labels=labels),
        lambda t: _xent_backward_grad_x(ops, t, g, x, None, labels)))
# fmt: on


def check_labels(logits, labels):
    """Integer labels (N,) within [0, C) for logits (N, C), as a backend array."""
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy: logits must be (N, C), got shape {logits.shape}")
    on_host = not isinstance(labels, tensors.Tensor) and not (
        devices.is_backend_array(labels) and devices.device_of_array(labels) != "cpu")
    if on_host:  # checked here, before the copy: no read of the device afterwards
        host = np.asarray(labels)
        # a step gg.compile records on the CPU has its labels in a buffer it replays with:
        # not read, as in a CUDA capture (a label out of range gives NaN)
        if host.dtype.kind in "iu" and host.shape == (logits.shape[0],) and host.size and (
                not devices.capturing()) and (
                int(host.min()) < 0 or int(host.max()) >= logits.shape[1]):
            raise ValueError(f"cross_entropy: labels must lie in [0, {logits.shape[1]}), got "
                             f"min {int(host.min())}, max {int(host.max())}")
        labels = host
    arr = labels.data if isinstance(labels, tensors.Tensor) else devices.get(logits.device).asarray(labels)
    if isinstance(labels, tensors.Tensor) and labels.device != logits.device:
        raise devices.DeviceError(f"cross_entropy: labels are on {labels.device!r} but logits "
                                  f"on {logits.device!r}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: labels must be integers, got dtype {arr.dtype}")
    if arr.shape != (logits.shape[0],):
        raise ValueError(f"cross_entropy: labels have shape {arr.shape} but logits have "
                         f"{logits.shape[0]} rows")
    if (arr.size and not on_host and logits.device != "meta" and not devices.capturing()
            and int(_as_unsigned(arr).max()) >= logits.shape[1]):
        raise ValueError(f"cross_entropy: labels must lie in [0, {logits.shape[1]}), got "
                         f"min {int(arr.min())}, max {int(arr.max())}")
    return arr


def _as_unsigned(labels):
    """The labels' bits read as unsigned, where a negative label is larger than any class: one
    reduction (and one read of the device) checks both ends of the range."""
    return labels if labels.dtype.kind == "u" else labels.view(f"uint{8 * labels.dtype.itemsize}")
