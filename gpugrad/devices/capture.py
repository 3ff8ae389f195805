"""Graphed steps (gg.cuda.graph): the state every capture check reads, in one place.

A step run under graph_step() must keep what a captured CUDA graph can replay: no host reads
of device values, no random numbers, no host data copied in while a stream captures, no change
to a setting it baked in. Every check in gpugrad asks here, by the name of its rule; the
devices package hands the same names on. The two errors of devices and graphed steps live here
too, below every backend.
"""

import contextlib
import threading


class DeviceError(RuntimeError):
    """A device was asked for that cannot be used here, or devices were mixed."""


class GraphStepError(RuntimeError):
    """A graphed step (gg.cuda.graph) did something a captured CUDA graph cannot replay
    faithfully: read values on the host, drew random numbers, changed a baked-in setting."""


# ---------------------------------------------------------------------------- graphed steps

_graph_state = threading.local()


@contextlib.contextmanager
def graph_step(capturing=False, baked=None, swapped=None, face=None):
    """Mark the code inside as a graphed step (gpugrad/cuda.py), on any device, so that what a
    CUDA graph cannot hold fails here too; `capturing` when a CUDA stream is capturing it;
    `baked` a list that bake() fills, `swapped` a dict that swapped_in() fills; `face` what
    kept() shows arrays through while gg.compile records the step (devices/tape.py)."""
    names = ("mode", "baked", "swapped", "face")
    before = tuple(getattr(_graph_state, k, None) for k in names)
    _graph_state.mode = "capturing" if capturing else "step"
    _graph_state.baked, _graph_state.swapped, _graph_state.face = baked, swapped, face
    try:
        yield
    finally:
        for k, v in zip(names, before):
            setattr(_graph_state, k, v)


def in_graph_step():
    return getattr(_graph_state, "mode", None) is not None


def capturing():
    """True while a CUDA stream captures a graphed step: host-side checks of device values
    (label ranges, say) cannot run, and the kernels mark bad values with NaN instead."""
    return getattr(_graph_state, "mode", None) == "capturing"


def forbid_in_graph_step(what, why):
    if getattr(_graph_state, "mode", None) is not None:
        raise GraphStepError(f"{what} inside a graphed step (gg.cuda.graph): {why}")


def host_reads_allowed():
    """Whether values on the device may be read on the host now: not inside a graphed step,
    where code that would check or print them takes its device-side way instead."""
    return getattr(_graph_state, "mode", None) is None


def forbid_host_read(what):
    """A tensor's values read on the host (`what`: numpy(), item(), bool(tensor) ...)."""
    forbid_in_graph_step(f"reading a tensor's values on the host ({what})", HOST_READ_WHY)


def forbid_device_copy_to_host(device_kind):
    forbid_in_graph_step(f"copying a {device_kind} array to the host", HOST_READ_WHY)


def forbid_random_numbers():
    forbid_in_graph_step("random numbers", RANDOM_WHY)


def forbid_index_range_check(what):
    """Indices on the device checked against their axis (`what`: indexing, take ...)."""
    forbid_in_graph_step(
        f"{what} with a device tensor of indices",
        "their range cannot be checked without reading the GPU, and CuPy wraps an index "
        "out of range around silently; index outside the step, or use nn.Embedding, "
        "which marks an index out of range with a row of NaN")


def forbid_host_data_while_capturing(data, device_array_type):
    """Host data copied to the device while a stream captures: the graph would read that
    host memory again on every replay."""
    if capturing() and not isinstance(data, device_array_type):
        raise GraphStepError(HOST_COPY_WHILE_CAPTURING)


def bake(owner, *names):
    """Note, while a graphed step is being recorded, the settings of `owner` (an optimizer's
    learning rate, say) that the step reads on the host: the graph holds their values, so
    gg.cuda.graph refuses to replay once they change."""
    baked = getattr(_graph_state, "baked", None)
    if baked is not None:
        baked.extend((owner, name, getattr(owner, name)) for name in names)


def kept(arr):
    """An array a step keeps from call to call outside any tensor (an optimizer's state), as
    the step must see it: itself, or while gg.compile records the step, the face through
    which the recording sees what is done to it."""
    face = getattr(_graph_state, "face", None)
    return arr if face is None else face(arr)


def swapped_in(tensor, old):
    """Note that a graphed step gave `tensor` (a .grad) a new array in place of `old`: while a
    stream captures, the new one is not computed until the first replay, so gg.cuda.graph
    fills it from `old` (the eager step's values) once the capture ends. The first swap of a
    tensor is the one kept: a later one in the same step replaces a captured array, not the
    eager step's."""
    swapped = getattr(_graph_state, "swapped", None)
    if swapped is not None:
        swapped.setdefault(id(tensor), (tensor, old))


HOST_READ_WHY = ("a captured graph cannot wait for the GPU mid-step; return the tensor from the "
                  "step and read it after the call")
HOST_COPY_WHILE_CAPTURING = (
    "copying host data to the GPU inside a graphed step (gg.cuda.graph): the graph would read "
    "that host memory again on every replay; pass the data in as an argument (it is copied to "
    "the device before each replay)")
RANDOM_WHY = ("a captured graph replays the same random numbers on every call; draw them "
               "outside the step and pass them in as an argument")
