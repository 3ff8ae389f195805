"""Memory accounting: what training keeps that prediction does not, in bytes.

Three figures, never mixed up:

- saved: the arrays the graph keeps for backward, read from the nodes (the ops' save=
  declarations, plus array-valued parameters such as labels or index arrays), each by its own
  bytes (a view as its slice, not the array it views) and memory that several nodes or views
  share counted once, split into parameters (already counted as parameters) and activations
  (what training adds);
- allocated: the allocator's new bytes over a region, current and peak: on CuPy a MemoryHook
  summing the pool's mallocs and frees, on NumPy tracemalloc (its peak also counts the few
  hundred bytes of Python objects per recorded op; its current figure is filtered to NumPy's
  own allocation domain, array data only);
- the analytic answer for section 4.7's network: mlp_formula().
"""

import collections
import contextlib
import tracemalloc

import numpy as np

from gpugrad import autograd
from gpugrad import devices
from gpugrad import ops
from gpugrad.engine import checkpoint as recompute
from gpugrad import tensors
from gpugrad.engine import backward


# ---------------------------------------------------------------------------- saved arrays


def _root(arr):
    """The array that owns a view's memory."""
    while getattr(arr, "base", None) is not None and devices.is_backend_array(arr.base):
        arr = arr.base
    return arr


def _node_arrays(node):
    for k, v in (node.saved or {}).items():
        if devices.is_backend_array(v):
            yield k, v
    for k, v in (node.params or {}).items():
        if devices.is_backend_array(v):
            yield k, v
        elif k == "ctx":  # gg.Function: what ctx.save_for_backward kept
            yield from ((f"ctx[{i}]", a) for i, a in enumerate(v.arrays)
                        if devices.is_backend_array(a))
        elif isinstance(v, tuple):  # an indexing key holding index arrays
            yield from ((f"{k}[{i}]", a) for i, a in enumerate(v) if devices.is_backend_array(a))


SavedReport = collections.namedtuple("SavedReport", "activations parameters by_op buffers")


def saved(outputs, params=()):
    """What the graph behind `outputs` keeps for backward.

    Returns SavedReport(activations, parameters, by_op, buffers): bytes of saved buffers that
    are not parameters; bytes of parameter buffers the graph also holds; {op: activation bytes}
    (a buffer counted under the first op, in backward order, that saved it); and a list of
    (op, name, shape, dtype, bytes, is_parameter) per distinct buffer.
    """
    outputs = [outputs] if isinstance(outputs, tensors.Tensor) else list(outputs)
    roots = [t._node for t in outputs if t._node is not None]
    by_op = collections.Counter()
    buffers = []
    act = par = 0
    for node, counted in saved_by_node(roots, params).items():
        for name, shape, dtype, nbytes, is_param in counted:
            buffers.append((node.op.name, name, shape, dtype, nbytes, is_param))
            if is_param:
                par += nbytes
            else:
                act += nbytes
                by_op[node.op.name] += nbytes
    return SavedReport(act, par, dict(by_op), buffers)


def saved_by_node(roots, params=()):
    """{node: [(name, shape, dtype, bytes, is_parameter), ...]} for the graph behind the nodes
    `roots`, in backward order: each saved array counted by its own bytes (a view of a bigger
    array, such as labels train_y[:256], is its slice, not the whole), and memory that several
    nodes or views keep counted once, under the first node that keeps it (the one ledger
    behind saved() and gg.graph_of's saved bytes)."""
    param_roots = {id(_root(p.data)) for p in params}
    whole = set()  # allocations already counted in full
    partly = {}    # allocation -> _Views, where only views of it were kept so far
    out = {}
    for node in backward._toposort(roots):
        if node.op is None:
            continue
        counted = out.setdefault(node, [])
        for name, arr in _node_arrays(node):
            root = _root(arr)
            key = id(root)
            if key in whole:
                continue
            if arr is root:  # the common case: the array itself, all of it
                whole.add(key)
                views = partly.pop(key, None)
                new_bytes = root.nbytes - (views.total if views is not None else 0)
            else:
                views = partly.get(key)
                if views is None:
                    views = partly[key] = _Views(root)
                new_bytes = views.add(arr)
            if new_bytes:
                counted.append((name, tuple(arr.shape), str(arr.dtype), new_bytes,
                                key in param_roots))
    return out


