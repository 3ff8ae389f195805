"""The saved-bytes ledger: the arrays the graph keeps for backward, read from its nodes.

Each array counts by its own bytes (a view as its slice, not the array it views), memory that
several nodes or views share counts once, and parameters are told apart from activations (what
training adds). gg.memory.saved and gg.graph_of's saved bytes read the same ledger.
"""

import collections


from gpugrad import devices
from gpugrad import tensors
from gpugrad.engine import backward


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
    start = devices.address_of(arr)
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
