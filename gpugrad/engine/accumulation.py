"""Summing gradients during backward and writing them into the leaves.

At first order the engine moves arrays, and a gradient that only this backward holds (a new
array a rule returned, or a sum it made) is added into in place, not summed into a new one;
it is copied before it could escape into a .grad or a result where anything else may hold it.
"""

import threading

from gpugrad import devices
from gpugrad import tensors
from gpugrad.engine.rules import as_array
from gpugrad.recording import changed_in_place


def pending_into(grads, owned, p):
    """The gradient pending for node p if it is an array only this backward holds, else None
    (where an op's vjp_into may add into it: ops/shortcuts.py)."""
    prev = grads.get(p)
    return prev if prev is not None and owned.get(id(prev)) is prev else None


def accumulate(grads, owned, p, gi, g, node, input_grads, as_tensors):
    """grads[p] += gi: in place into an array this backward owns, else a new sum (arrays at
    first order, Tensors where the rules run as Tensor ops)."""
    prev = grads.get(p)
    if prev is None:
        grads[p] = gi
        # owned if a new array nothing else refers to: not a view, not the incoming gradient
        # passed through, not given to two inputs, not from a user's Function
        if (not as_tensors and getattr(gi, "base", None) is None and gi is not g
                and node.op.kind != "function"
                and (len(input_grads) == 1 or sum(o is gi for o in input_grads) == 1)):
            owned[id(gi)] = gi
    elif as_tensors:
        grads[p] = prev + gi
    elif owned.get(id(prev)) is prev and prev.dtype == gi.dtype:
        prev += gi  # first order only: the sum needs no history
    else:
        total = as_array(prev + gi)
        grads[p] = total
        owned[id(total)] = total


# Backward may run in several threads at once (recording is per thread), and two of them may
# add into one leaf's .grad: NumPy's in-place add releases the GIL, so without this lock one
# thread's sum could overwrite the other's. Held only while the leaves are written.
_LEAF_WRITES = threading.Lock()


def write_leaves(leaves, as_tensors, external):
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
