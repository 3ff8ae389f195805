"""One training step of a character model with gpugrad's RNN, LSTM and GRU beside PyTorch's
layers and a loop of its cells.

    pytest bench/bench_rnn.py --benchmark-only

`gpugrad bench rnn` runs the same cases and prints gpugrad / torch.
"""

import pytest

import gpugrad as gg
from gpugrad.app.bench.suites import rnn

DEVICE = gg.default_device()


@pytest.mark.parametrize("impl", ["gpugrad", "torch", "torch cells"])
@pytest.mark.parametrize("kind", rnn.KINDS)
def bench_rnn(timed_on_device, kind, impl):
    cases = rnn.rnn_step_cases(kind, 35, 32, 256, DEVICE)
    if impl not in cases:
        pytest.skip("PyTorch is not installed (pip install torch==2.13.0)")
    timed_on_device(cases[impl])
