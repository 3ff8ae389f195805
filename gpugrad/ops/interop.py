"""NumPy's dispatch protocols on Tensor: np.<name>(tensor) is gg.<name>(tensor), recorded and
differentiable, or a TypeError that says what to call instead.

NumPy hands a call that involves a Tensor to Tensor.__array_ufunc__ (ufuncs: np.tanh, np.add,
and so an ndarray's operators with a tensor on the right, `ndarray + t`) or to
Tensor.__array_function__ (np.sum, np.concatenate, np.einsum, ...). Both look the function's
name up, at call time, among the functions gpugrad.ops exports (`gg.<name>`; RENAMED lists the
few names that differ), so an op added to the table is reached with no change here. Nothing
here converts a tensor to NumPy: a function gpugrad lacks, a ufunc method (np.add.reduce) or an
option gpugrad does not take (out=, dtype=float64, where=) is refused, never run on a host
copy. Tensor.__array__ stays the explicit conversion (np.asarray(t) on the CPU), and Tensor's
own operators (t + u, t * 2) do not come through here at all.
"""

import inspect

import numpy as np

from gpugrad import ops as _ops  # the package, filled by the time anything is dispatched
from gpugrad import tensors

# NumPy's names that gpugrad spells otherwise; every other name is looked up as it is
RENAMED = {"absolute": "abs", "amax": "max", "amin": "min", "around": "round",
           "radians": "deg2rad", "degrees": "rad2deg"}
# the modules whose functions map to gg's by name (numpy.emath.sqrt, say, is not gg.sqrt)
MODULES = ("numpy", "numpy.linalg")
# options NumPy's signature may carry that a gg function spells otherwise
RENAMED_OPTIONS = {"clip": {"min": "a_min", "max": "a_max"}}
# options that may be given with their default value, which changes nothing
HARMLESS = {"out": None, "dtype": None}
# functions that read only a tensor's attributes: NumPy's own implementation is safe
ATTRIBUTES = ("shape", "ndim", "size")
# ufunc methods and the gg function that does the same, when gpugrad has it
METHODS = {("add", "reduce"): "sum", ("multiply", "reduce"): "prod",
           ("maximum", "reduce"): "max", ("minimum", "reduce"): "min",
           ("add", "accumulate"): "cumsum", ("multiply", "accumulate"): "cumprod"}
OPTION_HINTS = {
    "out": "gpugrad never writes into an existing array (nor does `array += tensor`); assign "
           "the tensor that gg.{name}(...) returns",
    "dtype": "cast with .astype(dtype) before or after gg.{name}(...)",
    "where": "mask the input with gg.where(mask, x, fill) and call gg.{name}(...)",
}

_NO_VALUE = np._NoValue
_gg_signatures = {}  # gg function -> (how many inputs it takes, None: any; its options)
_np_signatures = {}  # NumPy function -> its inspect.Signature (None: not inspectable)
_plans = {}  # (NumPy function, number of positional arguments, keywords) -> its _plan
_POSITIONAL, _KEYWORD = inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.KEYWORD_ONLY


def gg_function(name):
    """(gg's name for NumPy's `name`, the function gpugrad.ops exports by it, or None)."""
    name = RENAMED.get(name, name)
    return name, (getattr(_ops, name, None) if name in _ops.__all__ else None)


def unsupported(what, name=None):
    """The refusal of a NumPy function gpugrad has no counterpart of (name: the gg name that
    was looked for, None where NumPy's module is not mapped by name)."""
    lacks = f"gpugrad has no {name} function" if name else "gpugrad has no equivalent"
    return TypeError(
        f"{what} is not supported on gpugrad tensors: {lacks}. Use t.numpy() for a host copy "
        f"(no gradient; a copy from the device off the CPU) and call NumPy on that, or a gg "
        f"function")


def _shown(value):
    """A short spelling of an option's value: never a tensor's values (a read of the device)."""
    if isinstance(value, type):
        return value.__name__
    if value is None or isinstance(value, (bool, int, float, str, np.dtype)):
        return repr(value)
    return f"<{type(value).__name__}>"


def refuse_option(what, option, value, gg_name, fn):
    options = _gg_signature(fn)[1]
    hint = OPTION_HINTS.get(option, "gg.{name} has no such option").format(name=gg_name)
    takes = f"gg.{gg_name} takes " + (", ".join(options) if options else "no options")
    return TypeError(f"{what}(..., {option}={_shown(value)}) is not supported on gpugrad "
                     f"tensors: {hint} ({takes})")


def refuse_method(ufunc, method):
    name = ufunc.__name__
    what = f"numpy.{name}.{method}"
    if method == "at":
        how = ("it writes into its first argument in place, which a tensor does not allow; "
               "build a new tensor instead (gg.where, gg.concatenate, t + update)")
    elif method == "outer":
        found = gg_function(name)[1] is not None
        how = (f"call gg.{RENAMED.get(name, name)}(a[..., None], b) (broadcasting)" if found
               else f"gpugrad has no {name} function")
    else:
        suggestion = METHODS.get((name, method))
        how = (f"call gg.{suggestion}(t, axis=...)"
               if suggestion is not None and gg_function(suggestion)[1] is not None
               else "gpugrad has no equivalent")
    return TypeError(f"{what} is not supported on gpugrad tensors (only calling a ufunc "
                     f"dispatches to gpugrad): {how}")


