"""Tensor: a backend array, its device, and the graph node that made it; the creation
functions.

The type knows no op: its operators and array methods (+, @, reshape, sum, to, ...) are the
op table's, installed by gpugrad/ops/methods.py, and backward() is the engine's (autograd.py).
So this module sits below both, and nothing here imports them.
"""

import numbers

import numpy as np

from gpugrad import devices
from gpugrad import recording

GRAD_REQS = ("write", "add", "null")


class Tensor:
    """An n-dimensional array on a device that can take part in differentiation."""

    __slots__ = ("data", "device", "_node", "grad", "_tangent", "__weakref__")
    # NumPy's protocols (__array_ufunc__, __array_function__) are installed by ops/interop.py
    __array_priority__ = 1000

    def __init__(self, data, dtype=None, device=None, requires_grad=False):
        t = tensor(data, dtype=dtype, device=device)
        self.data, self.device, self._node, self.grad, self._tangent = t.data, t.device, None, None, None
        if requires_grad:
            self.attach_grad()

    # ------------------------------------------------------------------ attributes
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    @property
    def grad_req(self):
        node = self._node
        return node.grad_req if node is not None and node.op is None else "null"

    @property
    def requires_grad(self):
        """True for leaves that receive a gradient and for results recorded from them."""
        return self._node is not None

    @requires_grad.setter
    def requires_grad(self, value):
        self.attach_grad("write" if value else "null")

    @property
    def is_leaf(self):
        return self._node is None or self._node.op is None

    # ------------------------------------------------------------------ autograd
    def attach_grad(self, grad_req="write"):
        """Make this tensor a leaf that receives a gradient; cuts any history it had."""
        if grad_req not in GRAD_REQS:
            raise ValueError(f"grad_req must be one of {GRAD_REQS}, got {grad_req!r}")
        if grad_req == "null":
            self._node, self.grad = None, None
            return self
        if not devices.is_float(self.dtype):
            raise TypeError(f"attach_grad: only floating-point tensors can receive gradients, "
                            f"this one has dtype {self.dtype}")
        self._node = recording.Leaf(self, grad_req)
        self.grad = wrap(devices.get(self.device).xp.zeros_like(self.data), self.device)
        return self

    def zero_grad(self):
        """Set .grad to zeros (in place)."""
        if self.grad is not None:
            self.grad.data[...] = 0
            recording.changed_in_place(self.grad.data)

    def detach(self):
        """A tensor sharing this one's data, with no history."""
        return wrap(self.data, self.device)

    # ------------------------------------------------------------------ copies and pickling
    def __deepcopy__(self, memo):
        """An independent leaf: its own data, grad_req and .grad, and a Leaf node of its own
        (sharing the original's node would send the copy's gradients to the original)."""
        self._check_copyable("copy.deepcopy")
        be = devices.get(self.device)
        with be.active:
            new = _leaf_like(type(self), self.data.copy(), self.device, self.grad_req,
                             None if self.grad is None else self.grad.data.copy())
        memo[id(self)] = new
        return new

    def __reduce_ex__(self, protocol):
        """Pickled as host values, the device's name, grad_req and .grad; never the graph."""
        self._check_copyable("pickle")
        grad = None if self.grad is None else self.grad.numpy()
        return (_unpickle, (type(self), self.numpy(), self.device, self.grad_req, grad))

    def _check_copyable(self, who):
        if not self.is_leaf:
            raise recording.GraphError(
                f"{who}: this tensor was computed inside record() and holds a graph, which "
                f"cannot be copied; copy tensor.detach() (leaves and parameters copy as in "
                f"PyTorch)")

    # ------------------------------------------------------------------ conversion
    def numpy(self):
        """A host copy as a numpy.ndarray."""
        devices.forbid_host_read("numpy()")
        return np.array(devices.get(self.device).to_host(self.data), copy=True)

    asnumpy = numpy

    def item(self):
        if self.size != 1:
            raise ValueError(f"item(): the tensor has {self.size} elements, not 1")
        devices.forbid_host_read("item()")
        return self.data.item()

    def tolist(self):
        return self.numpy().tolist()

    def cpu(self):
        return self.to("cpu")

    def cuda(self, index=0):
        return self.to(f"cuda:{index}")

    def __array__(self, dtype=None, copy=None):
        if not devices.get(self.device).host_arrays:
            raise TypeError(f"cannot convert a tensor on {self.device!r} to NumPy implicitly; "
                            f"use .numpy()")
        return self.data if dtype is None else self.data.astype(dtype)

    def __dlpack__(self, *args, **kwargs):
        return self.data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.data.__dlpack_device__()

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    __hash__ = object.__hash__

    def __bool__(self):
        if self.size != 1:
            raise ValueError(f"the truth value of a tensor with {self.size} elements is "
                             f"ambiguous; use .any() or .all()")
        devices.forbid_host_read("bool(tensor)")
        return bool(self.data)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self.dtype.kind not in "iu":
            raise TypeError(f"only integer tensors can be used as an index, not {self.dtype}")
        return int(self.item())

    def any(self):
        devices.forbid_host_read("any()")
        return bool(self.data.any())

    def all(self):
        devices.forbid_host_read("all()")
        return bool(self.data.all())

    def __repr__(self):
        if not devices.get(self.device).has_values:
            return f"tensor(<shape {self.shape}>, dtype={self.dtype}, device='{self.device}')"
        if not devices.host_reads_allowed():  # printing must not fail, nor read the device
            return (f"tensor(<values unreadable inside a graphed step>, shape={self.shape}, "
                    f"dtype={self.dtype}, device='{self.device}')")
        host = devices.get(self.device).to_host(self.data)
        body = np.array2string(host, separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self.dtype}, device='{self.device}')"


