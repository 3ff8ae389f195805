"""Activation backward kernels: gpugrad (fused on CUDA), the unfused CuPy composition, PyTorch's
own backward kernel, and a device copy, side by side.

    pytest bench/ --benchmark-only                  # on the default device
    GPUGRAD_DEVICE=cuda pytest bench/ --benchmark-only

The same cases drive `gpugrad bench kernels`, which adds GB/s and the ratio to copy bandwidth.
"""

import pytest

import gpugrad as gg
from gpugrad.app.bench.suites import kernels

DEVICE = gg.default_device()
SIZES = [2**16, 2**20] if DEVICE == "cpu" else [2**16, 2**20, 2**24]
IMPLS = ["gpugrad", "unfused", "torch", "copy"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("activation", sorted(kernels.activation_backwards()))
def bench_activation_backward(timed_on_device, activation, n, impl):
    cases, moved, _ = kernels.kernel_cases(activation, n, DEVICE)
    if impl not in cases:
        pytest.skip(f"{impl} does not run on {DEVICE} here" + (
            " (PyTorch is not installed)" if impl == "torch" else ""))
    timed_on_device(cases[impl], bytes_moved=moved)
