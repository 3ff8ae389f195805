"""The reverse-mode engine: backward, grad and gradients walk the nodes that recording
(engine/recording.py) leaves, in reverse topological order. gpugrad/autograd.py is its public face."""

import contextlib
import threading

import numpy as np

from gpugrad import devices
from gpugrad import recording
from gpugrad import ops
from gpugrad import tensors
from gpugrad.recording import AnomalyError, GraphError, ShapeError, Unsaved, changed_in_place
from gpugrad.recording import pause, record


# ---------------------------------------------------------------------------- checks


def _check_finite(node, g, input_grads):
    """Raise AnomalyError if a gradient the node's rule returned holds NaN or inf (gradients
    as arrays, or as Tensors under create_graph)."""
    g = _array(g)
    for i, gi in enumerate(input_grads):
        if gi is None:
            continue
        devices.forbid_in_graph_step("detect_anomaly (it reads every gradient on the host)",
                                     devices.HOST_READ_WHY)
        gi = _array(gi)
        xp = devices.get(node.metas[i][2]).xp
        finite = xp.isfinite(gi)
        if bool(finite.all()):
            continue
        n_nan, n_bad = int(xp.isnan(gi).sum()), int((~finite).sum())
        incoming = "finite" if bool(xp.isfinite(g).all()) else "not finite either"
        shapes = ", ".join(str(m[0]) if m is not None else "scalar" for m in node.metas)
        where = recording._recorded_at.get(node, "a line recorded outside detect_anomaly()")
        raise AnomalyError(
            f"detect_anomaly: the gradient of {node.op.name!r} for its {_input_label(node.op, i)} "
            f"(shape {gi.shape}, {gi.dtype}) holds {n_nan} NaN and {n_bad - n_nan} inf of "
            f"{gi.size} values; the gradient coming into {node.op.name!r} (shape {g.shape}) was "
            f"{incoming}. {node.op.name!r} took inputs of shapes {shapes} and was recorded at "
            f"{where}")


def _array(v):
    return v.data if isinstance(v, tensors.Tensor) else v


def _input_label(op, i):
    name = op.input_name(i)
    return name if name.startswith("input ") else f"input {name}"


def _check_unchanged(node):
    """Raise if an array node saved was changed in place after the node was recorded."""
    for key, arr in node.saved.items():
        if not hasattr(arr, "shape"):
            continue
        root = recording._base(arr)
        entry = recording._changed.get(id(root))
        if entry is not None and entry[0]() is root and entry[1] > node.epoch:
            what = (_input_label(node.op, key) if isinstance(key, int)
                    else "the output" if key == "y" else f"the saved {key}")
            raise GraphError(
                f"backward: {what} of {node.op.name!r}, saved for its gradient, was changed in "
                f"place after it was recorded (by item assignment, an optimizer step or "
                f"load_state_dict), so the gradient would be wrong; change a copy, or change it "
                f"after backward")


# ---------------------------------------------------------------------------- backward


def _as_is(a, device, node=None):
    return a


def _with_tangent(node, key, t):
    """A saved Tensor with the tangents it had when the node was recorded under gg.jvp."""
    if node.tangents is not None and key in node.tangents:
        t._tangent = node.tangents[key]
    return t


def _rule_inputs(node, as_tensors, create_graph):
    """What the node saved, for its rules: as arrays, or as Tensors (with their history when
    create_graph, and their tangents under gg.jvp); placeholders for what it did not save."""
    if node.epoch != recording._epoch:
        _check_unchanged(node)
    op, saved = node.op, node.saved
    wrap = tensors.wrap if as_tensors else _as_is
    args = []
    for i, meta in enumerate(node.metas):
        if meta is None:
            args.append(saved[i])
        elif i in saved:
            a = wrap(saved[i], meta[2], node.parents[i] if create_graph else None)
            args.append(_with_tangent(node, i, a) if as_tensors else a)
        else:
            args.append(Unsaved(op.name, op.input_name(i), meta))
    if "y" in saved:
        y = wrap(saved["y"], node.out_meta[2], node if create_graph else None)
        y = _with_tangent(node, "y", y) if as_tensors else y
    else:
        y = Unsaved(op.name, "its output y", node.out_meta)
    aux = {}
    for k in op.aux:  # arrays only backward needs (no history: they are not differentiable)
        a = saved.get(k)
        if a is not None:
            aux[k] = wrap(a, node.out_meta[2])
        elif op.aux_from_output is not None and "y" in saved:
            aux[k] = None  # dropped for the output a consumer keeps: the rule reads y
        else:
            aux[k] = Unsaved(op.name, k, (None, None, node.out_meta[2]))
    return args, y, aux


