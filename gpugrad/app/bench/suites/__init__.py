"""The suites of `gpugrad bench`, by name: each suite(device, quick=True, progress=None, ...)
returns rows (dicts, one column per key, "suite" its name) for bench.table.format_table."""

from gpugrad.app.bench.suites import einsum, jacobian, kernels, memory, mlp, overhead, rnn

SUITES = {"kernels": kernels.kernels_suite, "mlp": mlp.mlp_suite, "memory": memory.memory_suite,
          "jacobian": jacobian.jacobian_suite, "overhead": overhead.overhead_suite,
          "einsum": einsum.einsum_suite, "rnn": rnn.rnn_suite}
