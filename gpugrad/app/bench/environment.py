"""What every result is stored with: the device, the date and the library versions."""

import datetime
import platform

import numpy as np

import gpugrad
from gpugrad import devices
from gpugrad.app.bench import jax_baseline, torch_baseline


def environment(device):
    """Device, date and library versions, stored with every result."""
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "gpugrad": gpugrad.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
    }
    torch = torch_baseline.torch_or_none()
    env["torch"] = torch.__version__ if torch else None
    if torch:
        env["torch threads"] = torch.get_num_threads()
    env["jax"] = jax_baseline.version()
    be = devices.get(device)
    if be.is_cuda:
        cp = be.xp
        props = cp.cuda.runtime.getDeviceProperties(be.index)
        env.update({"cupy": cp.__version__, "gpu": props["name"].decode(),
                    "cuda driver": cp.cuda.runtime.driverGetVersion(),
                    "cuda runtime": cp.cuda.runtime.runtimeGetVersion()})
    else:
        env["cpu"] = platform.processor() or platform.machine()
        if be.xp is np:
            from gpugrad.ops import activation_numba

            env["cpu activations"] = activation_numba.status()
    return env
