"""gg.cuda: is a CUDA GPU usable here (is_available, device_count, unavailable_reason),
synchronize, and gg.cuda.graph, which captures a training step once and replays it. The CUDA
plumbing the devices stand on (kernel loader, cuBLAS binding) is gpugrad/devices/cuda/."""

from gpugrad.cuda.graphed import (  # noqa: F401
    GraphedStep, GraphStepError, device_count, graph, graph_nodes, is_available, synchronize,
    unavailable_reason,
)
