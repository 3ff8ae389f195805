"""Recording state, the graph, and the reverse-mode engine.

A recorded op leaves a Node holding its input nodes, the arrays its declaration saves, and the
shapes of everything else. A leaf (attach_grad) has a Leaf node holding its tensor only by weak
reference, so the graph has no cycles and dies with the last tensor that reaches it.
"""

import contextlib
import linecache
import os
import sys
import threading
import weakref

import numpy as np

from gpugrad import backend
from gpugrad import ops
from gpugrad import tensors


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
    forward_mode = False
    structure_only = None  # a _Structure while gg.checkpoint discovers what fn reaches
    anomaly = False  # detect_anomaly: note where each op is recorded, check every gradient


_state = _State()


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
    _state.anomaly = bool(mode)


def is_anomaly_enabled():
    return _state.anomaly


@contextlib.contextmanager
def detect_anomaly():
    """Inside the block, backward raises AnomalyError at the first op whose gradient holds NaN
    or inf, naming the op, the shapes and the line that recorded it in the forward."""
    prev = _state.anomaly
    _state.anomaly = True
    try:
        yield
    finally:
        _state.anomaly = prev


def _user_line():
    """The innermost stack frame outside gpugrad: the user's line that made the op."""
    frame = sys._getframe(2)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back
    if frame is None:
        return "an unknown line"
    code = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}" + (
        f": {code}" if code else "")


def _check_finite(node, g, input_grads):
    """Raise AnomalyError if a gradient the node's rule returned holds NaN or inf."""
    for i, gi in enumerate(input_grads):
        if gi is None:
            continue
        backend.forbid_in_graph_step("detect_anomaly (it reads every gradient on the host)",
                                     backend.HOST_READ_WHY)
        xp = backend.get(gi.device).xp
        finite = xp.isfinite(gi.data)
        if bool(finite.all()):
            continue
        n_nan, n_bad = int(xp.isnan(gi.data).sum()), int((~finite).sum())
        incoming = "finite" if bool(xp.isfinite(g.data).all()) else "not finite either"
        shapes = ", ".join(str(m[0]) if m is not None else "scalar" for m in node.metas)
        where = _recorded_at.get(node, "a line recorded outside detect_anomaly()")
        raise AnomalyError(
            f"detect_anomaly: the gradient of {node.op.name!r} for its {_input_label(node.op, i)} "
            f"(shape {gi.shape}, {gi.dtype}) holds {n_nan} NaN and {n_bad - n_nan} inf of "
            f"{gi.size} values; the gradient coming into {node.op.name!r} (shape {g.shape}) was "
            f"{incoming}. {node.op.name!r} took inputs of shapes {shapes} and was recorded at "
            f"{where}")


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


def _input_label(op, i):
    name = op.input_name(i)
    return name if name.startswith("input ") else f"input {name}"


def _check_unchanged(node):
    """Raise if an array node saved was changed in place after the node was recorded."""
    for key, arr in node.saved.items():
        if not hasattr(arr, "shape"):
            continue
        root = _base(arr)
        entry = _changed.get(id(root))
        if entry is not None and entry[0]() is root and entry[1] > node.epoch:
            what = (_input_label(node.op, key) if isinstance(key, int)
                    else "the output" if key == "y" else f"the saved {key}")
            raise GraphError(
                f"backward: {what} of {node.op.name!r}, saved for its gradient, was changed in "
                f"place after it was recorded (by item assignment, an optimizer step or "
                f"load_state_dict), so the gradient would be wrong; change a copy, or change it "
                f"after backward")


# ---------------------------------------------------------------------------- the graph


class Leaf:
    """The node of a tensor that receives a gradient (attach_grad)."""

    __slots__ = ("ref", "grad_req", "__weakref__")
    op = None

    def __init__(self, t, grad_req):
        self.ref = weakref.ref(t)
        self.grad_req = grad_req


class Node:
    """One recorded op: its input nodes, what it saved, and the metadata of the rest."""

    __slots__ = ("op", "parents", "metas", "saved", "params", "out_meta", "freed", "epoch",
                 "__weakref__")

    def __init__(self, op, parents, inputs, arrays, y, y_device, params, aux=None, keep=True):
        self.op = op
        self.parents = parents
        self.params = params
        self.freed = False
        self.epoch = _epoch
        # (shape, dtype, device) per tensor input; None for Python scalars
        self.metas = [(a.shape, a.dtype, x.device) if isinstance(x, tensors.Tensor) else None
                      for x, a in zip(inputs, arrays)]
        self.out_meta = (y.shape, y.dtype, y_device)
        self.saved = {}
        if not keep:  # structure only (gg.checkpoint's discovery pass)
            return
        save_for = op.save_for(params)
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


