"""The strict test device keeps CuPy's rules, and the code paths it exists for behave on it:
host data to the default device, no implicit host conversion, the capturable matmul's plan."""

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import devices
from gpugrad.devices.cuda import cublas
from gpugrad.devices.cuda import kernels
from gpugrad.devices import strict
from gpugrad.engine import backward
from conftest import host

xp = strict.xp


def test_strict_arrays_refuse_implicit_conversion_and_numpy_operands():
    a = xp.asarray(np.arange(3.0))
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(a)
    with pytest.raises(TypeError, match="Unsupported type"):
        a + np.ones(3)
    with pytest.raises(TypeError, match="a NumPy array can be assigned into a device array "
                                        "only whole"):
        a[1:] = np.ones(2)
    a[:] = np.ones(3)  # whole assignment from the host is allowed, as in CuPy
    assert a.get().tolist() == [1, 1, 1] and isinstance(a.get(), np.ndarray)
    assert devices.device_of_array(a) == "strict"


def test_strict_reductions_and_indexing_give_device_arrays_like_cupy():
    a = xp.asarray(np.arange(6.0).reshape(2, 3))
    for r in (a.sum(), xp.max(a), a[1, 2], np.sum(a)):
        assert isinstance(r, xp.ndarray) and r.shape == ()
    assert float(a.sum()) == 15.0 and a[1, 2].item() == 5.0
    assert xp.ascontiguousarray(a.sum()).shape == (1,)  # as CuPy: the trap of kind 2


def test_host_data_goes_to_the_default_device_and_device_arrays_stay():
    with gg.device("strict"):
        for data in (np.ones(3, np.float64), [1.0, 2.0], 3.0):
            assert gg.tensor(data).device == "strict"
        assert gg.tensor(np.ones(3, np.float64)).dtype == np.float64  # arrays keep their dtype
    on_strict = xp.asarray(np.ones(2))
    with gg.device("cpu"):
        assert gg.tensor(on_strict).device == "strict"
        assert gg.tensor(on_strict, device="cpu").device == "cpu"


def test_kernel_stand_ins_check_the_launch_against_the_cuda_signature():
    k = xp.stand_in_kernel("activations.cu", "act_fwd<float, SigmoidFwd<float>>")
    x = xp.asarray(np.zeros(4, np.float32))
    y = xp.empty_like(x)
    with pytest.raises(TypeError, match="argument 2 must be a numpy int64 scalar"):
        k((1,), (256,), (x, y, 4, np.float32(0), np.float32(0)))
    with pytest.raises(TypeError, match="argument 0 must be a C-contiguous float array"):
        k((1,), (256,), (x.astype(np.float64), y, np.int64(4), np.float32(0), np.float32(0)))
    with pytest.raises(TypeError, match="argument 0 must be a C-contiguous"):
        k((1,), (256,), (xp.asarray(np.zeros(8, np.float32))[::2], y, np.int64(4),
                         np.float32(0), np.float32(0)))
    k((1,), (256,), (x, y, np.int64(4), np.float32(0), np.float32(0)))
    np.testing.assert_array_equal(y.get(), [0.5] * 4)


def test_every_launcher_runs_on_the_strict_device():
    for name in sorted(kernels.launchers()):
        assert devices.fused(name, xp) is not None, name


def _layouts(rng, shape, dtype):
    a = rng.standard_normal(shape).astype(dtype)
    yield a
    if a.ndim == 2:
        yield np.asfortranarray(a)  # the transpose of a contiguous array, as w.T
        yield np.repeat(a, 2, axis=1)[:, ::2]  # strided: copied first


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((1, 7), (7, 1)), ((4,), (4, 3)),
                                    ((3, 4), (4,)), ((5,), (5,)), ((0, 3), (3, 2)),
                                    ((2, 0), (0, 3))])
def test_capturable_matmul_plan_equals_numpy(shapes, dtype):
    """The cuBLAS plan (operand order, ops, leading dimensions) executed by a column-major
    gemm gives NumPy's matmul for every layout the capturable path takes."""
    rng = np.random.default_rng(0)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    for a in _layouts(rng, shapes[0], dtype):
        for b in _layouts(rng, shapes[1], dtype):
            got = cublas.matmul(xp, _device_view(a), _device_view(b), strict.gemm)
            assert got.shape == np.matmul(a, b).shape and got.dtype == dtype
            np.testing.assert_allclose(got.get(), np.matmul(a, b), **tol)


def _device_view(a):
    """A device array with the same layout (strides) as the host array a."""
    if a.flags.c_contiguous:
        return xp.asarray(a)
    if a.flags.f_contiguous:
        return xp.asarray(np.ascontiguousarray(a.T)).T
    return xp.asarray(np.repeat(a, 2, axis=1))[:, ::2]


