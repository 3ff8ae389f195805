"""bfloat16 and float16: every op of the table, forward and backward, against the same op in
float64 on the same (rounded) inputs, within tolerances set by the dtype's epsilon; the dtypes
everywhere a float dtype is taken."""

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import devices
from conftest import host
from test_ops import CASE_LIST, IDS

LOW = ["bfloat16", "float16"]
# cases that mix in a float64 constant or cast to float64 themselves: their results promote
PROMOTING = {"reshape", "transpose", "astype"}


def _rounded(x, dtype):
    """x as the low dtype holds it, and that value in float64 (the reference's input)."""
    low = np.asarray(x).astype(devices.as_dtype(dtype))
    return low, low.astype(np.float64)


def _close(got, ref, dtype, ops=8):
    """Each element within `ops` roundings of the reference, relative to the array's scale."""
    eps = devices.epsilon(devices.as_dtype(dtype))
    scale = max(float(np.max(np.abs(ref), initial=0.0)), 1e-3)
    err = np.abs(got.astype(np.float64) - ref)
    bad = ~((err <= ops * eps * (np.abs(ref) + scale)) | (np.isnan(ref) & np.isnan(got.astype(np.float64))))
    assert not bad.any(), (f"{int(bad.sum())} of {bad.size} elements off by more than {ops} eps: "
                           f"worst {float(err.max())} at scale {scale}")


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("name,i,f,xs", CASE_LIST, ids=IDS)
def test_every_op_in_low_precision_against_float64(name, i, f, xs, dtype, device):
    """Values and the gradient of every input under a random head: computed in the 16-bit
    dtype (results in it), against float64 from the same rounded inputs."""
    pairs = [_rounded(x, dtype) for x in xs]
    lows = [gg.tensor(lo, device=device) for lo, _ in pairs]
    refs = [gg.tensor(r, device=device) for _, r in pairs]
    for t in lows + refs:
        t.attach_grad()
    with gg.autograd.record():
        y_low, y_ref = f(*lows), f(*refs)
    if name not in PROMOTING:
        assert y_low.dtype == devices.as_dtype(dtype), f"{name} gave {y_low.dtype}"
    _close(host(y_low), host(y_ref), dtype)
    head = np.random.default_rng(i).standard_normal(y_ref.shape)
    y_low.backward(gg.tensor(head.astype(devices.as_dtype(dtype)), device=device))
    y_ref.backward(gg.tensor(head, device=device))
    for k, (lo, ref) in enumerate(zip(lows, refs)):
        assert lo.grad.dtype == lo.dtype, f"gradient of input {k} in {lo.grad.dtype}"
        _close(host(lo.grad), host(ref.grad), dtype, ops=16)


@pytest.mark.parametrize("dtype", LOW)
def test_every_creation_function_takes_the_16_bit_dtypes(dtype, device):
    dt = devices.as_dtype(dtype)
    made = [gg.zeros((2, 3), dtype=dtype, device=device), gg.ones(3, dtype=dtype, device=device),
            gg.full((2,), 1.5, dtype=dtype, device=device), gg.empty(2, dtype=dtype, device=device),
            gg.eye(3, dtype=dtype, device=device), gg.arange(4, dtype=dtype, device=device),
            gg.rand(1000, dtype=dtype, device=device), gg.randn(5, dtype=dtype, device=device),
            gg.tensor([1.0, 2.5], dtype=dtype, device=device), gg.randn(3, device=device).astype(dtype)]
    assert all(t.dtype == dt for t in made)
    assert host(made[6]).astype(np.float64).max() < 1.0  # rounding never gives 1
    assert gg.bfloat16 == devices.BFLOAT16 and gg.float16 == devices.FLOAT16
    x = gg.tensor([0.5, -1.25], dtype=dtype, device=device, requires_grad=True)
    with gg.autograd.record():
        y = gg.sum(x.astype("float32") * 3)
    y.backward()
    assert x.grad.dtype == dt and host(x.grad).astype(np.float64).tolist() == [3.0, 3.0]


@pytest.mark.parametrize("dtype", LOW)
def test_training_in_16_bits_keeps_the_dtype_and_learns(dtype, device):
    """A linear classifier in the 16-bit dtype, cross-entropy, Adam: parameters, gradients
    and optimizer state stay in the dtype and the loss falls."""
    from gpugrad import nn
    from gpugrad.nn import functional as F

    gg.seed(3)
    rng = np.random.default_rng(3)
    x = gg.tensor(rng.standard_normal((64, 8)), dtype=dtype, device=device)
    labels = (host(x).astype(np.float64)[:, 0] > 0).astype(np.int64)
    model = nn.Linear(8, 2, dtype=dtype, device=device)
    opt = gg.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        with gg.autograd.record():
            loss = F.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        losses.append(float(host(loss).astype(np.float64)))
    assert loss.dtype == devices.as_dtype(dtype)
    assert all(p.dtype == p.grad.dtype == devices.as_dtype(dtype) for p in model.parameters())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("dtype", LOW)
def test_saved_and_loaded_bit_for_bit(dtype, device, tmp_path):
    t = gg.randn(3, 4, dtype=dtype, device=device)
    gg.save({"t": t, "list": [t[0]]}, tmp_path / "s.gg")
    back = gg.load(tmp_path / "s.gg", device=device)
    assert back["t"].dtype == t.dtype and back["list"][0].dtype == t.dtype
    assert np.array_equal(host(back["t"]).view(np.uint16), host(t).view(np.uint16))


def test_gradcheck_in_a_16_bit_dtype_holds_it_to_float64():
    x = np.random.default_rng(1).standard_normal((3, 4))
    for dtype in LOW:
        assert gg.gradcheck(lambda a: gg.gelu(a) @ gg.tanh(a).T, [x], dtype=dtype)
        assert gg.gradcheck(lambda a: gg.softmax(a * 3), [x], dtype=dtype, order=2)

    class Wrong(gg.Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return a * a

        @staticmethod
        def backward(ctx, g):
            (a,) = ctx.saved_tensors
            return g * a

    with pytest.raises(gg.GradcheckError):
        gg.gradcheck(Wrong.apply, [x], dtype="bfloat16", forward=False)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_the_4_7_networks_saved_bytes_equal_the_formula_in_each_dtype(dtype):
    """The ledger, the meta-device estimate and the formula agree to the byte, and 16-bit
    activations take half of float32's."""
    from gpugrad.app import experiments

    rows = experiments.experiment(784, 256, 10, [1024], dtype=dtype)
    row = rows[0]
    assert row["saved (formula)"] == row["saved (measured)"] == row["saved (estimate)"]
    if dtype != "float32":
        f32 = experiments.experiment(784, 256, 10, [1024], dtype="float32")[0]
        assert 2 * row["saved (measured)"] < f32["saved (measured)"] + 1024 * 8 * 2
