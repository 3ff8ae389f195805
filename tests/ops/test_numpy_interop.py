"""NumPy's functions on tensors: np.<name>(t) runs gg.<name>(t), recorded and differentiable,
on the tensor's device; or it raises a TypeError that names what to call instead. Never a host
copy of a device tensor, never a result that silently left the graph."""

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import ops
from gpugrad import tensors
from conftest import host

R = np.random.default_rng(7)
A = R.standard_normal((2, 3))
B = R.standard_normal((2, 3))
C = R.standard_normal((3, 4))
POS = R.uniform(0.5, 2.0, (2, 3))
H = R.standard_normal((2, 3))  # host data beside a tensor
H_POS = R.uniform(0.5, 2.0, (2, 3))
H_LEFT = R.standard_normal((4, 2))

# (label, NumPy's call, the gg call it must equal, its inputs as host data)
# fmt: off
DISPATCHED = [
    ("tanh",               np.tanh,                                 gg.tanh,                       (A,)),
    ("exp",                np.exp,                                  gg.exp,                        (A,)),
    ("exp + 1",            lambda a: np.exp(a) + 1,                 lambda a: gg.exp(a) + 1,       (A,)),
    ("abs",                np.abs,                                  gg.abs,                        (A,)),
    ("sqrt",               np.sqrt,                                 gg.sqrt,                       (POS,)),
    ("negative",           np.negative,                             gg.negative,                   (A,)),
    ("square",             np.square,                               gg.square,                     (A,)),
    ("add",                np.add,                                  gg.add,                        (A, B)),
    ("subtract",           np.subtract,                             gg.subtract,                   (A, B)),
    ("multiply",           np.multiply,                             gg.multiply,                   (A, B)),
    ("true_divide",        np.true_divide,                          gg.divide,                     (A, POS)),
    ("power",              lambda a: np.power(a, 3.0),              lambda a: gg.power(a, 3.0),    (A,)),
    ("maximum(t, 0)",      lambda a: np.maximum(a, 0),              lambda a: gg.maximum(a, 0),    (A,)),
    ("minimum",            np.minimum,                              gg.minimum,                    (A, B)),
    ("matmul",             np.matmul,                               gg.matmul,                     (A, C)),
    ("dot",                np.dot,                                  gg.dot,                        (A, C)),
    ("sum",                np.sum,                                  gg.sum,                        (A,)),
    ("sum axis keepdims",  lambda a: np.sum(a, axis=0, keepdims=True),
                           lambda a: gg.sum(a, axis=0, keepdims=True),                             (A,)),
    ("sum axis by place",  lambda a: np.sum(a, 1),                  lambda a: gg.sum(a, axis=1),   (A,)),
    ("sum out/dtype None", lambda a: np.sum(a, dtype=None, out=None), gg.sum,                      (A,)),
    ("mean axis 0",        lambda a: np.mean(a, axis=0),            lambda a: gg.mean(a, axis=0),  (A,)),
    ("max axis 1",         lambda a: np.max(a, axis=1),             lambda a: gg.max(a, axis=1),   (A,)),
    ("amax",               np.amax,                                 gg.max,                        (A,)),
    ("amin axis 0",        lambda a: np.amin(a, 0),                 lambda a: gg.min(a, axis=0),   (A,)),
    ("concatenate",        lambda a, b: np.concatenate([a, b]),     lambda a, b: gg.concatenate([a, b]), (A, B)),
    ("concatenate axis 1", lambda a, b: np.concatenate((a, b), axis=1),
                           lambda a, b: gg.concatenate((a, b), axis=1),                            (A, B)),
    ("stack",              lambda a, b: np.stack([a, b], axis=1),   lambda a, b: gg.stack([a, b], axis=1), (A, B)),
    ("where",              lambda a, b: np.where(a > b, a, b),      lambda a, b: gg.where(a > b, a, b), (A, B)),
    ("transpose",          np.transpose,                            gg.transpose,                  (A,)),
    ("reshape",            lambda a: np.reshape(a, (3, 2)),         lambda a: gg.reshape(a, (3, 2)), (A,)),
    ("clip",               lambda a: np.clip(a, -0.5, 0.5),         lambda a: gg.clip(a, -0.5, 0.5), (A,)),
    ("clip min= max=",     lambda a: np.clip(a, min=-0.5, max=0.5), lambda a: gg.clip(a, -0.5, 0.5), (A,)),
    ("linalg.norm",        np.linalg.norm,                          gg.norm,                       (A,)),
    ("take",               lambda a: np.take(a, [0, 2, 2], axis=1), lambda a: gg.take(a, [0, 2, 2], axis=1), (A,)),
    ("ndarray + tensor",   lambda a: H + a,                         lambda a: gg.add(H, a),        (A,)),
    ("tensor + ndarray",   lambda a: a + H,                         lambda a: gg.add(a, H),        (A,)),
    ("ndarray - tensor",   lambda a: H - a,                         lambda a: gg.subtract(H, a),   (A,)),
    ("ndarray * tensor",   lambda a: H * a,                         lambda a: gg.multiply(H, a),   (A,)),
    ("ndarray / tensor",   lambda a: H / a,                         lambda a: gg.divide(H, a),     (POS,)),
    ("ndarray ** tensor",  lambda a: H_POS ** a,                    lambda a: gg.power(H_POS, a),  (A,)),
    ("ndarray @ tensor",   lambda a: H_LEFT @ a,                    lambda a: gg.matmul(H_LEFT, a), (A,)),
    ("np scalar * tensor", lambda a: np.float64(2.5) * a,           lambda a: gg.multiply(np.float64(2.5), a), (A,)),
    ("maximum(ndarray, t)", lambda a: np.maximum(H, a),             lambda a: gg.maximum(H, a),    (A,)),
    ("concatenate ndarray", lambda a: np.concatenate([H, a]),       lambda a: gg.concatenate([H, a]), (A,)),
]
# fmt: on


