"""gg.Function: user-defined ops, adapted onto the same declaration as the built-in table.

forward(ctx, *arrays) works on backend arrays (ctx.xp is NumPy or CuPy); backward(ctx, grad)
and jvp(ctx, *tangents) work on Tensors, so a backward written with gg ops is differentiable
again under create_graph=True. Arrays passed to ctx.save_for_backward come back from
ctx.saved_tensors as Tensors: inputs and the output with their history, anything else as a
constant.

A forward may return a tuple of arrays (a list stays one array, as NumPy reads it): apply() then returns a tuple of Tensors,
backward(ctx, *grads) takes one gradient per output (None for one that no gradient reached,
and always for an output that is not floating point) and jvp(ctx, *tangents) returns one
tangent per output. The Function's node then makes one hidden, empty output; each floating
output is recorded as an "output" node of its own on top of it, whose gradient the engine
keeps in the Function node's slot for that output (engine/backward.py), so the Function's
rule runs once, with every output's gradient or None.
"""

from gpugrad import devices
from gpugrad import recording
from gpugrad import tensors
from gpugrad.ops import applying
from gpugrad.ops import registry
from gpugrad.ops.registry import Op


class FunctionCtx:
    __slots__ = ("xp", "arrays", "saved_keys", "saved_tensors", "_outputs", "_several",
                 "_out_tangents", "_inputs", "__dict__")

    def __init__(self):
        self.arrays = ()
        self.saved_keys = ()
        self.saved_tensors = ()
        self._outputs = None  # the arrays forward returned, while apply() makes their Tensors
        self._several = 0  # how many outputs forward returned as a tuple; 0 for one array
        self._out_tangents = {}  # output index -> its tangents ({level: Tensor}) under gg.jvp
        self._inputs = None  # the inputs as apply() took them, while their tangents are made

    def save_for_backward(self, *arrays):
        """Keep these arrays (inputs, outputs, or anything else) for backward."""
        self.arrays = tuple(a.data if isinstance(a, tensors.Tensor) else a for a in arrays)


class Function:
    """Subclass with static forward(ctx, *arrays) and backward(ctx, grad); call .apply().

    A forward returning a tuple of arrays takes backward(ctx, *grads), one per output."""

    _op = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._op = _function_op(cls)

    @staticmethod
    def forward(ctx, *arrays):
        raise TypeError("a gg.Function subclass must define forward(ctx, *arrays)")

    @staticmethod
    def backward(ctx, grad):
        raise TypeError("a gg.Function subclass must define backward(ctx, grad)")

    @classmethod
    def apply(cls, *inputs):
        return cls._op.function(inputs, ctx=FunctionCtx())


def _function_op(cls):
    name = cls.__name__

    def forward(xp, *xs, ctx):
        ctx.xp = xp
        y = cls.forward(ctx, *xs)
        if isinstance(y, tuple):
            return _several_outputs(xp, xs, y, ctx)
        y = y.data if isinstance(y, tensors.Tensor) else xp.asarray(y)
        keys = []
        for a in ctx.arrays:  # which saved arrays are inputs or the output, by identity
            hit = next((i for i, x in enumerate(xs) if x is a), None)
            keys.append(hit if hit is not None else ("y" if a is y else ("const", a)))
        ctx.saved_keys = tuple(keys)
        return y

    def save(params):
        ctx = params["ctx"]
        names = [str(k) for k in ctx.saved_keys if not isinstance(k, tuple)]
        return " ".join(names + (["y"] if ctx._several else []))  # y: the hidden output

    output_ops = {}  # output index -> the op recording that output (made on first use)

    def vjp_all(ops, g, *xs, y, ctx):  # ops unused: the user's backward calls gg ops
        if ctx._several:  # g: {output index: gradient} for the outputs a gradient reached
            ctx.saved_tensors = tuple(_saved_of_several(k, xs, y, ctx, output_ops)
                                      for k in ctx.saved_keys)
            grads, like = cls.backward(ctx, *(g.get(k) for k in range(ctx._several))), y
        else:
            ctx.saved_tensors = tuple(_saved(k, xs, y, g) for k in ctx.saved_keys)
            grads, like = cls.backward(ctx, g), g
        grads = grads if isinstance(grads, (tuple, list)) else (grads,)
        if len(grads) != len(xs):
            raise TypeError(f"{name}.backward returned {len(grads)} gradient(s) for "
                            f"{len(xs)} input(s)")
        return [None if gi is None else _as_tensor(gi, like) for gi in grads]

    def jvp(ops, ts, *xs, y, ctx):
        if "jvp" not in cls.__dict__:
            raise TypeError(f"{name} defines no jvp(ctx, *tangents), so forward mode cannot "
                            f"pass through it")
        if ctx._several:  # the outputs' tangents are made once their Tensors exist
            ctx._inputs = xs
            return None
        ctx.saved_tensors = tuple(_saved(k, xs, y, y) for k in ctx.saved_keys)
        ts = [t if t is not None else tensors.zeros_like(x) for t, x in zip(ts, xs)]
        return _as_tensor(cls.jvp(ctx, *ts), y)

    op = Op(name, forward, save, "function", vjp_all=vjp_all, jvp=jvp)
    op.function = lambda inputs, ctx: _apply(cls, op, output_ops, inputs, ctx)
    return op


