"""One node's backward: its rules run on what it saved, each gradient summed back over the
axes broadcasting added and checked against its input.

Every rule takes the op namespace first (ops/namespace.py): at first order its functions are
the ops' forwards on arrays, so the gradients are arrays; under create_graph they are the ops
on Tensors, recorded, and under gg.jvp they carry tangents (forward over reverse). One rule,
one path: which namespace it gets is the only difference.
"""

import numpy as np

from gpugrad import devices
from gpugrad import recording
from gpugrad import tensors
from gpugrad.engine import checks
from gpugrad.ops import namespace
from gpugrad.recording import GraphError, Unsaved


def input_grads(node, g, as_tensors, create_graph, pending=None):
    """The gradients of the node's inputs (None for those that take none): arrays from the
    rules run on arrays, or Tensors from the rules run as Tensor ops. With `pending` (first
    order), an op's vjp_into may add an input's gradient into the array pending for it and
    give None for it (ops/shortcuts.py)."""
    if as_tensors:
        return _tensor_grads(node, g, create_graph)
    if node.op.tensor_rules:  # rules that need Tensors (a gg.Function's backward): arrays out
        device = node.out_meta[2]  # g: {output index: gradient} for a Function with several
        g = ({k: tensors.wrap(a, device) for k, a in g.items()} if type(g) is dict
             else tensors.wrap(g, device))
        grads = _tensor_grads(node, g, False)
        return [None if gi is None else gi.data for gi in grads]
    ops = namespace.array_ops(node.out_meta[2])
    if ops.is_cpu:
        return _array_grads(node, g, ops, pending)
    with ops.backend.active:  # once for the node's ops, which then need no device switch of their own
        return _array_grads(node, g, ops, pending)


def _array_grads(node, g, ops, pending):
    """First order: the rules on arrays; none of the checks the forward already did."""
    args, y, aux = _rule_inputs(node, False, False)
    grads = _call_rules(node, ops, g, args, y, aux, pending)
    metas = node.metas
    for i, (p, gi) in enumerate(zip(node.parents, grads)):
        if p is None or gi is None:
            grads[i] = None
            continue
        shape, dtype, input_device = metas[i]
        if type(gi) is not np.ndarray:  # NumPy's own arrays, the CPU's, need no look-up
            if isinstance(gi, np.generic):  # NumPy's 0-d arithmetic gives scalars
                gi = np.asarray(gi)
            elif not devices.is_backend_array(gi):
                raise _not_a(node, i, gi, "an array")
        if gi.shape != shape:
            gi = _fitted(node, i, gi, shape, namespace.array_ops(input_device))
        grads[i] = gi if gi.dtype == dtype else as_array(gi.astype(dtype))
    return grads


def _tensor_grads(node, g, create_graph):
    """The rules as Tensor ops: recorded under create_graph, so the gradients have history,
    and carrying tangents under gg.jvp (forward over reverse)."""
    op = node.op
    args, y, aux = _rule_inputs(node, True, create_graph)
    grads = _call_rules(node, namespace.TENSOR_OPS, g, args, y, aux)
    for i, (p, gi) in enumerate(zip(node.parents, grads)):
        if p is None or gi is None:
            grads[i] = None
            continue
        shape, dtype, device = node.metas[i]
        if not isinstance(gi, tensors.Tensor):
            raise _not_a(node, i, gi, "a Tensor")
        if gi.shape != shape:
            gi = _fitted(node, i, gi, shape, namespace.TENSOR_OPS)
        if gi.device != device:
            raise GraphError(f"{op.name}: gradient for {op.input_name(i)} is on {gi.device!r} "
                             f"but the input is on {device!r}")
        grads[i] = gi if gi.dtype == dtype else gi.astype(dtype)
    return grads


def _call_rules(node, ops, g, args, y, aux, pending=None):
    """The gradient of each input from the op's rules, given the op namespace `ops` first
    (None for an input that takes none)."""
    op, params = node.op, node.params
    kw = dict(y=y, **aux, **params) if aux or params else {"y": y}  # a name twice raises
    if op.vjp_all is not None:
        return list(op.vjp_all(ops, g, *args, **kw))
    if op.variadic:  # one rule, applied to each input that takes a gradient
        rule, out = op.vjp[0], []
        for i, p in enumerate(node.parents):
            if p is None:
                out.append(None)
            elif pending is not None and pending[i] is not None:
                out.append(op.vjp_into(pending[i], g, args[i], **kw))
            else:
                out.append(rule(ops, g, args[i], **kw))
        return out
    out = []  # a loop, not a comprehension: Python 3.11 calls a function for one
    for p, rule in zip(node.parents, op.vjp):
        out.append(None if p is None else rule(ops, g, *args, **kw))
    return out


def _with_tangent(node, key, t):
    """A saved Tensor with the tangents it had when the node was recorded under gg.jvp."""
    if node.tangents is not None and key in node.tangents:
        t._tangent = node.tangents[key]
    return t


def _rule_inputs(node, as_tensors, create_graph):
    """What the node saved, for its rules: as arrays, or as Tensors (with their history when
    create_graph, and their tangents under gg.jvp); placeholders for what it did not save."""
    if node.epoch != recording._epoch:
        checks.check_unchanged(node)
    op, saved = node.op, node.saved
    args = []
    for i, meta in enumerate(node.metas):
        if meta is None:
            args.append(saved[i])
        elif i in saved:
            a = saved[i]
            if as_tensors:
                a = _with_tangent(node, i, tensors.wrap(
                    a, meta[2], node.parents[i] if create_graph else None))
            args.append(a)
        else:
            args.append(Unsaved(op.name, op.input_name(i), meta))
    if "y" in saved:
        y = saved["y"]
        if as_tensors:
            y = _with_tangent(node, "y", tensors.wrap(
                y, node.out_meta[2], node if create_graph else None))
    else:
        y = Unsaved(op.name, "its output y", node.out_meta)
    aux = {}
    for k in op.aux:  # arrays only backward needs (no history: they are not differentiable)
        a = saved.get(k)
        if a is not None:
            aux[k] = tensors.wrap(a, node.out_meta[2]) if as_tensors else a
        elif op.aux_from_output is not None and "y" in saved:
            aux[k] = None  # dropped for the output a consumer keeps: the rule reads y
        else:
            aux[k] = Unsaved(op.name, k, (None, None, node.out_meta[2]))
    return args, y, aux


def unbroadcast(ops, g, shape):
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


def _fitted(node, i, gi, shape, ops):
    """A rule's gradient for input i summed back over the axes broadcasting added (arrays or
    Tensors alike, by `ops`), or a GraphError naming both shapes."""
    gi = unbroadcast(ops, gi, shape)
    if gi.shape != shape:
        raise GraphError(f"{node.op.name}: gradient for {node.op.input_name(i)} has shape "
                         f"{gi.shape} but the input has shape {shape}")
    return gi


def _not_a(node, i, gi, what):
    return GraphError(f"{node.op.name}: the gradient rule for {node.op.input_name(i)} returned "
                      f"{type(gi).__name__}, not {what}")


def as_array(a):
    return np.asarray(a) if isinstance(a, np.generic) else a
