"""The fused kernels in float16 and bfloat16: they compute in float32 and round once on store,
as the unfused paths do (a 16-bit array carried in float32, rounded once), so the two agree bit
for bit. On the strict test device the launchers, the C signatures and the rounding run with
NumPy stand-ins; on a GPU the kernels' float32 math may sit one float32 ulp from NumPy's
before the rounding, so there the two are held to one 16-bit ulp."""

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import devices
from gpugrad.devices.cuda import kernels
from conftest import host
from test_fused import FUSED_ACTIVATIONS, KERNEL_DEVICES, _fused_and_unfused

LOW = [gg.float16, gg.bfloat16]


def _agree(fused, unfused, dtype, kdev):
    """Bit for bit on the strict device; within one 16-bit ulp of each other on a GPU."""
    fused, unfused = np.asarray(fused), np.asarray(unfused)
    assert fused.dtype == unfused.dtype == np.dtype(dtype)
    if kdev == "strict":
        np.testing.assert_array_equal(fused.view(np.uint16), unfused.view(np.uint16))
    else:
        a, b = fused.astype(np.float64), unfused.astype(np.float64)
        both_nan = np.isnan(a) & np.isnan(b)
        ulp = np.spacing(np.abs(b).astype(np.dtype(dtype))).astype(np.float64)
        assert np.all(both_nan | (a == b) | (np.abs(a - b) <= ulp))


@pytest.mark.parametrize("kdev", KERNEL_DEVICES)
@pytest.mark.parametrize("view", ["whole", "offset"])
@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("n", [1, 33, 4099])
@pytest.mark.parametrize("name", sorted(FUSED_ACTIVATIONS))
def test_fused_activations_in_16_bits_equal_the_unfused(name, n, dtype, view, kdev):
    """Forward and backward, eight 16-bit lanes per vector and the scalar tail (n = 33, and a
    view one element off a 16-byte boundary), inf and NaN included."""
    length = n + (view == "offset")
    x = np.random.default_rng(n).standard_normal(length) * 4
    x[::17] = np.inf
    x[5::19] = -np.inf
    x[3::23] = np.nan
    (yf, gf), (yu, gu) = _fused_and_unfused(FUSED_ACTIVATIONS[name], x, dtype, view, kdev)
    _agree(yf, yu, dtype, kdev)
    _agree(gf, gu, dtype, kdev)


@pytest.mark.parametrize("kdev", KERNEL_DEVICES)
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_the_fused_path_runs_for_16_bit_arrays(dtype, kdev):
    """The 16-bit kernels are taken (counted on the strict device), not the formulas."""
    from gpugrad.devices import strict_array

    x = gg.tensor(np.linspace(-3, 3, 64), dtype=dtype, device=kdev, requires_grad=True)
    before = dict(strict_array.calls)
    with gg.fused(True), gg.autograd.record():
        y = gg.gelu(x)
    y.backward()
    assert y.dtype == x.grad.dtype == dtype
    if kdev == "strict":
        ran = {k: strict_array.calls[k] - before.get(k, 0) for k in ("kernel act_fwd", "kernel act_bwd")}
        assert ran == {"kernel act_fwd": 1, "kernel act_bwd": 1}


@pytest.mark.parametrize("kdev", KERNEL_DEVICES)
@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("slope", [None, 0.0, 0.01])
def test_relu_masks_in_16_bits(slope, dtype, kdev):
    """relu_fwd_mask, relu_bwd_mask and relu_bwd_out in 16 bits: leaky_relu's x * slope and
    g * slope in float32 with the slope in float32 (as PyTorch's opmath), rounded once."""
    rng = np.random.default_rng(7)
    x, g = rng.standard_normal(1001) * 3, rng.standard_normal(1001)
    x[::13], g[::11] = np.nan, np.inf
    results = []
    for on in (True, False):
        with gg.fused(on):
            xt = gg.tensor(x, dtype=dtype, device=kdev, requires_grad=True)
            with gg.autograd.record():
                y = gg.relu(xt) if slope is None else gg.leaky_relu(xt, negative_slope=slope)
            y.backward(gg.tensor(g, dtype=dtype, device=kdev))
            from_output = gg.relu_backward_from_output(
                gg.tensor(g, dtype=dtype, device=kdev), y, negative_slope=slope or 0.0,
                leaky=slope is not None)
            results.append([host(y), host(xt.grad), host(from_output)])
    for fused, unfused in zip(*results):
        _agree(fused, unfused, dtype, kdev)
    if slope:  # the slope is not rounded to 16 bits before the product
        y_host = results[1][0].astype(np.float64)
        expected = np.where(x > 0, x.astype(dtype).astype(np.float64),
                            (x.astype(dtype).astype(np.float32) * np.float32(slope)).astype(dtype).astype(np.float64))
        np.testing.assert_array_equal(y_host[~np.isnan(x)], expected[~np.isnan(x)])


