"""Gradient clipping."""

import math

from gpugrad import backend


def clip_grad_norm(params, max_norm):
    """Scale all gradients so their joint 2-norm is at most max_norm; return the norm before.

    Exactly: after clipping the norm equals max_norm (no epsilon is added).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if max_norm <= 0:
        raise ValueError(f"clip_grad_norm: max_norm must be positive, got {max_norm}")
    total = math.sqrt(sum(float((g.data * g.data).sum()) for g in grads))
    if total > max_norm:
        scale = max_norm / total
        for g in grads:
            with backend.get(g.device).active:
                g.data *= scale
    return total
