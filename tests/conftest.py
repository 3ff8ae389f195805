import numpy as np
import pytest

import gpugrad as gg


def pytest_configure(config):
    # registered here too, for the copy of the tests that the wheel carries (gpugrad selftest)
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped with the reason when "
                                       "gg.cuda.is_available() is false)")


def pytest_collection_modifyitems(config, items):
    if gg.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"no CUDA GPU: {gg.cuda.unavailable_reason()}")
    for item in items:
        if item.get_closest_marker("cuda") is not None:  # not the folder tests/cuda/
            item.add_marker(skip)


@pytest.fixture
def device():
    """The device under test: 'cpu', or 'cuda:0' when run with GPUGRAD_DEVICE=cuda."""
    return gg.default_device()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def host(t):
    """A tensor's or a backend array's values as a NumPy array, copied explicitly from any
    device (never by implicit conversion, which CuPy and the strict device refuse)."""
    from gpugrad import devices

    if isinstance(t, gg.Tensor):
        return t.numpy()
    if devices.is_backend_array(t) and not isinstance(t, np.ndarray):
        return devices.get(devices.device_of_array(t)).to_host(t)
    return np.asarray(t)
