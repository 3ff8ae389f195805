"""Memory from shapes alone, before anything is allocated: section 4.7's formula term by term,
estimate() recording a model's graph on the meta device, and fit() choosing which layers to
recompute so that training fits a budget.
"""

import collections
import contextlib

import numpy as np

from gpugrad import autograd
from gpugrad import devices
from gpugrad import ops
from gpugrad import tensors
from gpugrad.devices import meta
from gpugrad.engine import checkpoint as recompute
from gpugrad.memory import ledger


# ---------------------------------------------------------------------------- section 4.7

def mlp_formula(d, h, q, batch, dtype="float32", bias=False, activation="relu",
                optimizer=None, label_dtype="int64", autocast=None):
    """Bytes of section 4.7's network, z = W1 x (+ b1), h = phi(z), o = W2 h (+ b2),
    L = cross_entropy(o, y), s = lambda/2 (|W1|^2 + |W2|^2), for a batch, term by term.

    Training keeps, until backward (each buffer once):
      x       batch * d    the input, for dL/dW1 = dL/dz^T x
      z       batch * h    for gelu/silu/softplus/softsign, whose derivative needs z
              (relu and leaky_relu keep nothing more: the next layer keeps h, and their
              backward reads its mask, h > 0, from h; alone they would keep a 1-bit mask)
              (tanh, sigmoid, elu keep their output, which is h: no extra bytes)
    (what each activation keeps is its declaration's `saves`, gpugrad/ops/activation.py)
      h       batch * h    for dL/dW2 = dL/do^T h
      o       batch * q    the logits, for the softmax in the loss's backward
      y       batch        the labels (label_dtype)
    The L2 term keeps only W1 and W2, which are parameters. Gradients are as large as the
    parameters; SGD with momentum keeps one more copy, Adam two. Prediction keeps nothing: its
    peak is the parameters, the input x (the caller holds it) and the largest pair of
    consecutive intermediates alive at once (z while h is computed, or h while o is).
    Under gg.autocast(autocast) (float32 parameters) x, z and h are kept in the 16-bit dtype
    the layers compute in, and so is W2's 16-bit copy, which dL/dh reads (W1's is not kept:
    x takes no gradient); the loss computes in float32, so o is kept in float32.
    Returns a dict of these terms in bytes, with totals.
    """
    s = np.dtype(dtype).itemsize
    low = None if autocast is None else devices.as_dtype(autocast).itemsize
    a = low or s  # the activations' bytes per element
    params = (h * d + q * h + ((h + q) if bias else 0)) * s
    terms = collections.OrderedDict()
    terms["x"] = batch * d * a
    declared = ops.activation.ACTIVATIONS[activation]
    saves = declared.saved(dict(declared.params))
    if saves == "x":  # a "mask" is read from h, which the next layer keeps: nothing more
        terms["z"] = batch * h * a
    terms["h"] = batch * h * a
    if low:
        terms["W2 (16-bit copy)"] = q * h * low
    terms["o"] = batch * q * (4 if low else s)
    terms["labels"] = batch * np.dtype(label_dtype).itemsize
    opt = {None: 0, "sgd": 0, "sgd-momentum": params, "adam": 2 * params}[optimizer]
    live_pair = max(2 * batch * h, batch * h + batch * q) * s
    return {
        "parameters": params,
        "gradients": params,
        "optimizer state": opt,
        "saved": dict(terms),
        "saved activations": sum(terms.values()),
        "train (parameters + gradients + optimizer + saved)":
            2 * params + opt + sum(terms.values()),
        "predict peak (parameters + x + largest live pair)": params + batch * d * s + live_pair,
    }


# ---------------------------------------------------------------------------- estimating


def _optimizer_copies(optimizer):
    if optimizer is None:
        return 0
    if type(optimizer).__name__ == "Adam":
        return 2
    return 1 if getattr(optimizer, "momentum", 0) else 0


@contextlib.contextmanager
def _on_meta(params):
    """Parameters swapped for shape-only stand-ins inside the block, restored after."""
    kept = [(p.data, p.device) for p in params]
    try:
        for p in params:
            p.data, p.device = meta.MetaArray(p.shape, p.dtype), "meta"
        yield
    finally:
        for p, (data, device) in zip(params, kept):
            p.data, p.device = data, device