def test_matmul_inside_a_capture_takes_the_capturable_path():
    a = gg.tensor(np.arange(6.0).reshape(2, 3), device="strict")
    b = gg.tensor(np.arange(3.0), device="strict")
    with devices.graph_step(capturing=True):
        with pytest.raises(NotImplementedError, match="cuBLAS API during stream capture"):
            xp.matmul(a.data, b.data)  # what CuPy does
        got = gg.matmul(a, b)
        with pytest.raises(devices.GraphStepError, match="capturable matmul takes 1-D and 2-D"):
            gg.matmul(gg.ones((2, 2, 3), device="strict"), b)
    np.testing.assert_allclose(host(got), [5.0, 14.0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_sum_of_squares_inside_a_capture_is_one_gemm_per_array(dtype, monkeypatch):
    """The L2 term's (and clip_grad_norm's) sum of squares: inside a graphed step each array's
    x . x is a gemm added into one output (alpha = the scale, beta = 1), with no kernel for the
    sum or the scaling; the value is the dot products' sum, scaled."""
    import collections

    be = devices.get("strict")
    rng = np.random.default_rng(0)
    host_arrays = [rng.standard_normal(s).astype(dtype) for s in ((3, 4), (5,), (2, 2, 2))]
    arrays = [xp.asarray(a) for a in host_arrays]
    expected = 0.3 * sum(float(np.vdot(a, a)) for a in host_arrays)
    gemms = []
    monkeypatch.setattr(be, "gemm", lambda *args: gemms.append(args[-2:]) or strict.gemm(*args))
    before = collections.Counter(strict.calls)
    with devices.graph_step(capturing=True):
        total = devices.sum_of_squares(xp, arrays, 0.3)
    calls = strict.calls - before
    assert total.shape == () and total.dtype == dtype
    assert gemms == [(0.3, 0.0), (0.3, 1.0), (0.3, 1.0)]  # (alpha, beta): the first writes
    assert not calls["add"] and not calls["multiply"], calls
    np.testing.assert_allclose(total.get(), expected, rtol=1e-6 if dtype == "float32" else 1e-13)
    eager = devices.sum_of_squares(xp, arrays, 0.3)  # outside a step: vdot, add, multiply
    np.testing.assert_allclose(eager.get(), expected, rtol=1e-6 if dtype == "float32" else 1e-13)


def test_the_kept_head_of_ones_is_not_made_inside_a_capture(monkeypatch):
    """A scalar loss's head of ones is kept per device and dtype, but not one made while a
    stream captures: its fill would run only when the graph does."""

    monkeypatch.setattr(backward, "_SCALAR_ONES", {})
    x = gg.tensor(np.arange(3.0), device="strict", requires_grad=True)
    with devices.graph_step(capturing=True):
        with gg.autograd.record():
            y = (x * x).sum()
        y.backward()
    assert backward._SCALAR_ONES == {}
    with gg.autograd.record():
        y = (x * x).sum()
    y.backward()
    assert list(backward._SCALAR_ONES) == [("strict", np.dtype("float64"))]
    np.testing.assert_array_equal(host(x.grad), [0.0, 2.0, 4.0])


def test_empty_arrays_hold_garbage_as_cupys_recycled_memory_does():
    """So that a launcher or op that reads memory it never wrote fails on the CPU too."""
    xp = strict.xp
    assert np.isnan(xp.empty((3, 2), np.float32).get()).all()
    assert (xp.empty_like(xp.asarray(np.zeros(5, np.int64))).get() == -1).all()
    assert (xp.empty(4, np.uint32).get() == np.iinfo(np.uint32).max).all()
    assert xp.empty((), np.float64).get().shape == ()


def test_strict_device_counts_its_allocations():
    with gg.memory.track("strict") as out:
        a = gg.zeros((256,), dtype="float64", device="strict")
        b = a.reshape(16, 16)  # a view allocates nothing
        del a, b
    assert out.peak == 256 * 8 and out.current == 0


def test_a_kernel_is_looked_up_once_per_dtype_then_taken_from_the_cache(monkeypatch):
    made = []
    real = xp.stand_in_kernel

    def counting(source, expression):
        made.append(expression)
        return real(source, expression)

    monkeypatch.setattr(kernels, "_functions", {})
    monkeypatch.setattr(xp, "stand_in_kernel", counting)
    for dtype in ("float32", "float32", "float64", "float32"):
        x = gg.tensor([0.5, -1.0], dtype=dtype, device="strict")
        with gg.fused(True):
            gg.sigmoid(x)
    assert made == ["act_fwd<float, SigmoidFwd<float>>", "act_fwd<double, SigmoidFwd<double>>"]