class _Views:
    """The bytes of one allocation that saved views of it (slices, transposes, every other
    column) refer to, each byte once: dense views by the union of the address ranges they
    cover; strided views (no ranges to merge: every other column, or any view on the meta
    device, whose arrays have no addresses) each by its own bytes, once per distinct view;
    never more than the allocation holds."""

    __slots__ = ("root", "spans", "strided", "total")

    def __init__(self, root):
        self.root = root
        self.spans = []    # disjoint (start, end) address ranges of dense views
        self.strided = {}  # distinct strided view -> its bytes
        self.total = 0

    def add(self, arr):
        """Note that `arr` is kept; returns the bytes it adds to what was already counted."""
        extent, own = _extent(arr), _own_bytes(arr)
        if extent is not None and extent[1] - extent[0] == own:
            self.spans = _union(self.spans, extent)
        else:
            key = (extent[0], arr.shape, arr.strides) if extent is not None else id(arr)
            self.strided.setdefault(key, own)
        covered = sum(end - start for start, end in self.spans)
        counted = min(self.root.nbytes, covered + sum(self.strided.values()))
        added, self.total = max(counted - self.total, 0), max(counted, self.total)
        return added


def _own_bytes(arr):
    """The bytes an array's elements occupy: a broadcast (zero-stride) dimension adds none."""
    strides = getattr(arr, "strides", None) or (1,) * len(arr.shape)
    n = 1
    for size, stride in zip(arr.shape, strides):
        n *= size if stride else min(size, 1)
    return n * arr.dtype.itemsize


def _extent(arr):
    """(first byte, end) of the addresses an array's elements span, or None on a device whose
    arrays have no addresses (meta)."""
    start = _address(arr)
    if start is None:
        return None
    if arr.size == 0:
        return (start, start)
    low = high = start
    for size, stride in zip(arr.shape, arr.strides):
        if stride < 0:
            low += stride * (size - 1)
        else:
            high += stride * (size - 1)
    return (low, high + arr.dtype.itemsize)


def _address(arr):
    if isinstance(arr, np.ndarray):
        return arr.__array_interface__["data"][0]
    if type(arr).__name__ == "StrictArray":  # the strict device: a NumPy array underneath
        return arr._a.__array_interface__["data"][0]
    return getattr(getattr(arr, "data", None), "ptr", None)  # CuPy's MemoryPointer


def _union(spans, new):
    """Disjoint sorted ranges `spans` with the range `new` merged in."""
    start, end = new
    if start == end:
        return spans
    out = []
    for s, e in spans:
        if e < start or s > end:
            out.append((s, e))
        else:
            start, end = min(start, s), max(end, e)
    out.append((start, end))
    return sorted(out)


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
    """
    params = model.parameters()
    device = params[0].device
    param_bytes = sum(p.data.nbytes for p in params)
    for p in params:
        p.grad = None  # gradients are training's, measured below
    live_before = param_bytes + (x.data.nbytes if isinstance(x, tensors.Tensor) else 0)
    with track(device) as pred:
        with autograd.pause():
            model(x)  # prediction: the forward pass only
    with track(device) as tr:
        with autograd.record():
            loss = loss_fn(model(x), y)
        report = saved(loss, params)
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


# ---------------------------------------------------------------------------- section 4.7

def mlp_formula(d, h, q, batch, dtype="float32", bias=False, activation="relu",
                optimizer=None, label_dtype="int64"):
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
    Returns a dict of these terms in bytes, with totals.
    """
    s = np.dtype(dtype).itemsize
    params = (h * d + q * h + ((h + q) if bias else 0)) * s
    terms = collections.OrderedDict()
    terms["x"] = batch * d * s
    declared = ops.activation.ACTIVATIONS[activation]
    saves = declared.saved(dict(declared.params))
    if saves == "x":  # a "mask" is read from h, which the next layer keeps: nothing more
        terms["z"] = batch * h * s
    terms["h"] = batch * h * s
    terms["o"] = batch * q * s
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
    from gpugrad.devices import meta

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
        report = saved(loss, params)
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
