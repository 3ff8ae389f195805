"""The recurrent cells' kernels (kernels/recurrent.cu) against their unfused references, forward
and backward, in every float dtype; on the strict test device the launchers and the C
signatures run with NumPy stand-ins, so the two agree bit for bit there; on a GPU the kernels'
sigmoid and tanh may sit an ulp or two from NumPy's."""

import numpy as np
import pytest

import gpugrad as gg
from conftest import host
from test_fused import KERNEL_DEVICES

DTYPES = ["float32", "float64", gg.float16, gg.bfloat16]
# cell -> (its op, its projections' widths in units of hidden, its kernels)
CELLS = {"lstm": (gg.lstm_cell, [4], ("lstm_cell_fwd", "lstm_cell_bwd")),
         "gru": (gg.gru_cell, [3, 3], ("gru_cell_fwd", "gru_cell_bwd"))}


def _inputs(cell, rows, hidden, seed):
    rng = np.random.default_rng(seed)
    projections = [rng.standard_normal((rows, k * hidden)) * 3 for k in CELLS[cell][1]]
    state = rng.standard_normal((rows, hidden))
    return projections, state


def _run(cell, projections, state, dtype, kdev, strided):
    op = CELLS[cell][0]
    xs = [gg.tensor(a, dtype=dtype, device=kdev) for a in projections + [state]]
    if strided:  # every other column of a wider array: the launchers copy it contiguous
        xs = [gg.tensors.wrap(gg.tensor(np.repeat(host(x), 2, axis=-1), dtype=dtype,
                                        device=kdev).data[..., ::2], kdev) for x in xs]
    for x in xs:
        x.attach_grad()
    state_arg = xs.pop()
    args = (*xs, state_arg) if cell == "gru" else (xs[0], state_arg)
    with gg.autograd.record():
        y = op(*args)
    y.backward(gg.tensor(np.linspace(-1, 1, y.size).reshape(y.shape), dtype=dtype, device=kdev))
    return [host(y)] + [host(x.grad) for x in (*xs, state_arg)]


def _agree(a, b, dtype, kdev):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype
    if kdev == "strict":
        np.testing.assert_array_equal(a.astype(np.float64), b.astype(np.float64))
    else:
        tol = {"float64": 1e-12, "float32": 1e-5}.get(str(np.dtype(dtype)), 1e-2)
        np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=tol,
                                   atol=tol)


@pytest.mark.parametrize("kdev", KERNEL_DEVICES)
@pytest.mark.parametrize("strided", [False, True])
@pytest.mark.parametrize("rows", [0, 1, 33])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_fused_cells_equal_the_unfused(cell, dtype, rows, strided, kdev):
    from gpugrad.devices import strict_array

    projections, state = _inputs(cell, rows, 5, rows)
    projections[0][:1, :3] = [40.0, -40.0, 0.0]  # saturated gates
    before = dict(strict_array.calls)
    with gg.fused(True):
        fused = _run(cell, projections, state, dtype, kdev, strided)
    if kdev == "strict" and rows:
        for kernel in CELLS[cell][2]:
            assert strict_array.calls[f"kernel {kernel}"] > before.get(f"kernel {kernel}", 0)
    with gg.fused(False):
        unfused = _run(cell, projections, state, dtype, kdev, strided)
    for k, (a, b) in enumerate(zip(fused, unfused)):
        _agree(a, b, dtype, kdev)


@pytest.mark.parametrize("kdev", KERNEL_DEVICES)
@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_a_recurrent_layer_takes_the_fused_cell(name, kdev):
    """A layer's step is one cell op, whose kernels run forward and backward."""
    from gpugrad.devices import strict_array

    gg.seed(0)
    layer = getattr(gg.nn, name)(3, 4, device=kdev)
    x = gg.tensor(np.random.default_rng(0).standard_normal((5, 2, 3)), device=kdev)
    before = dict(strict_array.calls)
    with gg.fused(True), gg.autograd.record():
        out, _ = layer(x)
        loss = out.sum()
    loss.backward()
    if kdev == "strict":
        kernel = name.lower() + "_cell"
        for suffix in ("fwd", "bwd"):
            key = f"kernel {kernel}_{suffix}"
            assert strict_array.calls[key] - before.get(key, 0) == 5
    assert all(np.isfinite(host(p.grad)).all() for p in layer.parameters())
