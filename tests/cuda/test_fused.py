"""Fused kernels against the unfused compositions, on a GPU and on the strict test device."""

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import devices
from gpugrad.devices.cuda import kernels
from conftest import host
from test_kernels import DECLARED_KERNELS, TOL

# ---------------------------------------------------------------- on a GPU and the strict device
# The fused kernels run on CUDA; on the strict test device the same launchers run with NumPy
# stand-ins for the compiled kernels (gpugrad/devices/strict.py), so CI checks everything but the CUDA
# code itself.

KERNEL_DEVICES = [pytest.param("cuda:0", marks=pytest.mark.cuda), "strict"]
SIZES = [0, 1, 31, 1025, 2**20 + 3]
# every kernel of every declared activation, as its op with the tested parameters
FUSED_ACTIVATIONS = {k: (lambda t, a=a, p=p: getattr(gg, a.name)(t, **p))
                     for k, (a, p) in DECLARED_KERNELS.items()}


def _address(a):
    """Where an array's first element lies: CuPy's, NumPy's or the strict device's."""
    if isinstance(a, np.ndarray):
        return a.ctypes.data
    return a._a.ctypes.data if type(a).__name__ == "StrictArray" else a.data.ptr


def _fused_and_unfused(f, x_host, dtype, view, kdev):
    results = []
    for on in (True, False):
        with gg.fused(on):
            x = gg.tensor(x_host, dtype=dtype, device=kdev)
            # strided: copied to a contiguous buffer; offset: contiguous but one element past
            # a 16-byte boundary, so the kernels take their scalar loop instead of vectors
            x = {"whole": x, "strided": x[::2], "offset": x[1:]}[view]
            x = gg.tensors.wrap(x.data, kdev)  # a leaf over the view itself (tensor() copies)
            x.attach_grad()
            with gg.autograd.record():
                y = f(x)
            y.backward(gg.tensor(np.linspace(-1, 1, y.size).reshape(y.shape), dtype=dtype, device=kdev))
            assert y.shape == x.shape and x.grad.shape == x.shape
            results.append((host(y), host(x.grad)))
    return results