def _gg_signature(fn):
    """(inputs: how many positional inputs fn takes, None for any number; options: the names
    it takes by keyword). An op of the table says so itself; other functions by signature."""
    found = _gg_signatures.get(fn)
    if found is not None:
        return found
    op = getattr(fn, "op", None)
    if op is not None:
        found = (1 if op.variadic else len(op.inputs), tuple(op.defaults))
    else:
        inputs, options = 0, []
        for p in inspect.signature(fn).parameters.values():
            if p.kind is p.VAR_POSITIONAL:
                inputs = None
            elif p.kind is p.VAR_KEYWORD:
                continue
            elif p.default is p.empty and p.kind is not p.KEYWORD_ONLY:
                inputs = None if inputs is None else inputs + 1
            else:
                options.append(p.name)
        found = (inputs, tuple(options))
    _gg_signatures[fn] = found
    return found


class _At:
    """A placeholder for argument `where` (an index into args, or a keyword) in a plan."""
    __slots__ = ("where",)

    def __init__(self, where):
        self.where = where


def _plan(func, n_args, keywords):
    """How NumPy's `func` binds n_args positional arguments and these keywords: a list of
    (parameter name, kind, where its value is: an index or slice of args, or a keyword)."""
    sig = _np_signatures.get(func, _NO_VALUE)
    if sig is _NO_VALUE:
        try:
            sig = inspect.signature(func)
        except (TypeError, ValueError):
            sig = None
        _np_signatures[func] = sig
    if sig is None:  # by position, as given
        return ([(None, _POSITIONAL, i) for i in range(n_args)]
                + [(k, _KEYWORD, k) for k in keywords])
    try:
        bound = sig.bind(*map(_At, range(n_args)), **{k: _At(k) for k in keywords})
    except TypeError as e:
        raise TypeError(f"{func.__module__}.{func.__name__}: {e}") from None
    plan = []
    for name, value in bound.arguments.items():
        kind = sig.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            plan.extend((k, _KEYWORD, at.where) for k, at in value.items())
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            plan.append((name, kind, slice(value[0].where, n_args) if value else slice(0, 0)))
        else:
            plan.append((name, kind, value.where))
    return plan


def _np_arguments(func, args, kwargs):
    """The arguments of a call of NumPy's `func` as (name, value, kind), in the order of its
    signature (bound once per way of calling it: inspect's binding costs microseconds)."""
    key = (func, len(args), tuple(kwargs))
    plan = _plans.get(key)
    if plan is None:
        plan = _plans[key] = _plan(func, len(args), key[2])
    return [(name, kwargs[where] if type(where) is str else args[where], kind)
            for name, kind, where in plan]


def _translate(what, gg_name, fn, arguments):
    """NumPy's arguments -> (the inputs, the options) of the call of gg's `fn`."""
    n_inputs, options = _gg_signature(fn)
    renamed = RENAMED_OPTIONS.get(gg_name, {})
    inputs, given = [], {}
    for name, value, kind in arguments:
        name = renamed.get(name, name)
        if value is _NO_VALUE:
            continue
        if name in options:
            given[name] = value
        elif name in HARMLESS and value is HARMLESS[name]:
            continue
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            inputs.extend(value)
        elif kind is not _KEYWORD and (
                n_inputs is None or len(inputs) < n_inputs):
            inputs.append(value)
        else:
            raise refuse_option(what, name, value, gg_name, fn)
    if n_inputs is not None and len(inputs) < n_inputs:
        raise TypeError(f"{what} with {len(inputs)} input(s) is not supported on gpugrad "
                        f"tensors: gg.{gg_name} takes {n_inputs}")
    return inputs, given


def array_ufunc(self, ufunc, method, *inputs, **kwargs):
    """np.<ufunc>(..., tensor, ...): gg.<name> of the same inputs."""
    if method != "__call__":
        raise refuse_method(ufunc, method)
    what = f"numpy.{ufunc.__name__}"
    gg_name, fn = gg_function(ufunc.__name__)
    if fn is None:
        raise unsupported(what, gg_name)
    for option, value in kwargs.items():  # NumPy passes only those the caller gave
        if not (option in HARMLESS and value is HARMLESS[option]):
            raise refuse_option(what, option, value, gg_name, fn)
    return fn(*inputs)


def array_function(self, func, types, args, kwargs):
    """np.<function>(..., tensor, ...): gg.<name> of the same arguments, NumPy's options
    passed by name; those gg's function lacks are refused."""
    module, name = func.__module__, func.__name__
    what = f"{module}.{name}"
    if module == "numpy" and name in ATTRIBUTES:
        return func._implementation(*args, **kwargs)  # reads .shape, .ndim or .size only
    if module not in MODULES:
        raise unsupported(what)
    gg_name, fn = gg_function(name)
    if fn is None:
        raise unsupported(what, gg_name)
    inputs, options = _translate(what, gg_name, fn, _np_arguments(func, args, kwargs))
    return fn(*inputs, **options)


tensors.Tensor.__array_ufunc__ = array_ufunc
tensors.Tensor.__array_function__ = array_function