# ---------------------------------------------------------------------------- applying an op


def _coerce(op, inputs):
    """Check devices; turn arrays and lists into tensors on the common device."""
    device = None
    for x in inputs:
        if isinstance(x, tensors.Tensor):
            if device is None:
                device = x.device
            elif x.device != device:
                raise backend.DeviceError(
                    f"{op.name}: tensors are on different devices, {device!r} and {x.device!r}; "
                    f"move one with .to(device)")
        elif isinstance(x, Unsaved):
            x.fail()
    out = []
    for i, x in enumerate(inputs):
        if isinstance(x, tensors.Tensor):
            out.append(x)
        elif isinstance(x, (bool, int, float, np.generic)):
            out.append(x)
        elif x is None:
            if i not in op.optional:
                raise TypeError(f"{op.name}: input {op.input_name(i)} is None")
            out.append(None)  # an optional input that is absent (linear without a bias)
        else:
            out.append(tensors.tensor(x, device=device))
    if not out:
        raise ValueError(f"{op.name}: needs at least one tensor, got none")
    if not any(isinstance(x, tensors.Tensor) for x in out):
        out[0] = tensors.tensor(out[0])  # only Python scalars: the first gets the default dtype
    return out


def _forward_error(op, inputs, e):
    shapes = [x.shape if isinstance(x, tensors.Tensor) else type(x).__name__ for x in inputs]
    if op.kind == "elementwise" and "broadcast" in str(e):
        listed = " and ".join(str(s) for s in shapes)
        return ShapeError(f"{op.name}: shapes {listed} cannot be broadcast together")
    message = f"{op.name}: {e} (input shapes {', '.join(map(str, shapes))})"
    try:
        return type(e)(message)
    except TypeError:  # an exception type whose constructor wants more than a message
        return ValueError(message)


_Tensor = None  # tensors.Tensor, bound on first use (tensor imports this module)
_SCALARS = (bool, int, float)


def _fast_inputs(inputs):
    """(arrays, device) when every input is a Tensor on one device or a Python scalar, else
    None: the common case in one pass; _coerce handles the rest."""
    device = None
    arrays = []
    for x in inputs:
        cls = type(x)
        if cls is _Tensor:
            if device is None:
                device = x.device
            elif x.device != device:
                return None
            arrays.append(x.data)
        elif cls in _SCALARS:
            arrays.append(x)
        else:
            return None
    return (arrays, device) if device is not None else None


def apply(op, inputs, params):
    """Run an op's forward; record a Node when recording and an input is in the graph."""
    global _Tensor
    if _Tensor is None:
        _Tensor = tensors.Tensor
    fast = _fast_inputs(inputs)
    if fast is not None:
        xs = inputs
        arrays, device = fast
    else:
        xs = _coerce(op, inputs)
        device = None
        arrays = []
        for x in xs:
            if isinstance(x, tensors.Tensor):
                arrays.append(x.data)
                device = device or x.device
            else:
                arrays.append(x)
    be = backend.get(device)
    parents = None
    if _state.recording and op.differentiable:
        parents = tuple(x._node if isinstance(x, tensors.Tensor) else None for x in xs)
        if all(p is None for p in parents):
            parents = None
    tangents = None
    if _state.forward_mode and op.differentiable:
        tangents = tuple(x._tangent if isinstance(x, tensors.Tensor) else None for x in xs)
        if all(t is None for t in tangents):
            tangents = None
    structure = _state.structure_only
    if structure is not None and parents is not None:
        structure.note_inputs(xs)
    aux = None
    try:
        if op.forward_saving is not None and structure is None and (
                parents is not None or tangents is not None):
            with be.active:
                y, aux = op.forward_saving(be.xp, *arrays, **params)
        elif be.is_cpu:  # no device to make current
            y = op.forward(np, *arrays, **params)
        else:
            with be.active:
                y = op.forward(be.xp, *arrays, **params)
    except ShapeError:
        raise
    except (ValueError, IndexError, TypeError) as e:
        raise _forward_error(op, xs, e) from e
    if be.is_cpu and type(y) is not np.ndarray and not backend.is_backend_array(y):
        y = np.asarray(y)  # NumPy reductions return scalars (to_device returns a device array)
    y_device = backend.device_of_array(y) if op.moves_device else device
    floating = y.dtype.kind == "f"
    node = None
    if parents is not None and floating:
        node = Node(op, parents, xs, arrays, y, y_device, params, aux, keep=structure is None)
        if structure is not None:
            structure.nodes.add(node)
        if _state.anomaly:
            _recorded_at[node] = _user_line()
    out = tensors.wrap(y, y_device, node)
    if tangents is not None and floating:
        out._tangent = _tangent_of(op, tangents, xs, out, aux, params)
    return out


