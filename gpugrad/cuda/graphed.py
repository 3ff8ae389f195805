"""gg.cuda: is a CUDA GPU usable here, how many, and gg.cuda.graph, which captures a whole
training step into a CUDA graph once and replays it.

A captured step runs the same kernels on the same memory every time, so its shapes, dtypes
and host-side settings are fixed at capture; what would make a replay differ from an eager step
fails with a clear error instead (GraphStepError), on the CPU too, so code written for the GPU
is checked on a laptop. On the CPU a graphed step runs eagerly under that same contract; on the
strict test device it runs eagerly as if a CUDA stream were capturing it (gpugrad/devices/strict.py).
"""

import collections
import ctypes
import weakref

from gpugrad import autograd
from gpugrad import devices
from gpugrad import tensors

GraphStepError = devices.GraphStepError

# Memory pools of graphs that were dropped or recaptured. Arrays allocated there (gradients,
# optimizer state, the outputs a caller kept) can outlive their graph, and some CuPy versions
# free a pool's memory under them when the pool itself is collected: so a retired pool gives
# back the blocks nothing uses and is kept.
_retired_pools = []


def _retire(pool):
    pool.free_all_blocks()
    _retired_pools.append(pool)


def is_available():
    """True when CuPy imports and at least one CUDA device answers."""
    return devices.cuda_available()


def device_count():
    return devices.cuda_device_count()


def unavailable_reason():
    """Why is_available() is False (None when it is True)."""
    return devices.cuda_unavailable_reason()


def synchronize(device="cuda"):
    """Wait for all work queued on the device."""
    devices.get(devices.canonical_device(device)).synchronize()


def graph(step, device=None):
    """step(*args, **kwargs) as a GraphedStep: the first call runs it eagerly (a real step) and,
    on CUDA, captures it; every later call copies its arguments into the captured buffers and
    replays the graph. See GraphedStep for the contract."""
    return GraphedStep(step, device)


