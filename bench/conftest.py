import pytest

import gpugrad as gg
from gpugrad import devices


@pytest.fixture
def timed_on_device(benchmark):
    """timed_on_device(fn, **info): pytest-benchmark timing fn on the default device, waiting
    for the device inside the timed region (a GPU launch returns at once)."""
    device = gg.default_device()
    be = devices.get(device)

    def run(fn, **info):
        def timed():
            fn()
            be.synchronize()
        benchmark.extra_info.update(device=device, **info)
        benchmark(timed)
    return run
