"""Module, Parameter and the layers: Linear, Sequential, MLP, Embedding, Dropout, activations."""

import collections
import collections.abc
import math

import numpy as np

from gpugrad import autograd
from gpugrad import devices
from gpugrad import ops
from gpugrad import tensors
from gpugrad.nn import functional as F


class Parameter(tensors.Tensor):
    """A tensor that is a model's parameter: it receives a gradient (grad_req 'write')."""

    __slots__ = ()

    def __init__(self, data, dtype=None, device=None, grad_req="write"):
        super().__init__(data, dtype=dtype, device=device)
        self.attach_grad(grad_req)

    def __repr__(self):
        return "Parameter(" + super().__repr__() + ")"


class Module:
    """Base class: assign Parameters and Modules as attributes; define forward()."""

    def __init__(self):
        object.__setattr__(self, "_parameters", collections.OrderedDict())
        object.__setattr__(self, "_modules", collections.OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 f"before assigning {name!r}")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def forward(self, *args, **kwargs):
        raise TypeError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) pairs, each parameter once."""
        seen = set()
        for name, p in self._parameters.items():
            if id(p) not in seen:
                seen.add(id(p))
                yield prefix + name, p
        for mname, m in self._modules.items():
            for name, p in m.named_parameters(prefix + mname + "."):
                if id(p) not in seen:
                    seen.add(id(p))
                    yield name, p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def children(self):
        return list(self._modules.values())

    def train(self, mode=True):
        object.__setattr__(self, "training", bool(mode))
        for m in self._modules.values():
            m.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.zero_grad()

    def to(self, device):
        """Move every parameter (in place, keeping the Parameter objects) to device."""
        dev = devices.canonical_device(device)
        for p in self.parameters():
            if p.device != dev:
                moved = tensors.tensor(p, device=dev)
                p.data, p.device = moved.data, dev
                p.attach_grad(p.grad_req)
        return self

    def state_dict(self):
        """name -> tensor sharing each parameter's data."""
        return collections.OrderedDict((n, p.detach()) for n, p in self.named_parameters())

    def load_state_dict(self, state, strict=True):
        """Copy values into the parameters; names, shapes and dtypes must match.

        All or nothing: every entry is checked (and brought to the host) before the first
        parameter changes, so a mismatch leaves the model as it was.
        """
        if not isinstance(state, collections.abc.Mapping):
            raise TypeError(f"load_state_dict: expected a dict of name -> array, got "
                            f"{type(state).__name__}")
        own = dict(self.named_parameters())
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing {missing}, unexpected {unexpected}")
        staged = []
        for name, value in state.items():
            if name not in own:
                continue
            p = own[name]
            arr = value.numpy() if isinstance(value, tensors.Tensor) else np.asarray(value)
            if arr.shape != p.shape:
                raise ValueError(f"load_state_dict: {name} has shape {arr.shape} in the state but "
                                 f"{p.shape} in the model; no parameter was changed")
            if arr.dtype != p.dtype:
                raise TypeError(f"load_state_dict: {name} has dtype {arr.dtype} in the state but "
                                f"{p.dtype} in the model; no parameter was changed")
            staged.append((p, arr))
        for p, arr in staged:
            be = devices.get(p.device)
            with be.active:
                p.data[...] = be.asarray(arr)
            autograd.changed_in_place(p.data)

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"  ({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + (")" if not lines else "\n" + "\n".join(lines) + "\n)")


def _uniform(shape, bound, dtype, device):
    return (tensors.rand(*shape, dtype=dtype, device=device) * 2 - 1) * bound