class GraphedStep:
    """A step function captured once and replayed.

    - Arguments are data: tensors and arrays are copied into buffers owned by the graph before
      each call (host arrays go to the device), so their shapes and dtypes are fixed; other
      arguments (numbers, strings) must be equal on every call. Parameters come from the
      step's closure (the model), not from arguments.
    - The step may not read values on the host (item(), float(), numpy(), printing values) nor
      draw random numbers: a graph cannot wait for the GPU mid-step, and would replay the same
      random numbers. Optimizer settings (lr, momentum, ...) are baked in: changing one makes
      the next call fail until recapture().
    - What the step returns is the same objects on every replay, overwritten by the next call:
      copy what you keep. The first call returns its own eager results.
    - Each p.grad stays the same Tensor and holds the latest call's gradient (its array is the
      graph's, swapped in at capture with no copy: keep p.grad, or copy its array), and
      optimizer state is updated in place.
    - The step's Python code runs twice on the first call (the eager step, then the capture)
      and never on a replay: side effects in Python (counters, lists) do not repeat.
    """

    def __init__(self, step, device=None):
        if not callable(step):
            raise TypeError(f"gg.cuda.graph needs a callable step, got {type(step).__name__}")
        self.step = step
        self.requested_device = None if device is None else devices.canonical_device(device)
        self.recapture()

    def recapture(self):
        """Forget the capture: the next call runs eagerly and captures again (after changing a
        baked-in setting, say). Frees the graph and, once nothing refers to them, its buffers."""
        if getattr(self, "_release", None) is not None:
            self._graph = None
            self._release()  # the pool is retired once the graph is gone
        self._release = None
        self.device = self.requested_device
        self._layout = None  # per argument: the kind, shape and dtype (or value) it was given
        self._args, self._kwargs = None, None  # the static buffers
        self._graph = self._stream = None
        self._outputs = None
        self._baked = []
        self.replays = 0

    @property
    def captured(self):
        """True once a CUDA graph holds the step (never on the CPU)."""
        return self._graph is not None

    def nodes(self):
        """{kind: count} of the nodes of the captured graph ('kernel', 'memset', 'memcpy', ...):
        the work one replay launches. GraphStepError before a capture (on the CPU, always)."""
        if self._graph is None:
            raise GraphStepError(
                "GraphedStep.nodes: no CUDA graph was captured"
                + (" yet (call the step once)" if self._layout is None else
                   f" (on {self.device!r} a graphed step runs eagerly; only CUDA captures)"))
        return graph_nodes(self._graph.graph)

    def __call__(self, *args, **kwargs):
        if self._layout is None:
            return self._first_call(args, kwargs)
        self._check_baked()
        self._copy_in(args, kwargs)
        be = devices.get(self.device)
        if self._graph is None:  # not captured here: the same contract, run eagerly
            with devices.graph_step(capturing=be.capture == "emulated"):
                return self.step(*self._args, **self._kwargs)
        with be.active:
            current = be.xp.cuda.get_current_stream()
            self._stream.wait_event(current.record())  # after the argument copies
            self._graph.launch(stream=self._stream)
            current.wait_event(self._stream.record())  # later work sees the results
        self.replays += 1
        return self._outputs

    # ------------------------------------------------------------------ first call: capture
    def _first_call(self, args, kwargs):
        self.device = self.device or _device_of(list(args) + list(kwargs.values()))
        be = devices.get(self.device)
        layout = {}
        self._args = tuple(self._static(i, a, be, layout) for i, a in enumerate(args))
        self._kwargs = {k: self._static(k, v, be, layout) for k, v in kwargs.items()}
        self._layout = layout
        try:
            if be.capture == "cuda":
                return self._capture(be)
            with devices.graph_step(capturing=be.capture == "emulated", baked=self._baked):
                return self.step(*self._args, **self._kwargs)
        except BaseException:
            self.recapture()  # the next call starts over
            raise

    def _capture(self, be):
        cp = be.xp
        with be.active:
            # a pool of its own: blocks the graph uses are never handed to anyone else
            pool = cp.cuda.MemoryPool()
            self._release = weakref.finalize(self, _retire, pool)
            self._stream = cp.cuda.Stream(non_blocking=True)
            current = cp.cuda.get_current_stream()
            self._stream.wait_event(current.record())
            with self._stream, cp.cuda.using_allocator(pool.malloc):
                # the eager step: compiles kernels, sizes the pool, and is the call's result
                with devices.graph_step():
                    result = self.step(*self._args, **self._kwargs)
                swapped = {}
                with devices.graph_step(capturing=True, baked=self._baked, swapped=swapped):
                    self._stream.begin_capture()
                    try:
                        outputs = self.step(*self._args, **self._kwargs)
                    except BaseException as e:
                        _end_failed_capture(self._stream)
                        if isinstance(e, GraphStepError):
                            raise
                        raise GraphStepError(
                            f"capturing the step failed: {e}. The step ran once eagerly "
                            f"(its update is applied); something in it cannot be captured: a "
                            f"host read of a device array, a copy between host and device, or "
                            f"a library call that synchronizes") from e
                    self._graph = self._stream.end_capture()
                for tensor, eager in swapped.values():  # nothing is in them until a replay
                    tensor.data[...] = eager
            current.wait_event(self._stream.record())
        self._outputs = outputs
        return result

    def _static(self, key, value, be, layout):
        where = _where(key)
        if isinstance(value, tensors.Tensor):
            self._check_data_tensor(where, value)
            layout[key] = ("tensor", value.shape, value.dtype)
            with be.active:
                return tensors.wrap(be.xp.array(value.data, copy=True), self.device)
        if devices.is_backend_array(value):
            layout[key] = ("array", value.shape, value.dtype)
            with be.active:
                return be.xp.array(be.asarray(value), copy=True)
        if isinstance(value, (list, tuple, dict)) and any(
                isinstance(v, tensors.Tensor) or devices.is_backend_array(v)
                for v in (value.values() if isinstance(value, dict) else value)):
            raise TypeError(f"gg.cuda.graph: {where} is a {type(value).__name__} holding "
                            f"arrays; pass each tensor or array as an argument of its own")
        layout[key] = ("value", value)
        return value

    # ------------------------------------------------------------------ later calls
    def _copy_in(self, args, kwargs):
        given = {**dict(enumerate(args)), **kwargs}
        if set(given) != set(self._layout):
            raise GraphStepError(f"gg.cuda.graph: called with arguments "
                                 f"{_names(given)} but captured with {_names(self._layout)}")
        be = devices.get(self.device)
        for key, value in given.items():
            static = self._args[key] if isinstance(key, int) else self._kwargs[key]
            kind, *spec = self._layout[key]
            where = _where(key)
            if kind == "value":
                if type(value) is not type(spec[0]) or value != spec[0]:
                    raise GraphStepError(f"gg.cuda.graph: {where} is {value!r} but the step "
                                         f"was captured with {spec[0]!r}; it is baked into the "
                                         f"graph: make another gg.cuda.graph for it")
                continue
            if kind == "tensor":
                if not isinstance(value, tensors.Tensor):
                    raise TypeError(f"gg.cuda.graph: {where} was a Tensor at capture, now a "
                                    f"{type(value).__name__}")
                self._check_data_tensor(where, value)
                source, target = value.data, static.data
            else:
                if not devices.is_backend_array(value):
                    raise TypeError(f"gg.cuda.graph: {where} was an array at capture, now a "
                                    f"{type(value).__name__}")
                source, target = value, static
            if source.shape != spec[0]:
                raise autograd.ShapeError(
                    f"gg.cuda.graph: {where} has shape {source.shape} but the step was captured "
                    f"for {spec[0]}; a graph's shapes are fixed: make another gg.cuda.graph "
                    f"for this shape")
            if source.dtype != spec[1]:
                raise TypeError(f"gg.cuda.graph: {where} has dtype {source.dtype} but the step "
                                f"was captured for {spec[1]}")
            if source is not target:
                with be.active:
                    target[...] = be.asarray(source)

    def _check_data_tensor(self, where, value):
        if value.grad_req != "null":
            raise ValueError(f"gg.cuda.graph: {where} has a gradient attached; a graphed step "
                             f"takes data as arguments and its parameters from the closure "
                             f"(the model)")
        if value.device != self.device:
            raise devices.DeviceError(f"gg.cuda.graph: {where} is on {value.device!r} but the "
                                      f"step runs on {self.device!r}")

    def _check_baked(self):
        for owner, name, value in self._baked:
            now = getattr(owner, name)
            if now is not value and now != value:
                raise GraphStepError(
                    f"gg.cuda.graph: {type(owner).__name__}.{name} changed from {value!r} to "
                    f"{now!r} since the step was captured, and the graph holds the old value; "
                    f"call .recapture() on the graphed step after changing it")


