"""Two named optimizations that ops declare and the engine applies; the differential fuzzer
(tests/engine/fuzz.py) runs graphs through both and compares them with the plain rules
(tests/engine/test_fuzz.py checks that its graphs take each).

Output-shared aux (Op.aux_from_output): an op that keeps arrays only its backward needs (relu's
1-bit mask) and can make them again from its output drops them once a consumer saves that
output anyway: one buffer saved, not two. share_saved_outputs does it when the consumer is
recorded; remake_from_output makes them again before the consumer frees the output, where the
op's own backward does not run in the same pass.

Accumulate-into (Op.vjp_into): for a variadic op with one rule per input, the engine may hand
the rule the array pending as that input's gradient, which it alone holds, to add into in
place (the L2 term's g * w added into the weight's gradient from its layer, one fused kernel
on a GPU). The engine's side is engine/backward.py's pending_into.
"""

from gpugrad import devices


def share_saved_outputs(node, xs):
    """Where this node saved an input that is a parent's output, and that parent kept arrays
    it can make again from its output (relu's mask), the parent reads the output this node
    keeps anyway instead."""
    for i, p in enumerate(node.parents):
        if (p is None or p.op is None or p.op.aux_from_output is None or i not in node.saved
                or xs[i]._node is not p or p.freed or "y" in p.saved):
            continue
        can, _ = p.op.aux_from_output
        if can(p.params) and all(k in p.saved for k in p.op.aux):
            p.saved["y"] = node.saved[i]  # xs[i] is p's output tensor: this is its y
            for k in p.op.aux:
                del p.saved[k]


def remake_from_output(node, pending, expand):
    """Before a node frees the output of a parent that dropped its own arrays for it, a
    parent whose backward does not run in this pass (a gradient that stops short of it, or
    none pending) makes them again from it, so that it keeps 1 bit per element, not the
    output; one whose backward comes in this pass reads the output there."""
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