@pytest.mark.parametrize("kdev", KERNEL_DEVICES)
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_softmax_cross_entropy_in_16_bits(dtype, kdev):
    """The row reduced in float32, the loss and dx rounded once: fused equals unfused, and
    both are the float32 result rounded."""
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((37, 300)) * 5).astype(dtype)
    labels = rng.integers(0, 300, 37)
    results = []
    for on in (True, False):
        with gg.fused(on):
            x = gg.tensor(logits, device=kdev, requires_grad=True)
            with gg.autograd.record():
                loss = gg.nn.functional.cross_entropy(x, gg.tensor(labels, device=kdev),
                                                      reduction="none")
            loss.backward(gg.tensor(np.linspace(-1, 1, 37), dtype=dtype, device=kdev))
            results.append((host(loss), host(x.grad)))
    for fused, unfused in zip(*results):
        _agree(fused, unfused, dtype, kdev)
    wide = logits.astype(np.float32)
    shifted = wide - wide.max(1, keepdims=True)
    expected = np.log(np.exp(shifted).sum(1)) - shifted[np.arange(37), labels]
    np.testing.assert_allclose(results[1][0].astype(np.float32), expected.astype(dtype).astype(np.float32),
                               rtol=2 * gg.devices.epsilon(np.dtype(dtype)))


@pytest.mark.parametrize("kdev", KERNEL_DEVICES)
@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_on_16_bit_parameters_in_one_kernel(momentum, dtype, kdev):
    """The kernel takes the 16-bit parameter and gradient and the float32 velocity, and rounds
    the parameter once: equal to the update on float32 copies (the unfused path)."""
    rng = np.random.default_rng(5)
    start, grads = rng.standard_normal(513), [rng.standard_normal(513) for _ in range(3)]
    results = []
    for on in (True, False):
        with gg.fused(on):
            w = gg.tensor(start, dtype=dtype, device=kdev, requires_grad=True)
            opt = gg.optim.SGD([w], lr=1e-3, momentum=momentum, weight_decay=1e-2)
            for g in grads:
                w.grad = gg.tensor(g, dtype=dtype, device=kdev)
                opt.step()
            results.append(host(w))
            if momentum:
                assert opt.state[0]["momentum_buffer"].dtype == np.float32
    _agree(results[0], results[1], dtype, kdev)
    assert not np.array_equal(results[0], start.astype(dtype))  # lr * g did not round away


@pytest.mark.parametrize("kdev", KERNEL_DEVICES)
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_add_scaled_in_16_bits_rounds_as_the_composition(dtype, kdev):
    """acc += s * x: the product rounded to 16 bits, then the sum, as NumPy computes the
    composition in 16 bits (and as create_graph records it)."""
    xp = devices.get(kdev).xp
    rng = np.random.default_rng(9)
    acc, x = (rng.standard_normal(1031).astype(dtype) * 7 for _ in range(2))
    s = np.asarray(0.3, dtype=dtype)
    expected = acc + s * x
    acc_dev = xp.asarray(acc)
    assert kernels.suits("add_scaled", (acc_dev, xp.asarray(s), xp.asarray(x)))
    kernels.lookup("add_scaled", xp)(acc_dev, xp.asarray(s), xp.asarray(x))
    np.testing.assert_array_equal(host(gg.tensors.wrap(acc_dev, kdev)).view(np.uint16),
                                  expected.view(np.uint16))