# CUgraphNodeType of the CUDA driver API
_NODE_KINDS = {0: "kernel", 1: "memcpy", 2: "memset", 3: "host", 4: "child graph", 5: "empty",
               6: "event wait", 7: "event record", 8: "semaphore signal", 9: "semaphore wait",
               10: "mem alloc", 11: "mem free", 12: "batch mem op", 13: "conditional"}


def graph_nodes(handle):
    """{kind: count} of the nodes of a CUDA graph (a cudaGraph_t as an int: CuPy's
    Graph.graph, PyTorch's CUDAGraph.raw_cuda_graph()), read through the driver API."""
    driver = ctypes.CDLL("libcuda.so.1")
    count = ctypes.c_size_t(0)
    _driver_check(driver.cuGraphGetNodes(ctypes.c_void_p(handle), None, ctypes.byref(count)),
                  "cuGraphGetNodes")
    nodes = (ctypes.c_void_p * count.value)()
    _driver_check(driver.cuGraphGetNodes(ctypes.c_void_p(handle), nodes, ctypes.byref(count)),
                  "cuGraphGetNodes")
    kinds = collections.Counter()
    for node in nodes[: count.value]:
        kind = ctypes.c_int(-1)
        _driver_check(driver.cuGraphNodeGetType(ctypes.c_void_p(node), ctypes.byref(kind)),
                      "cuGraphNodeGetType")
        kinds[_NODE_KINDS.get(kind.value, f"type {kind.value}")] += 1
    return dict(kinds)


def _driver_check(result, call):
    if result != 0:
        raise RuntimeError(f"{call} failed with CUresult {result}")


def _device_of(values):
    """The device of the first Tensor (or CuPy array) among the arguments, else the default."""
    for v in values:
        if isinstance(v, tensors.Tensor):
            return v.device
    for v in values:
        dev = devices.device_of_array(v) if devices.is_backend_array(v) else None
        if dev not in (None, "cpu"):
            return dev
    return devices.default_device()


def _where(key):
    return f"argument {key}" if isinstance(key, int) else f"argument {key!r}"


def _names(keys):
    return sorted(map(str, keys))


def _end_failed_capture(stream):
    """End an aborted capture so the stream is usable again; its (invalid) graph is dropped."""
    try:
        stream.end_capture()
    except Exception:  # an invalidated capture reports its error here: already being raised
        return
