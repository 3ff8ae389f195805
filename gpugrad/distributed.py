"""Data-parallel training over MPI (mpi4py): every rank runs the same model on its share of the
batch, and the gradients are averaged across ranks after backward, so every rank applies the
same update and the parameters stay equal.

    mpirun -n 2 python train.py        # gg.distributed.init() inside; rank() / world_size()

On "cpu" tensors the collectives run through mpi4py on the arrays themselves. On CUDA tensors
they run through NCCL (cupy.cuda.nccl: a communicator per process, its id sent over MPI) on
the current stream; where NCCL cannot be set up, the arrays are staged through host memory for
MPI, with a warning that says why. Every MPI collective waits at most `timeout` seconds
(GPUGRAD_DIST_TIMEOUT, default 300) for the other ranks, then raises DistributedError naming
the collective: a rank that died makes the others fail, not hang (NCCL's own collectives have
no such limit).
"""

import os
import time
import warnings
import zlib

import numpy as np

from gpugrad import devices
from gpugrad import tensors

_INSTALL = "pip install 'gpugrad[distributed]' (mpi4py and MPICH's wheels from PyPI)"
_state = {"comm": None, "warned_host_staging": False}
BUCKET_BYTES = 25 << 20  # gradients go in messages of about this size: few and large


class DistributedError(RuntimeError):
    """A collective could not complete: a rank did not take part in time, or MPI is missing."""


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise DistributedError(f"gg.distributed needs mpi4py and an MPI library: {_INSTALL} "
                               f"({e})") from None
    return MPI


def init():
    """Join the processes mpirun/mpiexec started (a single process is a world of one).
    Returns (rank, world size)."""
    if _state["comm"] is None:
        _state["comm"] = _mpi().COMM_WORLD
    return rank(), world_size()


def _comm():
    if _state["comm"] is None:
        raise DistributedError("gg.distributed: call gg.distributed.init() first")
    return _state["comm"]


def rank():
    return _comm().Get_rank()


def world_size():
    return _comm().Get_size()


def timeout():
    text = os.environ.get("GPUGRAD_DIST_TIMEOUT", "300")
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise DistributedError(f"GPUGRAD_DIST_TIMEOUT must be a positive number of seconds, "
                               f"got {text!r}")
    return seconds


def _agree(what, signature):
    """Raise DistributedError on every rank unless every rank calls the collective `what` with
    the same signature (the shapes and dtypes it sends, and the root): MPI would otherwise sum
    mismatched buffers into a wrong answer without a word, or fail on one rank only. One
    all-gather of a checksum (8 bytes a rank); only where they differ, one of the signatures
    themselves, to name them."""
    if world_size() == 1:
        return
    mine = np.array([zlib.crc32(repr(signature).encode())], dtype=np.int64)
    every = np.empty(world_size(), dtype=np.int64)
    _wait(_comm().Iallgather(mine, every), what)
    if (every == every[0]).all():
        return
    signatures = _comm().allgather(signature)  # every rank is here: each saw the mismatch
    listed = "; ".join(f"rank {r}: {sig}" for r, sig in enumerate(signatures))
    raise DistributedError(f"{what}: the ranks disagree on what they send ({listed}); every "
                           f"rank must call it with the same shapes and dtypes")


def _signature(tensors_):
    return tuple((tuple(t.shape), str(t.dtype)) for t in tensors_)


def _wait(request, what):
    """Test a non-blocking collective until it completes or the timeout passes."""
    deadline = time.monotonic() + timeout()
    pause = 1e-5
    while not request.Test():
        if time.monotonic() > deadline:
            raise DistributedError(
                f"{what}: the other ranks did not take part within {timeout():g} s (rank "
                f"{rank()} of {world_size()}); a rank may have died or be stuck "
                f"(GPUGRAD_DIST_TIMEOUT sets the limit)")
        time.sleep(pause)
        pause = min(pause * 2, 1e-3)


def _check_tensor(t):
    if not isinstance(t, tensors.Tensor):
        raise TypeError(f"gg.distributed: expected a Tensor, got {type(t).__name__}")


