"""The CPU's numba activations (gpugrad/ops/activation_numba.py): taken where they should be
(float32 NumPy arrays they can read flat, numba installed, GPUGRAD_NUMBA not 0) and nowhere
else, with the formulas' values at the edges and float32 accuracy against the float64
formulas. Skipped, with the reason, where numba is not installed (CI installs it: the test
extra)."""

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.devices.cuda import references as ref
from gpugrad.ops import activation_numba
from gpugrad.ops.activation import ACTIVATIONS

CASES = [("relu", {}), ("leaky_relu", {"negative_slope": 0.2}), ("elu", {"alpha": 0.3}),
         ("gelu", {"approximate": "none"}), ("gelu", {"approximate": "tanh"}), ("silu", {}),
         ("softplus", {"beta": 2.0, "threshold": 5.0}), ("sigmoid", {}), ("tanh", {}),
         ("softsign", {}), ("hardswish", {})]
EDGES = np.array([0.0, -0.0, 1e-30, -1e-30, 1e-40, 1.0, -1.0, 2.5, 3.0, -3.0, 6.0, 9.5, -9.5,
                  20.0, -20.0, 88.7, -88.7, 100.0, -100.0, 104.0, -104.0, 1e4, -1e4, 1e30,
                  -1e30, 3e38, -3e38, np.inf, -np.inf, np.nan], np.float32)
# max error of the numba kernels in float32 against the float64 formulas, in ulps of
# max(|reference|, 1), for |g| <= 1 (bench/results/2026-12-07-cpu-numba-activations measured
# <= 8.2, silu's backward, as the NumPy formulas' in float32)
ULPS = 10
# kernels one forward and backward take: tanh's forward is NumPy's own loop
_KERNELS_PER_STEP = {name: 1 if name == "tanh" else 2 for name, _ in CASES}


@pytest.fixture
def numba_on(monkeypatch):
    """numba's kernels on, for arrays of every size (the tests' arrays are small)."""
    monkeypatch.setenv("GPUGRAD_NUMBA", "1")
    monkeypatch.setattr(activation_numba, "SMALLEST", 0)
    if not activation_numba.enabled():
        pytest.skip(f"numba kernels unavailable: {activation_numba.status()}; "
                    f"pip install 'gpugrad[fast]'")


def _op(name, p, x, g):
    """y and dx (from g) of the op on CPU tensors, and how many numba kernel calls they took."""
    before = sum(activation_numba.calls.values())
    t = gg.tensor(x, requires_grad=True, device="cpu")  # the CPU's path, whatever the default
    with gg.autograd.record():
        y = getattr(gg, name)(t, **p)
    y.backward(gg.tensor(g, device="cpu"))
    return y.numpy(), t.grad.numpy(), sum(activation_numba.calls.values()) - before


def _formulas(name, p, x, g):
    a = ACTIVATIONS[name]
    if a.saves == "mask":
        slope = p.get("negative_slope", 0.0)
        bits = ref.relu_mask(np, x) if name == "relu" else ref.leaky_relu_mask(np, x)
        return a.forward(np, x, **p), ref._through_bits(np, g, bits, slope)
    y = a.forward(np, x, **p)
    return y, a.backward(np, g, y if a.saved(p) == "y" else x, **p)


def _assert_close_and_special(got, want, ulps):
    assert got.dtype == want.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)])
    fin = np.isfinite(want)
    scale = np.spacing(np.maximum(np.abs(want[fin]), 1).astype(np.float32))
    assert np.all(np.abs(got[fin].astype(np.float64) - want[fin]) <= ulps * scale)


