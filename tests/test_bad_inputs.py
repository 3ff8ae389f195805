"""A catalogue of bad input, as a new user would try it: every case must fail with a clear
error of the right type whose message names what was wrong, raised by gpugrad itself (the
innermost frame of the traceback is gpugrad's, never NumPy's or CuPy's). README's Guarantees
section quotes the number of cases."""

import os
import traceback
import zipfile

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import nn
from gpugrad.nn import functional as F

PACKAGE_DIR = os.path.dirname(os.path.abspath(gg.__file__))


def _wrong_shape_function():
    class WrongShape(gg.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return gg.reshape(g, (4, 1))

    x = gg.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    with gg.autograd.record():
        y = WrongShape.apply(x).sum()
    y.backward()


def _x():
    return gg.tensor([1.0, 2.0, 3.0, 4.0])


def _graph():
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    with gg.autograd.record():
        y = (x * x).sum()
    return x, y


def _backward_twice():
    _, y = _graph()
    y.backward()
    y.backward()


def _changed_in_place_before_backward():
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    w = gg.tensor([3.0, 4.0])
    with gg.autograd.record():
        y = (x * w).sum()
    w[0] = 10.0
    y.backward()


def _assign_into_recorded():
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    with gg.autograd.record():
        y = x * 2
    y[0] = 1.0


def _no_super_init():
    class Broken(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(gg.ones(2))
    Broken()


def _file(tmp, name, content):
    path = tmp / name
    path.write_bytes(content)
    return path


def _zip(tmp, name, members):
    path = tmp / name
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    return path


def _npy(tmp):
    path = tmp / "a.npy"
    np.save(path, np.ones(2))
    return path


STATE = {"w": np.ones(2, np.float32)}
HERE = gg.default_device()
OTHER = "strict" if HERE != "strict" else "cpu"  # a device that is always there, not the default
L = np.array([0, 1])
LOGITS = gg.tensor([[1.0, 2.0], [3.0, 4.0]])

# (id, callable(tmp_path), exception type, regex the message must match)
CASES = [
    # ------------------------------------------------------------ making tensors
    ("tensor of strings", lambda t: gg.tensor(["a", "b"]), TypeError, r"dtype <U1 \(strings\)"),
    ("tensor of complex", lambda t: gg.tensor([1j]), TypeError, r"complex numbers"),
    ("tensor of objects", lambda t: gg.tensor([{}, {}]), TypeError, r"cannot make a tensor"),
    ("tensor of None", lambda t: gg.tensor(None), TypeError, r"cannot make a tensor from NoneType"),
    ("ragged nested lists", lambda t: gg.tensor([[1], [1, 2]]), ValueError, r"unequal lengths"),
    ("unknown dtype name", lambda t: gg.tensor([1], dtype="float17"), TypeError, r"unknown dtype 'float17'"),
    ("complex dtype asked", lambda t: gg.tensor([1.0], dtype="complex64"), TypeError, r"complex64"),
    ("unknown device", lambda t: gg.tensor([1.0], device="tpu"), ValueError, r"unknown device 'tpu'"),
    ("cuda without a GPU or index out of range", lambda t: gg.tensor([1.0], device="cuda:99"),
     gg.DeviceError, r"cuda:99|CUDA"),
    ("zeros of a negative size", lambda t: gg.zeros(-1), ValueError, r"zeros: shape -1 has a negative size"),
    ("ones of a non-integer size", lambda t: gg.ones((2, "a")), TypeError,
     r"ones: a shape is integers, got \(2, 'a'\)"),
    ("randn of a float size", lambda t: gg.randn(2.5), TypeError, r"randn: a shape is integers.*2.5"),
    ("empty of a boolean size", lambda t: gg.empty((True,)), TypeError, r"empty: a shape is integers"),
    ("full with a string fill", lambda t: gg.full((2,), "x"), TypeError, r"fill_value 'x' is not a real"),
    ("arange with step 0", lambda t: gg.arange(0, 10, 0), ValueError, r"arange: step must not be 0"),
    ("arange to a string", lambda t: gg.arange("10"), TypeError, r"arange: stop '10'"),
    ("eye of a negative size", lambda t: gg.eye(-1), ValueError, r"eye: shape \(-1, -1\) has a negative"),
    ("astype to an unknown dtype", lambda t: _x().astype("int3"), TypeError, r"unknown dtype 'int3'"),
    # ------------------------------------------------------------ tensor methods
    ("reshape to a different size", lambda t: _x().reshape(5), ValueError,
     r"reshape: cannot reshape array of size 4 into shape \(5,\)"),
    ("item of four elements", lambda t: _x().item(), ValueError, r"4 elements, not 1"),
    ("bool of four elements", lambda t: bool(_x()), ValueError, r"ambiguous"),
    ("len of a 0-d tensor", lambda t: len(gg.tensor(1.0)), TypeError, r"0-d"),
    ("index out of range", lambda t: _x()[10], IndexError, r"10.*size 4|out of"),
    ("too many indices", lambda t: _x()[0, 0], IndexError, r"too many indices|1-d|dimension"),
    ("float index", lambda t: _x()[1.5], IndexError, r"index|integer"),
    ("float tensor as an index", lambda t: [1, 2][gg.tensor(1.0)], TypeError, r"only integer tensors"),
    ("sum over a missing axis", lambda t: _x().sum(axis=3), ValueError,
     r"sum: axis 3 is out of bounds for array of dimension 1"),
    ("transpose with bad axes", lambda t: gg.ones((2, 3)).transpose(0, 5), ValueError,
     r"transpose: axis 5 is out of bounds"),
    ("attach_grad with a bad request", lambda t: _x().attach_grad("often"), ValueError, r"grad_req must be one of"),
    ("attach_grad on integers", lambda t: gg.tensor(np.array([1, 2])).attach_grad(), TypeError,
     r"only floating-point tensors can receive gradients, this one has dtype int64"),
    ("to an unknown device", lambda t: _x().to("tpu"), ValueError, r"unknown device 'tpu'"),
    ("implicit NumPy conversion off the CPU", lambda t: np.asarray(gg.tensor([1.0], device="strict")),
     TypeError, r"implicit|cannot convert"),
    # ------------------------------------------------------------ ops
    ("add with shapes that do not broadcast", lambda t: _x() + gg.ones(3), gg.ShapeError,
     r"add: shapes \(4,\) and \(3,\) cannot be broadcast"),
    ("matmul with inner sizes that differ", lambda t: gg.ones((2, 3)) @ gg.ones((2, 3)), gg.ShapeError,
     r"matmul.*\(2, 3\).*\(2, 3\)"),
    ("matmul of a 0-d tensor", lambda t: gg.matmul(gg.tensor(1.0), _x()), gg.ShapeError, r"matmul.*0-d|scalar"),
    ("dot of different lengths", lambda t: gg.dot(_x(), gg.ones(3)), gg.ShapeError, r"dot|matmul"),
    ("ops across devices", lambda t: _x() + gg.ones(4, device=OTHER), gg.DeviceError,
     f"different devices, '{HERE}' and '{OTHER}'"),
    ("a Parameter with a tensor on another device",
     lambda t: gg.nn.Parameter(_x()) * gg.ones(4, device=OTHER), gg.DeviceError,
     f"multiply: tensors are on different devices, '{HERE}' and '{OTHER}'"),
    ("concatenate of nothing", lambda t: gg.concatenate([]), ValueError, r"concatenate: needs at least one"),
    ("concatenate with mismatched shapes", lambda t: gg.concatenate([gg.ones((2, 3)), gg.ones((2, 4))]),
     ValueError, r"concatenate: .*along dimension 1.* \(input shapes \(2, 3\), \(2, 4\)\)"),
    ("stack of different shapes", lambda t: gg.stack([gg.ones(2), gg.ones(3)]), ValueError,
     r"stack: all input arrays must have the same shape \(input shapes \(2,\), \(3,\)\)"),
    ("broadcast_to a smaller shape", lambda t: gg.broadcast_to(_x(), (2,)), ValueError,
     r"broadcast_to: .*requested shape \(2,\) \(input shapes \(4,\)\)"),
    ("softmax over a missing axis", lambda t: gg.softmax(_x(), axis=2), ValueError, r"softmax.*axis"),
    ("gelu with an unknown approximation", lambda t: gg.gelu(_x(), approximate="fast"), ValueError,
     r"approximate must be 'none' or 'tanh'"),
    ("take with an index out of range", lambda t: gg.take(_x(), np.array([7])), IndexError,
     r"index 7 is out of bounds for axis 0 with size 4"),
    ("take along an axis with a device index out of range",
     lambda t: gg.take(gg.ones((2, 3)), gg.tensor(np.array([1, 3])), axis=1), IndexError,
     r"take: index 3 is out of bounds for axis 1 with size 3"),
    ("take of a flattened tensor with an index out of range",
     lambda t: gg.take(gg.ones((2, 3)), [-7]), IndexError,
     r"take: index -7 is out of bounds for the flattened tensor with size 6"),
    ("indexing with an index array out of range", lambda t: gg.ones((3, 4))[:, [0, 4]], IndexError,
     r"indexing: index 4 is out of bounds for axis 1 with size 4"),
    ("indexing after an ellipsis out of range", lambda t: gg.ones((2, 3, 4))[..., gg.tensor(np.array([-5]))],
     IndexError, r"indexing: index -5 is out of bounds for axis 2 with size 4"),
    ("assigning through an index array out of range", lambda t: gg.ones((3, 4)).__setitem__(([3], [0]), 1.0),
     IndexError, r"indexing: index 3 is out of bounds for axis 0 with size 3"),
    ("a boolean mask shorter than its axis", lambda t: _x()[np.array([True, False])], IndexError,
     r"boolean index of shape \(2,\) does not match the indexed axes 0..0 of shape \(4,\)"),
    ("a 2-D boolean mask of the wrong shape", lambda t: gg.ones((3, 4))[np.ones((3, 3), bool)],
     IndexError, r"boolean index of shape \(3, 3\) does not match .* of shape \(3, 4\)"),
    ("take with float indices", lambda t: gg.take(_x(), gg.tensor([1.0])), IndexError,
     r"indices must be integers or booleans, got dtype float32"),
    ("an op on a Python list of strings", lambda t: gg.exp(["a"]), TypeError, r"strings"),
    # ------------------------------------------------------------ autograd
    ("backward of a tensor with no graph", lambda t: _x().backward(), gg.GraphError, r"has no graph"),
    ("backward twice", lambda t: _backward_twice(), gg.GraphError, r"already been freed.*retain_graph"),
    ("head_grad of the wrong shape", lambda t: _graph()[1].backward(gg.ones(3)), gg.ShapeError,
     r"head_grad has shape \(3,\) but the output has shape \(\)"),
    ("head_grad on another device", lambda t: _graph()[1].backward(gg.tensor(1.0, device=OTHER)),
     gg.DeviceError, f"head_grad is on '{OTHER}' but the output is on '{HERE}'"),
    ("grad of a variable not in the graph", lambda t: gg.autograd.grad(_graph()[1], _x()), gg.GraphError,
     r"every variable must be in the graph"),
    ("grad with too few head_grads", lambda t: gg.autograd.grad([_graph()[1]] * 2, _graph()[0], [None]),
     ValueError, r"2 heads but 1 head_grads"),
    ("saved input changed in place", lambda t: _changed_in_place_before_backward(), gg.GraphError,
     r"changed in place after it was recorded"),
    ("assignment into a recorded result", lambda t: _assign_into_recorded(), gg.GraphError,
     r"in-place assignment to a tensor computed inside record"),
    ("item assignment into an argument of gg.grad",
     lambda t: gg.grad(lambda a: (a.__setitem__(0, 7.0), a.sum())[1])(_x()), gg.GraphError,
     r"in-place assignment to a tensor of shape \(4,\) that is being differentiated"),
    ("gg.array of a list holding a tensor being differentiated",
     lambda t: gg.grad(lambda a: gg.array([a[0], a[1]]).sum())(_x()), gg.GraphError,
     r"use gg.stack"),
    ("a Function whose backward returns the wrong shape", lambda t: _wrong_shape_function(),
     gg.GraphError, r"WrongShape: gradient for input 0 has shape \(4, 1\) but the input has "
                    r"shape \(4,\)"),
    ("deepcopy of a recorded result", lambda t: __import__("copy").deepcopy(_graph()[1]), gg.GraphError,
     r"holds a graph, which cannot be copied"),
    ("jacobian with an unknown mode", lambda t: gg.jacobian(gg.sin, mode="sideways")(_x()), ValueError,
     r"mode"),
    ("grad of a function returning many values", lambda t: gg.grad(gg.sin)(_x()), ValueError,
     r"grad needs f to return a tensor with one element, got \(4,\)"),
    # ------------------------------------------------------------ nn
    ("Linear given the wrong features", lambda t: nn.Linear(3, 2)(gg.ones((2, 5))), gg.ShapeError,
     r"input has 5 features"),
    ("MLP of one size", lambda t: nn.MLP([3]), ValueError, r"at least an input and an output size"),
    ("MLP with an unknown activation", lambda t: nn.MLP([3, 2], activation="swish"), ValueError,
     r"unknown activation 'swish'"),
    ("Dropout with p = 1.5", lambda t: nn.Dropout(1.5), ValueError, r"p must be in \[0, 1\)"),
    ("Embedding index out of range", lambda t: nn.Embedding(4, 2)(np.array([5])), IndexError,
     r"indices must lie in \[0, 4\)"),
    ("Sequential of a non-module", lambda t: nn.Sequential(3), TypeError, r"item 0 is a int, not a Module"),
    ("Module without super().__init__()", lambda t: _no_super_init(), AttributeError,
     r"must call super\(\).__init__\(\)"),
    ("cross_entropy with float labels", lambda t: F.cross_entropy(LOGITS, [0.0, 1.0]), TypeError,
     r"labels must be integers"),
    ("cross_entropy with a label out of range", lambda t: F.cross_entropy(LOGITS, [0, 2]), ValueError,
     r"labels must lie in \[0, 2\)"),
    ("cross_entropy with too few labels", lambda t: F.cross_entropy(LOGITS, [0]), ValueError, r"2 rows"),
    ("cross_entropy of 1-D logits", lambda t: F.cross_entropy(gg.ones(3), [0]), ValueError, r"\(N, C\)"),
    ("cross_entropy with an unknown reduction", lambda t: F.cross_entropy(LOGITS, L, reduction="avg"),
     ValueError, r"reduction"),
    ("mse_loss of different shapes", lambda t: F.mse_loss(_x(), gg.ones(3)), gg.ShapeError, r"target has shape"),
    ("load_state_dict missing a name", lambda t: nn.Linear(2, 2).load_state_dict({}), KeyError, r"missing"),
    ("load_state_dict of the wrong shape", lambda t: nn.Linear(2, 2, bias=False).load_state_dict(
        {"weight": np.ones((3, 2), np.float32)}), ValueError, r"weight has shape \(3, 2\)"),
    ("load_state_dict of the wrong dtype", lambda t: nn.Linear(2, 2, bias=False).load_state_dict(
        {"weight": np.ones((2, 2))}), TypeError, r"weight has dtype float64"),
    ("load_state_dict of a list", lambda t: nn.Linear(2, 2).load_state_dict([]), TypeError, r"expected a dict"),
    # ------------------------------------------------------------ optim
    ("optimizer with no parameters", lambda t: gg.optim.SGD([], lr=0.1), ValueError, r"no parameters"),
    ("optimizer of a tensor without a gradient", lambda t: gg.optim.SGD([_x()], lr=0.1), ValueError,
     r"does not receive a gradient"),
    ("lr = NaN", lambda t: gg.optim.SGD(nn.Linear(1, 1).parameters(), lr=float("nan")), ValueError, r"lr must be finite"),
    ("negative momentum", lambda t: gg.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1, momentum=-1),
     ValueError, r"momentum"),
    ("Adam beta1 = 1", lambda t: gg.optim.Adam(nn.Linear(1, 1).parameters(), betas=(1, 0.9)), ValueError,
     r"betas\[0\]"),
    ("lr as a string", lambda t: gg.optim.Adam(nn.Linear(1, 1).parameters(), lr="fast"), TypeError,
     r"lr must be a real number"),
    ("clip_grad_norm with a negative max_norm", lambda t: gg.nn.utils.clip_grad_norm(
        nn.Linear(1, 1).parameters(), -1.0), ValueError, r"max_norm"),
    # ------------------------------------------------------------ save and load
    ("save a set", lambda t: gg.save({"s": {1}}, t / "x.npz"), TypeError, r"obj\['s'\] is of type set"),
    ("save with a float key", lambda t: gg.save({1.5: np.ones(1)}, t / "x.npz"), TypeError,
     r"keys must be strings or integers"),
    ("save complex values", lambda t: gg.save({"z": np.ones(1, complex)}, t / "x.npz"), TypeError, r"complex128"),
    ("save into a missing directory", lambda t: gg.save(STATE, t / "no" / "x.npz"), FileNotFoundError,
     r"does not exist"),
    ("save onto a directory", lambda t: gg.save(STATE, t), IsADirectoryError, r"is a directory"),
    ("load a missing file", lambda t: gg.load(t / "missing.npz"), FileNotFoundError, r"missing.npz"),
    ("load a .npy file", lambda t: gg.load(_npy(t)), ValueError, r"single NumPy array"),
    ("load random bytes", lambda t: gg.load(_file(t, "r.bin", os.urandom(64))), ValueError, r"not a zip archive"),
    ("load an empty file", lambda t: gg.load(_file(t, "e.npz", b"")), ValueError, r"not a zip archive"),
    ("load a PyTorch file", lambda t: gg.load(_zip(t, "m.pt", {"m/data.pkl": b"x"})), ValueError,
     r"PyTorch file"),
    ("load a zip of text", lambda t: gg.load(_zip(t, "o.zip", {"a.txt": b"x"})), ValueError,
     r"zip archive but not a gpugrad state file"),
    ("load a truncated file", lambda t: gg.load(_file(t, "t.npz", b"PK\x03\x04" + b"\0" * 20)), ValueError,
     r"damaged or truncated"),
    # ------------------------------------------------------------ data and functional helpers
    ("batches of mismatched lengths", lambda t: list(gg.data.batches(np.ones((3, 2)), np.ones(2), 2)),
     ValueError, r"3 inputs but 2 labels"),
    ("batches of size 0", lambda t: list(gg.data.batches(np.ones((3, 2)), np.ones(3), 0)), ValueError,
     r"batch_size must be positive"),
    ("MNIST from a missing directory", lambda t: gg.data.load_mnist(t / "none"), FileNotFoundError, r"none"),
    ("hvp with a vector of another shape", lambda t: gg.hvp(lambda v: (v * v).sum(), _x(), gg.ones(3)),
     gg.ShapeError, r"shape"),
]


@pytest.mark.parametrize("name, call, error, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_clearly(name, call, error, message, tmp_path):
    with np.errstate(all="ignore"), pytest.raises(error, match=message) as info:
        call(tmp_path)
    innermost = traceback.extract_tb(info.tb)[-1].filename
    assert os.path.abspath(innermost).startswith(PACKAGE_DIR), (
        f"{name}: raised from {innermost}, not by gpugrad: {info.value!r}")


def test_the_catalogue_is_large_and_its_names_unique():
    assert len({c[0] for c in CASES}) == len(CASES) >= 90
