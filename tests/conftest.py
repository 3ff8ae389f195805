import numpy as np
import pytest

import gpugrad as gg


def pytest_collection_modifyitems(config, items):
    if gg.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"no CUDA GPU: {gg.cuda.unavailable_reason()}")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def device():
    """The device under test: 'cpu', or 'cuda:0' when run with GPUGRAD_DEVICE=cuda."""
    return gg.default_device()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def host(t):
    """A tensor's values as a NumPy array (from any device)."""
    return t.numpy() if isinstance(t, gg.Tensor) else np.asarray(t)