@pytest.mark.parametrize("name, p", CASES, ids=str)
def test_the_kernels_keep_the_formulas_edges(numba_on, name, p):
    """+-0, denormals, the branch points, overflow thresholds, +-inf and NaN give the float64
    formulas' values, rounded; with g = inf, the float32 formulas' zeros, NaNs and signs (a
    tiny sigmoid or sech^2 may be a denormal in one and 0 in the other: inf or 0)."""
    g = np.linspace(-1, 1, EDGES.size, dtype=np.float32)
    with np.errstate(all="ignore"):
        y, dx, taken = _op(name, p, EDGES, g)
        want_y, want_dx = (a.astype(np.float32) for a in _formulas(
            name, p, EDGES.astype(np.float64), g.astype(np.float64)))
        _, dx_inf, _ = _op(name, p, EDGES, np.full(EDGES.size, np.inf, np.float32))
        want_inf = _formulas(name, p, EDGES, np.full(EDGES.size, np.inf, np.float32))[1]
    assert taken == _KERNELS_PER_STEP[name]
    _assert_close_and_special(y, want_y, ULPS)
    _assert_close_and_special(dx, want_dx, ULPS)
    np.testing.assert_array_equal(dx_inf[want_inf == 0], 0)  # the branches' hard zeros
    both = ~np.isnan(want_inf) & ~np.isnan(dx_inf)
    np.testing.assert_array_equal(np.sign(dx_inf[both]), np.sign(want_inf[both]))


@pytest.mark.parametrize("name, p", CASES, ids=str)
def test_float32_accuracy_against_the_float64_formulas(numba_on, name, p):
    rng = np.random.default_rng(0)
    x = np.concatenate([3 * rng.standard_normal(4096), rng.uniform(-25, 25, 4096),
                        rng.choice([-1, 1], 512) * 10 ** rng.uniform(-30, 30, 512)]).astype(np.float32)
    g = rng.uniform(-1, 1, x.size).astype(np.float32)
    y, dx, taken = _op(name, p, x, g)
    with np.errstate(over="ignore"):
        want_y, want_dx = (a.astype(np.float32) for a in _formulas(
            name, p, x.astype(np.float64), g.astype(np.float64)))
    assert taken == _KERNELS_PER_STEP[name]
    _assert_close_and_special(y, want_y, ULPS)
    _assert_close_and_special(dx, want_dx, ULPS)


def test_relu_masks_are_the_references_bit_for_bit(numba_on):
    """The 1-bit mask kernels on sizes around a word, NaN, +-0 and infinite g: the mask words,
    y and dx equal relu_fwd_mask's and relu_bwd_mask's / relu_bwd_out's references."""
    kernel = activation_numba.kernel
    rng = np.random.default_rng(1)
    for n in (1, 31, 32, 33, 100):
        x = rng.standard_normal(n).astype(np.float32)
        x[rng.integers(0, n, 3)] = np.array([np.nan, -0.0, 0.0], np.float32)[: min(3, n)]
        g = np.where(rng.random(n) < 0.3, np.float32(np.inf), rng.standard_normal(n)).astype(np.float32)
        for slope in (0.0, 0.2):
            y, mask = kernel("relu_fwd_mask", np, x)(x, slope)
            want_y, want_mask = ref.forward_with_mask(np, x, slope)
            assert y.tobytes() == want_y.tobytes() and np.array_equal(mask, want_mask)
            with np.errstate(invalid="ignore"):
                dx = kernel("relu_bwd_mask", np, g, mask)(g, mask, slope)
                np.testing.assert_array_equal(dx, ref.backward_from_mask(np, g, mask, slope))
                for leaky in (False, True):
                    got = kernel("relu_bwd_out", np, g, y)(g, y, slope, leaky)
                    np.testing.assert_array_equal(got, ref.backward_from_output(np, g, y, slope, leaky))


