"""What stops a command before any work, each in one line.

Exit status 2 for "could not run here" as for a bad argument (argparse's own status), each one
line on stderr: an option's value that cannot work (OptionError: usage line and the option's
name, as argparse does), or an extra, a device or memory that this machine lacks (CannotRun).
Status 1 is left for a command that ran and failed."""

import os

import numpy as np

from gpugrad import devices
from gpugrad.app import training


class OptionError(Exception):
    def __init__(self, option, message):
        super().__init__(f"argument {option}: {message}")


class CannotRun(Exception):
    pass


def require(module, needed_by, install, package=None):
    """Import `module` or refuse the command in one line naming what needs it and its extra."""
    try:
        __import__(module)
    except ImportError:
        raise CannotRun(f"{needed_by} needs {package or module}, which is not installed: "
                         f"{install}") from None


def require_dataset_extra(spec):
    if spec == "digits":
        require("sklearn", "the digits dataset (--dataset digits, the default)",
                 "pip install 'gpugrad[data]'", package="scikit-learn")


def size(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TiB"


def available_memory(device):
    """(bytes a new allocation can take on `device`, where that figure comes from), or
    (None, why) where it cannot be known."""
    if device.startswith("cuda"):
        be = devices.get(device)
        with be.active:
            free, _ = be.xp.cuda.runtime.memGetInfo()  # of the current device
            pooled = be.xp.get_default_memory_pool().free_bytes()  # CuPy reuses these first
        return free + pooled, "free on the GPU (cudaMemGetInfo) and in CuPy's pool"
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except OSError:
        pass
    try:
        return (os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"),
                "free physical pages (sysconf)")
    except (AttributeError, ValueError, OSError):
        return None, "this system reports no free memory"


def check_fits(device, needed, what, options):
    """Refuse before allocating when the estimate `needed` ({term: bytes}, with 'total') is
    more than `device` has free. options maps each term to the option it grows with; the
    option named is the first whose terms alone do not fit, else the one with the most."""
    free, source = available_memory(device)
    total = needed["total"]
    if free is None or total <= free:
        return
    terms = {k: v for k, v in needed.items() if k != "total" and v}
    by_option = {}
    for term, option in options.items():
        by_option[option] = by_option.get(option, 0) + needed.get(term, 0)
    culprit = next((o for o, b in by_option.items() if b > free),
                   max(by_option, key=by_option.get))
    raise OptionError(culprit, (
        f"{what} needs at least {size(total)} ("
        + ", ".join(f"{k} {size(v)}" for k, v in terms.items())
        + f") but {device} has {size(free)} available ({source})"))


def options_4_7(args):
    """Which option to name for each term of network_4_7_bytes: the widest dimension for the
    parameters, the batch for what grows with it."""
    widest = max(("--d", args.d), ("--h", args.h), ("--q", args.q), key=lambda kv: kv[1])[0]
    return {"parameters": widest, "gradients": widest, "input": "--batch",
            "saved activations": "--batch"}


def network_4_7_bytes(d, h, q, batch, layers=2, activation="relu", dtype="float32", lam=1e-3):
    """The least memory one training step of section 4.7's network takes: parameters,
    gradients, the input and the saved activations, from shapes alone (the meta device)."""
    from gpugrad.app import experiments

    itemsize = np.dtype(dtype).itemsize
    parameters = (d * h + (layers - 2) * h * h + h * q) * itemsize
    terms = {"parameters": parameters, "gradients": parameters, "input": batch * d * itemsize}
    if layers <= 1000:  # tracing costs Python time per layer; past that the terms above must do
        model = experiments.mlp_4_7(d, h, q, layers, activation, dtype, device="meta")
        _, terms["saved activations"] = training.saved_at_batch(
            model, d, batch, experiments.loss_4_7(model, lam))
    return {**terms, "total": sum(terms.values())}


def setup(args):
    """The command's device, checked usable now; with --plot, matplotlib checked present."""
    device = devices.canonical_device(args.device) if args.device else devices.default_device()
    devices.get(device)  # a clear error before any work if the device is unusable
    if getattr(args, "plot", None):
        require_matplotlib()
    return device


def require_matplotlib():
    require("matplotlib", "--plot", "pip install 'gpugrad[plot]'")
