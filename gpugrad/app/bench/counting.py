"""What one training step costs in calls, counted rather than timed: gpugrad's ops, the strict
device's array-library calls (eager and captured) and a CUDA graph's work items."""

import collections

import gpugrad


def kernels_per_step(case):
    """Work items (kernels, memsets, copies) one replay of a captured step launches: a
    gg.cuda.graph step, or a PyTorch graph from torch_baseline.captured; None where there is no graph."""
    from gpugrad import cuda

    if isinstance(case, cuda.GraphedStep):
        nodes = case.nodes() if case.captured else None
    else:
        try:
            nodes = cuda.graph_nodes(case.cuda_graph.raw_cuda_graph())
        except (AttributeError, RuntimeError):  # an older PyTorch, or a graph not kept
            nodes = None
    return None if nodes is None else sum(nodes.get(k, 0) for k in ("kernel", "memset", "memcpy"))


def ops_per_step(step):
    """How many ops of the table one call of step() runs, forward, backward and update
    together: those applied to Tensors (registry.apply) and those the backward's rules run on
    arrays through the op namespace (ops.<name>, each one or more array-library calls on the
    device). A rule's operator arithmetic on arrays (g * lam) is no table op; the strict
    device's device_calls_per_step counts it."""
    from gpugrad.ops import namespace
    from gpugrad.ops import registry

    count = 0
    real_apply, real_array_ops = registry.apply, namespace.array_ops

    def tally():
        nonlocal count
        count += 1

    def counting_apply(op, inputs, params):
        tally()
        return real_apply(op, inputs, params)

    def counting_array_ops(device):
        return _CountingOps(real_array_ops(device), tally)

    registry.apply = counting_apply  # the op functions look apply up at call time
    namespace.array_ops = counting_array_ops  # and the engine the array namespace
    try:
        step()
    finally:
        registry.apply, namespace.array_ops = real_apply, real_array_ops
    return count


class _CountingOps:
    """An op namespace whose op calls each call tally() first."""

    def __init__(self, ops, tally):
        self._ops, self._tally = ops, tally

    def __getattr__(self, name):
        function = getattr(self._ops, name)
        if name == "constant" or not callable(function):  # no op: a marker or a field
            return function

        def counted(*args, **params):
            self._tally()
            return function(*args, **params)
        return counted


def device_calls_per_step(step):
    """{call name: count} of the calls one step() makes into the strict test device's array
    library (functions, array methods, indexing, fused kernels): on CuPy each is at most one
    kernel launch, a view none, so it bounds a GPU step's kernels from the CPU."""
    from gpugrad.devices import strict

    before = collections.Counter(strict.calls)
    step()
    return strict.calls - before


def device_calls_per_captured_step(step, device):
    """device_calls_per_step of step under gg.cuda.graph on the strict test device, where the
    capture is emulated: its replay runs the step under the capture's rules (matmuls through
    the capturable gemm), so this counts what a captured step calls (gemms not included)."""
    graphed = gpugrad.cuda.graph(step, device=device)
    graphed()  # the eager pass and the capture
    return device_calls_per_step(graphed)
