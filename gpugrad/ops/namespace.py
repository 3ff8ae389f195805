"""The op namespace a rule takes as its first argument, `ops`: ops.<name>(...) is the op of
the table (or of the constants: sign, comparisons) by that name, called as gg.<name> is (inputs, then params by keyword or in order).

array_ops(device): the engine's at first order. Each function is the op's forward on the
device's arrays alone: no Tensor, no node, none of the checks the forward already did.
TENSOR_OPS: each function is the op itself on Tensors, recorded under create_graph=True and
carrying tangents under gg.jvp. So one rule, written once, serves every order.

Besides the ops, both have where(cond, a, b) (cond a constant, NumPy's argument order),
constant(x) (x with no gradient flowing back through it) and full_like(x, value) (a constant
of x's shape, dtype and device).
"""

import numpy as np

from gpugrad import devices
from gpugrad import recording
from gpugrad import tensors
from gpugrad.ops.op import CONSTANTS, OPS


def where(cond, a, b):
    """Elementwise `a` where cond is true, else `b`; cond gets no gradient."""
    if isinstance(cond, tensors.Tensor):
        cond = cond.data
    elif isinstance(cond, np.generic):  # a comparison of 0-d arrays in a rule run on arrays
        cond = np.asarray(cond)
    elif not devices.is_backend_array(cond):
        cond = tensors.tensor(cond, dtype=bool, device=_device_of(a, b)).data
    return OPS["where"].function(a, b, cond=cond)


def _device_of(*xs):
    for x in xs:
        if isinstance(x, tensors.Tensor):
            return x.device
    return None


class _Namespace:
    """Looks an op up once per name and keeps its function as an attribute."""

    def __getattr__(self, name):
        op = OPS.get(name) or CONSTANTS.get(name)
        if op is None or name.startswith("_"):
            raise AttributeError(f"the op namespace has no op {name!r}")
        function = self._function(op)
        setattr(self, name, function)
        return function


class TensorOps(_Namespace):
    """The ops on Tensors, as gg.<name>."""

    where = staticmethod(where)

    @staticmethod
    def constant(x):
        return x.detach() if isinstance(x, tensors.Tensor) else x

    @staticmethod
    def full_like(x, value):
        return tensors.full(x.shape, value, dtype=x.dtype, device=x.device)

    @staticmethod
    def _function(op):
        return op.function


class ArrayOps(_Namespace):
    """The ops' forwards on one device's arrays."""

    def __init__(self, be):
        self.backend = be
        self.is_cpu = be.is_cpu
        self._xp = be.xp
        self._where = self._function(OPS["where"])

    @staticmethod
    def constant(x):
        return x  # arrays carry no gradient

    def full_like(self, x, value):
        return self._xp.full_like(x, value)

    def where(self, cond, a, b):
        if isinstance(cond, np.generic):  # NumPy's 0-d comparisons give scalars
            cond = np.asarray(cond)
        return self._where(a, b, cond=cond)

    def _function(self, op):
        xp, is_cpu, forward, bind = self._xp, self.is_cpu, op.forward, op.bind
        n, names, variadic = len(op.inputs), list(op.defaults), op.variadic

        def run(*args, **params):
            inputs, extra = ((tuple(args[0]), args[1:]) if variadic else (args[:n], args[n:]))
            if extra:
                params.update(zip(names, extra))
            if params or names:  # bind() of no params for an op without any gives them back
                params = bind(params)
            for x in inputs:
                if type(x) is recording.Unsaved:
                    x.fail()
            try:
                y = forward(xp, *inputs, **params)
            except recording.ShapeError:
                raise
            except (ValueError, IndexError, TypeError) as e:
                raise op.forward_error(inputs, e) from e
            if is_cpu and type(y) is not np.ndarray and not devices.is_backend_array(y):
                y = np.asarray(y)  # NumPy reductions return scalars
            return y
        run.__name__ = run.__qualname__ = op.name
        return run


TENSOR_OPS = TensorOps()
_ARRAY_OPS = {}  # device -> its ArrayOps


def array_ops(device):
    """The namespace of the ops' forwards on the arrays of `device`."""
    found = _ARRAY_OPS.get(device)
    if found is None:
        found = _ARRAY_OPS[device] = ArrayOps(devices.get(device))
    return found