def _tangent_of(op, ts, xs, y, aux, params):
    """The output's tangent from the op's jvp rule (forward mode)."""
    _state.forward_mode = False  # tangent arithmetic must not carry tangents of its own
    try:
        extra = {k: tensors.wrap(a, y.device) for k, a in aux.items()} if aux else {}
        t = op.jvp(ts, *xs, y=y, **extra, **params)
        if t.shape != y.shape:
            t = ops.broadcast_to(t, y.shape)
        return t if t.dtype == y.dtype else t.astype(y.dtype)
    finally:
        _state.forward_mode = True


class _Structure:
    """What a block recorded in structure-only mode reached from outside it: tensors whose
    nodes were made before the block (its inputs, parameters, captured intermediates)."""

    def __init__(self):
        self.nodes = set()
        self.outside = {}  # node -> a tensor holding it, in first-use order

    def note_inputs(self, xs):
        for x in xs:
            if isinstance(x, tensors.Tensor) and x._node is not None and x._node not in self.nodes:
                self.outside.setdefault(x._node, x)


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


@contextlib.contextmanager
def forward_mode():
    """Propagate tangents (Tensor._tangent) through ops inside the block."""
    if _state.forward_mode:
        raise RuntimeError("nested forward mode (gg.jvp inside gg.jvp) is not supported")
    _state.forward_mode = True
    try:
        yield
    finally:
        _state.forward_mode = False


# ---------------------------------------------------------------------------- backward


def _rule_inputs(node, create_graph):
    """Saved arrays back as Tensors (with their history when create_graph), else placeholders."""
    if node.epoch != _epoch:
        _check_unchanged(node)
    op, saved = node.op, node.saved
    args = []
    for i, meta in enumerate(node.metas):
        if meta is None:
            args.append(saved[i])
        elif i in saved:
            args.append(tensors.wrap(saved[i], meta[2], node.parents[i] if create_graph else None))
        else:
            args.append(Unsaved(op.name, op.input_name(i), meta))
    if "y" in saved:
        y = tensors.wrap(saved["y"], node.out_meta[2], node if create_graph else None)
    else:
        y = Unsaved(op.name, "its output y", node.out_meta)
    aux = {}
    for k in op.aux:  # arrays only backward needs (no history: they are not differentiable)
        a = saved.get(k)
        aux[k] = tensors.wrap(a, node.out_meta[2]) if a is not None else Unsaved(
            op.name, k, (None, None, node.out_meta[2]))
    return args, y, aux


