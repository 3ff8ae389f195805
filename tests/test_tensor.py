"""Tensor creation, dtypes, devices, conversion, RNG, DLPack."""

import os
import subprocess
import sys

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import devices
from conftest import host


def test_python_data_defaults_to_float32_arrays_keep_their_dtype(device):
    assert gg.tensor([1, 2]).dtype == np.float32
    assert gg.tensor(3.0).dtype == np.float32
    assert gg.arange(4).dtype == np.float32
    assert gg.zeros((2, 3)).dtype == np.float32
    assert gg.tensor(np.arange(3)).dtype == np.int64
    assert gg.tensor(np.ones(2, np.float64)).dtype == np.float64
    assert gg.tensor([1, 2], dtype="int32").dtype == np.int32
    assert str(gg.tensor([1.0], dtype=np.float64).dtype) == "float64"
    assert gg.tensor([True, False]).dtype == np.bool_
    with pytest.raises(TypeError, match="unknown dtype 'floaty'"):
        gg.tensor([1.0], dtype="floaty")


def test_default_dtype_can_change():
    gg.set_default_dtype("float64")
    try:
        assert gg.tensor([1.0]).dtype == np.float64 and gg.ones(2).dtype == np.float64
    finally:
        gg.set_default_dtype("float32")
    with pytest.raises(TypeError, match="floating"):
        gg.set_default_dtype("int32")


def test_creation_functions(device):
    assert host(gg.zeros(3)).tolist() == [0, 0, 0]
    assert gg.ones((2, 3)).shape == (2, 3)
    assert host(gg.full((2,), 7.0)).tolist() == [7, 7]
    assert gg.empty((4, 1)).shape == (4, 1)
    assert host(gg.eye(2)).tolist() == [[1, 0], [0, 1]]
    assert host(gg.arange(1, 7, 2)).tolist() == [1, 3, 5]
    x = gg.tensor([[1.0, 2.0]], dtype="float64")
    assert gg.zeros_like(x).dtype == np.float64 and host(gg.ones_like(x)).tolist() == [[1, 1]]
    assert gg.array is gg.tensor
    for t in (gg.zeros(2), gg.rand(2), gg.randn(2, 2), gg.arange(3)):
        assert t.device == device


def test_tensor_copies_its_data():
    a = np.ones(3)
    t = gg.tensor(a)
    a[0] = 5
    assert host(t)[0] == 1


def test_attributes_and_conversions(device):
    t = gg.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert (t.shape, t.ndim, t.size, t.dtype) == ((2, 3), 2, 6, np.float32)
    assert t.T.shape == (3, 2)
    assert t.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert isinstance(t.numpy(), np.ndarray) and isinstance(t.asnumpy(), np.ndarray)
    assert gg.tensor([2.5]).item() == 2.5
    with pytest.raises(ValueError, match="6 elements"):
        t.item()
    assert t.astype("float64").dtype == np.float64
    assert t.reshape(3, 2).shape == (3, 2) and t.reshape((6,)).shape == (6,)
    assert t.transpose(1, 0).shape == (3, 2)
    assert t.sum().item() == 21 and t.mean().item() == 3.5
    assert host(t.max(axis=1)).tolist() == [3, 6] and host(t.min(axis=0)).tolist() == [1, 2, 3]
    assert len(t) == 2 and [r.shape for r in t] == [(3,), (3,)]
    assert host(t[1, ::2]).tolist() == [4, 6]
    assert t.to(device) is t and t.cpu().device == "cpu"
    assert float(gg.tensor(2.0)) == 2.0


def test_repr_looks_like_the_api(device):
    assert repr(gg.tensor([0.0, 4.0], device="cpu")) == "tensor([0., 4.], dtype=float32, device='cpu')"
    assert repr(gg.tensor([0.0, 4.0])) == f"tensor([0., 4.], dtype=float32, device='{device}')"


def test_reflected_operators_with_scalars_and_arrays(device):
    x = gg.tensor([1.0, 2.0])
    assert host(2 - x).tolist() == [1, 0] and host(2 / x).tolist() == [2, 1]
    assert host(2 ** x).tolist() == [2, 4] and host(-x).tolist() == [-1, -2]
    if device == "cpu":
        r = np.array([1.0, 1.0]) + x  # NumPy defers to Tensor
        assert isinstance(r, gg.Tensor) and host(r).tolist() == [2, 3]
    assert isinstance(x @ gg.tensor([1.0, 1.0]), gg.Tensor)


def test_device_strings_and_context():
    assert gg.devices.canonical_device("cuda") == "cuda:0"
    assert gg.devices.canonical_device("CPU") == "cpu"
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        gg.devices.canonical_device("tpu")
    with gg.device("cpu"):
        assert gg.default_device() == "cpu" and gg.ones(1).device == "cpu"


def test_gpugrad_device_environment_variable():
    code = "import gpugrad as gg; print(gg.default_device(), gg.ones(1).device)"
    env = dict(os.environ, GPUGRAD_DEVICE="cpu")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["cpu", "cpu"], out.stderr


@pytest.mark.skipif(gg.cuda.is_available(), reason="checks the message given when CUDA is missing")
def test_asking_for_cuda_without_it_says_how_to_install():
    with pytest.raises(gg.DeviceError, match=r"pip install 'gpugrad\[cuda13\]'|CUDA is unusable|no CUDA device"):
        gg.ones(2, device="cuda")
    with pytest.raises(gg.DeviceError):
        with gg.device("cuda"):
            pass
    assert gg.cuda.is_available() is False and gg.cuda.unavailable_reason()