def unbroadcast(g, shape):
    """Sum a gradient over the axes broadcasting added, back to `shape`: the leading axes it
    lacks, and the axes where it has size 1 and the gradient does not. Anything else (fewer
    dimensions than the input, a size that is neither) is left as it is for the caller's
    shape check to name."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    if lead < 0 or any(n != 1 and g.shape[lead + i] != n for i, n in enumerate(shape)):
        return g  # not a broadcast of the input's shape
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    if not axes:
        return g
    return ops.reshape(ops.sum(g, axis=axes, keepdims=True), shape)


def _call_rules(node, g, args, y, aux, pending=None):
    """The gradient of each input from the op's rules (None for an input that takes none).
    With `pending` (first order), an op's vjp_into may add an input's gradient into the array
    pending for it and give None for it."""
    op, params = node.op, node.params
    if op.vjp_all is not None:
        return list(op.vjp_all(g, *args, y=y, **aux, **params))
    if op.variadic:  # one rule, applied to each input that takes a gradient
        rule, out = op.vjp[0], []
        for i, p in enumerate(node.parents):
            if p is None:
                out.append(None)
            elif pending is not None and pending[i] is not None:
                out.append(op.vjp_into(pending[i], g, args[i], y=y, **aux, **params))
            else:
                out.append(rule(g, args[i], y=y, **aux, **params))
        return out
    return [None if p is None else rule(g, *args, y=y, **aux, **params)
            for p, rule in zip(node.parents, op.vjp)]


def _owned(grads, owned, p):
    """The gradient pending for node p if it is an array only this backward holds, else None."""
    prev = grads.get(p)
    return prev if prev is not None and owned.get(id(prev)) is prev else None


def _input_grads(node, g, as_tensors, create_graph, pending=None):
    """The gradients of the node's inputs: arrays from the rules run on arrays (first order,
    inside _first_order()), or Tensors from the rules run as Tensor ops (recorded under
    create_graph; carrying tangents under gg.jvp). One table serves both."""
    if as_tensors:
        return _tensor_grads(node, g, create_graph)
    if node.op.tensor_rules:  # rules that need Tensors (a gg.Function's backward): arrays out
        state = recording._state
        state.raw_rules = False
        try:
            grads = _tensor_grads(node, tensors.wrap(g, node.out_meta[2]), False)
        finally:
            state.raw_rules = True
        return [None if gi is None else gi.data for gi in grads]
    be = devices.get(node.out_meta[2])
    if be.is_cpu:
        return _raw_grads(node, g, be, pending)
    with be.active:  # once for the node's ops, which then need no device switch of their own
        return _raw_grads(node, g, be, pending)


@contextlib.contextmanager
def _first_order():
    """The engine's scope at first order: nothing recorded, and the ops that rules call on
    arrays return arrays (registry._raw_apply)."""
    state = recording._state
    outer = state.recording, state.training, state.raw_rules
    state.recording, state.training, state.raw_rules = False, False, True
    try:
        yield
    finally:
        state.recording, state.training, state.raw_rules = outer


def _raw_grads(node, g, be, pending):
    """First order: the rules on arrays. The ops they call on arrays run their forward alone:
    no Tensor, no node, none of the checks the forward already did. With `pending` (the
    gradients the inputs have so far, where this backward alone holds them) an op's vjp_into
    may add into those in place; it returns None for them."""
    args, y, aux = _rule_inputs(node, False, False)
    grads = _call_rules(node, g, args, y, aux, pending)
    for i, (p, gi) in enumerate(zip(node.parents, grads)):
        if p is None or gi is None:
            grads[i] = None
            continue
        shape, dtype, _ = node.metas[i]
        if isinstance(gi, np.generic):  # NumPy's 0-d arithmetic gives scalars
            gi = np.asarray(gi)
        elif not devices.is_backend_array(gi):
            raise _not_a(node, i, gi, "an array")
        if gi.shape != shape:
            gi = _fitted(node, i, gi, shape)
        grads[i] = gi if gi.dtype == dtype else _as_array(gi.astype(dtype))
    return grads


def _fitted(node, i, gi, shape):
    """A rule's gradient for input i summed back over the axes broadcasting added (arrays or
    Tensors alike), or a GraphError naming both shapes."""
    gi = unbroadcast(gi, shape)
    if gi.shape != shape:
        raise GraphError(f"{node.op.name}: gradient for {node.op.input_name(i)} has shape "
                         f"{gi.shape} but the input has shape {shape}")
    return gi


def _not_a(node, i, gi, what):
    return GraphError(f"{node.op.name}: the gradient rule for {node.op.input_name(i)} returned "
                      f"{type(gi).__name__}, not {what}")


def _as_array(a):
    return np.asarray(a) if isinstance(a, np.generic) else a


def _tensor_grads(node, g, create_graph):
    """The rules as Tensor ops: recorded under create_graph, so the gradients have history,
    and carrying tangents under gg.jvp (forward over reverse)."""
    op = node.op
    args, y, aux = _rule_inputs(node, True, create_graph)
    grads = _call_rules(node, g, args, y, aux)
    for i, (p, gi) in enumerate(zip(node.parents, grads)):
        if p is None or gi is None:
            grads[i] = None
            continue
        shape, dtype, device = node.metas[i]
        if not isinstance(gi, tensors.Tensor):
            raise _not_a(node, i, gi, "a Tensor")
        if gi.shape != shape:
            gi = _fitted(node, i, gi, shape)
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


_SCALAR_ONES = {}  # (device, dtype) -> a 0-d 1: the head of every scalar loss's backward


def _ones_head(y, as_tensors):
    """The implicit head gradient, ones. A scalar loss's, at first order, is one 0-d array kept
    per device and dtype, never written (the engine adds into no array the caller passed in,
    and copies one before it could escape into a .grad or a result): no fill kernel per step.
    When the rules run as Tensor ops the head can end up in a .grad, which the caller may
    change: new ones."""
    be = devices.get(y.device)
    if y.shape or as_tensors:
        with be.active:
            return tensors.wrap(be.xp.ones(y.shape, y.dtype), y.device)
    key = (y.device, y.dtype)
    one = _SCALAR_ONES.get(key)
    if one is None:
        with be.active:
            one = be.xp.ones((), y.dtype)
        if devices.capturing():  # its fill runs only when the graph does: not one to keep
            return tensors.wrap(one, y.device)
        be.synchronize()  # filled once, then read from any stream: wait for the fill
        _SCALAR_ONES[key] = one
    return tensors.wrap(one, y.device)


def _check_head(y, head_grad, who, create_graph):
    if not isinstance(y, tensors.Tensor):
        raise TypeError(f"{who}: expected a Tensor, got {type(y).__name__}")
    if y._node is None:
        raise GraphError(
            f"{who}: this tensor has no graph: it was not computed inside autograd.record() "
            f"from a tensor with attach_grad() (or requires_grad=True)")
    if head_grad is None:
        head_grad = _ones_head(y, create_graph or recording.forward_active())
    else:
        if not isinstance(head_grad, tensors.Tensor):
            head_grad = tensors.tensor(head_grad, dtype=y.dtype, device=y.device)
        if head_grad.shape != y.shape:
            raise ShapeError(f"{who}: head_grad has shape {head_grad.shape} but the output "
                             f"has shape {y.shape}")
        if head_grad.device != y.device:
            raise devices.DeviceError(f"{who}: head_grad is on {head_grad.device!r} but the "
                                      f"output is on {y.device!r}")
    if create_graph and head_grad._node is None:
        # the recorded gradients are functions of the head: with the head in the graph (with a
        # zero derivative) each of them is differentiable again, even where it comes out
        # constant (relu's first derivative: its own gradient is zeros)
        head = tensors.wrap(head_grad.data, head_grad.device, recording.CONSTANT)
        head._tangent = head_grad._tangent
        head_grad = head
    return head_grad


def _run(heads, head_grads, retain_graph, create_graph, targets=None):
    """The engine. Writes leaf gradients, or with `targets` returns {node: gradient}. Rules run
    on arrays at first order; as Tensor ops under create_graph (recorded) and under gg.jvp
    (carrying tangents: forward over reverse)."""
    as_tensors = create_graph or recording.forward_active()
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
    external = {id(g.data) for g in head_grads}  # the caller's arrays: never added into
    if not as_tensors:  # first order: the engine moves arrays, not Tensors
        head_grads = [g.data for g in head_grads]
    grads = {}
    for node, g in zip(roots, head_grads):
        grads[node] = _as_array(grads[node] + g) if node in grads else g
    found = {}
    leaves = []
    owned = {}  # id -> array: gradients only this backward holds, safe to add into in place
    freed = []  # nodes this backward freed, told why they are gone if it then fails
    scope = record() if create_graph else pause() if as_tensors else _first_order()
    quiet = devices.quiet()  # inf and NaN in gradients are anomaly mode's to report
    anomaly = recording._state.anomaly
    node = None
    try:
        with scope, quiet:
            for node in order:
                g = grads.pop(node, None)
                if g is None:
                    continue
                if not as_tensors:
                    owned.pop(id(g), None)
                if targets is not None:
                    if node in targets:
                        found[node] = g
                    if node not in expand:
                        continue
                elif node.op is None:
                    leaves.append((node, g))
                    continue
                pending = None
                if node.op.vjp_into is not None and not as_tensors and not anomaly:
                    pending = [_owned(grads, owned, p) for p in node.parents]
                input_grads = _input_grads(node, g, as_tensors, create_graph, pending)
                if anomaly:
                    _check_finite(node, g, input_grads)
                for p, gi in zip(node.parents, input_grads):
                    if gi is not None:
                        _accumulate(grads, owned, p, gi, g, node, input_grads, as_tensors)
                if not retain_graph:
                    for p in node.parents:  # the common case (no parent shares) costs this loop
                        if p is not None and p.op is not None and p.op.aux_from_output is not None:
                            _remake_from_output(node, grads, expand if targets is not None else None)
                            break
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
        _write_leaves(leaves, as_tensors, external)
    elif not as_tensors:  # a head passed through is the caller's array (or the kept 1)
        found = {n: tensors.wrap(g.copy() if id(g) in external else g,
                                 devices.device_of_array(g)) for n, g in found.items()}
    return found


def _remake_from_output(node, pending, expand):
    """Before a node frees the output of a parent that dropped its own arrays for it (relu's
    mask: registry._share_saved_outputs), a parent whose backward does not run in this pass
    (a gradient that stops short of it) makes them again from it, so that it keeps 1 bit per
    element, not the output; one whose backward comes in this pass reads the output there."""
    for i, p in enumerate(node.parents):
        if p is None or p.op is None or p.op.aux_from_output is None or p.freed:
            continue
        if p in pending and (expand is None or p in expand):
            continue
        y = p.saved.get("y")
        if y is None or node.saved.get(i) is not y or any(k in p.saved for k in p.op.aux):
            continue
        be = devices.get(p.out_meta[2])
        with be.active:
            p.saved.update(p.op.aux_from_output[1](be.xp, y, **p.params))
        del p.saved["y"]


def _exclusive(gi, g, node, input_grads):
    """Whether a rule's result (an array) is a new array nothing else refers to: not a view,
    not the incoming gradient passed through, not given to two inputs, not from a user's
    Function."""
    return (node.op.kind != "function" and getattr(gi, "base", None) is None
            and gi is not g and (len(input_grads) == 1 or sum(
                o is gi for o in input_grads) == 1))


def _accumulate(grads, owned, p, gi, g, node, input_grads, as_tensors):
    """grads[p] += gi: in place into an array this backward owns, else a new sum (arrays at
    first order, Tensors where the rules run as Tensor ops)."""
    prev = grads.get(p)
    if prev is None:
        grads[p] = gi
        if not as_tensors and _exclusive(gi, g, node, input_grads):
            owned[id(gi)] = gi
    elif as_tensors:
        grads[p] = prev + gi
    elif owned.get(id(prev)) is prev and prev.dtype == gi.dtype:
        prev += gi  # first order only: the sum needs no history
    else:
        total = _as_array(prev + gi)
        grads[p] = total
        owned[id(total)] = total


# Backward may run in several threads at once (recording is per thread), and two of them may
# add into one leaf's .grad: NumPy's in-place add releases the GIL, so without this lock one
# thread's sum could overwrite the other's. Held only while the leaves are written.
_LEAF_WRITES = threading.Lock()


def _write_leaves(leaves, as_tensors, external):
    """Store each leaf's gradient (an array, or a Tensor where the rules ran as Tensor ops) per
    its grad_req, copying any array that is shared."""
    with _LEAF_WRITES:
        _write_leaves_locked(leaves, as_tensors, external)


def _write_leaves_locked(leaves, as_tensors, external):
    written = set(external)
    in_graph_step = devices.in_graph_step()
    for leaf, g in leaves:
        t = leaf.ref()
        if t is None or leaf.grad_req == "null":
            continue
        if as_tensors:
            t.grad = t.grad + g if leaf.grad_req == "add" and t.grad is not None else g
            continue
        if id(g) in written or g.base is not None:
            g = g.copy()
        written.add(id(g))
        old = t.grad
        if leaf.grad_req == "add" and old is not None:
            old.data += g
            changed_in_place(old.data)
        elif (in_graph_step and old is not None and old._node is None and old.shape == g.shape
              and old.dtype == g.dtype and old.device == t.device):
            # the .grad tensor stays the same object and takes the new array, which nothing
            # else refers to: a captured graph writes it on every replay, with no copy
            devices.swapped_in(old, old.data)
            old.data = g
        else:
            t.grad = tensors.wrap(g, t.device)


def gradients(heads, head_grads, targets, create_graph=False):
    """{node: gradient} of heads (times head_grads, Tensors) at the target nodes; only the part
    of the graph between them is walked, and it is kept when create_graph. The engine's entry
    point for code that differentiates a graph it recorded itself (gg.checkpoint)."""
    return _run(heads, head_grads, create_graph, create_graph, targets=targets)


def backward(y, head_grad=None, retain_graph=False, create_graph=False):
    """Gradient of y (times head_grad) written into .grad of the leaves behind it.

    create_graph=True keeps the graph too: the recorded gradients refer to its saved arrays.
    """
    g = _check_head(y, head_grad, "backward", create_graph)
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
    hg = [_check_head(h, g, "grad", create_graph) for h, g in zip(heads, head_grads)]
    for v in variables:
        if not isinstance(v, tensors.Tensor) or v._node is None or v._node is recording.CONSTANT:
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


def _tensor_backward(self, head_grad=None, retain_graph=False, create_graph=False):
    """Accumulate d(self)/d(leaf) * head_grad into each leaf's .grad (see API.md)."""
    backward(self, head_grad, retain_graph, create_graph)


tensors.Tensor.backward = _tensor_backward  # the type (tensors.py) sits below the engine