def unbroadcast(g, shape):
    """Sum a gradient over the axes broadcasting added, back to `shape`."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    if lead < 0:
        return g
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    if not axes:
        return g
    return ops.reshape(ops.sum(g, axis=axes, keepdims=True), shape)


def _uniform_as_scalar(g):
    """A gradient that is one value broadcast (all strides 0, as sum's backward makes it) as a
    0-d tensor: elementwise rules then broadcast it instead of materialising it."""
    data = g.data
    if g.ndim and g.size > 1 and not any(data.strides):
        xp = backend.get(g.device).xp
        return tensors.wrap(xp.asarray(data[(0,) * g.ndim]), g.device)
    return g


def _fit_shape(gi, shape, out_shape):
    """A gradient brought to its input's shape. A rule given a 0-d uniform gradient may return
    less than the op's output: broadcast it up to the output first (a view), so that summing
    back over the dims the input was broadcast along counts every copy."""
    if gi.shape != out_shape and gi.size < int(np.prod(out_shape, dtype=np.int64)):
        try:
            gi = ops.broadcast_to(gi, out_shape)
        except ValueError:
            pass
    return unbroadcast(gi, shape)


def _input_grads(node, g, create_graph):
    op = node.op
    if op.scalar_g and not create_graph:
        g = _uniform_as_scalar(g)
    args, y, aux = _rule_inputs(node, create_graph)
    params = node.params
    if op.vjp_all is not None:
        grads = list(op.vjp_all(g, *args, y=y, **aux, **params))
    else:
        grads = [None if p is None else rule(g, *args, y=y, **aux, **params)
                 for p, rule in zip(node.parents, op.vjp)]
    for i, (p, gi) in enumerate(zip(node.parents, grads)):
        if p is None or gi is None:
            grads[i] = None
            continue
        shape, dtype, device = node.metas[i]
        if not isinstance(gi, tensors.Tensor):
            raise GraphError(f"{op.name}: the gradient rule for {op.input_name(i)} returned "
                             f"{type(gi).__name__}, not a Tensor")
        if gi.shape != shape:
            gi = _fit_shape(gi, shape, node.out_meta[0])
        if gi.shape != shape:
            raise GraphError(f"{op.name}: gradient for {op.input_name(i)} has shape {gi.shape} "
                             f"but the input has shape {shape}")
        if gi.device != device:
            raise GraphError(f"{op.name}: gradient for {op.input_name(i)} is on {gi.device!r} "
                             f"but the input is on {device!r}")
        grads[i] = gi if gi.dtype == dtype else gi.astype(dtype)
    return grads


def _toposort(roots):
    """Nodes reachable from roots, each before its inputs (iterative DFS, post-order reversed)."""
    order, seen = [], set()
    stack = [(r, False) for r in roots]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if node in seen:
            continue
        seen.add(node)
        stack.append((node, True))
        if node.op is not None:
            if isinstance(node.freed, str):  # freed by a backward that then failed
                raise GraphError(
                    f"backward through a graph that an earlier backward freed in part and then "
                    f"failed ({node.freed}); the ops it had finished, {node.op.name!r} among "
                    f"them, lost what they saved: run the forward again inside record()")
            if node.freed:
                raise GraphError(
                    f"backward through a graph that has already been freed (at op "
                    f"{node.op.name!r}): the first backward frees it unless you pass "
                    f"retain_graph=True")
            stack.extend((p, False) for p in node.parents if p is not None and p not in seen)
    order.reverse()
    return order


def _check_head(y, head_grad, who):
    if not isinstance(y, tensors.Tensor):
        raise TypeError(f"{who}: expected a Tensor, got {type(y).__name__}")
    if y._node is None:
        raise GraphError(
            f"{who}: this tensor has no graph: it was not computed inside autograd.record() "
            f"from a tensor with attach_grad() (or requires_grad=True)")
    if head_grad is None:
        return tensors.wrap(backend.get(y.device).xp.ones(y.shape, y.dtype), y.device)
    if not isinstance(head_grad, tensors.Tensor):
        head_grad = tensors.tensor(head_grad, dtype=y.dtype, device=y.device)
    if head_grad.shape != y.shape:
        raise ShapeError(f"{who}: head_grad has shape {head_grad.shape} but the output has "
                         f"shape {y.shape}")
    if head_grad.device != y.device:
        raise backend.DeviceError(f"{who}: head_grad is on {head_grad.device!r} but the output "
                                  f"is on {y.device!r}")
    return head_grad


def _run(heads, head_grads, retain_graph, create_graph, targets=None):
    """The engine. Writes leaf gradients, or with `targets` returns {node: gradient}."""
    roots = [h._node for h in heads]
    order = _toposort(roots)
    if targets is not None:
        # a node's rule runs only if one of its inputs leads to a target: the graph beyond the
        # targets is neither walked nor freed
        useful = set(targets)
        expand = set()
        for node in reversed(order):
            if node.op is not None and any(p in useful for p in node.parents):
                useful.add(node)
                expand.add(node)
    grads = {}
    for node, g in zip(roots, head_grads):
        grads[node] = grads[node] + g if node in grads else g
    found = {}
    leaves = []
    owned = {}  # id -> array: gradients only this backward holds, safe to add into in place
    freed = []  # nodes this backward freed, told why they are gone if it then fails
    scope = record() if create_graph else pause()
    anomaly = _state.anomaly
    node = None
    try:
        with scope:
            for node in order:
                g = grads.pop(node, None)
                if g is None:
                    continue
                owned.pop(id(g.data), None)
                if targets is not None:
                    if node in targets:
                        found[node] = g
                    if node not in expand:
                        continue
                elif node.op is None:
                    leaves.append((node, g))
                    continue
                input_grads = _input_grads(node, g, create_graph)
                if anomaly:
                    _check_finite(node, g, input_grads)
                for p, gi in zip(node.parents, input_grads):
                    if gi is not None:
                        _accumulate(grads, owned, p, gi, g, node, input_grads, create_graph)
                if not retain_graph:
                    node.free()
                    freed.append(node)
    except BaseException as e:
        if freed:
            at = f" at {node.op.name!r}" if node is not None and node.op is not None else ""
            reason = f"{type(e).__name__}{at}: {str(e)[:200]}"
            for n in freed:
                n.freed = reason
        raise
    if targets is None:
        _write_leaves(leaves, create_graph, {id(g.data) for g in head_grads})
    return found


def _exclusive(gi, g, node, input_grads):
    """Whether a rule's result is a new array nothing else refers to: not a view, not the
    incoming gradient passed through, not given to two inputs, not from a user's Function."""
    data = gi.data
    return (node.op.kind != "function" and getattr(data, "base", None) is None
            and data is not g.data and (len(input_grads) == 1 or sum(
                o is not None and o.data is data for o in input_grads) == 1))


def _accumulate(grads, owned, p, gi, g, node, input_grads, create_graph):
    """grads[p] += gi: in place into an array this backward owns, else a new sum."""
    prev = grads.get(p)
    if prev is None:
        grads[p] = gi
        if not create_graph and _exclusive(gi, g, node, input_grads):
            owned[id(gi.data)] = gi.data
    elif not create_graph and owned.get(id(prev.data)) is prev.data and prev.dtype == gi.dtype:
        prev.data += gi.data  # first order only: the sum needs no history
    else:
        total = prev + gi
        grads[p] = total
        if not create_graph:
            owned[id(total.data)] = total.data


def _write_leaves(leaves, create_graph, external):
    """Store each leaf's gradient per its grad_req, copying any array that is shared."""
    written = set(external)
    in_graph_step = backend.in_graph_step()
    for leaf, g in leaves:
        t = leaf.ref()
        if t is None or leaf.grad_req == "null":
            continue
        if not create_graph:
            data = g.data
            if id(data) in written or data.base is not None:
                data = data.copy()
            written.add(id(data))
            g = tensors.wrap(data, g.device)
        if leaf.grad_req == "add" and t.grad is not None:
            if create_graph:
                t.grad = t.grad + g
            else:
                t.grad.data += g.data
                changed_in_place(t.grad.data)
        elif in_graph_step and not create_graph and _same_buffer_kind(t.grad, g):
            t.grad.data[...] = g.data  # a captured graph writes where the eager step did
            changed_in_place(t.grad.data)
        else:
            t.grad = g


def _same_buffer_kind(old, new):
    return old is not None and old.shape == new.shape and old.dtype == new.dtype and old.device == new.device


def gradients(heads, head_grads, targets, create_graph=False):
    """{node: gradient} of heads (times head_grads, Tensors) at the target nodes; only the part
    of the graph between them is walked, and it is kept when create_graph. The engine's entry
    point for code that differentiates a graph it recorded itself (gg.checkpoint)."""
    return _run(heads, head_grads, create_graph, create_graph, targets=targets)


def backward(y, head_grad=None, retain_graph=False, create_graph=False):
    """Gradient of y (times head_grad) written into .grad of the leaves behind it.

    create_graph=True keeps the graph too: the recorded gradients refer to its saved arrays.
    """
    g = _check_head(y, head_grad, "backward")
    _run([y], [g], retain_graph or create_graph, create_graph)


def grad(heads, variables, head_grads=None, retain_graph=None, create_graph=False):
    """Gradients of heads with respect to variables, as new tensors; .grad is left alone.

    Variables that the heads do not depend on get zeros. retain_graph defaults to
    create_graph, as in PyTorch.
    """
    single = isinstance(variables, tensors.Tensor)
    heads = [heads] if isinstance(heads, tensors.Tensor) else list(heads)
    variables = [variables] if single else list(variables)
    if head_grads is None or isinstance(head_grads, tensors.Tensor):
        head_grads = [head_grads] * len(heads)
    if len(head_grads) != len(heads):
        raise ValueError(f"grad: {len(heads)} heads but {len(head_grads)} head_grads")
    hg = [_check_head(h, g, "grad") for h, g in zip(heads, head_grads)]
    for v in variables:
        if not isinstance(v, tensors.Tensor) or v._node is None:
            raise GraphError("grad: every variable must be in the graph (call attach_grad() on "
                             "it, or compute it inside autograd.record())")
    if retain_graph is None:
        retain_graph = create_graph
    found = _run(heads, hg, retain_graph, create_graph, targets={v._node for v in variables})
    out = []
    for v in variables:
        g = found.get(v._node)
        out.append(tensors.zeros_like(v) if g is None else g)
    return out[0] if single else out
