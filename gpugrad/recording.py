"""Recording: its state (record, pause, forward mode, structure-only, anomaly mode), the
graph's nodes, and the tracking of in-place changes.

A recorded op leaves a Node holding its input nodes, the arrays its declaration saves, and the
shapes of everything else. A leaf (attach_grad) has a Leaf node holding its tensor only by weak
reference, so the graph has no cycles and dies with the last tensor that reaches it. This
module knows no Tensor and no op: ops/applying.py's apply() makes the nodes, and the engine
(engine/backward.py) walks them (autograd.py also hands on this module's public names:
gg.autograd.record).
"""

import contextlib
import itertools
import linecache
import os
import sys
import threading
import weakref

import numpy as np



class GraphError(RuntimeError):
    """backward() was asked for something the graph cannot give."""


class ShapeError(ValueError):
    """Operand shapes do not fit together."""


class AnomalyError(GraphError):
    """detect_anomaly found a gradient holding NaN or inf."""


# ---------------------------------------------------------------------------- recording state


class _State(threading.local):
    recording = False
    training = False
    forward_levels = ()  # the gg.jvp calls in progress, outermost first: tangents are kept per level
    structure_only = None  # a _Structure while gg.checkpoint discovers what fn reaches
    anomaly = False  # detect_anomaly: note where each op is recorded, check every gradient
    note_lines = 0  # inside note_lines() or detect_anomaly(): remember each op's user line
    autocast = None  # the 16-bit dtype inside gg.autocast (ops/autocasting.py), else None


_state = _State()


@contextlib.contextmanager
def autocasting(dtype):
    """Ops cast their inputs as gg.autocast's table says for `dtype` (None: not at all)."""
    prev = _state.autocast
    _state.autocast = dtype
    try:
        yield
    finally:
        _state.autocast = prev


def autocast_dtype():
    return _state.autocast


def is_recording():
    """True inside record() (and not inside pause()/no_grad())."""
    return _state.recording


def is_training():
    """True when layers such as dropout should behave as in training."""
    return _state.training


@contextlib.contextmanager
def _scope(recording, training):
    prev = _state.recording, _state.training
    _state.recording, _state.training = recording, training
    try:
        yield
    finally:
        _state.recording, _state.training = prev


def record(train_mode=True):
    """Record operations for backward inside the block (MXNet's autograd.record)."""
    return _scope(True, train_mode)


def pause(train_mode=False):
    """Stop recording inside the block."""
    return _scope(False, train_mode)


def no_grad():
    """Stop recording inside the block, keeping the training mode."""
    return _scope(False, _state.training)


def train_mode():
    """Training behaviour (dropout on) inside the block without changing recording."""
    return _scope(_state.recording, True)


def predict_mode():
    """Prediction behaviour (dropout off) inside the block without changing recording."""
    return _scope(_state.recording, False)


# ---------------------------------------------------------------------------- anomaly mode
# Off by default and then free: apply() tests one flag. On, each recorded node notes the user's
# line that recorded it, and backward checks every gradient a rule returns (a host read each).
_recorded_at = weakref.WeakKeyDictionary()  # Node -> "file:line in function: code"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def set_detect_anomaly(mode):
    """Turn anomaly mode on or off for this thread (PyTorch's torch.autograd.set_detect_anomaly)."""
    if bool(mode) != _state.anomaly:
        _state.note_lines += 1 if mode else -1
    _state.anomaly = bool(mode)


@contextlib.contextmanager
def note_lines():
    """Inside the block, each recorded op remembers the user's line that recorded it (what
    gg.graph_of shows and detect_anomaly reports), at the cost of a look at the stack per op."""
    _state.note_lines += 1
    try:
        yield
    finally:
        _state.note_lines -= 1


def is_anomaly_enabled():
    return _state.anomaly


@contextlib.contextmanager
def detect_anomaly():
    """Inside the block, backward raises AnomalyError at the first op whose gradient holds NaN
    or inf, naming the op, the shapes and the line that recorded it in the forward."""
    prev = _state.anomaly
    set_detect_anomaly(True)
    try:
        yield
    finally:
        set_detect_anomaly(prev)


def _user_line():
    """The innermost stack frame outside gpugrad's own code: the user's line that made the op.

    The tests that a wheel ships inside the package (gpugrad/_tests, run by `gpugrad selftest`)
    are user code too, so only the package's own modules are skipped."""
    package = _PACKAGE_DIR + os.sep
    shipped_tests = os.path.join(_PACKAGE_DIR, "_tests") + os.sep
    frame = sys._getframe(2)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(package) or filename.startswith(shipped_tests):
            break
        frame = frame.f_back
    if frame is None:
        return "an unknown line"
    code = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}" + (
        f": {code}" if code else "")


# ---------------------------------------------------------------------------- in-place changes
# A saved array changed in place before backward would give a silently wrong gradient, so each
# in-place change through gpugrad (Tensor.__setitem__, optimizer updates, load_state_dict,
# gradient writes) advances a global epoch and notes it against the array's base. A node
# remembers the epoch it was recorded at: at backward, an unchanged epoch (the common case)
# costs one comparison, and otherwise its saved arrays are looked up. Writes through .data
# itself bypass this, as in PyTorch.
_epoch = 0
_changed = {}  # id(base array) -> (weak reference to it, epoch of its last in-place change)


def _base(arr):
    """The array owning arr's memory, so that a change through any view counts."""
    base = getattr(arr, "base", None)
    while base is not None and hasattr(base, "shape"):
        arr, base = base, getattr(base, "base", None)
    return arr