def _apply(cls, op, output_ops, inputs, ctx):
    out = registry.apply(op, tuple(inputs), {"ctx": ctx})
    if not ctx._several:
        return out
    try:
        return _output_tensors(cls, output_ops, ctx, out)
    finally:
        ctx._outputs = ctx._inputs = None  # the outputs live on in their Tensors only


def _several_outputs(xp, xs, ys, ctx):
    """Forward returned a tuple: keep its arrays for apply() and return the hidden output, an
    empty array of the first floating output's dtype (an integer one if none is: then nothing
    is recorded)."""
    if not ys:
        raise TypeError("forward returned an empty tuple: return an array, or a tuple of at "
                        "least one")
    ys = tuple(y.data if isinstance(y, tensors.Tensor) else xp.asarray(y) for y in ys)
    keys = []
    for a in ctx.arrays:  # which saved arrays are inputs or outputs, by identity
        hit = next((i for i, x in enumerate(xs) if x is a), None)
        out = next((k for k, y in enumerate(ys) if y is a), None)
        keys.append(hit if hit is not None else ("out", out, a) if out is not None
                    else ("const", a))
    ctx.saved_keys = tuple(keys)
    ctx._outputs, ctx._several = ys, len(ys)
    floating = [y.dtype for y in ys if devices.is_float(y.dtype)]
    return xp.empty((0,), floating[0] if floating else ys[0].dtype)


def _output_tensors(cls, output_ops, ctx, hidden):
    """The Tensors of the outputs: each floating one recorded on top of the hidden output when
    that is in the graph, with its tangents under gg.jvp."""
    outs = []
    for k, a in enumerate(ctx._outputs):
        if hidden._node is None or not devices.is_float(a.dtype):
            outs.append(tensors.wrap(a, hidden.device))
            continue
        outs.append(_record_output(cls.__name__, output_ops, hidden, k, a))
    if ctx._inputs is not None:  # forward mode: the Function's jvp kept its inputs
        _set_output_tangents(cls, ctx, ctx._inputs, outs)
    return tuple(outs)


def _record_output(name, output_ops, hidden, k, a):
    """Output k (the array a) as a Tensor recorded on top of the hidden output. Its op's
    forward hands over the array it is given, once; the engine passes the gradient of its
    node on to the Function's node, in slot `index`, without a rule."""
    op = output_ops.get(k)
    if op is None:
        op = output_ops[k] = Op(f"{name}[{k}]", _hand_over, "", "output")
    return registry.apply(op, (hidden,), {"index": k, "value": [a]})


def _hand_over(xp, h, *, index, value):
    return value.pop()


def _set_output_tangents(cls, ctx, xs, outs):
    """The outputs' tangents at each active level from one call of the user's jvp, run with
    only the levels outside it active (as applying._set_tangents does for one output), so that
    nested gg.jvp see each other's tangents."""
    state = recording._state
    tangents = applying._input_tangents(state.forward_levels, xs) or {}
    for level in sorted(tangents):
        outer = state.forward_levels
        state.forward_levels = tuple(lv for lv in outer if lv < level)
        try:
            ctx.saved_tensors = tuple(_saved_at_forward(k, xs, outs) for k in ctx.saved_keys)
            ts = [t if t is not None else tensors.zeros_like(x)
                  for t, x in zip(tangents[level], xs)]
            got = cls.jvp(ctx, *ts)
            got = tuple(got) if isinstance(got, (tuple, list)) else (got,)
            if len(got) != len(outs):
                raise TypeError(f"{cls.__name__}.jvp returned {len(got)} tangent(s) for "
                                f"{len(outs)} output(s)")
            for out, t in zip(outs, got):
                if t is not None and devices.is_float(out.dtype):
                    out._tangent = out._tangent or {}
                    out._tangent[level] = _fitted_tangent(_as_tensor(t, out), out)
        finally:
            state.forward_levels = outer
    ctx._out_tangents = {k[1]: outs[k[1]]._tangent for k in ctx.saved_keys
                         if isinstance(k, tuple) and k[0] == "out" and outs[k[1]]._tangent}


def _fitted_tangent(t, out):
    if t.shape != out.shape:
        t = registry.OPS["broadcast_to"].function(t, out.shape)
    return t if t.dtype == out.dtype else t.astype(out.dtype)


def _saved(key, xs, y, like):
    if isinstance(key, tuple):
        return tensors.wrap(key[1], like.device)
    return y if key == "y" else xs[key]


def _saved_at_forward(key, xs, outs):
    """A saved array for the user's jvp: an output is its Tensor, with its tangents so far."""
    if isinstance(key, tuple):
        return outs[key[1]] if key[0] == "out" else tensors.wrap(key[1], outs[0].device)
    return xs[key]


def _saved_of_several(key, xs, y, ctx, output_ops):
    """A saved array for the user's backward, with y the hidden output: an output under
    create_graph is recorded again on top of it, so that its gradient reaches the Function."""
    if not isinstance(key, tuple):
        return xs[key]
    if key[0] == "const":
        return tensors.wrap(key[1], y.device)
    _, k, a = key
    if y._node is not None:  # create_graph: the rule runs recorded
        out = _record_output(y._node.op.name, output_ops, y, k, a)
    else:
        out = tensors.wrap(a, y.device)
    out._tangent = ctx._out_tangents.get(k)  # under gg.jvp: forward over reverse
    return out


def _as_tensor(a, like):
    return a if isinstance(a, tensors.Tensor) else tensors.wrap(a, like.device)
