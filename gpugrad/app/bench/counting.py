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
    """How many ops (registry.apply calls: each one or more array-library calls on the device)
    one call of step() runs, forward, backward and update together."""
    from gpugrad.ops import registry

    count = 0
    real = registry.apply

    def counting(op, inputs, params):
        nonlocal count
        count += 1
        return real(op, inputs, params)

    registry.apply = counting  # the op functions look apply up at call time
    try:
        step()
    finally:
        registry.apply = real
    return count


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
