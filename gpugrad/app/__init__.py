"""Applications on top of the library: the `gpugrad` command line, selftest, training, the
section-4.7 experiments and the benchmarks. `import gpugrad` loads none of them."""
