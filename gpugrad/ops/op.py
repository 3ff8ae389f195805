"""The table of differentiable ops and the declaration each entry holds (Op).

registry.py declares ops into these tables; applying.py runs them; the engine reads their
rules. See registry.py for how an op is declared and how its rules are called.
"""

import inspect

from gpugrad import recording
from gpugrad import tensors

OPS = {}
CONSTANTS = {}  # ops without a gradient (comparisons, sign): their results never require grad


class Op:
    """One op's declaration. Its fields, by concern:

    signature   name, forward(xp, *inputs, **params), inputs (names), variadic (*inputs),
                defaults ({param: default or required}), optional (input indices that may be
                None), function (the public gg.<name>, bound by registry._register)
    kind        kind ("elementwise", "linear", "general", "function", "constant"),
                differentiable (not a constant), moves_device (its output is on another device)
    saving      save ({input index or None: keys}, or a callable of the params when
                dynamic_save), aux (names of arrays only backward needs), forward_saving
                (forward that also returns those arrays)
    rules       vjp (one rule per input, or one for every input of a variadic op), vjp_all
                (one rule for all inputs), jvp; each takes the op namespace as its first
                argument (ops/namespace.py); tensor_rules: the rules need Tensors even at
                first order (user code)
    shortcuts   named optimizations (ops/shortcuts.py): vjp_into (add one input's gradient
                into the array pending for it), aux_from_output (the aux arrays can be made
                again from the output, so a consumer that saves the output makes them redundant)
    """

    __slots__ = (
        "name", "forward", "inputs", "variadic", "defaults", "optional", "function",
        "kind", "differentiable", "moves_device",
        "save", "dynamic_save", "aux", "forward_saving",
        "vjp", "vjp_all", "jvp", "tensor_rules",
        "vjp_into", "aux_from_output",
    )

    def __init__(self, name, forward, save, kind, vjp=None, vjp_all=None, jvp=None,
                 moves_device=False, forward_saving=None, aux=(), optional=(), params=None):
        code = forward.__code__
        names = code.co_varnames[: code.co_argcount]
        if not names or names[0] != "xp":
            raise TypeError(f"{name}: forward must take xp as its first argument")
        self.name = name
        self.forward = forward
        self.function = None
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
            self.defaults = {p: (forward.__kwdefaults__ or {}).get(p, REQUIRED) for p in kwonly}
        self.optional = frozenset(self.inputs.index(n) for n in optional)  # may be None
        self.kind = kind
        self.differentiable = kind != "constant"
        self.moves_device = moves_device
        self.aux, self.forward_saving = tuple(aux), forward_saving
        self.dynamic_save = callable(save)
        self.save = save if self.dynamic_save else self.parse_save(save)
        _check_rules_take_ops(name, (*(vjp or ()), vjp_all, jvp))
        self.vjp, self.vjp_all, self.jvp = vjp, vjp_all, jvp
        self.tensor_rules = kind == "function"
        self.vjp_into = None
        self.aux_from_output = None
        # a variadic op's vjp is one rule, rule(g, x, y, **params), for each of its inputs
        if vjp is not None and len(vjp) != (1 if self.variadic else len(self.inputs)):
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
            if v is REQUIRED:
                raise TypeError(f"{self.name}() missing required argument {k!r}")
            out[k] = v
        return out

    def forward_error(self, inputs, e):
        """The error of a failed forward, naming the op and its inputs' shapes."""
        shapes = [x.shape if isinstance(x, tensors.Tensor) else type(x).__name__ for x in inputs]
        if self.kind == "elementwise" and "broadcast" in str(e):
            listed = " and ".join(str(s) for s in shapes)
            return recording.ShapeError(f"{self.name}: shapes {listed} cannot be broadcast together")
        message = f"{self.name}: {e} (input shapes {', '.join(map(str, shapes))})"
        try:
            return type(e)(message)
        except TypeError:  # an exception type whose constructor wants more than a message
            return ValueError(message)

    def __repr__(self):
        return f"<op {self.name}>"


def takes_ops(rule):
    """Whether a rule takes the op namespace first: rule(ops, g, *inputs, y, **params)."""
    code = getattr(rule, "__code__", None)
    return code is not None and code.co_argcount > 0 and code.co_varnames[0] == "ops"


def _check_rules_take_ops(name, rules):
    for rule in rules:
        if rule is not None and rule is not no_gradient and not takes_ops(rule):
            raise TypeError(f"{name}: every rule takes the op namespace `ops` first, as "
                            f"rule(ops, g, *inputs, y, **params); "
                            f"{getattr(rule, '__name__', rule)!r} does not")


def no_gradient(*args, **kwargs):
    """The rule of an input that takes no gradient (an integer mask, say)."""
    return None


class _Required:
    def __repr__(self):
        return "<required>"


REQUIRED = _Required()
