"""The measurements behind `gpugrad bench` and the pytest-benchmark suites in bench/.

Every figure is taken beside its baseline in the same run (fused vs unfused, gpugrad vs
PyTorch, a device-to-device copy for bandwidth), as the median of many repeats after warm-up;
on CUDA each repeat is timed with CUDA events around the region. The cases take turns in
blocks, and a ratio is printed only from blocks a yardstick found unloaded and when its two
readings agree; otherwise the row says why it has none.

timing       one case's repeats (Timing) and the plain alternating blocks
yardstick    what is read beside every turn: other processes' load, a fixed workload, PyTorch's pool
blocks       cases in turns, block after block, and the verdict on each ratio
table        rows as a table, with what each ratio column is
environment  the device, date and versions stored with every result
counting     ops, device calls and CUDA-graph work items per training step
suites/      kernels, mlp, memory, jacobian, overhead (suites.SUITES by name)
torch_baseline, jax_baseline, array_baseline   what gpugrad is timed beside
"""
