"""Optimizers: SGD (momentum, weight decay) and Adam, updating parameters in place.

Both follow PyTorch's update rules exactly (weight decay added to the gradient), so a model
trained here and there with the same data and seed follows the same trajectory. On CUDA the SGD
update is one fused kernel (kernels/sgd.cu) per parameter, with or without momentum.
"""

import math
import numbers

import numpy as np

from gpugrad import autograd
from gpugrad import backend


def _checked(who, name, value, low, high=None, low_open=False):
    """A hyperparameter as a float, refused by name (as PyTorch does) if NaN, infinite or out
    of [low, high) (or (low, high) with low_open)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{who}: {name} must be a real number, got {value!r}")
    value = float(value)
    bad_low = value <= low if low_open else value < low
    if not math.isfinite(value) or bad_low or (high is not None and value >= high):
        interval = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'})"
        raise ValueError(f"{who}: {name} must be finite and in {interval}, got {value}")
    return value


class Optimizer:
    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: no parameters to optimize")
        lr = _checked(type(self).__name__, "lr", lr, 0, low_open=True)
        for i, p in enumerate(self.params):
            if p.grad_req == "null":
                raise ValueError(f"{type(self).__name__}: parameter {i} does not receive a "
                                 f"gradient (call attach_grad() on it)")
        self.lr = lr
        self.state = [{} for _ in self.params]

    def zero_grad(self):
        for p in self.params:
            p.zero_grad()

    def state_bytes(self):
        """Bytes held by the optimizer's buffers (momentum, moments)."""
        return sum(a.nbytes for s in self.state for a in s.values() if hasattr(a, "nbytes"))


class SGD(Optimizer):
    """v = momentum * v + g + weight_decay * p;  p -= lr * v  (v is kept only with momentum)."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr)
        self.momentum = _checked("SGD", "momentum", momentum, 0)
        self.weight_decay = _checked("SGD", "weight_decay", weight_decay, 0)

    def step(self):
        backend.bake(self, "lr", "momentum", "weight_decay")
        for p, st in zip(self.params, self.state):
            if p.grad is None:
                continue
            autograd.changed_in_place(p.data)
            be = backend.get(p.device)
            xp, g = be.xp, p.grad.data
            with be.active:
                if self.momentum:
                    v = st.get("velocity")
                    if v is None:
                        v = st["velocity"] = xp.zeros_like(p.data)
                    fused = backend.fused("sgd_step", xp, p.data, g, v)
                    if fused:
                        fused(p.data, g, v, self.lr, self.momentum, self.weight_decay)
                        continue
                    v *= self.momentum
                    v += g
                    if self.weight_decay:
                        v += self.weight_decay * p.data
                    p.data -= self.lr * v
                else:
                    fused = backend.fused("sgd_update", xp, p.data, g)
                    if fused:
                        fused(p.data, g, self.lr, self.weight_decay)
                        continue
                    d = g + self.weight_decay * p.data if self.weight_decay else g
                    p.data -= self.lr * d


class Adam(Optimizer):
    """Adam (Kingma and Ba) with bias correction, as torch.optim.Adam."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"Adam: betas must be a pair (beta1, beta2), got {betas!r}")
        self.beta1 = _checked("Adam", "betas[0]", betas[0], 0, 1)
        self.beta2 = _checked("Adam", "betas[1]", betas[1], 0, 1)
        self.eps = _checked("Adam", "eps", eps, 0)
        self.weight_decay = _checked("Adam", "weight_decay", weight_decay, 0)

    def step(self):
        backend.bake(self, "lr", "beta1", "beta2", "eps", "weight_decay")
        for p, st in zip(self.params, self.state):
            if p.grad is None:
                continue
            autograd.changed_in_place(p.data)
            be = backend.get(p.device)
            xp = be.xp
            with be.active:
                # the step count lives on the device, so a captured step (gg.cuda.graph)
                # advances it on every replay; float64 gives the same corrections as Python's
                t = st.get("step")
                if t is None:
                    t = st["step"] = xp.zeros((), np.float64)
                t += 1
                c1 = (1 - self.beta1 ** t).astype(p.dtype)
                c2 = (1 - self.beta2 ** t).astype(p.dtype)
                g = p.grad.data + self.weight_decay * p.data if self.weight_decay else p.grad.data
                m = st.setdefault("m", xp.zeros_like(p.data))
                v = st.setdefault("v", xp.zeros_like(p.data))
                m *= self.beta1
                m += (1 - self.beta1) * g
                v *= self.beta2
                v += (1 - self.beta2) * g * g
                p.data -= self.lr * (m / c1) / (xp.sqrt(v / c2) + self.eps)