@pytest.mark.parametrize("kdev", KERNEL_DEVICES)
@pytest.mark.parametrize("view", ["whole", "strided", "offset"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name", sorted(FUSED_ACTIVATIONS))
def test_fused_matches_unfused(name, n, dtype, view, kdev):
    length = {"whole": n, "strided": 2 * n, "offset": n + 1}[view]
    x = np.random.default_rng(n).standard_normal(length) * 3
    if view == "offset" and n:
        with gg.fused(True):
            leaf = gg.tensor(x, dtype=dtype, device=kdev)[1:]
        assert _address(leaf.data) % 16 != 0  # the case this view is for
    (yf, gf), (yu, gu) = _fused_and_unfused(FUSED_ACTIVATIONS[name], x, dtype, view, kdev)
    tol = TOL[np.dtype(dtype).type]
    np.testing.assert_allclose(yf, yu, **tol)
    np.testing.assert_allclose(gf, gu, **tol)


@pytest.mark.parametrize("kdev", KERNEL_DEVICES)
@pytest.mark.parametrize("name", sorted(FUSED_ACTIVATIONS))
def test_fused_activations_keep_0d_shapes(name, kdev):
    """A scalar through a fused kernel stays a scalar (ascontiguousarray alone gives shape (1,))."""
    x = gg.tensor(0.7, device=kdev, requires_grad=True)
    with gg.fused(True), gg.autograd.record():
        y = FUSED_ACTIVATIONS[name](x)
    assert y.shape == ()
    y.backward()
    assert x.grad.shape == ()


@pytest.mark.parametrize("kdev", KERNEL_DEVICES)
@pytest.mark.parametrize("name", sorted(FUSED_ACTIVATIONS))
def test_second_order_through_the_fused_path(name, kdev):
    x = gg.tensor(np.random.default_rng(0).standard_normal(40) * 2 + 0.05, dtype="float64", device=kdev)
    with gg.fused(True):
        assert gg.gradcheck(FUSED_ACTIVATIONS[name], [x], order=2)


@pytest.mark.parametrize("kdev", KERNEL_DEVICES)
@pytest.mark.parametrize("labels_dtype", ["int32", "int64"])
def test_fused_softmax_cross_entropy_and_sgd(labels_dtype, kdev):
    cp = devices.get(kdev).xp
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((37, 300)) * 5
    labels = rng.integers(0, 300, 37)
    shifted = logits - logits.max(1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    loss = kernels.lookup("softmax_xent_fwd", cp)(cp.asarray(logits), cp.asarray(labels.astype(labels_dtype)))
    np.testing.assert_allclose(cp.asnumpy(loss), -logp[np.arange(37), labels], rtol=1e-10)
    g = rng.standard_normal(37)
    dx = kernels.lookup("softmax_xent_bwd", cp)(cp.asarray(logits), cp.asarray(labels.astype(labels_dtype)), cp.asarray(g))
    onehot = np.eye(300)[labels]
    np.testing.assert_allclose(cp.asnumpy(dx), (np.exp(logp) - onehot) * g[:, None], rtol=1e-9, atol=1e-12)
    # a mean's gradient: one value broadcast to every row, read with stride 0 (no copy)
    one = cp.broadcast_to(cp.asarray(np.float64(0.7)), (37,))
    assert one.strides == (0,)
    dx = kernels.lookup("softmax_xent_bwd", cp)(cp.asarray(logits), cp.asarray(labels.astype(labels_dtype)), one)
    np.testing.assert_allclose(cp.asnumpy(dx), (np.exp(logp) - onehot) * 0.7, rtol=1e-9, atol=1e-12)
    p, gr, v = (rng.standard_normal(1000) for _ in range(3))
    pc, vc = cp.asarray(p), cp.asarray(v)
    kernels.lookup("sgd_step", cp)(pc, cp.asarray(gr), vc, 0.1, momentum=0.9, weight_decay=1e-2)
    v_ref = 0.9 * v + gr + 1e-2 * p
    np.testing.assert_allclose(cp.asnumpy(vc), v_ref, rtol=1e-12)
    np.testing.assert_allclose(cp.asnumpy(pc), p - 0.1 * v_ref, rtol=1e-12)


@pytest.mark.parametrize("kdev", KERNEL_DEVICES)
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_fused_sgd_update_without_momentum(weight_decay, kdev):
    """param -= lr * (grad + weight_decay * param) in one kernel; with no weight decay an
    infinite parameter stays infinite (the term is left out, not multiplied by 0)."""
    cp = devices.get(kdev).xp
    rng = np.random.default_rng(1)
    p, gr = rng.standard_normal(1001), rng.standard_normal(1001)
    p[3] = np.inf
    pc = cp.asarray(p)
    kernels.lookup("sgd_update", cp)(pc, cp.asarray(gr), 0.1, weight_decay=weight_decay)
    with np.errstate(invalid="ignore"):
        expected = p - 0.1 * (gr + weight_decay * p if weight_decay else gr)
    np.testing.assert_allclose(cp.asnumpy(pc), expected, rtol=1e-12)
    assert np.isinf(cp.asnumpy(pc)[3]) == (weight_decay == 0)


@pytest.mark.parametrize("kdev", KERNEL_DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", SIZES)
def test_add_scaled_is_the_multiply_and_add_to_the_bit(n, dtype, kdev):
    """acc += s * x with s a 0-d device array, in one kernel: each step rounded as the
    composition rounds it (no fused multiply-add), inf and NaN included."""
    cp = devices.get(kdev).xp
    rng = np.random.default_rng(n)
    acc, x = (rng.standard_normal(n).astype(dtype) * 7 for _ in range(2))
    if n > 3:
        acc[0], x[1], x[2] = np.inf, np.nan, -np.inf
    s = np.asarray(0.3, dtype=dtype)
    with np.errstate(invalid="ignore"):
        expected = acc + s * x
    acc_dev = cp.asarray(acc)
    assert kernels.suits("add_scaled", (acc_dev, cp.asarray(s), cp.asarray(x)))
    kernels.lookup("add_scaled", cp)(acc_dev, cp.asarray(s), cp.asarray(x))
    np.testing.assert_array_equal(cp.asnumpy(acc_dev), expected)
    assert not kernels.suits("add_scaled", (acc_dev, cp.asarray(s.astype("float16")), cp.asarray(x)))


@pytest.mark.parametrize("kdev", KERNEL_DEVICES)
@pytest.mark.parametrize("view", ["whole", "offset"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("slope", [None, 0.0, 0.1])
def test_relu_backward_from_the_output_equals_the_masks(slope, n, dtype, view, kdev):
    """relu_bwd_out tests the mask's bit on y = relu(x) (or leaky_relu(x) with a slope >= 0):
    bitwise what relu_backward gives from the mask of x, fused and unfused, NaN and inf in x
    and g included, over a view one element off a 16-byte boundary too."""
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n + 1) * 3
    g = rng.standard_normal(n + 1)
    x[::7], g[::11] = np.nan, np.inf
    x[::13] = -np.inf
    start = 1 if view == "offset" else 0
    leaky = slope is not None
    results = []
    for on in (True, False):
        with gg.fused(on):
            xt, gt = (gg.tensor(a, dtype=dtype, device=kdev)[start:start + n] for a in (x, g))
            xt, gt = gg.tensors.wrap(xt.data, kdev), gg.tensors.wrap(gt.data, kdev)
            y = gg.leaky_relu(xt, negative_slope=slope) if leaky else gg.relu(xt)
            mask = gg.tensor(kernels.pack_mask(np, (host(xt) > 0) if leaky else ~(host(xt) <= 0)),
                             device=kdev)
            from_output = gg.relu_backward_from_output(gt, y, negative_slope=slope or 0.0,
                                                       leaky=leaky)
            from_mask = gg.relu_backward(gt, mask, negative_slope=slope or 0.0)
            results += [host(from_output), host(from_mask)]
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


@pytest.mark.cuda
def test_every_kernel_compiles_with_nvrtc():
    cp = devices.get("cuda").xp
    assert all(err is None for err in kernels.check_compiles(cp).values())


def test_relu_backward_from_the_mask_with_non_finite_gradients():
    """A dead unit passes 0 even for an infinite gradient (as the kernel and PyTorch do)."""
    x = np.array([1.0, -1.0, 2.0, -2.0], np.float32)
    mask = gg.tensor(kernels.pack_mask(np, x > 0))
    g = gg.tensor(np.array([np.inf, np.inf, np.nan, 1.0], np.float32))
    np.testing.assert_array_equal(host(gg.relu_backward(g, mask)), [np.inf, 0, np.nan, 0])
    np.testing.assert_array_equal(host(gg.relu_backward(g, mask, negative_slope=0.5)),
                                  [np.inf, np.inf, np.nan, 0.5])


def test_the_fused_path_is_taken_only_for_arrays_that_suit_the_kernels():
    """devices.fused(name, xp, *arrays) is the one gate: the launcher, or None for arrays its
    kernel does not take (the op then runs its xp formula)."""
    from gpugrad.devices import strict

    xp = strict.xp

    def gate(name, *arrays):
        return devices.fused(name, xp, *[xp.asarray(a) for a in arrays]) is not None

    f32, f64 = np.ones(4, np.float32), np.ones(4, np.float64)
    assert gate("sigmoid_bwd", f32, f32) and gate("sigmoid_fwd", f64)
    assert gate("tanh_fwd", np.float32(2.0))                     # 0-d: the launchers keep shapes
    assert not gate("sigmoid_bwd", f32, f64)                      # mixed dtypes: the composition casts
    assert not gate("sigmoid_bwd", f32, np.ones((2, 4), np.float32))  # broadcasting
    assert gate("sigmoid_fwd", np.ones(4, np.float16))            # 16-bit kernels compute in float32
    assert not gate("sigmoid_fwd", np.ones(4, np.int32))          # integers take the formula
    assert gate("sgd_step", f32, f32, f32)
    assert not gate("sgd_step", f32, f32[::2].copy()[:1], f32)
    assert not kernels.suits("sgd_step", (np.ones((4, 4), np.float32).T,  # updates in place
                                          np.ones((4, 4), np.float32), np.ones((4, 4), np.float32)))
    logits, labels = np.ones((3, 5), np.float32), np.zeros(3, np.int64)
    assert gate("softmax_xent_fwd", logits, labels) and gate("softmax_xent_bwd", logits, labels, f32[:3])
    assert not gate("softmax_xent_fwd", logits, labels.astype(np.int16))  # no int16 labels
    assert not gate("softmax_xent_bwd", logits, labels, f64[:3])          # g of another dtype
    assert gate("relu_bwd_mask", f32, np.zeros(1, np.uint32))
    assert devices.fused("sigmoid_fwd", np, f32) is None                  # the CPU: never
    with gg.fused(False):
        assert not gate("sigmoid_fwd", f32)
    with pytest.raises(ValueError, match="packed uint32 words for 40 elements"):
        gg.relu_backward(gg.ones(40), gg.tensor(np.zeros(1, np.uint32)))
