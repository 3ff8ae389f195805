"""gg.checkpoint: keep a function's arguments, not its intermediates, and recompute them in
backward. Built on autograd's public entry points: structure-only recording, to find what the
function reaches, and backward.gradients, to differentiate the recomputation."""

from gpugrad import devices
from gpugrad import recording
from gpugrad.engine import backward
from gpugrad import tensors
from gpugrad.ops import registry


def _checkpoint_forward(xp, *xs, fn, n_args, result, outside, arg_nodes, autocast):
    return result.pop()  # computed once, in structure-only mode, before the node was made


def _checkpoint_vjp(ops, g, *xs, y, fn, n_args, result, outside, arg_nodes, autocast):
    """Recompute fn on fresh leaves, under the autocast of its first run, and return the
    gradients of every parent of the node (on Tensors at every order, as fn is user code:
    `ops` goes unused)."""
    create = recording.is_recording()  # the engine records here exactly when create_graph
    fresh = []
    with recording.record(train_mode=recording.is_training()), recording.autocasting(autocast):
        for x in xs[:n_args]:
            if create and x._node is not None:
                fresh.append(x)  # with its history, so second derivatives reach the real input
                continue
            t = tensors.wrap(x.data, x.device)
            if devices.is_float(x.dtype):
                t._node = recording.Leaf(t, "write")
            fresh.append(t)
        out = fn(*fresh)
    # an argument's gradient arrives at its fresh leaf, and at its own node too if fn also
    # reaches that tensor another way (through a closure); add the two once each
    targets = {t._node for t in fresh} | set(outside) | set(arg_nodes)
    targets.discard(None)
    found = backward.gradients([out], [g], targets, create_graph=create)
    grads = []
    for t, own in zip(fresh, arg_nodes):
        parts = [found.get(t._node)] + ([found.get(own)] if own is not t._node else [])
        parts = [p for p in parts if p is not None]
        grads.append(None if not parts else parts[0] if len(parts) == 1 else parts[0] + parts[1])
    return grads + [found.get(n) for n in outside]


_CHECKPOINT = None


def _checkpoint_op():
    global _CHECKPOINT
    if _CHECKPOINT is None:
        from gpugrad.ops.registry import Op

        _CHECKPOINT = Op("checkpoint", _checkpoint_forward,
                         lambda p: " ".join(str(i) for i in range(p["n_args"])), "general",
                         vjp_all=_checkpoint_vjp, jvp=None)
        _CHECKPOINT.tensor_rules = True  # its rule records fn again: Tensors at every order
    return _CHECKPOINT


def checkpoint(fn, *args):
    """fn(*args) without keeping fn's intermediates: backward recomputes them.

    Only the arguments are saved; parameters and other tensors fn uses from outside are
    found by recording fn's structure once (saving nothing) and receive their gradients as
    usual, identical to a run without checkpoint. fn must be deterministic (no dropout).
    Outside record() this is fn(*args).
    """
    if not recording.is_recording() or recording.is_structure_only():
        return fn(*args)
    args = [a if isinstance(a, tensors.Tensor) else tensors.tensor(a) for a in args]
    with recording.structure_only() as found:
        out = fn(*args)
    if not isinstance(out, tensors.Tensor):
        raise TypeError(f"checkpoint: fn must return one Tensor, got {type(out).__name__}")
    if out._node is None:
        return out
    arg_nodes = [a._node for a in args]
    outside = [n for n in found.outside if n not in arg_nodes]
    inputs = list(args) + [found.outside[n] for n in outside]
    params = {"fn": fn, "n_args": len(args), "result": [out.data], "outside": outside,
              "arg_nodes": arg_nodes, "autocast": recording.autocast_dtype()}
    return registry.apply(_checkpoint_op(), tuple(inputs), params)
