"""The registry of differentiable ops, the three ways to declare one, and apply(), which runs
one (recording a graph node when autograd records).

A declaration names the op, gives its forward as `lambda xp, <inputs>, *, <params>: ...`
(written once for NumPy and CuPy), says what it saves for backward, and gives its rules:

- defelementwise: one partial derivative per input, linear in `g`; the same expression is
  the vjp (g = incoming gradient) and the jvp (g = the input's tangent).
- deflinear: the vjp; the jvp is the forward applied to the tangent.
- defop: vjp and jvp.

Rules are called as `rule(g, *inputs, y=y, **params)`: with arrays at first order, where the
ops they call on arrays run their forward alone (_raw_apply: no Tensor, no node, no checks),
and with Tensors under create_graph=True, recorded, so one rule serves both. A rule therefore
uses only what arrays and Tensors share: operators, .shape/.ndim/.dtype/.T/.astype, and the
table's functions. `save=` is a string of names ("x y") needed for every input, or a
dict {input: names} saying what the gradient of that input needs, or a callable of the params
returning either. Inputs that are not saved reach the rules as placeholders that raise.
"""

import inspect

import numpy as np

from gpugrad import devices
from gpugrad import recording
from gpugrad import tensors

OPS = {}
CONSTANTS = {}  # ops without a gradient (comparisons, sign): their results never require grad