def _tensors(data, device):
    return [gg.tensor(x, dtype="float64", device=device) for x in data]


def _gradients(f, xs):
    return gg.grad(lambda *args: f(*args).sum(), argnums=tuple(range(len(xs))))(*xs)


@pytest.mark.parametrize("label, np_call, gg_call, data", DISPATCHED,
                         ids=[c[0] for c in DISPATCHED])
def test_numpy_call_is_the_gg_call_in_values_and_gradients(device, label, np_call, gg_call, data):
    xs = _tensors(data, device)
    got, want = np_call(*xs), gg_call(*xs)
    assert type(got) is gg.Tensor and got.device == device
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(host(got), host(want), rtol=1e-12, atol=0)
    for g_np, g_gg in zip(_gradients(np_call, xs), _gradients(gg_call, xs)):
        assert g_np.device == device
        np.testing.assert_allclose(host(g_np), host(g_gg), rtol=1e-12, atol=0)


def test_tanh_under_record_keeps_the_graph(device):
    x = gg.tensor(A, dtype="float64", requires_grad=True)
    with gg.autograd.record():
        y = np.tanh(x)
        z = np.sum(y * y)
    assert isinstance(y, gg.Tensor) and y.requires_grad and not y.is_leaf
    z.backward()
    t = np.tanh(A)
    np.testing.assert_allclose(host(x.grad), 2 * t * (1 - t * t), rtol=1e-12)


def test_comparisons_and_logic_dispatch_to_the_constants(device):
    a, b = _tensors((A, B), device)
    for got, want in [(H == a, gg.equal(H, a)), (H < a, gg.less(H, a)),
                      (np.greater_equal(a, b), gg.greater_equal(a, b)),
                      (np.logical_and(a > 0, b > 0), gg.logical_and(a > 0, b > 0)),
                      (np.logical_not(a > 0), gg.logical_not(a > 0)),
                      (np.isfinite(a), gg.isfinite(a)), (np.sign(a), gg.sign(a))]:
        assert type(got) is gg.Tensor and got.device == device and got.dtype == want.dtype
        assert np.array_equal(host(got), host(want))


def test_einsum_dispatches_to_gg_einsum(device):
    a, c = _tensors((A, C), device)
    got = np.einsum("ij,jk->ik", a, c)
    want = gg.einsum("ij,jk->ik", a, c)
    assert type(got) is gg.Tensor and got.device == device
    np.testing.assert_allclose(host(got), host(want), rtol=1e-12)
    np.testing.assert_allclose(host(got), A @ C, rtol=1e-12)
    f_np = lambda a, c: np.einsum("ij,jk->ik", a, c)  # noqa: E731
    f_gg = lambda a, c: gg.einsum("ij,jk->ik", a, c)  # noqa: E731
    for g_np, g_gg in zip(_gradients(f_np, (a, c)), _gradients(f_gg, (a, c))):
        np.testing.assert_allclose(host(g_np), host(g_gg), rtol=1e-12)


