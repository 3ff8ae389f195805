"""The jacobian suite: gg.jacobian in reverse and forward mode beside torch.func."""

import numpy as np

import gpugrad
from gpugrad import devices
from gpugrad.app.bench import table, torch_baseline
from gpugrad.app.bench.blocks import Blocks
from gpugrad.app.bench.yardstick import Yardstick


def jacobian_cases(m, n, device):
    """{impl: fn()} computing the Jacobian of f(x) = tanh(W x), W of shape (m, n), with
    gg.jacobian in both modes and (on the CPU, when installed) torch.func.jacrev/jacfwd."""
    rng = np.random.default_rng(m * n)
    w_host = rng.standard_normal((m, n)).astype(np.float32)
    x_host = rng.standard_normal(n).astype(np.float32)
    w, x = gpugrad.tensor(w_host, device=device), gpugrad.tensor(x_host, device=device)

    def f(v):
        return gpugrad.tanh(gpugrad.matmul(w, v))
    cases = {"gpugrad rev": lambda: gpugrad.jacobian(f, mode="rev")(x),
             "gpugrad fwd": lambda: gpugrad.jacobian(f, mode="fwd")(x)}
    if not devices.get(device).is_cuda:
        cases.update(torch_baseline.jacobian_cases(w_host, x_host))
    return cases


def jacobian_suite(device, quick=True, progress=None, yardstick=None):
    """gg.jacobian in reverse and forward mode beside torch.func.jacrev/jacfwd, for
    f(x) = tanh(W x) with W of shape (m, n): reverse mode costs m vjps, forward mode n jvps."""
    shapes = [(8, 64), (64, 8)] if quick else [(8, 64), (64, 8), (64, 64), (256, 16)]
    yardstick = yardstick if yardstick is not None else Yardstick()
    rows = []
    for i, (m, n) in enumerate(shapes):
        cases = jacobian_cases(m, n, device)
        pairs = {impl: (impl, f"torch jac{impl[-3:]}") for impl in cases
                 if impl.startswith("gpugrad") and f"torch jac{impl[-3:]}" in cases}
        blocks = Blocks(cases, device, blocks=3 if quick else 5, min_seconds=0.02,
                        yardstick=yardstick)
        verdicts = blocks.settle(list(pairs.values()))
        for impl in cases:
            row = {"suite": "jacobian", "shape (m, n)": f"({m}, {n})", "impl": impl,
                   "median ms": blocks.median(impl) * 1e3,
                   "gpugrad / torch": table.ratio_of(verdicts[pairs[impl]]) if impl in pairs else None}
            rows.append(table.with_verdicts(row, [verdicts[pairs[impl]]]) if impl in pairs
                        else table.with_turn_note(row, blocks, impl))
        if progress:
            progress(i + 1, len(shapes), f"jacobian {m}x{n}")
    return rows
