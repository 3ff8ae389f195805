"""The CUDA kernels without a GPU (nvcc to PTX; the header's math on the host against NumPy),
the fusion switch and mask accounting. Fused against unfused, on a GPU and on the strict test
device: tests/cuda/test_fused.py."""

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
from gpugrad.devices.cuda import references as ref
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


def test_bfloat16_rounds_as_ml_dtypes(host_lib):
    """The kernels' float -> bfloat16 store is round to nearest, ties to even, as ml_dtypes
    (the CPU path) rounds: over every exponent, subnormals, exact ties, the largest floats
    (which round to inf), inf and NaN; widening back is exact."""
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    ties = (rng.integers(0, 2**16, 1000, dtype=np.uint64).astype(np.uint32) << 16) | 0x8000
    edges = np.array([0, 0x80000000, 1, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000,
                      0x7FC00000, 0xFFC00001, 0x7F800001, 0x00008000, 0x3F808000, 0x3F818000],
                     np.uint32)
    x = np.concatenate([bits, ties, edges]).view(np.float32)
    out = np.empty(x.size, np.uint16)
    f32 = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
    u16 = np.ctypeslib.ndpointer(np.uint16, flags="C_CONTIGUOUS")
    host_lib.bfloat16_round.argtypes = [f32, u16, ctypes.c_long]
    host_lib.bfloat16_round(x, out, x.size)
    with np.errstate(all="ignore"):
        expected = x.astype(gg.bfloat16)
    nan = np.isnan(x)
    np.testing.assert_array_equal(out[~nan], expected.view(np.uint16)[~nan])
    assert np.isnan(out.view(gg.bfloat16)[nan].astype(np.float32)).all()
    np.testing.assert_array_equal(np.signbit(out.view(gg.bfloat16)[nan]), np.signbit(x[nan]))
    back = np.empty(x.size, np.float32)
    host_lib.bfloat16_widen.argtypes = [u16, f32, ctypes.c_long]
    host_lib.bfloat16_widen(out, back, x.size)
    np.testing.assert_array_equal(back[~nan], expected[~nan].astype(np.float32))


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
    for test in ("conftest.py", "ops/test_ops.py", "cuda/host_shim.cpp", "engine/fuzz.py"):
        assert f"gpugrad/_tests/{test}" in names, f"{test} is missing from the wheel"


def test_the_wheel_check_skips_with_its_reason_where_gpugrad_is_not_installed(monkeypatch):
    """Run from a source tree (PYTHONPATH, as on a lent GPU machine) there is no installed
    distribution to look into: that is a skip with its reason, not a failure."""
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", not_installed)
    with pytest.raises(pytest.skip.Exception, match="gpugrad is not installed here"):
        test_installed_package_ships_the_kernel_sources_and_the_tests()


# ---------------------------------------------------------------- the recurrent cells' header

# name -> (the reference, the shapes of its arrays for a state of (rows, hidden), the shape of
# the result as the kernel writes it)
CELLS = {
    "lstm_cell_fwd": (ref.lstm_cell, lambda r, h: [(r, h), (r, 4 * h)], lambda r, h: (2, r, h)),
    "lstm_cell_bwd": (ref.lstm_cell_grads, lambda r, h: [(r, h), (r, 4 * h), (2, r, h)],
                      lambda r, h: (r, 5 * h)),
    "gru_cell_fwd": (ref.gru_cell, lambda r, h: [(r, h), (r, 3 * h), (r, 3 * h)],
                     lambda r, h: (r, h)),
    "gru_cell_bwd": (ref.gru_cell_grads, lambda r, h: [(r, h), (r, 3 * h), (r, 3 * h), (r, h)],
                     lambda r, h: (r, 7 * h)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(CELLS))
def test_recurrent_header_matches_the_references(host_lib, name, dtype):
    """recurrent.cuh, indexed as recurrent.cu indexes the gates' blocks, against the NumPy
    references (the CPU path and the strict device's stand-ins), with saturated gates."""
    reference, shapes, out_shape = CELLS[name]
    rows, hidden = 5, 7
    rng = np.random.default_rng(3)
    arrays = [(rng.standard_normal(s) * 4).astype(dtype) for s in shapes(rows, hidden)]
    arrays[1].flat[:3] = [40.0, -40.0, 0.0]  # gates pinned at 0 and 1
    out = np.empty(out_shape(rows, hidden), dtype)
    ptr = np.ctypeslib.ndpointer(dtype=dtype, flags="C_CONTIGUOUS")
    fn = getattr(host_lib, f"{name}_{'f32' if dtype == np.float32 else 'f64'}")
    fn.argtypes = [ptr] * (len(arrays) + 1) + [ctypes.c_long, ctypes.c_long]
    fn(*arrays, out, rows * hidden, hidden)
    expected = reference(np, *(a.astype(np.float64) for a in arrays))
    np.testing.assert_allclose(out, expected, **TOL[dtype])
