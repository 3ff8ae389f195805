"""The reverse-mode engine: backward, grad and gradients walk the nodes that recording
(recording.py) leaves, in reverse topological order, running each node's rules
(engine/rules.py) and summing the gradients (engine/accumulation.py). gpugrad/autograd.py is
its public face."""

from gpugrad import devices
from gpugrad import recording
from gpugrad import tensors
from gpugrad.engine import accumulation
from gpugrad.engine import checks
from gpugrad.engine import rules
from gpugrad.ops import shortcuts
from gpugrad.recording import GraphError, ShapeError, pause, record


def _toposort(roots):
    """Nodes reachable from roots, each before its inputs (iterative DFS, post-order reversed)."""
    order, seen = [], set()
    stack = [(r, False) for r in roots]
    push, pop = stack.append, stack.pop
    while stack:
        node, expanded = pop()
        if expanded:
            order.append(node)
            continue
        if node in seen:
            continue
        seen.add(node)
        push((node, True))
        if node.op is not None:
            if node.freed:
                raise _freed_error(node)
            for p in node.parents:
                if p is not None and p not in seen:
                    push((p, False))
    order.reverse()
    return order


def _freed_error(node):
    if isinstance(node.freed, str):  # freed by a backward that then failed
        return GraphError(
            f"backward through a graph that an earlier backward freed in part and then "
            f"failed ({node.freed}); the ops it had finished, {node.op.name!r} among "
            f"them, lost what they saved: run the forward again inside record()")
    return GraphError(
        f"backward through a graph that has already been freed (at op "
        f"{node.op.name!r}): the first backward frees it unless you pass "
        f"retain_graph=True")


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
    external = {id(g.data) for g in head_grads}  # the caller's arrays: never added into
    if not as_tensors:  # first order: the engine moves arrays, not Tensors
        head_grads = [g.data for g in head_grads]
    walk = _Walk(as_tensors, create_graph, retain_graph, targets, _leading_to(order, targets))
    for node, g in zip(roots, head_grads):
        walk.grads[node] = rules.as_array(walk.grads[node] + g) if node in walk.grads else g
    # inf and NaN in gradients are anomaly mode's to report
    # the rules compute in the dtypes the forward saved, not as autocast would cast them
    with record() if create_graph else pause(), devices.quiet(), recording.autocasting(None):
        walk.run(order)
    if targets is None:
        accumulation.write_leaves(walk.leaves, as_tensors, external)
        return {}
    if as_tensors:
        return walk.found
    # a head passed through is the caller's array (or the kept 1)
    return {n: tensors.wrap(g.copy() if id(g) in external else g, devices.device_of_array(g))
            for n, g in walk.found.items()}


def _leading_to(order, targets):
    """The nodes whose rules must run for gradients at `targets` (one of their inputs leads to
    a target): the graph beyond the targets is neither walked nor freed. None: all of them."""
    if targets is None:
        return None
    useful = set(targets)
    expand = set()
    for node in reversed(order):
        if node.op is not None and any(p in useful for p in node.parents):
            useful.add(node)
            expand.add(node)
    return expand


class _Walk:
    """One backward pass over the nodes in order: the gradients pending per node, which of
    them only this pass holds (`owned`, safe to add into in place), what reached the leaves
    or the targets, and the nodes it freed (told why they are gone if it then fails)."""

    def __init__(self, as_tensors, create_graph, retain_graph, targets, expand):
        self.as_tensors, self.create_graph = as_tensors, create_graph
        self.retain_graph = retain_graph
        self.targets, self.expand = targets, expand
        self.anomaly = recording._state.anomaly
        self.grads, self.owned = {}, {}
        self.leaves, self.found, self.freed = [], {}, []

    def run(self, order):
        """For each node with a gradient pending: run its rules, add what they give to its
        inputs' pending gradients, and free it (unless retain_graph)."""
        grads, owned, targets, expand = self.grads, self.owned, self.targets, self.expand
        as_tensors, create_graph, anomaly = self.as_tensors, self.create_graph, self.anomaly
        retain_graph, leaves, freed = self.retain_graph, self.leaves, self.freed
        input_grads, accumulate = rules.input_grads, accumulation.accumulate
        node = None
        try:
            for node in order:
                g = grads.pop(node, None)
                if g is None:
                    continue
                if not as_tensors:
                    owned.pop(id(g), None)
                op = node.op
                if targets is not None:
                    if node in targets:
                        self.found[node] = g
                    if node not in expand:
                        continue
                elif op is None:
                    leaves.append((node, g))
                    continue
                if op.kind == "output":  # one output of an op with several (gg.Function)
                    _into_slot(grads, node, g)
                    found = ()
                else:
                    pending = None
                    if op.vjp_into is not None and not as_tensors and not anomaly:
                        pending = [accumulation.pending_into(grads, owned, p)
                                   for p in node.parents]
                    found = input_grads(node, g, as_tensors, create_graph, pending)
                if anomaly and found:  # g: a dict of slots at a node with several outputs
                    checks.check_finite(node, next(iter(g.values())) if type(g) is dict else g,
                                        found)
                parents = node.parents
                for p, gi in zip(parents, found):
                    if gi is not None:
                        accumulate(grads, owned, p, gi, g, node, found, as_tensors)
                if not retain_graph:
                    for p in parents:  # the common case (no parent shares) costs this loop
                        if p is not None and p.op is not None and p.op.aux_from_output is not None:
                            shortcuts.remake_from_output(node, grads, expand)
                            break
                    node.free()
                    freed.append(node)
        except BaseException as e:
            self.note_failure(node, e)
            raise

    def note_failure(self, node, e):
        if self.freed:
            at = f" at {node.op.name!r}" if node is not None and node.op is not None else ""
            reason = f"{type(e).__name__}{at}: {str(e)[:200]}"
            for n in self.freed:
                n.freed = reason


def _into_slot(grads, node, g):
    """The gradient of one output of an op with several (a gg.Function) waits in that op's
    node, in the output's slot ({index: gradient}), so that the op's rule runs once with the
    gradient of every output a gradient reached. A slot may hear from two nodes: the output,
    and the same output recorded again by the op's rule under create_graph."""
    slots = grads.setdefault(node.parents[0], {})
    k = node.params["index"]
    slots[k] = g if k not in slots else rules.as_array(slots[k] + g)


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