def changed_in_place(arr):
    """Note that arr (a backend array; every view of its memory) was changed in place."""
    global _epoch
    root = _base(arr)
    key = id(root)
    entry = _changed.get(key)
    if entry is None or entry[0]() is not root:
        try:
            ref = weakref.ref(root, lambda r, key=key: _changed.pop(key, None)
                              if _changed.get(key, (None,))[0] is r else None)
        except TypeError:  # no weak references (a meta array): nothing saved can alias it
            return
    else:
        ref = entry[0]
    _epoch += 1
    _changed[key] = (ref, _epoch)


# ---------------------------------------------------------------------------- the graph


class Leaf:
    """The node of a tensor that receives a gradient (attach_grad)."""

    __slots__ = ("ref", "grad_req", "__weakref__")
    op = None

    def __init__(self, t, grad_req):
        self.ref = weakref.ref(t)
        self.grad_req = grad_req


class _Constant:
    """The node of a tensor that is in the graph but whose derivative is zero everywhere: the
    head of a create_graph backward, and what is recorded from it and from constants alone
    (relu's first derivative). Differentiating through it gives zeros; an op taking it with a
    tensor that does take a gradient records only that one as its parent."""

    __slots__ = ()
    op = None
    grad_req = "null"

    def ref(self):
        return None  # no tensor receives a gradient here

    def __repr__(self):
        return "<constant in the graph>"


CONSTANT = _Constant()


class Node:
    """One recorded op: its input nodes, what it saved, and the metadata of the rest."""

    __slots__ = ("op", "parents", "metas", "saved", "params", "out_meta", "freed", "epoch",
                 "tangents", "__weakref__")

    def __init__(self, op, parents, metas, arrays, y, y_device, params, aux=None, keep=True):
        self.op = op
        self.parents = parents
        self.params = params
        self.freed = False
        self.epoch = _epoch
        self.metas = metas  # (shape, dtype, device) per tensor input; None for Python scalars
        self.out_meta = (y.shape, y.dtype, y_device)
        # recorded under gg.jvp: the tangents ({level: Tensor}) of what it saved, by the same
        # keys, so that a backward run under gg.jvp (forward over reverse) carries them on
        self.tangents = None
        self.saved = {}
        if not keep:  # structure only (gg.checkpoint's discovery pass)
            return
        save_for = op.parse_save(op.save(params)) if op.dynamic_save else op.save
        saved = {}
        for i, p in enumerate(parents):
            if p is not None:
                for k in save_for[None if op.variadic else i]:
                    if k == "self":
                        saved[i] = arrays[i]
                    else:
                        saved[k] = y if k == "y" else (aux[k] if isinstance(k, str) else arrays[k])
            elif self.metas[i] is None:
                saved[i] = arrays[i]  # scalars are free and every rule may use them
        self.saved = saved

    def free(self):
        self.saved = None
        self.params = None
        self.tangents = None
        self.freed = True

    def __repr__(self):
        return f"<Node {self.op.name}{' (freed)' if self.freed else ''}>"


class Unsaved:
    """Stands in for an input an op did not save: shape, dtype and device only."""

    __slots__ = ("shape", "dtype", "device", "_op_name", "_what")

    def __init__(self, op_name, what, meta):
        self.shape, self.dtype, self.device = meta
        self._op_name, self._what = op_name, what  # the message is built only if it fails

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    def fail(self):
        raise GraphError(f"{self._op_name} did not save {self._what}: its rule needs it, so "
                         f"add it to the op's save=")

    def __getattr__(self, name):
        self.fail()


def _unsaved_operator(self, *args):
    self.fail()


for _name in ("add", "sub", "mul", "truediv", "pow", "matmul", "neg", "gt", "lt", "ge", "le",
              "radd", "rsub", "rmul", "rtruediv", "rpow", "rmatmul", "getitem", "array"):
    setattr(Unsaved, f"__{_name}__", _unsaved_operator)


class _Structure:
    """What a block recorded in structure-only mode reached from outside it: tensors whose
    nodes were made before the block (its inputs, parameters, captured intermediates)."""

    def __init__(self):
        self.nodes = set()
        self.outside = {}  # node -> a tensor holding it, in first-use order

    def note_inputs(self, xs):
        for x in xs:
            node = getattr(x, "_node", None)  # a Tensor's node (this module knows no Tensor)
            if node is not None and node not in self.nodes:
                self.outside.setdefault(node, x)


def is_structure_only():
    """True while a block records structure only (gg.checkpoint's first pass)."""
    return _state.structure_only is not None


@contextlib.contextmanager
def structure_only():
    """Record the graph's structure but save nothing (gg.checkpoint's first forward)."""
    if _state.structure_only is not None:
        raise RuntimeError("structure-only recording does not nest")
    found = _Structure()
    _state.structure_only = found
    try:
        with record(train_mode=_state.training):
            yield found
    finally:
        _state.structure_only = None


_levels = itertools.count(1)


def new_level():
    """A forward-mode level for one gg.jvp call: nested calls get larger numbers."""
    return next(_levels)


def forward_active():
    """True while some gg.jvp propagates tangents."""
    return bool(_state.forward_levels)


@contextlib.contextmanager
def forward_mode(level):
    """Propagate tangents of `level` (Tensor._tangent[level]) through ops inside the block, as
    well as those of the levels already active (nested gg.jvp)."""
    outer = _state.forward_levels
    _state.forward_levels = outer + (level,)
    try:
        yield
    finally:
        _state.forward_levels = outer