def wrap(data, device, node=None):
    """A Tensor around a backend array, without copying or checking (internal fast path)."""
    t = object.__new__(Tensor)
    t.data, t.device, t._node, t.grad, t._tangent = data, device, node, None, None
    return t


def _leaf_like(cls, data, device, grad_req, grad):
    """A new tensor of class cls (Tensor or Parameter) around data; a leaf if grad_req says."""
    t = object.__new__(cls)
    t.data, t.device, t._node, t.grad, t._tangent = data, device, None, None, None
    if grad_req != "null":
        t._node = recording.Leaf(t, grad_req)
        t.grad = wrap(grad, device) if grad is not None else None
    return t


def _unpickle(cls, host, device, grad_req, grad):
    be = devices.get(device)
    with be.active:
        return _leaf_like(cls, be.asarray(host), device, grad_req,
                          None if grad is None else be.asarray(grad))


# ---------------------------------------------------------------------------- creation


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new tensor from data (Tensor, NumPy/CuPy array, list, scalar); copies the data.

    Host data (scalars, lists, NumPy arrays) goes to `device` or else the default device; a
    Tensor or a CuPy array stays on its device unless `device` says otherwise. Python scalars
    and lists get the default dtype (float32) unless `dtype` says otherwise; arrays keep their
    own dtype.
    """
    dtype = devices.as_dtype(dtype)
    if isinstance(data, Tensor):
        src_device, arr = data.device, data.data
    elif isinstance(data, (np.ndarray, np.generic)):  # host data, kept in its dtype
        src_device, arr = None, np.asarray(data)
    elif devices.is_backend_array(data):
        src_device, arr = devices.device_of_array(data), data
    else:
        src_device = None
        try:
            arr = np.asarray(_host_list(data))
        except ValueError as e:
            raise ValueError(f"cannot make a tensor from {type(data).__name__}: its nested "
                             f"lists have unequal lengths ({e})") from None
        if arr.dtype == object:
            raise TypeError(f"cannot make a tensor from {type(data).__name__}: {data!r:.80}")
        if dtype is None and arr.dtype.kind in "iuf":
            dtype = devices.get_default_dtype()
    check_numeric(arr.dtype if dtype is None else dtype, data)
    dev = devices.canonical_device(device) if device is not None else (
        src_device or devices.default_device())
    be = devices.get(dev)
    be.check_dtype(arr.dtype if dtype is None else dtype)
    if src_device is not None and src_device != dev:
        arr = devices.get(src_device).to_host(arr)
    with be.active:
        out = be.xp.array(arr, dtype=dtype, copy=True)
    t = wrap(out, dev)
    if requires_grad:
        t.attach_grad()
    return t


array = tensor


def check_numeric(dtype, data):
    """Tensors hold booleans, integers or real floats: every rule and kernel assumes real
    arithmetic (the sigmoid of a complex number would come out as a wrong real number)."""
    if dtype.kind not in "biuf" and dtype != devices.BFLOAT16:
        what = {"c": "complex numbers", "O": "Python objects", "U": "strings", "S": "bytes",
                "M": "dates", "m": "time spans", "V": "structured records"}.get(dtype.kind, "")
        raise TypeError(f"cannot make a tensor of dtype {dtype}{f' ({what})' if what else ''}: "
                        f"gpugrad tensors hold booleans, integers and real floating-point "
                        f"numbers (got {type(data).__name__})")


def _host_list(data):
    """Lists may hold Tensors; bring them to the host first. One that is being differentiated
    is refused: a copy of its values would silently drop its derivative."""
    if isinstance(data, (list, tuple)) and any(isinstance(d, (Tensor, list, tuple)) for d in data):
        return [_host_list(d) for d in data]
    if isinstance(data, Tensor):
        if (data._node is not None and recording.is_recording()) or data._tangent:
            raise recording.GraphError(
                "gg.tensor/gg.array copies the values of the tensors in a list and drops their "
                "derivatives; this list holds a tensor being differentiated: use gg.stack(list) "
                "(or gg.concatenate), which is differentiable")
        return data.numpy()
    return data


def _creation(device, dtype):
    be = devices.get(devices.canonical_device(device) if device is not None else None)
    dt = devices.as_dtype(dtype) or devices.get_default_dtype()
    be.check_dtype(dt)
    return be, dt


def _made(t, requires_grad):
    return t.attach_grad() if requires_grad else t


def _shape_of(shape, who="shape"):
    """A shape as a tuple of non-negative ints, refused by name otherwise."""
    sizes = (shape,) if isinstance(shape, numbers.Integral) or not hasattr(shape, "__iter__") \
        else tuple(shape)
    for n in sizes:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise TypeError(f"{who}: a shape is integers, got {shape!r} (the size {n!r} is a "
                            f"{type(n).__name__})")
        if n < 0:
            raise ValueError(f"{who}: shape {shape!r} has a negative size")
    return tuple(int(n) for n in sizes)


def zeros(shape, dtype=None, device=None, requires_grad=False):
    be, dt = _creation(device, dtype)
    with be.active:
        return _made(wrap(be.xp.zeros(_shape_of(shape, "zeros"), dt), be.device), requires_grad)


def ones(shape, dtype=None, device=None, requires_grad=False):
    be, dt = _creation(device, dtype)
    with be.active:
        return _made(wrap(be.xp.ones(_shape_of(shape, "ones"), dt), be.device), requires_grad)


def full(shape, fill_value, dtype=None, device=None, requires_grad=False):
    be, dt = _creation(device, dtype)
    if not isinstance(fill_value, numbers.Real):
        raise TypeError(f"full: fill_value {fill_value!r} is not a real number")
    with be.active:
        return _made(wrap(be.xp.full(_shape_of(shape, "full"), fill_value, dt), be.device),
                     requires_grad)


def empty(shape, dtype=None, device=None, requires_grad=False):
    be, dt = _creation(device, dtype)
    with be.active:
        return _made(wrap(be.xp.empty(_shape_of(shape, "empty"), dt), be.device), requires_grad)


def zeros_like(t, dtype=None, requires_grad=False):
    return zeros(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    return ones(t.shape, dtype=dtype or t.dtype, device=t.device, requires_grad=requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    be, dt = _creation(device, dtype)
    n, m = _shape_of((n, n if m is None else m), "eye")
    with be.active:
        return _made(wrap(be.xp.eye(n, m, dtype=dt), be.device), requires_grad)


def arange(start, stop=None, step=1, dtype=None, device=None, requires_grad=False):
    be, dt = _creation(device, dtype)
    if stop is None:
        start, stop = 0, start
    for name, v in (("start", start), ("stop", stop), ("step", step)):
        if not isinstance(v, numbers.Real):
            raise TypeError(f"arange: {name} {v!r} is not a real number")
    if step == 0:
        raise ValueError("arange: step must not be 0")
    with be.active:
        return _made(wrap(be.xp.arange(start, stop, step, dtype=dt), be.device), requires_grad)


def _random_shape(shape, who):
    """rand(2, 3) and rand((2, 3)) mean the same."""
    one_sequence = len(shape) == 1 and hasattr(shape[0], "__iter__")
    return _shape_of(shape[0] if one_sequence else shape, who)


def rand(*shape, dtype=None, device=None, requires_grad=False):
    """Uniform [0, 1) samples; reproducible after gg.seed(n)."""
    be, dt = _creation(device, dtype)
    return _made(wrap(be.rand(_random_shape(shape, "rand"), dt), be.device), requires_grad)


def randn(*shape, dtype=None, device=None, requires_grad=False):
    """Standard normal samples; reproducible after gg.seed(n)."""
    be, dt = _creation(device, dtype)
    return _made(wrap(be.randn(_random_shape(shape, "randn"), dt), be.device), requires_grad)


def from_dlpack(obj):
    """A tensor sharing memory with any DLPack exporter (PyTorch, JAX, NumPy, CuPy)."""
    arr = devices.from_dlpack(obj)
    check_numeric(arr.dtype, obj)
    return wrap(arr, devices.device_of_array(arr))
