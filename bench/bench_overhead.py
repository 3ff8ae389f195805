"""The framework's own time per op: a chain of 100 tanh on 16 elements, unrecorded, recorded,
and recorded with backward, gpugrad beside PyTorch.

    pytest bench/bench_overhead.py --benchmark-only

`gpugrad bench overhead` runs the same cases and prints microseconds per op and gpugrad / torch.
"""

import pytest

import gpugrad as gg
from gpugrad.app.bench.suites import overhead

DEVICE = gg.default_device()
N_OPS = 100


@pytest.mark.parametrize("impl", ["gpugrad", "torch"])
@pytest.mark.parametrize("mode", ["no grad", "record", "record + backward"])
def bench_overhead(timed_on_device, mode, impl):
    cases = overhead.overhead_cases(N_OPS, DEVICE)
    if (impl, mode) not in cases:
        pytest.skip("PyTorch is not installed (pip install torch==2.13.0)")
    timed_on_device(cases[impl, mode], ops=N_OPS)
