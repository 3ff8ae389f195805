"""One SGD training step (forward, cross-entropy + L2, backward, update) of section 4.7's MLP
and a deeper one, gpugrad beside PyTorch on the same data and weights.

    pytest bench/bench_mlp.py --benchmark-only
    GPUGRAD_DEVICE=cuda pytest bench/bench_mlp.py --benchmark-only   (adds the captured step)

On the CPU the compiled step (gg.compile: recorded once, replayed) runs beside the step written
by hand on NumPy arrays.

`gpugrad bench mlp` runs the same cases and prints gpugrad / torch side by side.
"""

import pytest

import gpugrad as gg
from gpugrad.app.bench.suites import mlp

DEVICE = gg.default_device()


@pytest.mark.parametrize("impl", ["gpugrad", "gpugrad compiled", "gpugrad captured",
                                  "hand-written", "torch"])
@pytest.mark.parametrize("batch", [32, 1024])
@pytest.mark.parametrize("model", sorted(mlp.MLP_MODELS))
def bench_mlp_step(timed_on_device, model, batch, impl):
    cases = mlp.mlp_step_cases(mlp.MLP_MODELS[model], batch, DEVICE)
    if impl not in cases:
        pytest.skip("PyTorch is not installed (pip install torch==2.13.0)" if impl == "torch"
                    else f"{impl} is for CUDA devices" if impl == "gpugrad captured"
                    else f"{impl} is not timed on {DEVICE} (CUDA has the captured step)")
    timed_on_device(cases[impl], batch=batch)