def test_seed_makes_random_numbers_reproducible(device):
    gg.seed(7)
    a, b = gg.rand(3, 2), gg.randn((4,))
    gg.seed(7)
    assert np.array_equal(host(a), host(gg.rand(3, 2))) and np.array_equal(host(b), host(gg.randn(4)))
    assert a.dtype == np.float32 and 0 <= host(a).min() and host(a).max() < 1
    assert gg.randn(2, dtype="float64").dtype == np.float64


def test_dlpack_round_trip_with_numpy(device):
    t = gg.tensor([1.0, 2.0, 3.0], device=device)
    back = gg.from_dlpack(t)
    assert back.device == device and host(back).tolist() == [1, 2, 3]
    if device == "cpu":
        a = np.from_dlpack(t)
        a[0] = 9  # zero-copy: the tensor sees it
        assert t.numpy()[0] == 9
    with pytest.raises(TypeError, match="__dlpack__"):
        gg.from_dlpack([1, 2])


def test_dlpack_with_torch(device):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
    if device == "strict":
        pytest.skip("the strict test device exchanges DLPack only with itself, not with PyTorch")
    if device != "cpu" and not torch.cuda.is_available():
        pytest.skip("this PyTorch has no CUDA")
    tt = torch.arange(4, dtype=torch.float32, device="cuda" if device != "cpu" else "cpu")
    g = gg.from_dlpack(tt)
    assert g.device == device and host(g).tolist() == [0, 1, 2, 3]
    back = torch.from_dlpack(g)
    assert back.tolist() == [0, 1, 2, 3]


def test_indexing_with_tensors_lists_and_masks(device):
    x = gg.arange(6).reshape(2, 3)
    assert host(x[gg.tensor([1, 0], dtype="int64")]).tolist() == [[3, 4, 5], [0, 1, 2]]
    assert host(x[x > 2]).tolist() == [3, 4, 5]
    assert host(x[:, [0, 0]]).tolist() == [[0, 0], [3, 3]]
    with pytest.raises(IndexError, match="integers or booleans"):
        x[gg.tensor([0.5])]


def test_repeated_indices_accumulate_gradient(device):
    x = gg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with gg.autograd.record():
        y = (x[[0, 0, 2, 0]] * gg.tensor([1.0, 2.0, 3.0, 4.0])).sum()
        z = gg.take(x, [1, 1]).sum()
    y.backward()
    assert host(x.grad).tolist() == [7, 0, 3]
    z.backward()
    assert host(x.grad).tolist() == [0, 2, 0]


def test_max_and_maximum_ties():
    """maximum/minimum split 50/50; max over an axis shares among all winners."""
    a, b = gg.tensor([1.0, 2.0], requires_grad=True), gg.tensor([1.0, 3.0], requires_grad=True)
    with gg.autograd.record():
        y = gg.maximum(a, b).sum()
    y.backward()
    assert host(a.grad).tolist() == [0.5, 0] and host(b.grad).tolist() == [0.5, 1]
    x = gg.tensor([[2.0, 2.0, 1.0, 2.0]], requires_grad=True)
    with gg.autograd.record():
        m = x.max(axis=1)
    m.backward()
    np.testing.assert_allclose(host(x.grad), [[1 / 3, 1 / 3, 0, 1 / 3]])


def test_stable_softmax_family_at_extreme_inputs():
    x = gg.tensor([[1000.0, 0.0, -1000.0]], dtype="float64")
    assert np.isfinite(host(gg.softmax(x, axis=1))).all()
    np.testing.assert_allclose(host(gg.log_softmax(x, axis=1)), [[0, -1000, -2000]])
    np.testing.assert_allclose(host(gg.logsumexp(x, axis=1)), [1000.0])
    big = gg.tensor([-800.0, 800.0], dtype="float64")
    np.testing.assert_allclose(host(gg.sigmoid(big)), [0, 1])
    np.testing.assert_allclose(host(gg.softplus(big)), [0, 800])


@pytest.mark.parametrize("other", [pytest.param("cuda:0", marks=pytest.mark.cuda), "strict"])
def test_device_tensors_and_transfer(other):
    """A second device beside the CPU: CUDA, and the strict test device in CI."""
    x = gg.tensor([1.0, 2.0], device=other, requires_grad=True)
    assert x.device == other and devices.device_of_array(x.data) == other
    with gg.autograd.record():
        y = (x.cpu() * 3).sum()
    y.backward()  # the gradient travels back from the CPU
    assert x.grad.device == other and host(x.grad).tolist() == [3, 3]
    with pytest.raises(gg.DeviceError, match="different devices"):
        gg.ones(2, device="cpu") + gg.ones(2, device=other)
    gg.seed(3)
    a = gg.rand(4, device=other)
    gg.seed(3)
    assert np.array_equal(host(a), host(gg.rand(4, device=other)))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_every_creation_function_takes_every_float_dtype(dtype, device):
    """float16 too, which NumPy's generator does not draw in: drawn in float32 and rounded (a
    uniform sample never rounds up to 1)."""
    made = [gg.zeros(3, dtype=dtype), gg.ones(3, dtype=dtype), gg.full(3, 2.0, dtype=dtype),
            gg.empty(3, dtype=dtype), gg.eye(3, dtype=dtype), gg.arange(3, dtype=dtype),
            gg.rand(2000, dtype=dtype), gg.randn(3, dtype=dtype),
            gg.nn.Linear(3, 2, dtype=dtype).weight]
    assert all(str(t.dtype) == dtype and t.device == device for t in made)
    u = host(made[6])
    assert u.min() >= 0 and u.max() < 1
    with pytest.raises(TypeError, match="random samples are floating point; dtype int64 is not"):
        gg.rand(3, dtype="int64")
