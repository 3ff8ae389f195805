"""Tensor's operators and array methods, installed on the class by the op table.

tensors.py defines the type and imports no op, so the type sits below the ops that take and
make it (as JAX installs its array's methods from its numpy layer). Each method here is one
op of the table; the table of names below is the whole list.
"""

import numbers

from gpugrad import devices
from gpugrad import recording
from gpugrad import tensors
from gpugrad.ops import cumulative
from gpugrad.ops import elementwise as ew
from gpugrad.ops import joining
from gpugrad.ops import linalg
from gpugrad.ops import rearrange
from gpugrad.ops import reduce
from gpugrad.ops import shape


def _shape_arg(args):
    """reshape(2, 3) and reshape((2, 3)) mean the same."""
    if len(args) == 1 and not isinstance(args[0], numbers.Integral):
        return tuple(args[0])
    return tuple(args)


def to(self, device):
    """This tensor on another device (differentiable; itself if already there)."""
    dev = devices.canonical_device(device)
    return self if dev == self.device else shape.to_device(self, device=dev)


def astype(self, dtype):
    """This tensor in another dtype (differentiable between floating dtypes)."""
    dtype = devices.as_dtype(dtype)
    tensors.check_numeric(dtype, self)
    devices.get(self.device).check_dtype(dtype)
    return shape.astype(self, dtype=dtype)


def reshape(self, *new_shape):
    return shape.reshape(self, _shape_arg(new_shape))


def transpose(self, *axes):
    return shape.transpose(self, axes=_shape_arg(axes) if axes else None)


def setitem(self, key, value):
    if self._node is not None and self._node.op is not None:
        raise recording.GraphError("in-place assignment to a tensor computed inside record() "
                               "would corrupt the gradients of the graph that saved it")
    if (self._node is not None and recording.is_recording()) or self._tangent:
        raise recording.GraphError(
            f"in-place assignment to a tensor of shape {self.shape} that is being "
            f"differentiated (a leaf with attach_grad() inside record(), or an argument of "
            f"gg.grad/vjp/jvp) would make its derivative wrong and write into the caller's "
            f"array; build a new tensor instead (gg.where, gg.concatenate, t * mask), or "
            f"assign outside record()")
    if isinstance(value, tensors.Tensor):
        value = value.data
    self.data[shape.index_key(key, self.device, self.shape)] = value
    recording.changed_in_place(self.data)


# fmt: off
METHODS = {
    "to": to, "astype": astype, "copy": lambda self: shape.copy(self),
    "reshape": reshape, "transpose": transpose,
    "sum": lambda self, axis=None, keepdims=False: reduce.sum(self, axis=axis, keepdims=keepdims),
    "mean": lambda self, axis=None, keepdims=False: reduce.mean(self, axis=axis, keepdims=keepdims),
    "max": lambda self, axis=None, keepdims=False: reduce.max(self, axis=axis, keepdims=keepdims),
    "min": lambda self, axis=None, keepdims=False: reduce.min(self, axis=axis, keepdims=keepdims),
    "prod": lambda self, axis=None, keepdims=False: reduce.prod(self, axis=axis, keepdims=keepdims),
    "var": lambda self, axis=None, ddof=0, keepdims=False: reduce.var(self, axis=axis, ddof=ddof, keepdims=keepdims),
    "std": lambda self, axis=None, ddof=0, keepdims=False: reduce.std(self, axis=axis, ddof=ddof, keepdims=keepdims),
    "cumsum": lambda self, axis=None: cumulative.cumsum(self, axis=axis),
    "cumprod": lambda self, axis=None: cumulative.cumprod(self, axis=axis),
    "ravel": joining.ravel, "flatten": joining.flatten, "squeeze": joining.squeeze,
    "unsqueeze": joining.unsqueeze,
    "repeat": rearrange.repeat,  # NumPy's ndarray.repeat; PyTorch's Tensor.repeat is gg.tile
    "diagonal": rearrange.diagonal, "trace": rearrange.trace,
    "__getitem__": lambda self, key: shape.getitem(self, key), "__setitem__": setitem,
    "__add__": lambda a, b: ew.add(a, b),            "__radd__": lambda a, b: ew.add(b, a),
    "__sub__": lambda a, b: ew.subtract(a, b),       "__rsub__": lambda a, b: ew.subtract(b, a),
    "__mul__": lambda a, b: ew.multiply(a, b),       "__rmul__": lambda a, b: ew.multiply(b, a),
    "__truediv__": lambda a, b: ew.divide(a, b),     "__rtruediv__": lambda a, b: ew.divide(b, a),
    "__pow__": lambda a, b: ew.power(a, b),          "__rpow__": lambda a, b: ew.power(b, a),
    "__mod__": lambda a, b: ew.remainder(a, b),      "__rmod__": lambda a, b: ew.remainder(b, a),
    "__matmul__": lambda a, b: linalg.matmul(a, b),  "__rmatmul__": lambda a, b: linalg.matmul(b, a),
    "__neg__": lambda a: ew.negative(a), "__pos__": lambda a: a, "__abs__": lambda a: ew.abs(a),
    "__eq__": lambda a, b: ew.equal(a, b),           "__ne__": lambda a, b: ew.not_equal(a, b),
    "__lt__": lambda a, b: ew.less(a, b),            "__le__": lambda a, b: ew.less_equal(a, b),
    "__gt__": lambda a, b: ew.greater(a, b),         "__ge__": lambda a, b: ew.greater_equal(a, b),
    "__and__": lambda a, b: ew.logical_and(a, b),    "__or__": lambda a, b: ew.logical_or(a, b),
    "__invert__": lambda a: ew.logical_not(a),
}
# fmt: on

for _name, _method in METHODS.items():
    setattr(tensors.Tensor, _name, _method)
tensors.Tensor.T = property(lambda self: shape.transpose(self), doc="The transpose.")
del _name, _method
