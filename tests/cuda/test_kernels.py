"""The CUDA kernels without a GPU (nvcc to PTX; the header's math on the host against NumPy),
the fusion switch and mask accounting, and, on a GPU, fused against unfused."""

import ctypes
import importlib.metadata
import pathlib
import re
import shutil
import subprocess

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import devices
from gpugrad.devices.cuda import kernels
from gpugrad.ops import activation as act
from conftest import host

HERE = pathlib.Path(__file__).resolve().parent
KERNEL_DIR = kernels.source_dir()
NVCC = shutil.which("nvcc")
CXX = shutil.which("g++") or shutil.which("c++")


# ---------------------------------------------------------------- compiled without a GPU


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("source", kernels.sources())
def test_every_kernel_compiles_to_ptx(source, arch, tmp_path):
    """Every instantiation the loader asks NVRTC for, compiled by nvcc for the GPU generation."""
    if NVCC is None:
        pytest.skip("nvcc is not on the PATH, so the kernels cannot be compiled here")
    names = kernels.name_expressions(source)
    assert names, f"the loader instantiates nothing from {source}"
    # taking each kernel's address in host code makes nvcc instantiate it, as NVRTC will
    wrapper = tmp_path / "instantiate.cu"
    wrapper.write_text(f'#include "{KERNEL_DIR / source}"\n'
                       + "".join(f"void* k{i} = (void*)&{n};\n" for i, n in enumerate(names)))
    ptx = tmp_path / "out.ptx"
    out = subprocess.run([NVCC, "-std=c++17", "-ptx", f"-arch={arch}", f"-I{KERNEL_DIR}",
                          str(wrapper), "-o", str(ptx)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    entries = re.findall(r"^\.visible \.entry", ptx.read_text(), flags=re.M)
    assert len(entries) == len(names)


@pytest.fixture(scope="module")
def host_lib(tmp_path_factory):
    if CXX is None:
        pytest.skip("no C++ compiler on the PATH to build activations.cuh for the host")
    so = tmp_path_factory.mktemp("host") / "activations_host.so"
    out = subprocess.run([CXX, "-std=c++17", "-O2", "-shared", "-fPIC", f"-I{KERNEL_DIR}",
                          str(HERE / "host_shim.cpp"), "-o", str(so)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return ctypes.CDLL(str(so))


def _call(lib, name, dtype, *arrays, p0=0.0, p1=0.0):
    arrays = [np.ascontiguousarray(a, dtype=dtype) for a in arrays]
    out = np.empty_like(arrays[0])
    ptr = np.ctypeslib.ndpointer(dtype=dtype, flags="C_CONTIGUOUS")
    fn = getattr(lib, f"{name}_{'f32' if dtype == np.float32 else 'f64'}")
    fn.argtypes = [ptr] * (len(arrays) + 1) + [ctypes.c_long, ctypes.c_double, ctypes.c_double]
    fn(*arrays, out, out.size, p0, p1)
    return out


EDGES = np.array([0.0, -0.0, 1e-30, -1e-30, 1.0, -1.0, 20.0, -20.0, 100.0, -100.0,
                  np.inf, -np.inf, np.nan])
# tolerances: float32 libm functions are within a few ulp, and formulas like 1 + tanh(u)
# cancel near their zeros, so float32 is held to 1e-5 relative with 1e-6 absolute slack;
# float64 to 1e-12 relative
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}

# The reference values: the parameters each activation's kernels are tested with (the
# declared defaults otherwise).
TEST_PARAMS = {"leaky_relu": {"negative_slope": 0.1}, "elu": {"alpha": 1.5},
               "softplus": {"beta": 2.0, "threshold": 15.0}}


def _declared_kernels():
    """{kernel name: (its declared activation, the params it is tested with)}."""
    out = {}
    for a in act.ACTIVATIONS.values():
        for kernel, fixed in act.variant_params(a):
            out[kernel] = (a, {**dict(a.params), **TEST_PARAMS.get(a.name, {}), **fixed})
    return out


def _p(a, params):
    return (*a.kernel_scalars(params), 0.0, 0.0)[:2]


DECLARED_KERNELS = _declared_kernels()
# header function -> (reference on float64 arrays from the declared CPU formula, p0, p1)
FORWARD = {
    **{f"{k}_fwd": (lambda x, a=a, p=p: a.forward(np, x, **p), *_p(a, p))
       for k, (a, p) in DECLARED_KERNELS.items()},
    "relu_mask_bit": (lambda x: act.relu_mask(np, x).astype(np.float64), 0, 0),
    "leaky_relu_mask_bit": (lambda x: act.leaky_relu_mask(np, x).astype(np.float64), 0, 0),
}
BACKWARD = {  # (reference(g, saved), p0, p1, how the saved array is made from x)
    **{f"{k}_bwd": (lambda g, s, a=a, p=p: a.backward(np, g, s, **p), *_p(a, p),
                    (lambda x: x) if a.saves == "x" else (lambda x, a=a, p=p: a.forward(np, x, **p)))
       for k, (a, p) in DECLARED_KERNELS.items() if a.backward is not None},
    "relu_bwd_from_mask": (lambda g, m: np.where(m != 0, g, 0.0), 0, 0, lambda x: (x > 0) * 1.0),
    "leaky_relu_bwd_from_mask": (lambda g, m: np.where(m != 0, g, 0.3 * g), 0.3, 0, lambda x: (x > 0) * 1.0),
}


def _inputs(dtype):
    x = np.concatenate([EDGES, np.random.default_rng(0).standard_normal(500) * 4])
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(FORWARD))
def test_header_forward_matches_numpy(host_lib, name, dtype):
    ref, p0, p1 = FORWARD[name]
    x = _inputs(dtype)
    with np.errstate(all="ignore"):
        expected = ref(x.astype(np.float64))
    got = _call(host_lib, name, dtype, x, p0=p0, p1=p1)
    finite_in = np.isfinite(x)
    assert not np.isnan(got[finite_in & np.isfinite(expected)]).any()
    np.testing.assert_allclose(got, expected, **TOL[dtype], err_msg=f"{name} on {x}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(BACKWARD))
def test_header_backward_matches_numpy(host_lib, name, dtype):
    ref, p0, p1, make_saved = BACKWARD[name]
    x = _inputs(dtype)
    g = np.random.default_rng(1).standard_normal(x.size).astype(dtype)
    with np.errstate(all="ignore"):
        saved = make_saved(x.astype(np.float64)).astype(dtype)
        expected = ref(g.astype(np.float64), saved.astype(np.float64))
    got = _call(host_lib, name, dtype, g, saved, p0=p0, p1=p1)
    np.testing.assert_allclose(got, expected, **TOL[dtype], err_msg=name)


def test_stable_where_the_true_value_is_finite(host_lib):
    """No inf/NaN out of finite (or infinite with a finite limit) inputs."""
    x = np.array([-np.inf, -1e30, -100.0, 100.0, 1e30])
    for name in ("gelu_fwd", "gelu_tanh_fwd", "silu_fwd", "sigmoid_fwd", "softplus_fwd", "elu_fwd",
                 "softsign_fwd"):
        got = _call(host_lib, name, np.float64, x, p0=1.0, p1=20.0)
        assert np.isfinite(got[:3]).all(), (name, got)
    g = np.ones_like(x)
    for name in ("gelu_bwd", "gelu_tanh_bwd", "silu_bwd"):
        got = _call(host_lib, name, np.float64, g, x)
        np.testing.assert_allclose(got, [0, 0, 0, 1, 1], atol=1e-12, err_msg=name)
    np.testing.assert_allclose(_call(host_lib, "softsign_fwd", np.float64, np.array([-np.inf, np.inf])),
                               [-1, 1])
    np.testing.assert_allclose(_call(host_lib, "softsign_bwd", np.float64, g, x),
                               [0, 1e-60, 1 / 101**2, 1 / 101**2, 1e-60], rtol=1e-12)


# ---------------------------------------------------------------- switch, masks, packaging


def test_fusion_switch():
    assert kernels.enabled()
    with gg.fused(False):
        assert not kernels.enabled()
        with gg.fused(True):
            assert kernels.enabled()
        assert devices.fused("sigmoid_bwd", np) is None
    assert devices.fused("sigmoid_bwd", np) is None  # the CPU never takes a kernel
    strict = devices.get("strict").xp  # the strict test device takes the kernels' launchers
    assert devices.fused("sigmoid_bwd", strict) is not None
    with gg.fused(False):
        assert devices.fused("sigmoid_bwd", strict) is None
    assert kernels.lookup("sigmoid_bwd", strict) is not None
    assert kernels.lookup("nonesuch", strict) is None


def test_gpugrad_fused_environment_variable(monkeypatch):
    monkeypatch.setenv("GPUGRAD_FUSED", "0")
    assert not kernels.enabled()
    monkeypatch.setenv("GPUGRAD_FUSED", "1")
    assert kernels.enabled()


def test_every_activation_has_its_launchers():
    activation_kernels = {name.rsplit("_", 1)[0] for name, s in kernels.specs().items()
                          if s.function in ("act_fwd", "act_bwd")}
    for name, (a, _) in DECLARED_KERNELS.items():
        assert kernels.lookup(f"{name}_fwd", np) is not None
        assert a.backward is None or kernels.lookup(f"{name}_bwd", np) is not None
    assert activation_kernels == set(DECLARED_KERNELS)


@pytest.mark.parametrize("n", [1, 31, 32, 33, 1000])
def test_mask_packs_one_bit_per_element(n, device):
    xp = devices.get(device).xp
    bits = np.random.default_rng(n).random(n) > 0.5
    words = kernels.pack_mask(xp, xp.asarray(bits))
    assert words.dtype == np.uint32 and words.nbytes == 4 * ((n + 31) // 32)
    expected = sum(int(b) << i for i, b in enumerate(bits[:32]))
    assert int(words[0]) == expected  # element i at bit i of word i // 32, as the kernel writes
    assert np.array_equal(host(kernels.unpack_mask(xp, words, (n,))), bits)


def test_relu_saves_a_mask_not_its_input(device):
    x = gg.randn(1000, device=device, requires_grad=True)
    for f in (gg.relu, lambda t: gg.leaky_relu(t, 0.2)):
        with gg.autograd.record():
            y = f(x)
        saved = y._node.saved
        assert list(saved) == ["mask"] and saved["mask"].nbytes == 4 * 32
        y.backward()
        expected = np.where(host(x) > 0, 1.0, 0.0 if f is gg.relu else 0.2)
        np.testing.assert_allclose(host(x.grad), expected)
    y = gg.relu(x)  # outside record(): no mask is made
    assert y._node is None


def test_installed_package_ships_the_kernel_sources_and_the_tests():
    try:
        files = importlib.metadata.files("gpugrad") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("gpugrad is not installed here (run from the source tree with PYTHONPATH); "
                    "the wheel's contents are checked where it is installed (as in .ci/run)")
    names = {str(f).replace("\\", "/") for f in files}
    if "gpugrad/__init__.py" not in names:
        pytest.skip("gpugrad is installed in editable mode here; the wheel's contents are "
                    "checked where it is installed from a wheel (as in .ci/run)")
    for src in kernels.sources() + ["activations.cuh"]:
        assert f"gpugrad/_kernels/{src}" in names, f"{src} is missing from the wheel"
    for test in ("conftest.py", "test_ops.py", "host_shim.cpp"):
        assert f"gpugrad/_tests/{test}" in names, f"{test} is missing from the wheel"


def test_the_wheel_check_skips_with_its_reason_where_gpugrad_is_not_installed(monkeypatch):
    """Run from a source tree (PYTHONPATH, as on a lent GPU machine) there is no installed
    distribution to look into: that is a skip with its reason, not a failure."""
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", not_installed)
    with pytest.raises(pytest.skip.Exception, match="gpugrad is not installed here"):
        test_installed_package_ships_the_kernel_sources_and_the_tests()


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
    assert not gate("sigmoid_fwd", np.ones(4, np.float16))        # no half kernels
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
