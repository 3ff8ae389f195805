"""gg.einsum forward, and forward + backward, beside torch.einsum and NumPy's einsum.

    pytest bench/bench_einsum.py --benchmark-only

`gpugrad bench einsum` runs the same cases and prints gpugrad / torch.
"""

import pytest

import gpugrad as gg
from gpugrad.app.bench.suites import einsum

DEVICE = gg.default_device()


@pytest.mark.parametrize("impl", ["gpugrad", "torch", "numpy", "numpy optimize=True"])
@pytest.mark.parametrize("mode", ["forward", "forward + backward"])
@pytest.mark.parametrize("problem", sorted(einsum.PROBLEMS))
def bench_einsum(timed_on_device, problem, mode, impl):
    spec, shapes = einsum.PROBLEMS[problem]
    cases = einsum.einsum_cases(spec, shapes, DEVICE)
    if (impl, mode) not in cases:
        pytest.skip(f"no {impl} case for {mode} on {DEVICE} (NumPy times the forward on the CPU "
                    f"only; PyTorch may be missing: pip install torch==2.13.0)")
    timed_on_device(cases[impl, mode])