def test_names_are_looked_up_at_call_time(device, monkeypatch):
    """An op added to gpugrad.ops after this module was written is found by its name."""
    calls = []

    def rint(x):
        calls.append("rint")
        return gg.negative(x)

    def ptp(x, axis=None, keepdims=False):
        calls.append(("ptp", axis, keepdims))
        return gg.max(x, axis=axis, keepdims=keepdims) - gg.min(x, axis=axis, keepdims=keepdims)

    x = gg.tensor(A, dtype="float64")
    with pytest.raises(TypeError, match="numpy.rint is not supported"):
        np.rint(x)
    monkeypatch.setattr(ops, "rint", rint, raising=False)
    monkeypatch.setattr(ops, "ptp", ptp, raising=False)
    monkeypatch.setattr(ops, "__all__", [*ops.__all__, "rint", "ptp"])
    assert np.array_equal(host(np.rint(x)), -A)
    assert np.array_equal(host(np.ptp(x, 1, keepdims=True)), np.ptp(A, 1, keepdims=True))
    assert calls == ["rint", ("ptp", 1, True)]
    with pytest.raises(TypeError, match=r"numpy.ptp\(\.\.\., out=<ndarray>\).*gg.ptp takes "
                                        r"axis, keepdims"):
        np.ptp(x, out=np.empty(3))


def test_shape_ndim_and_size_read_the_attributes(device):
    x = gg.zeros((2, 3), device=device)
    assert np.shape(x) == (2, 3) and np.ndim(x) == 2 and np.size(x) == 6 and np.size(x, 1) == 3