@pytest.mark.parametrize("name, p", CASES, ids=str)
def test_taken_for_float32_whatever_the_layout(numba_on, name, p):
    """float64 and 16-bit floats keep the formulas; every float32 array takes the kernels,
    a strided view and a g that broadcasts against x too (copied flat first), with the values
    of the contiguous arrays bit for bit: how arrays lie never changes a value."""
    x = np.linspace(-4, 4, 24, dtype=np.float32).reshape(4, 6)
    assert _op(name, p, x.astype(np.float64), np.ones(x.shape))[2] == 0
    assert _op(name, p, x.astype(gg.bfloat16), np.ones(x.shape, gg.bfloat16))[2] == 0
    g = np.linspace(-1, 2, 24, dtype=np.float32).reshape(6, 4)
    y, dx, taken = _op(name, p, x.T, g)  # x.T: a view, not C-contiguous
    want_y, want_dx, _ = _op(name, p, np.ascontiguousarray(x.T), g)
    assert taken == _KERNELS_PER_STEP[name] and y.tobytes() == want_y.tobytes()
    assert dx.tobytes() == want_dx.tobytes()
    a = ACTIVATIONS[name]
    if a.saves != "mask":
        s = y if a.saved(p) == "y" else np.ascontiguousarray(x.T)
        row = g[:1]  # (1, 4) against s's (6, 4)
        before = sum(activation_numba.calls.values())
        got = getattr(gg, f"{name}_backward")(gg.tensor(row, device="cpu"), gg.tensor(s, device="cpu"), **p).numpy()
        want = getattr(gg, f"{name}_backward")(gg.tensor(np.repeat(row, 6, 0), device="cpu"), gg.tensor(s, device="cpu"), **p).numpy()
        assert sum(activation_numba.calls.values()) == before + 2
        assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("name, p", CASES, ids=str)
def test_a_0d_input(numba_on, name, p):
    y, dx, taken = _op(name, p, np.asarray(np.float32(0.7)), np.asarray(np.float32(2.0)))
    assert np.shape(y) == np.shape(dx) == () and taken == _KERNELS_PER_STEP[name]
    want_y, want_dx = _formulas(name, p, np.asarray(0.7), np.asarray(2.0))
    np.testing.assert_allclose([y, dx], [want_y, want_dx], rtol=1e-6)


@pytest.mark.parametrize("name, p", CASES, ids=str)
def test_gpugrad_numba_0_takes_the_formulas(numba_on, monkeypatch, name, p):
    """GPUGRAD_NUMBA=0: no kernel call, the formulas' values bit for bit."""
    monkeypatch.setenv("GPUGRAD_NUMBA", "0")
    x = np.linspace(-6, 6, 40, dtype=np.float32)
    g = np.linspace(1, 2, 40, dtype=np.float32)
    y, dx, taken = _op(name, p, x, g)
    want_y, want_dx = _formulas(name, p, x, g)
    assert taken == 0 and "GPUGRAD_NUMBA=0" in activation_numba.status()
    assert y.tobytes() == want_y.tobytes() and dx.tobytes() == want_dx.tobytes()


def test_the_strict_device_never_takes_it(numba_on):
    """The strict test device has its own arrays and the CUDA kernels' stand-ins: the numba
    kernels are for NumPy's arrays only (kernel() asks for NumPy's namespace, which CuPy's and
    the strict device's are not)."""
    before = sum(activation_numba.calls.values())
    for name, p in CASES:
        t = gg.ones((3, 5), device="strict", requires_grad=True)
        with gg.autograd.record():
            y = getattr(gg, name)(t, **p)
        y.backward()
    assert sum(activation_numba.calls.values()) == before


@pytest.mark.parametrize("name, p", CASES, ids=str)
def test_small_arrays_and_tanhs_forward_take_the_formulas(numba_on, monkeypatch, name, p):
    """Under SMALLEST elements a kernel call costs more than it saves: the formulas run, with
    their own values bit for bit; from SMALLEST on, the kernels (but for tanh's forward, whose
    NumPy loop is faster at every size)."""
    monkeypatch.setattr(activation_numba, "SMALLEST", 64)
    x = np.linspace(-6, 6, 63, dtype=np.float32)
    g = np.linspace(1, 2, 63, dtype=np.float32)
    y, dx, taken = _op(name, p, x, g)
    want_y, want_dx = _formulas(name, p, x, g)
    assert taken == 0 and y.tobytes() == want_y.tobytes() and dx.tobytes() == want_dx.tobytes()
    x, g = np.linspace(-6, 6, 64, dtype=np.float32), np.linspace(1, 2, 64, dtype=np.float32)
    assert _op(name, p, x, g)[2] == (1 if name == "tanh" else 2)