@pytest.mark.parametrize("kdev", KERNEL_DEVICES)
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_16_bit_products_accumulate_in_float32_through_the_gemm(dtype, kdev, monkeypatch):
    """A product of 16-bit matrices (and its backward) goes through the device's gemm
    (cublasGemmEx with a float32 compute type), eager and inside a graphed step alike: the
    float32 product rounded once."""
    be = devices.get(kdev)
    gemms, gemm = [], be.gemm
    monkeypatch.setattr(be, "gemm", lambda *args: gemms.append(args[0]) or gemm(*args))
    rng = np.random.default_rng(11)
    a_host, b_host = rng.standard_normal((64, 300)), rng.standard_normal((300, 17))
    a = gg.tensor(a_host, dtype=dtype, device=kdev, requires_grad=True)
    b = gg.tensor(b_host, dtype=dtype, device=kdev)
    with gg.autograd.record():
        y = a @ b
    y.backward()
    assert gemms == [np.dtype(dtype)] * 2  # the product and a's gradient
    wide = a_host.astype(dtype).astype(np.float32) @ b_host.astype(dtype).astype(np.float32)
    np.testing.assert_allclose(host(y).astype(np.float32), wide.astype(dtype).astype(np.float32),
                               rtol=gg.devices.epsilon(np.dtype(dtype)))
    assert y.dtype == a.grad.dtype == dtype

    w = gg.tensor(b_host, dtype=dtype, device=kdev, requires_grad=True)
    opt = gg.optim.SGD([w], lr=1e-30)  # too small to move a 16-bit weight: every replay equal

    @gg.cuda.graph
    def step(x):
        with gg.autograd.record():
            loss = (x @ w).sum()
        loss.backward()
        opt.step()
        return loss

    x = gg.tensor(a_host, dtype=dtype, device=kdev)
    eager = float(host(step(x)))
    assert float(host(step(x))) == eager  # replayed: the captured gemm gives the eager numbers


@pytest.mark.parametrize("kdev", KERNEL_DEVICES)
@pytest.mark.parametrize("dtype", [*LOW, gg.float32], ids=str)
def test_grad_scaler_unscales_and_checks_in_one_kernel_per_gradient(dtype, kdev):
    """unscale_ runs one kernel per gradient that unscales in place and sets one flag on the
    device; an element that overflows only when rounded to 16 bits counts as inf, as the
    kernel checks the stored value. Fused and unfused give the same gradients and verdict."""
    from gpugrad.devices import strict_array

    big = float(np.finfo(dtype).max) / 1.5  # finite; twice it is not, once rounded
    grads = [np.array([1.0, -2.0, big]), np.linspace(-1, 1, 300)]
    outcomes = []
    for on in (True, False):
        with gg.fused(on):
            params = [gg.tensor(np.zeros_like(g), dtype=dtype, device=kdev, requires_grad=True)
                      for g in grads]
            for p, g in zip(params, grads):
                p.grad = gg.tensor(g, dtype=dtype, device=kdev)
            opt = gg.optim.SGD(params, lr=0.1)
            scaler = gg.amp.GradScaler(init_scale=0.5)  # unscaling doubles every gradient
            before = strict_array.calls["kernel unscale_and_check"]
            scaler.step(opt)
            ran = strict_array.calls["kernel unscale_and_check"] - before
            outcomes.append(([host(p.grad) for p in params], [host(p) for p in params], ran))
            scaler.update()
            assert scaler.get_scale() == 0.25  # the step was skipped and the scale backed off
    (g_fused, p_fused, ran_fused), (g_unfused, p_unfused, ran_unfused) = outcomes
    if kdev == "strict":
        assert (ran_fused, ran_unfused) == (2, 0)
    for a, b in zip(g_fused + p_fused, g_unfused + p_unfused):
        np.testing.assert_array_equal(a, b)
    assert np.isinf(g_fused[0][2]) and not np.any(p_fused[1])  # inf found; nothing stepped
    np.testing.assert_array_equal(g_fused[1], (grads[1] * 2).astype(dtype))
