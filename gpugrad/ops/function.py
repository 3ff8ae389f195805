"""gg.Function: user-defined ops, adapted onto the same declaration as the built-in table.

forward(ctx, *arrays) works on backend arrays (ctx.xp is NumPy or CuPy); backward(ctx, grad)
and jvp(ctx, *tangents) work on Tensors, so a backward written with gg ops is differentiable
again under create_graph=True. Arrays passed to ctx.save_for_backward come back from
ctx.saved_tensors as Tensors: inputs and the output with their history, anything else as a
constant.
"""

from gpugrad import tensors
from gpugrad.ops import registry
from gpugrad.ops.registry import Op


class FunctionCtx:
    __slots__ = ("xp", "arrays", "saved_keys", "saved_tensors", "__dict__")

    def __init__(self):
        self.arrays = ()
        self.saved_keys = ()
        self.saved_tensors = ()

    def save_for_backward(self, *arrays):
        """Keep these arrays (inputs, the output, or anything else) for backward."""
        self.arrays = tuple(a.data if isinstance(a, tensors.Tensor) else a for a in arrays)


class Function:
    """Subclass with static forward(ctx, *arrays) and backward(ctx, grad); call .apply()."""

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
        y = y.data if isinstance(y, tensors.Tensor) else xp.asarray(y)
        keys = []
        for a in ctx.arrays:  # which saved arrays are inputs or the output, by identity
            hit = next((i for i, x in enumerate(xs) if x is a), None)
            keys.append(hit if hit is not None else ("y" if a is y else ("const", a)))
        ctx.saved_keys = tuple(keys)
        return y

    def save(params):
        names = [str(k) for k in params["ctx"].saved_keys if not isinstance(k, tuple)]
        return " ".join(names)

    def vjp_all(ops, g, *xs, y, ctx):  # ops unused: the user's backward calls gg ops
        ctx.saved_tensors = tuple(_saved(k, xs, y, g) for k in ctx.saved_keys)
        grads = cls.backward(ctx, g)
        grads = grads if isinstance(grads, (tuple, list)) else (grads,)
        if len(grads) != len(xs):
            raise TypeError(f"{name}.backward returned {len(grads)} gradient(s) for "
                            f"{len(xs)} input(s)")
        return [None if gi is None else _as_tensor(gi, g) for gi in grads]

    def jvp(ops, ts, *xs, y, ctx):
        if "jvp" not in cls.__dict__:
            raise TypeError(f"{name} defines no jvp(ctx, *tangents), so forward mode cannot "
                            f"pass through it")
        ctx.saved_tensors = tuple(_saved(k, xs, y, y) for k in ctx.saved_keys)
        ts = [t if t is not None else tensors.zeros_like(x) for t, x in zip(ts, xs)]
        return _as_tensor(cls.jvp(ctx, *ts), y)

    op = Op(name, forward, save, "function", vjp_all=vjp_all, jvp=jvp)
    op.function = lambda inputs, ctx: _apply(op, inputs, ctx)
    return op


def _apply(op, inputs, ctx):
    return registry.apply(op, tuple(inputs), {"ctx": ctx})


def _saved(key, xs, y, like):
    if isinstance(key, tuple):
        return tensors.wrap(key[1], like.device)
    return y if key == "y" else xs[key]


def _as_tensor(a, like):
    return a if isinstance(a, tensors.Tensor) else tensors.wrap(a, like.device)
