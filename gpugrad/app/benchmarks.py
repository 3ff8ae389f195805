"""The names tests/nn/test_nn.py reaches as `benchmarks.<name>`; they live in gpugrad.app.bench.
Delete this module once that file imports them from there."""

from gpugrad.app.bench.array_baseline import hand_written_step
from gpugrad.app.bench.counting import (device_calls_per_captured_step, device_calls_per_step,
                                        ops_per_step)
from gpugrad.app.bench.suites.mlp import mlp_step_cases

__all__ = ["device_calls_per_captured_step", "device_calls_per_step", "hand_written_step",
           "mlp_step_cases", "ops_per_step"]