def _host(t, why="the NCCL path is for CUDA devices"):
    """(host array, whether it must be copied back to t's device)."""
    if not isinstance(t, tensors.Tensor):
        raise TypeError(f"gg.distributed: expected a Tensor, got {type(t).__name__}")
    if devices.get(t.device).host_arrays:
        if not t.data.flags.c_contiguous:
            raise ValueError("gg.distributed: the tensor must be contiguous")
        return t.data, False
    if not _state["warned_host_staging"]:
        warnings.warn(f"gg.distributed: {t.device} tensors are copied through host memory for "
                      f"MPI ({why})", stacklevel=3)
        _state["warned_host_staging"] = True
    return np.ascontiguousarray(t.numpy()), True


def _nccl(t):
    """(NCCL communicator, cupy.cuda.nccl) for t's CUDA device, made once per device; None
    where t is not on CUDA, the world is one process, or NCCL cannot be set up (the reason is
    kept for the host-staging warning)."""
    be = devices.get(t.device)
    if not be.is_cuda or world_size() == 1:
        return None
    key = ("nccl", t.device)
    if key not in _state:
        found, why = None, None
        try:
            from cupy.cuda import nccl
        except ImportError as e:
            why = f"NCCL is not available in CuPy: {e}"
        else:
            uid = nccl.get_unique_id() if rank() == 0 else None
            uid = _comm().bcast(uid, root=0)
            try:
                with be.active:
                    found = (nccl.NcclCommunicator(world_size(), uid, rank()), nccl)
            except Exception as e:  # noqa: BLE001 - any NCCL failure falls back, said why
                why = f"NCCL could not start: {e}"
        _state[key] = found
        _state[("nccl why", t.device)] = why
    return _state[key]


_NCCL_TYPES = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64",
               "int32": "NCCL_INT32", "int64": "NCCL_INT64"}


def _nccl_call(t, arr, what, root=0):
    """All-reduce (sum) or broadcast the CUDA array arr of t's device in place through NCCL;
    False where NCCL is not used (the caller stages through the host)."""
    found = _nccl(t)
    if found is None or arr.dtype.name not in _NCCL_TYPES or not arr.flags.c_contiguous:
        return False
    comm, nccl = found
    be = devices.get(t.device)
    with be.active:
        stream = be.xp.cuda.get_current_stream().ptr
        kind = getattr(nccl, _NCCL_TYPES[arr.dtype.name])
        if what == "all_reduce":
            comm.allReduce(arr.data.ptr, arr.data.ptr, arr.size, kind, nccl.NCCL_SUM, stream)
        else:
            comm.bcast(arr.data.ptr, arr.size, kind, root, stream)
    return True


def _why_host(t):
    return _state.get(("nccl why", t.device)) or "the NCCL path is for CUDA devices"


def _back(t, arr):
    be = devices.get(t.device)
    with be.active:
        t.data[...] = be.asarray(arr)


def all_reduce(t, op="sum"):
    """In place: t becomes the sum (or mean) of t over all ranks. Returns t."""
    if op not in ("sum", "mean"):
        raise ValueError(f"all_reduce: op must be 'sum' or 'mean', got {op!r}")
    MPI = _mpi()
    _check_tensor(t)
    _agree("all_reduce", ("all_reduce", op) + _signature([t]))
    if _nccl_call(t, t.data, "all_reduce"):
        if op == "mean":
            t.data /= world_size()
        return t
    arr, copy_back = _host(t, _why_host(t))
    if world_size() > 1:
        _wait(_comm().Iallreduce(MPI.IN_PLACE, arr, op=MPI.SUM), "all_reduce")
    if op == "mean":
        arr /= world_size()
    if copy_back:
        _back(t, arr)
    return t


def sum_over_ranks(value):
    """A Python number summed over all ranks (a count of correct answers, say)."""
    MPI = _mpi()
    arr = np.array([value], dtype=np.float64)
    if world_size() > 1:
        _wait(_comm().Iallreduce(MPI.IN_PLACE, arr, op=MPI.SUM), "sum_over_ranks")
    return arr[0].item()


