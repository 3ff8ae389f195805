"""gg.cuda: is a CUDA GPU usable here, and how many."""

from gpugrad import backend


def is_available():
    """True when CuPy imports and at least one CUDA device answers."""
    return backend.cuda_available()


def device_count():
    return backend.cuda_device_count()


def unavailable_reason():
    """Why is_available() is False (None when it is True)."""
    return backend.cuda_unavailable_reason()


def synchronize(device="cuda"):
    """Wait for all work queued on the device."""
    backend.get(backend.canonical_device(device)).synchronize()