class Linear(Module):
    """y = x @ W.T + b with W of shape (out, in).

    Initialised as in PyTorch: W and b uniform in [-1/sqrt(in), 1/sqrt(in)] (gg.seed makes it
    reproducible).
    """

    def __init__(self, in_features, out_features, bias=True, dtype=None, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1 / math.sqrt(in_features)
        self.weight = Parameter(_uniform((out_features, in_features), bound, dtype, device))
        self.bias = Parameter(_uniform((out_features,), bound, dtype, device)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Sequential(Module):
    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: item {i} is a {type(layer).__name__}, not a Module")
            setattr(self, str(i), layer)

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)


class ToDevice(Module):
    """Moves its input to `device`; differentiable, so in backward the gradient goes back to
    the device the input came from."""

    def __init__(self, device):
        super().__init__()
        self.target = devices.canonical_device(device)

    def forward(self, x):
        return x.to(self.target)

    def __repr__(self):
        return f"ToDevice({self.target!r})"


def pipeline(*stages):
    """A model split across devices (section 4.7, exercise 5): stages are (module, device)
    pairs; each module is moved to its device, and a ToDevice before it moves the activations
    in forward (and their gradients back in backward). Returns a Sequential."""
    layers = []
    for i, stage in enumerate(stages):
        if not (isinstance(stage, tuple) and len(stage) == 2 and isinstance(stage[0], Module)):
            raise TypeError(f"pipeline: stage {i} must be a (module, device) pair, got {stage!r}")
        module, device = stage
        layers += [ToDevice(device), module.to(device)]
    return Sequential(*layers)


class _Activation(Module):
    fn = None

    def __init__(self, **params):
        super().__init__()
        object.__setattr__(self, "params", params)

    def forward(self, x):
        return type(self).fn(x, **self.params)

    def extra_repr(self):
        return ", ".join(f"{k}={v!r}" for k, v in self.params.items())


def _activation(declared):
    """The module class of a declared activation (gpugrad/ops/activation.py): ReLU, GELU, ..."""
    defaults = dict(declared.params)

    def __init__(self, **params):
        _Activation.__init__(self, **{**defaults, **params})
    fn = ops.OPS[declared.name].function
    cls = type(declared.module, (_Activation,), {"fn": staticmethod(fn), "__init__": __init__,
                                                 "__doc__": f"Module form of gg.{declared.name}."})
    cls.__module__ = __name__  # so that pickle finds the class here
    return cls


# activation name -> its module class; each class is also a name of this module (gg.nn.ReLU)
ACTIVATIONS = {name: _activation(a) for name, a in ops.activation.ACTIVATIONS.items()}
globals().update({cls.__name__: cls for cls in ACTIVATIONS.values()})


class MLP(Sequential):
    """Linear layers of the given sizes with an activation between them (none after the last)."""

    def __init__(self, sizes, activation="relu", bias=True, dtype=None, device=None):
        sizes = list(sizes)
        if len(sizes) < 2:
            raise ValueError(f"MLP needs at least an input and an output size, got {sizes}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"MLP: unknown activation {activation!r}; one of {sorted(ACTIVATIONS)}")
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(Linear(a, b, bias=bias, dtype=dtype, device=device))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        super().__init__(*layers)


class Embedding(Module):
    """Rows of a (num_embeddings, dim) table picked by integer indices; N(0, 1) init."""

    def __init__(self, num_embeddings, embedding_dim, dtype=None, device=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(tensors.randn(num_embeddings, embedding_dim, dtype=dtype, device=device))

    def forward(self, indices):
        n = self.num_embeddings
        if not devices.host_reads_allowed():  # indices unreadable: bad ones give rows of NaN
            idx = ops.shape.index_array(indices, self.weight.device)
            xp = devices.get(self.weight.device).xp
            valid = (idx >= 0) & (idx < n)
            rows = ops.shape.take_in_range(self.weight, xp.clip(idx, 0, n - 1), axis=0)
            return ops.where(valid[..., None], rows, float("nan"))
        idx = ops.shape.index_array(indices, self.weight.device)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise IndexError(f"Embedding: indices must lie in [0, {n}), got "
                             f"min {int(idx.min())}, max {int(idx.max())}")
        return ops.shape.take_in_range(self.weight, idx, axis=0)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class Dropout(Module):
    """Dropout(p): active when the module is in training mode and autograd records in
    training mode (inside record()); the identity otherwise."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, training=self.training and autograd.is_training())

    def extra_repr(self):
        return f"p={self.p}"