def estimate(model, input_shape, loss_fn, labels=None, optimizer=None, forward=None):
    """compare()'s training figures predicted from shapes alone: the model runs on the meta
    device (no array data is allocated) and the graph it records is counted as saved() counts
    a real one. labels defaults to zeros (int64) of the batch size; forward defaults to model.

    Returns {parameters, gradients, optimizer state, saved activations, saved by op,
    train (parameters + gradients + optimizer + saved)}.
    """
    params = model.parameters()
    dtype = params[0].dtype
    if labels is None:
        labels = np.zeros(input_shape[0], np.int64)
    with _on_meta(params):
        x = tensors.zeros(tuple(input_shape), dtype=dtype, device="meta")
        with autograd.record():
            loss = loss_fn((forward or model)(x), labels)
        report = ledger.saved(loss, params)
        del loss
    param_bytes = sum(p.data.nbytes for p in params)
    opt = _optimizer_copies(optimizer) * param_bytes
    return {"parameters": param_bytes, "gradients": param_bytes, "optimizer state": opt,
            "saved activations": report.activations, "saved by op": report.by_op,
            "train (parameters + gradients + optimizer + saved)":
                2 * param_bytes + opt + report.activations}


# ---------------------------------------------------------------------------- a budget

FitPlan = collections.namedtuple(
    "FitPlan", "forward segments saved_bytes peak_bytes plain_bytes recomputed_layers layers")


def _segmented_forward(layers, segments, plain_segment=None):
    """Run layers in order, checkpointing each (start, end) segment except plain_segment."""
    def forward(x):
        i = 0
        for k, (start, end) in enumerate(segments):
            for layer in layers[i:start]:
                x = layer(x)
            chunk = layers[start:end]

            def run(t, chunk=chunk):
                for layer in chunk:
                    t = layer(t)
                return t
            x = run(x) if k == plain_segment else recompute.checkpoint(run, x)
            i = end
        for layer in layers[i:]:
            x = layer(x)
        return x
    return forward


def _split(n, k):
    """n layers into k contiguous segments of nearly equal length."""
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def fit(model, input_shape, loss_fn, budget_bytes, labels=None):
    """Choose which layers of a Sequential model to recompute so that training fits a budget.

    The cost of a plan is what its forward keeps (each checkpointed segment's input) plus the
    largest segment's own intermediates, which exist again while that segment is recomputed in
    backward; both come from estimate() (no data is allocated). No checkpoint if the plain
    model fits; otherwise the layers before the last are split into k segments, k from 1 to
    their number, and the cheapest plan is taken. (Chen et al. 2016 find about sqrt(n)
    segments best for n alike layers; measuring every k also handles unlike ones.) Returns a
    FitPlan (forward, segments, saved_bytes, peak_bytes, plain_bytes, recomputed_layers,
    layers) whose forward(x) runs the plan; raises ValueError naming the least achievable bytes
    when nothing fits.
    """
    layers = list(model._modules.values())
    if len(layers) < 2:
        raise ValueError("fit needs a Sequential model of at least two layers")

    def saved_with(forward):
        return estimate(model, input_shape, loss_fn, labels, forward=forward)["saved activations"]

    plain = saved_with(model)
    if plain <= budget_bytes:
        return FitPlan(model, [], plain, plain, plain, 0, len(layers))
    body = len(layers) - 1  # the last layer's output feeds the loss directly
    best = None
    for k in range(1, body + 1):
        segments = _split(body, k)
        kept = saved_with(_segmented_forward(layers, segments))
        internal = max(saved_with(_segmented_forward(layers, segments, plain_segment=i)) - kept
                       for i in range(len(segments)))
        cost = kept + max(internal, 0)
        if best is None or cost < best[0]:
            best = (cost, kept, segments)
    cost, kept, segments = best
    if cost > budget_bytes:
        raise ValueError(f"fit: no checkpoint plan fits {budget_bytes:,} bytes; the least is "
                         f"{cost:,} bytes with {len(segments)} segment(s) (without checkpoints: "
                         f"{plain:,})")
    recomputed = sum(b - a for a, b in segments)
    return FitPlan(_segmented_forward(layers, segments), segments, kept, cost, plain,
                   recomputed, len(layers))