class Op:
    __slots__ = (
        "name", "forward", "inputs", "variadic", "defaults", "save", "dynamic_save",
        "vjp", "vjp_all", "jvp", "kind", "moves_device", "function", "differentiable",
        "aux", "forward_saving", "optional", "aux_from_output", "tensor_rules",
        "vjp_into",
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
        # rules that need Tensors even at first order (user code: a gg.Function's backward, a
        # checkpoint's recomputation); every other rule also runs on arrays (registry doc)
        self.tensor_rules = kind == "function"
        # vjp_into(acc, g, x, y, **params), for a variadic op with one rule per input: where
        # acc is an array the engine alone holds as x's gradient so far, add the rule's
        # gradient into it in place (one fused kernel) and return None, or return the gradient
        # where it cannot. First order only; acc must get the bits acc + rule(g, x, ...) has.
        self.vjp_into = None
        # forward_saving(xp, ...) -> (y, {name: array}) also computes arrays that only backward
        # needs (a packed mask); it runs instead of forward when the result is recorded
        self.forward_saving, self.aux = forward_saving, tuple(aux)
        # aux_from_output: (can(params), remake(xp, y, **params) -> {name: array}): the aux
        # arrays can be made again from the output y, so they are dropped once a consumer
        # saves y anyway (relu's mask, when the next layer keeps relu's output)
        self.aux_from_output = None
        self.optional = frozenset(self.inputs.index(n) for n in optional)  # may be None
        self.dynamic_save = callable(save)
        self.save = save if self.dynamic_save else self.parse_save(save)
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
            return apply(op, tuple(inputs), op.bind(params))
    else:
        def function(*inputs, **params):
            if len(inputs) != n:
                if len(inputs) < n:
                    raise TypeError(f"{op.name}() takes {n} input(s) ({', '.join(op.inputs)}), "
                                    f"got {len(inputs)}")
                inputs, params = inputs[:n], positional_params(inputs[n:], params)
            return apply(op, inputs, op.bind(params))
    function.__name__ = function.__qualname__ = op.name
    function.__doc__ = doc
    function.op = op
    op.function = function
    return function


def constant(x):
    """x as a constant inside a rule: a Tensor detached (no gradient flows back through it),
    an array as it is."""
    return x.detach() if isinstance(x, tensors.Tensor) else x


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


def defelementwise(name, forward, save, partials, forward_saving=None, aux=(), doc=None,
                   params=None, aux_from_output=None):
    op = Op(name, forward, save, "elementwise", vjp=tuple(partials),
            jvp=_elementwise_jvp(partials), forward_saving=forward_saving, aux=aux, params=params)
    op.aux_from_output = aux_from_output
    return _register(op, doc)


def _linear_jvp(ts, *xs, y, _op=None, **params):
    args = [t if t is not None else tensors.zeros_like(x) for t, x in zip(ts, xs)]
    return _op.function(args, **params) if _op.variadic else _op.function(*args, **params)


def deflinear(name, forward, vjp=None, vjp_all=None, moves_device=False, doc=None):
    op = Op(name, forward, "", "linear", vjp=vjp, vjp_all=vjp_all, moves_device=moves_device)
    op.jvp = lambda ts, *xs, y, **params: _linear_jvp(ts, *xs, y=y, _op=op, **params)
    return _register(op, doc)


def defop(name, forward, save, jvp, vjp=None, vjp_all=None, optional=(), doc=None,
          params=None, vjp_into=None):
    op = Op(name, forward, save, "general", vjp=vjp, vjp_all=vjp_all, jvp=jvp,
            optional=optional, params=params)
    if vjp_into is not None and not (op.variadic and vjp is not None):
        raise TypeError(f"{name}: vjp_into needs a variadic op with one vjp rule per input")
    op.vjp_into = vjp_into
    return _register(op, doc)


def defconstant(name, forward, doc=None):
    return _register(Op(name, forward, "", "constant"), doc)


# ---------------------------------------------------------------------------- applying an op


def _coerce(op, inputs):
    """Check devices; turn arrays and lists into tensors on the common device."""
    device = None
    for x in inputs:
        if isinstance(x, tensors.Tensor):
            if device is None:
                device = x.device
            elif x.device != device:
                raise devices.DeviceError(
                    f"{op.name}: tensors are on different devices, {device!r} and {x.device!r}; "
                    f"move one with .to(device)")
        elif isinstance(x, recording.Unsaved):
            x.fail()
    out = []
    for i, x in enumerate(inputs):
        if isinstance(x, tensors.Tensor):
            out.append(x)
        elif isinstance(x, (bool, int, float, np.generic)):
            out.append(x)
        elif x is None:
            if i not in op.optional:
                raise TypeError(f"{op.name}: input {op.input_name(i)} is None")
            out.append(None)  # an optional input that is absent (linear without a bias)
        else:
            out.append(tensors.tensor(x, device=device))
    if not out:
        raise ValueError(f"{op.name}: needs at least one tensor, got none")
    if not any(isinstance(x, tensors.Tensor) for x in out):
        out[0] = tensors.tensor(out[0])  # only Python scalars: the first gets the default dtype
    return out


def _forward_error(op, inputs, e):
    shapes = [x.shape if isinstance(x, tensors.Tensor) else type(x).__name__ for x in inputs]
    if op.kind == "elementwise" and "broadcast" in str(e):
        listed = " and ".join(str(s) for s in shapes)
        return recording.ShapeError(f"{op.name}: shapes {listed} cannot be broadcast together")
    message = f"{op.name}: {e} (input shapes {', '.join(map(str, shapes))})"
    try:
        return type(e)(message)
    except TypeError:  # an exception type whose constructor wants more than a message
        return ValueError(message)


_Tensor = None  # tensors.Tensor, bound on first use
_ERROR_STATE, _QUIET_STATE = devices.ERROR_STATE, devices.QUIET_STATE
_CONSTANT = recording.CONSTANT
_SCALARS = (bool, int, float)


def _fast_inputs(inputs):
    """(arrays, device) when every input is a Tensor on one device or a Python scalar, else
    None: the common case in one pass; _coerce handles the rest."""
    device = None
    arrays = []
    for x in inputs:
        cls = type(x)
        if cls is _Tensor:
            if device is None:
                device = x.device
            elif x.device != device:
                return None
            arrays.append(x.data)
        elif cls in _SCALARS:
            arrays.append(x)
        else:
            return None
    return (arrays, device) if device is not None else None


def apply(op, inputs, params):
    """Run an op's forward; record a recording.Node when recording and an input is in the graph."""
    global _Tensor
    if _Tensor is None:
        _Tensor = tensors.Tensor
    fast = _fast_inputs(inputs)
    if fast is not None:
        xs = inputs
        arrays, device = fast
    else:
        if recording._state.raw_rules:
            raw = _raw_apply(op, inputs, params)
            if raw is not None:
                return raw
        xs = _coerce(op, inputs)
        device = None
        arrays = []
        for x in xs:
            if isinstance(x, _Tensor):
                arrays.append(x.data)
                device = device or x.device
            else:
                arrays.append(x)
    be = devices.get(device)
    state = recording._state  # one lookup of the thread's recording state
    parents = None
    constant = False  # the output is in the graph with a zero derivative (recording.CONSTANT)
    if state.recording and op.differentiable:
        parents = tuple(x._node if isinstance(x, _Tensor) else None for x in xs)
        live = False
        for p in parents:
            if p is not None:
                if p is _CONSTANT:
                    constant = True
                else:
                    live = True
        if not live:
            parents = None
        elif constant:
            parents = tuple(None if p is _CONSTANT else p for p in parents)
    tangents = None
    if state.forward_levels and op.differentiable:
        tangents = _input_tangents(state.forward_levels, xs)
    structure = state.structure_only
    if structure is not None and parents is not None:
        structure.note_inputs(xs)
    aux = None
    token = _ERROR_STATE.set(_QUIET_STATE)
    try:
        if op.forward_saving is not None and structure is None and (
                parents is not None or tangents is not None):
            with be.active:
                y, aux = op.forward_saving(be.xp, *arrays, **params)
        elif be.is_cpu:  # no device to make current
            y = op.forward(np, *arrays, **params)
        else:
            with be.active:
                y = op.forward(be.xp, *arrays, **params)
    except recording.ShapeError:
        raise
    except (ValueError, IndexError, TypeError) as e:
        raise _forward_error(op, xs, e) from e
    finally:
        _ERROR_STATE.reset(token)
    if be.is_cpu and type(y) is not np.ndarray and not devices.is_backend_array(y):
        y = np.asarray(y)  # NumPy reductions return scalars (to_device returns a device array)
    y_device = devices.device_of_array(y) if op.moves_device else device
    floating = y.dtype.kind == "f"
    node = None
    if parents is not None and floating:
        input_devices = [x.device if isinstance(x, _Tensor) else None for x in xs]
        node = recording.Node(op, parents, input_devices, arrays, y, y_device, params, aux,
                          keep=structure is None)
        if structure is not None:
            structure.nodes.add(node)
        else:
            for p in parents:  # the common case (no parent can share) costs this loop only
                if p is not None and p.op is not None and p.op.aux_from_output is not None:
                    _share_saved_outputs(node, xs)
                    break
        if state.note_lines:
            recording._recorded_at[node] = recording._user_line()
    if node is None and constant and floating:
        node = _CONSTANT
    out = tensors.wrap(y, y_device, node)
    if tangents is not None and floating:
        _set_tangents(op, tangents, xs, out, aux, params)
        if node is not None:
            _note_saved_tangents(node, xs, out)
    return out


def _raw_apply(op, inputs, params):
    """A rule's op on arrays, run on arrays: the forward alone, no Tensor, no node, no check
    (the engine's first-order backward: engine.backward._raw_grads). None where an input is a Tensor
    or none is an array (the ordinary path takes those)."""
    be = None
    for x in inputs:
        cls = type(x)
        if cls is np.ndarray:
            be = be or _CPU
        elif x is None or cls in _SCALARS or isinstance(x, np.generic):
            continue
        elif isinstance(x, tensors.Tensor):
            return None
        elif isinstance(x, recording.Unsaved):
            x.fail()
        elif be is None:
            device = devices.device_of_array(x)
            if device is None:  # not an array (a list): the ordinary path
                return None
            be = devices.get(device)
    if be is None:  # NumPy scalars only, which 0-d arithmetic on the CPU gives
        if not any(isinstance(x, np.generic) for x in inputs):
            return None
        be = _CPU
    try:
        y = op.forward(be.xp, *inputs, **params)
    except recording.ShapeError:
        raise
    except (ValueError, IndexError, TypeError) as e:
        raise _forward_error(op, inputs, e) from e
    if be.is_cpu and type(y) is not np.ndarray and not devices.is_backend_array(y):
        y = np.asarray(y)  # as apply() does
    return y


_CPU = devices.get("cpu")


def _share_saved_outputs(node, xs):
    """Where this node saved an input that is a parent's output, and that parent kept arrays
    it can make again from its output (relu's mask), the parent reads the output this node
    keeps anyway instead: one buffer saved, not two."""
    for i, p in enumerate(node.parents):
        if (p is None or p.op is None or p.op.aux_from_output is None or i not in node.saved
                or xs[i]._node is not p or p.freed or "y" in p.saved):
            continue
        can, _ = p.op.aux_from_output
        if can(p.params) and all(k in p.saved for k in p.op.aux):
            p.saved["y"] = node.saved[i]  # xs[i] is p's output tensor: this is its y
            for k in p.op.aux:
                del p.saved[k]


def _input_tangents(levels, xs):
    """{level: the inputs' tangents at that level} for the active levels some input has a
    tangent at; None if none has."""
    out = None
    for level in levels:
        ts = tuple(x._tangent.get(level) if isinstance(x, _Tensor) and x._tangent else None
                   for x in xs)
        if any(t is not None for t in ts):
            out = out or {}
            out[level] = ts
    return out


def _set_tangents(op, tangents, xs, y, aux, params):
    """The output's tangent at each level from the op's jvp rule (forward mode). A level's
    tangent is computed with only the levels outside it active, outermost first, so that it
    carries their tangents (nested gg.jvp) and y already has its own by then."""
    state = recording._state
    extra = {k: tensors.wrap(a, y.device) for k, a in aux.items()} if aux else {}
    y._tangent = {}
    for level in sorted(tangents):
        outer = state.forward_levels
        state.forward_levels = tuple(lv for lv in outer if lv < level)
        try:
            t = op.jvp(tangents[level], *xs, y=y, **extra, **params)
            if t is None:  # only inputs the output does not vary with have tangents
                continue
            if t.shape != y.shape:
                t = OPS["broadcast_to"].function(t, y.shape)
            if t.dtype != y.dtype:
                t = t.astype(y.dtype)
        finally:
            state.forward_levels = outer
        y._tangent[level] = t
    y._tangent = y._tangent or None


def _note_saved_tangents(node, xs, y):
    """The tangents of what the node saved (recording.Node.tangents)."""
    found = {}
    for key in node.saved:
        t = y._tangent if key == "y" else (
            xs[key]._tangent if isinstance(key, int) and isinstance(xs[key], _Tensor) else None)
        if t:
            found[key] = t
    node.tangents = found or None
