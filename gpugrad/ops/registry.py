"""The registry of differentiable ops and the three ways to declare one.

A declaration names the op, gives its forward as `lambda xp, <inputs>, *, <params>: ...`
(written once for NumPy and CuPy), says what it saves for backward, and gives its rules:

- defelementwise: one partial derivative per input, linear in `g`; the same expression is
  the vjp (g = incoming gradient) and the jvp (g = the input's tangent).
- deflinear: the vjp; the jvp is the forward applied to the tangent.
- defop: vjp and jvp.

Rules are called as `rule(g, *inputs, y=y, **params)` with Tensors, so one rule serves first
order and create_graph=True. `save=` is a string of names ("x y") needed for every input, or a
dict {input: names} saying what the gradient of that input needs, or a callable of the params
returning either. Inputs that are not saved reach the rules as placeholders that raise.
"""

import inspect

from gpugrad import autograd
from gpugrad import tensors

OPS = {}
CONSTANTS = {}  # ops without a gradient (comparisons, sign): their results never require grad


class Op:
    __slots__ = (
        "name", "forward", "inputs", "variadic", "defaults", "save", "dynamic_save",
        "vjp", "vjp_all", "jvp", "kind", "moves_device", "function", "differentiable",
        "aux", "forward_saving", "optional", "scalar_g",
    )

    def __init__(self, name, forward, save, kind, vjp=None, vjp_all=None, jvp=None,
                 moves_device=False, forward_saving=None, aux=(), optional=(), params=None):
        code = forward.__code__
        names = code.co_varnames[: code.co_argcount]
        if not names or names[0] != "xp":
            raise TypeError(f"{name}: forward must take xp as its first argument")
        self.name = name
        self.forward = forward
        self.variadic = bool(code.co_flags & inspect.CO_VARARGS)
        self.inputs = names[1:]
        if "y" in self.inputs:
            raise TypeError(f"{name}: an input may not be called y, which names the output")
        if self.variadic and self.inputs:
            raise TypeError(f"{name}: a variadic op takes only *inputs")
        if params is not None:  # a forward taking **params (made from a declaration) names them
            self.defaults = dict(params)
        else:
            kwonly = code.co_varnames[code.co_argcount: code.co_argcount + code.co_kwonlyargcount]
            self.defaults = {p: (forward.__kwdefaults__ or {}).get(p, _REQUIRED) for p in kwonly}
        self.kind = kind
        self.vjp, self.vjp_all, self.jvp = vjp, vjp_all, jvp
        self.moves_device = moves_device
        self.differentiable = kind != "constant"
        # forward_saving(xp, ...) -> (y, {name: array}) also computes arrays that only backward
        # needs (a packed mask); it runs instead of forward when the result is recorded
        self.forward_saving, self.aux = forward_saving, tuple(aux)
        self.optional = frozenset(self.inputs.index(n) for n in optional)  # may be None
        # the partials are broadcasting arithmetic, so a uniform gradient may arrive as 0-d
        self.scalar_g = False
        self.dynamic_save = callable(save)
        self.save = save if self.dynamic_save else self.parse_save(save)
        if vjp is not None and len(vjp) != len(self.inputs):
            raise TypeError(f"{name}: {len(self.inputs)} inputs but {len(vjp)} vjp rules")

    def parse_save(self, save):
        """save= spec -> {input index or None (variadic): tuple of keys}; keys are ints or 'y'."""
        def keys(names):
            out = []
            for n in names.split():
                if n == "y" or n in self.aux or (n == "self" and self.variadic):
                    out.append(n)  # "self": each input of a variadic op keeps itself
                elif n in self.inputs:
                    out.append(self.inputs.index(n))
                elif n.isdigit():
                    out.append(int(n))
                else:
                    raise TypeError(f"{self.name}: save names unknown input {n!r}")
            return tuple(out)

        if isinstance(save, str):
            k = keys(save)
            return {None: k} if self.variadic else {i: k for i in range(len(self.inputs))}
        unknown = set(save) - set(self.inputs)
        if unknown:
            raise TypeError(f"{self.name}: save names unknown inputs {sorted(unknown)}")
        return {i: keys(save.get(n, "")) for i, n in enumerate(self.inputs)}

    def save_for(self, params):
        return self.parse_save(self.save(params)) if self.dynamic_save else self.save

    def input_name(self, i):
        return self.inputs[i] if not self.variadic else f"input {i}"

    def bind(self, params):
        """Fill defaults, reject unknown and missing params."""
        for k in params:
            if k not in self.defaults:
                raise TypeError(f"{self.name}() got an unexpected keyword argument {k!r}")
        if len(params) == len(self.defaults):
            return params
        out = {}
        for k, d in self.defaults.items():
            v = params.get(k, d)
            if v is _REQUIRED:
                raise TypeError(f"{self.name}() missing required argument {k!r}")
            out[k] = v
        return out

    def __repr__(self):
        return f"<op {self.name}>"


