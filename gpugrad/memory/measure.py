"""Measured memory: the allocator's new bytes over a region, and one prediction beside one
training step of a model, row by row.

The allocator's figures: on CuPy a MemoryHook summing the pool's mallocs and frees, on NumPy
tracemalloc (its peak also counts the few hundred bytes of Python objects per recorded op; its
current figure is filtered to NumPy's own allocation domain, array data only).
"""

import contextlib
import tracemalloc

import numpy as np

from gpugrad import autograd
from gpugrad import devices
from gpugrad import tensors
from gpugrad.memory import ledger


# ---------------------------------------------------------------------------- allocator


class Allocations:
    """Bytes allocated inside a `track(device)` block: .peak and .current (new bytes)."""

    def __init__(self):
        self.peak = 0
        self.current = 0


@contextlib.contextmanager
def track(device=None):
    """Measure the allocator over a block: yields an Allocations filled in at exit."""
    be = devices.get(device)
    out = Allocations()
    if be.is_cpu:
        was_tracing = tracemalloc.is_tracing()
        if not was_tracing:
            tracemalloc.start()
        tracemalloc.clear_traces()
        tracemalloc.reset_peak()
        try:
            yield out
        finally:
            _, out.peak = tracemalloc.get_traced_memory()
            snap = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)])
            out.current = sum(s.size for s in snap.statistics("filename"))
            if not was_tracing:
                tracemalloc.stop()
        return
    be.synchronize()
    with be.allocations(out):
        yield out
        be.synchronize()


# ---------------------------------------------------------------------------- the report

ROWS = ("parameters", "gradients", "optimizer state", "saved activations", "transient peak",
        "total peak")


class Report:
    """Bytes per row for predict and train; str() prints the table."""

    def __init__(self, predict, train, by_op, device, buffers):
        self.predict, self.train, self.by_op = predict, train, by_op
        self.device, self.buffers = device, buffers

    def ratio(self, row):
        p, t = self.predict[row], self.train[row]
        return t / p if p else None

    def as_dict(self):
        return {"device": self.device, "predict": self.predict, "train": self.train,
                "saved by op": self.by_op,
                "train/predict": {r: self.ratio(r) for r in ROWS}}

    def __str__(self):
        lines = [f"memory ({self.device}), bytes",
                 f"{'':<26}{'predict':>14}{'train':>14}{'train/predict':>15}"]
        for r in ROWS:
            ratio = self.ratio(r)
            lines.append(f"{r:<26}{self.predict[r]:>14,}{self.train[r]:>14,}"
                         f"{(f'{ratio:.2f}' if ratio is not None else '-'):>15}")
            if r == "saved activations":
                for op, b in sorted(self.by_op.items(), key=lambda kv: -kv[1]):
                    lines.append(f"{'  ' + op:<26}{0:>14,}{b:>14,}{'-':>15}")
        return "\n".join(lines)


def compare(model, x, y, loss_fn, optimizer=None):
    """One prediction (model(x), outside record()) and one training step (loss_fn(model(x), y),
    backward, optimizer.step()) of model: a Report of bytes.

    Rows: parameters, gradients, optimizer state, saved activations (by op), transient peak
    (new bytes at the allocator's peak during the step), total peak (what was live before the
    step, the parameters and the input batch, plus the transient peak). The training step runs
    backward (and optimizer.step()). Saved activations count what the ops keep: labels or
    inputs that are a slice of a bigger array count as the slice, as estimate() counts them.
    Both are measured after one untracked run of each (no optimizer step), so that first-use
    costs of the process are not counted.
    """
    params = model.parameters()
    device = params[0].device
    param_bytes = sum(p.data.nbytes for p in params)
    for p in params:
        p.grad = None  # gradients are training's, measured below
    live_before = param_bytes + (x.data.nbytes if isinstance(x, tensors.Tensor) else 0)
    _warm_up(model, x, y, loss_fn, params)
    with track(device) as pred:
        with autograd.pause():
            model(x)  # prediction: the forward pass only
    with track(device) as tr:
        with autograd.record():
            loss = loss_fn(model(x), y)
        report = ledger.saved(loss, params)
        loss.backward()
        if optimizer is not None:
            optimizer.step()
    grad_bytes = sum(p.grad.data.nbytes for p in params if p.grad is not None)
    opt_bytes = optimizer.state_bytes() if optimizer is not None else 0
    predict = {"parameters": param_bytes, "gradients": 0, "optimizer state": 0,
               "saved activations": 0, "transient peak": pred.peak,
               "total peak": live_before + pred.peak}
    train = {"parameters": param_bytes, "gradients": grad_bytes, "optimizer state": opt_bytes,
             "saved activations": report.activations, "transient peak": tr.peak,
             "total peak": live_before + tr.peak}
    return Report(predict, train, report.by_op, device, report.buffers)


def _warm_up(model, x, y, loss_fn, params):
    """One prediction and one forward and backward, untracked, gradients dropped after: what
    runs for the first time in a process (a module imported on first use, a compiled kernel
    loaded from its cache) allocates once, and that is not the model's memory."""
    with autograd.pause():
        model(x)
    with autograd.record():
        loss = loss_fn(model(x), y)
    loss.backward()
    for p in params:
        p.grad = None