# (label, a call of NumPy on the tensors x (2, 3) and w (3, 4), what the TypeError must say)
# fmt: off
REFUSED = [
    ("ufunc out=",       lambda x, w: np.add(x, x, out=np.empty((2, 3))),  r"numpy\.add\(\.\.\., out=.*gg\.add"),
    ("ufunc out=tensor", lambda x, w: np.exp(w, out=(w,)),                  r"numpy\.exp\(\.\.\., out=.*gg\.exp"),
    ("function out=",    lambda x, w: np.sum(x, out=np.empty(())),          r"numpy\.sum\(\.\.\., out=<ndarray>\).*gg\.sum"),
    ("array += tensor",  lambda x, w: np.ones((2, 3)).__iadd__(x),          r"numpy\.add\(\.\.\., out=.*array \+= tensor"),
    ("dtype=float64",    lambda x, w: np.sum(x, dtype=np.float64),         r"numpy\.sum\(\.\.\., dtype=float64\).*astype.*gg\.sum takes axis, keepdims"),
    ("ufunc dtype=",     lambda x, w: np.tanh(x, dtype="float64"),          r"numpy\.tanh\(\.\.\., dtype='float64'\).*astype"),
    ("mean dtype=",      lambda x, w: np.mean(x, 0, np.float32),            r"numpy\.mean\(\.\.\., dtype=float32\)"),
    ("where=",           lambda x, w: np.sum(x, where=np.ones((2, 3), bool)), r"numpy\.sum\(\.\.\., where=<ndarray>\).*gg\.where"),
    ("ufunc where=",     lambda x, w: np.add(x, 1, where=True),             r"numpy\.add\(\.\.\., where=True\)"),
    ("casting=",         lambda x, w: np.add(x, 1, casting="unsafe"),       r"numpy\.add\(\.\.\., casting='unsafe'\).*gg\.add takes no options"),
    ("initial=",         lambda x, w: np.max(x, initial=0.0),               r"numpy\.max\(\.\.\., initial=0\.0\).*gg\.max takes axis, keepdims"),
    ("order=",           lambda x, w: np.reshape(x, (6,), order="F"),       r"numpy\.reshape\(\.\.\., order='F'\).*gg\.reshape takes shape"),
    ("subok=",           lambda x, w: np.broadcast_to(x, (2, 2, 3), subok=True), r"numpy\.broadcast_to\(\.\.\., subok=True\)"),
    ("mode=",            lambda x, w: np.take(x, [0], mode="clip"),         r"numpy\.take\(\.\.\., mode='clip'\).*gg\.take takes axis"),
    ("add.reduce",       lambda x, w: np.add.reduce(x),                     r"numpy\.add\.reduce is not supported.*gg\.sum\(t, axis="),
    ("maximum.reduce",   lambda x, w: np.maximum.reduce(x, axis=1),         r"numpy\.maximum\.reduce is not supported.*gg\.max\(t, axis="),
    ("add.accumulate",   lambda x, w: np.add.accumulate(x),                 r"numpy\.add\.accumulate is not supported"),
    ("add.at",           lambda x, w: np.add.at(x, [0], 1.0),               r"numpy\.add\.at is not supported.*in place"),
    ("multiply.outer",   lambda x, w: np.multiply.outer(x, w),              r"numpy\.multiply\.outer is not supported.*gg\.multiply"),
    ("fft.fft",          lambda x, w: np.fft.fft(x),                        r"numpy\.fft\.fft is not supported.*t\.numpy\(\)"),
    ("linalg.svd",       lambda x, w: np.linalg.svd(x),                     r"numpy\.linalg\.svd is not supported.*no svd function.*t\.numpy\(\)"),
    ("unique",           lambda x, w: np.unique(x),                         r"numpy\.unique is not supported.*no unique function"),
    ("allclose",         lambda x, w: np.allclose(x, x),                    r"numpy\.allclose is not supported"),
    ("emath.sqrt",       lambda x, w: np.emath.sqrt(x),                     r"numpy\..*sqrt is not supported.*no equivalent"),
    ("ufunc ldexp",      lambda x, w: np.ldexp(x, 2),                       r"numpy\.ldexp is not supported.*no ldexp function"),
    ("ndarray // t",     lambda x, w: np.ones((2, 3)) // x,                 r"numpy\.floor_divide is not supported"),
    ("where(cond)",      lambda x, w: np.where(x > 0),                      r"numpy\.where with 1 input\(s\) is not supported.*gg\.where takes 3"),
]
# fmt: on


@pytest.mark.parametrize("label, call, message", REFUSED, ids=[c[0] for c in REFUSED])
def test_what_gpugrad_lacks_is_refused_by_name(device, label, call, message):
    x = gg.tensor(A, device=device, requires_grad=True)
    w = gg.tensor(C, device=device)
    with gg.autograd.record():
        with pytest.raises(TypeError, match=message):
            call(x, w)
    assert np.array_equal(host(x), A)  # nothing was written into


# NumPy calls that dispatch, each as a function of a (2, 3) tensor
ON_THE_DEVICE = [c for c in DISPATCHED if len(c[3]) == 1]


@pytest.mark.parametrize("label, np_call, gg_call, data", ON_THE_DEVICE,
                         ids=[c[0] for c in ON_THE_DEVICE])
def test_a_strict_tensor_never_becomes_an_ndarray(label, np_call, gg_call, data):
    """The strict device stands in for CUDA: its arrays refuse NumPy, so a dispatch that went
    through the host would fail here, and one that returned an ndarray is caught."""
    x = gg.tensor(data[0], dtype="float64", device="strict")
    out = np_call(x)
    assert type(out) is gg.Tensor and out.device == "strict"
    assert type(out.data) is not np.ndarray


@pytest.mark.parametrize("label, call, message", REFUSED, ids=[c[0] for c in REFUSED])
def test_a_strict_tensor_is_refused_by_gpugrad_not_by_a_host_copy(label, call, message):
    x = gg.tensor(A, device="strict")
    w = gg.tensor(C, device="strict")
    with pytest.raises(TypeError, match=message) as info:
        call(x, w)
    assert "not supported on gpugrad tensors" in str(info.value)


def test_explicit_conversion_is_unchanged():
    x = gg.tensor(A, dtype="float64", device="cpu", requires_grad=True)
    with gg.autograd.record():
        y = x * 2
    assert type(np.asarray(y)) is np.ndarray  # an explicit host copy: no graph, as documented
    np.testing.assert_array_equal(np.asarray(y), 2 * A)
    with pytest.raises(TypeError, match="implicitly"):
        np.asarray(gg.tensor(A, device="strict"))


def test_tensor_operators_do_not_go_through_numpy(device, monkeypatch):
    """t + u, t * 2, 2 - t: Tensor's own operators, which never meet NumPy's protocols."""
    def refuse(*args, **kwargs):
        raise AssertionError("a Tensor operator went through a NumPy protocol")

    monkeypatch.setattr(tensors.Tensor, "__array_ufunc__", refuse)
    monkeypatch.setattr(tensors.Tensor, "__array_function__", refuse)
    a, b, c = _tensors((A, B, C), device)
    for y in (a + b, a * 2, 2 - a, a / b, -a, a @ c, a ** 2, a > b, a.sum(axis=0), a.T, a[0]):
        assert type(y) is gg.Tensor