class _Required:
    def __repr__(self):
        return "<required>"


_REQUIRED = _Required()


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
            return autograd.apply(op, tuple(inputs), op.bind(params))
    else:
        def function(*inputs, **params):
            if len(inputs) != n:
                if len(inputs) < n:
                    raise TypeError(f"{op.name}() takes {n} input(s) ({', '.join(op.inputs)}), "
                                    f"got {len(inputs)}")
                inputs, params = inputs[:n], positional_params(inputs[n:], params)
            return autograd.apply(op, inputs, op.bind(params))
    function.__name__ = function.__qualname__ = op.name
    function.__doc__ = doc
    function.op = op
    op.function = function
    return function


def no_gradient(*args, **kwargs):
    """The rule of an input that takes no gradient (an integer mask, say)."""
    return None


def jvp_of_two(ts, along_first, along_second):
    """The jvp of a two-input op as the sum of its two directional terms (None: no tangent)."""
    t1, t2 = ts
    out = None if t1 is None else along_first(t1)
    if t2 is not None:
        out = along_second(t2) if out is None else out + along_second(t2)
    return out


def _elementwise_jvp(partials):
    def jvp(ts, *xs, y, **params):
        out = None
        for partial, t in zip(partials, ts):
            if t is not None:
                term = partial(t, *xs, y=y, **params)
                out = term if out is None else out + term
        return out
    return jvp


def defelementwise(name, forward, save, partials, forward_saving=None, aux=(), scalar_g=False,
                   doc=None, params=None):
    """scalar_g=True promises that every partial is broadcasting arithmetic on g, so the engine
    may pass a uniform gradient as 0-d (not for partials that call a backward op or kernel)."""
    op = Op(name, forward, save, "elementwise", vjp=tuple(partials),
            jvp=_elementwise_jvp(partials), forward_saving=forward_saving, aux=aux, params=params)
    op.scalar_g = scalar_g
    return _register(op, doc)


def _linear_jvp(ts, *xs, y, _op=None, **params):
    args = [t if t is not None else tensors.zeros_like(x) for t, x in zip(ts, xs)]
    return _op.function(args, **params) if _op.variadic else _op.function(*args, **params)


def deflinear(name, forward, vjp=None, vjp_all=None, moves_device=False, doc=None):
    op = Op(name, forward, "", "linear", vjp=vjp, vjp_all=vjp_all, moves_device=moves_device)
    op.jvp = lambda ts, *xs, y, **params: _linear_jvp(ts, *xs, y=y, _op=op, **params)
    return _register(op, doc)


def defop(name, forward, save, jvp, vjp=None, vjp_all=None, optional=(), doc=None,
          params=None):
    return _register(Op(name, forward, save, "general", vjp=vjp, vjp_all=vjp_all, jvp=jvp,
                        optional=optional, params=params), doc)


def defconstant(name, forward, doc=None):
    return _register(Op(name, forward, "", "constant"), doc)
