"""Gradient clipping."""

import math

from gpugrad import autograd
from gpugrad import devices
from gpugrad import tensors


def clip_grad_norm(params, max_norm):
    """Scale all gradients so their joint 2-norm is at most max_norm; return the norm before.

    Exactly: after clipping the norm equals max_norm (no epsilon is added). Inside a graphed
    step (gg.cuda.graph) the norm cannot be read on the host: the scale is applied on the device
    and the norm comes back as a 0-d tensor, to read after the step.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if max_norm <= 0:
        raise ValueError(f"clip_grad_norm: max_norm must be positive, got {max_norm}")
    if not devices.host_reads_allowed():
        return _clip_on_device(grads, max_norm)
    total = math.sqrt(sum(float((g.data * g.data).sum()) for g in grads))
    if total > max_norm:
        scale = max_norm / total
        for g in grads:
            with devices.get(g.device).active:
                g.data *= scale
            autograd.changed_in_place(g.data)
    return total


def _clip_on_device(grads, max_norm):
    on = {g.device for g in grads}
    if len(on) > 1:
        raise devices.DeviceError(f"clip_grad_norm in a graphed step: the gradients are on "
                                  f"several devices {sorted(on)}")
    device = on.pop() if on else devices.default_device()
    be = devices.get(device)
    xp = be.xp
    with be.active:
        total = xp.sqrt(devices.sum_of_squares(xp, [g.data for g in grads])) if grads \
            else xp.zeros(())
        # min(1, max_norm / total), and 1 for a zero norm, without a branch on the host
        scale = xp.where(total > max_norm, max_norm / xp.maximum(total, max_norm), 1.0)
        for g in grads:
            g.data *= scale.astype(g.dtype)
            autograd.changed_in_place(g.data)
    return tensors.wrap(xp.asarray(total), device)