def broadcast(t, root=0):
    """In place: t becomes rank root's t on every rank. Returns t."""
    if not 0 <= root < world_size():
        raise ValueError(f"broadcast: root {root} is not a rank of a world of {world_size()}")
    _check_tensor(t)
    _agree("broadcast", ("broadcast", root) + _signature([t]))
    if _nccl_call(t, t.data, "broadcast", root):
        return t
    arr, copy_back = _host(t, _why_host(t))
    if world_size() > 1:
        _wait(_comm().Ibcast(arr, root=root), "broadcast")
    if copy_back:
        _back(t, arr)
    return t


def broadcast_parameters(module, root=0):
    """Every parameter of module made equal to rank root's (call once, before training)."""
    params = list(module.parameters())
    _agree("broadcast_parameters", ("broadcast_parameters", root) + _signature(params))
    for p in params:
        broadcast(p, root)


def average_gradients(module, bucket_bytes=BUCKET_BYTES):
    """After backward: every parameter's .grad becomes its mean over the ranks. Gradients of one
    dtype go in buckets of about bucket_bytes, one all-reduce each, not one per parameter."""
    params = [p for p in module.parameters() if p.grad is not None]
    if world_size() == 1:
        return
    # one check a step for the whole bucket layout: the ranks must agree on every gradient
    # they send (a model built differently on one rank) before any bucket goes out
    _agree("average_gradients", ("average_gradients", bucket_bytes) + _signature(
        [p.grad for p in params]))
    if not params:
        return
    MPI = _mpi()
    by_dtype = {}
    for p in params:
        by_dtype.setdefault((np.dtype(p.grad.dtype), p.grad.device), []).append(p)
    for (dtype, _), group in by_dtype.items():
        bucket, size = [], 0
        for p in group + [None]:
            if p is not None:
                bucket.append(p)
                size += p.grad.size * dtype.itemsize
            if bucket and (p is None or size >= bucket_bytes):
                _average_bucket(MPI, bucket)
                bucket, size = [], 0


def _average_bucket(MPI, bucket):
    """One message for the gradients of a bucket (one dtype, one device): NCCL on a device
    buffer where it runs, else MPI on a host buffer."""
    first = bucket[0].grad
    be = devices.get(first.device)
    with be.active:
        if _nccl(first) is not None:
            flat = be.xp.concatenate([q.grad.data.reshape(-1) for q in bucket])
            _nccl_call(first, flat, "all_reduce")
        else:
            flat = np.concatenate([_host(q.grad, _why_host(first))[0].reshape(-1) for q in bucket])
            _wait(_comm().Iallreduce(MPI.IN_PLACE, flat, op=MPI.SUM), "average_gradients")
        flat /= world_size()
        start = 0
        for q in bucket:
            n = q.grad.size
            part = flat[start:start + n].reshape(q.grad.shape)
            if devices.get(q.grad.device).host_arrays or not isinstance(flat, np.ndarray):
                q.grad.data[...] = part
            else:
                _back(q.grad, part)
            start += n


class DataParallel:
    """module, its parameters made equal to rank 0's; call .average_gradients() after each
    backward (before the optimizer step). Attribute access and calls go to the module."""

    def __init__(self, module, bucket_bytes=BUCKET_BYTES):
        init()
        self.module = module
        self.bucket_bytes = bucket_bytes
        broadcast_parameters(module)

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def average_gradients(self):
        average_gradients(self.module, self.bucket_bytes)

    def __getattr__(self, name):
        return getattr(self.module, name)


def shard(n, r=None, size=None):
    """The slice of n examples that rank r of size ranks takes (contiguous, sizes within one)."""
    r = rank() if r is None else r
    size = world_size() if size is None else size
    base, extra = divmod(n, size)
    start = r * base + min(r, extra)
    return slice(start, start + base + (1 if r < extra else 0))
