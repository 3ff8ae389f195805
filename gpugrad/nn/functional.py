"""Losses and layer functions: cross_entropy, mse_loss, l2_penalty, linear, dropout."""

from gpugrad import autograd
from gpugrad import devices
from gpugrad import ops
from gpugrad import tensors
from gpugrad.ops import loss as _loss

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(per_row, reduction, who):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{who}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if reduction == "none":
        return per_row
    return ops.mean(per_row) if reduction == "mean" else ops.sum(per_row)


def cross_entropy(logits, labels, reduction="mean"):
    """Softmax cross-entropy of logits (N, C) against integer labels (N,), softmax fused in.

    Computed stably (logsumexp - logit of the label); the gradient with respect to the logits is
    (softmax - onehot) / N for reduction="mean".
    """
    labels = _loss.check_labels(logits, labels)
    return _reduce(ops.softmax_cross_entropy(logits, labels=labels), reduction, "cross_entropy")


def mse_loss(prediction, target, reduction="mean"):
    """Mean (or summed) squared error; shapes must match exactly."""
    target = target if isinstance(target, tensors.Tensor) else tensors.tensor(
        target, dtype=prediction.dtype, device=prediction.device)
    if prediction.shape != target.shape:
        raise autograd.ShapeError(f"mse_loss: prediction has shape {prediction.shape} but the "
                                  f"target has shape {target.shape}")
    d = prediction - target
    return _reduce(d * d, reduction, "mse_loss")


def l2_penalty(params):
    """1/2 * the sum of squares of all params, so lambda * l2_penalty(W) is the L2 term of
    section 4.7: s = lambda/2 (|W1|^2 + |W2|^2)."""
    params = list(params)
    if not params:
        raise ValueError("l2_penalty: no parameters given")
    return ops.half_sum_squares(params)  # one op: dot products forward, g * p backward


def linear(x, weight, bias=None):
    """x @ weight.T + bias, weight of shape (out, in) as in PyTorch (the `linear` op)."""
    return ops.linear(x, weight, bias)


def dropout(x, p=0.5, training=None):
    """Zero each element with probability p and scale the rest by 1/(1-p), while training
    (default: autograd.is_training(), i.e. inside record())."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if training is None:
        training = autograd.is_training()
    if not training or p == 0:
        return x
    be = devices.get(x.device)
    keep = be.rand(x.shape, x.dtype) >= p
    with be.active:
        scale = tensors.wrap(keep.astype(x.dtype) / (1 - p), x.device)
    return x * scale
