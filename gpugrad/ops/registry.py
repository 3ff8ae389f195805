"""The registry of differentiable ops and the three ways to declare one; apply() runs one
(recording a graph node when autograd records).

A declaration names the op, gives its forward as `lambda xp, <inputs>, *, <params>: ...`
(written once for NumPy and CuPy), says what it saves for backward, and gives its rules:

- defelementwise: one partial derivative per input, linear in `g`; the same expression is
  the vjp (g = incoming gradient) and the jvp (g = the input's tangent).
- deflinear: the vjp; the jvp is the forward applied to the tangent.
- defop: vjp and jvp.

Rules are called as `rule(ops, g, *inputs, y=y, **params)`, where `ops` is the op namespace
(ops/namespace.py): the ops' forwards on arrays at first order, the recorded Tensor ops under
create_graph=True or gg.jvp, so one rule serves both. A rule therefore uses only what arrays
and Tensors share: operators, .shape/.ndim/.dtype/.T/.astype, and `ops`; an Op whose rules do
not take `ops` first is refused. `save=` is a string of names ("x y") needed for every input,
or a dict {input: names} saying what the gradient of that input needs, or a callable of the
params returning either. Inputs that are not saved reach the rules as placeholders that raise.
"""

from gpugrad import tensors
from gpugrad.ops.applying import apply
from gpugrad.ops.op import CONSTANTS, OPS, Op, no_gradient

__all__ = ["OPS", "CONSTANTS", "Op", "apply", "no_gradient", "jvp_of_two",
           "defelementwise", "deflinear", "defop", "defconstant"]


def _register(op, doc):
    table = OPS if op.differentiable else CONSTANTS
    if op.name in OPS or op.name in CONSTANTS:
        raise KeyError(f"op {op.name!r} is declared twice")
    table[op.name] = op
    n = len(op.inputs)
    names = list(op.defaults)

    def positional_params(extra, params):
        # NumPy style: sum(x, 0) means sum(x, axis=0); params follow the inputs in order
        if len(extra) > len(names):
            raise TypeError(f"{op.name}() takes {n or 'a list of'} input(s) and at most "
                            f"{len(names)} parameter(s) ({', '.join(names)}), got "
                            f"{len(extra)} extra argument(s)")
        for k, v in zip(names, extra):
            if k in params:
                raise TypeError(f"{op.name}() got multiple values for argument {k!r}")
            params[k] = v
        return params

    if op.variadic:
        def function(inputs, *extra, **params):
            if extra:
                params = positional_params(extra, params)
            return apply(op, tuple(inputs), op.bind(params))
    else:
        def function(*inputs, **params):
            if len(inputs) != n:
                if len(inputs) < n:
                    raise TypeError(f"{op.name}() takes {n} input(s) ({', '.join(op.inputs)}), "
                                    f"got {len(inputs)}")
                inputs, params = inputs[:n], positional_params(inputs[n:], params)
            # bind() gives back no params for an op that takes none
            return apply(op, inputs, op.bind(params) if params or names else params)
    function.__name__ = function.__qualname__ = op.name
    function.__doc__ = doc
    function.op = op
    op.function = function
    return function


def jvp_of_two(ts, along_first, along_second):
    """The jvp of a two-input op as the sum of its two directional terms (None: no tangent)."""
    t1, t2 = ts
    out = None if t1 is None else along_first(t1)
    if t2 is not None:
        out = along_second(t2) if out is None else out + along_second(t2)
    return out


def _elementwise_jvp(partials):
    """The sum of the partials applied to the tangents (None where an input has none)."""
    def jvp(ops, ts, *xs, y, **params):
        out = None
        for partial, t in zip(partials, ts):
            if t is not None:
                term = partial(ops, t, *xs, y=y, **params)
                out = term if out is None else out + term
        return out
    return jvp


def defelementwise(name, forward, save, partials, forward_saving=None, aux=(), doc=None,
                   params=None, aux_from_output=None):
    op = Op(name, forward, save, "elementwise", vjp=tuple(partials),
            jvp=_elementwise_jvp(partials), forward_saving=forward_saving, aux=aux, params=params)
    op.aux_from_output = aux_from_output
    return _register(op, doc)


def _linear_jvp(op, ts, xs, params):
    """The forward applied to the tangents (zeros for an input without one)."""
    args = [t if t is not None else tensors.zeros_like(x) for t, x in zip(ts, xs)]
    return op.function(args, **params) if op.variadic else op.function(*args, **params)


def deflinear(name, forward, vjp=None, vjp_all=None, moves_device=False, doc=None):
    op = Op(name, forward, "", "linear", vjp=vjp, vjp_all=vjp_all, moves_device=moves_device)
    op.jvp = lambda ops, ts, *xs, y, **params: _linear_jvp(op, ts, xs, params)
    return _register(op, doc)


def defop(name, forward, save, jvp, vjp=None, vjp_all=None, optional=(), doc=None,
          params=None, vjp_into=None, forward_saving=None, aux=()):
    op = Op(name, forward, save, "general", vjp=vjp, vjp_all=vjp_all, jvp=jvp,
            optional=optional, params=params, forward_saving=forward_saving, aux=aux)
    if vjp_into is not None and not (op.variadic and vjp is not None):
        raise TypeError(f"{name}: vjp_into needs a variadic op with one vjp rule per input")
    op.vjp_into = vjp_into
    return _register(op, doc)


def defconstant(name, forward, doc=None):
    return _register(Op(name, forward, "", "constant"), doc)
