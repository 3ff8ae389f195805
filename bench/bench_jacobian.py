"""gg.jacobian in reverse and forward mode beside torch.func.jacrev/jacfwd, for f(x) = tanh(W x)
with W of shape (m, n).

    pytest bench/bench_jacobian.py --benchmark-only

`gpugrad bench jacobian` runs the same cases and prints gpugrad / torch per mode.
"""

import pytest

import gpugrad as gg
from gpugrad.app.bench import torch_baseline
from gpugrad.app.bench.suites import jacobian

DEVICE = gg.default_device()


@pytest.mark.parametrize("impl", ["gpugrad rev", "gpugrad fwd", "torch jacrev", "torch jacfwd"])
@pytest.mark.parametrize("shape", [(8, 64), (64, 8)])
def bench_jacobian(timed_on_device, shape, impl):
    cases = jacobian.jacobian_cases(*shape, DEVICE)
    if impl not in cases:
        pytest.skip("PyTorch is not installed (pip install torch==2.13.0)"
                    if torch_baseline.torch_or_none() is None else f"{impl} runs on the CPU only here")
    timed_on_device(cases[impl], shape=shape)
