"""The precisions that `gpugrad train --precision` and `gpugrad bench mlp --precision` take:
fp32; tf32, float32 tensors with gg.backends.matmul.allow_tf32 on while the run (or the step)
lasts; bf16 and fp16, the layers under gg.autocast in that dtype."""

import contextlib

from gpugrad import backends
from gpugrad import devices

# name -> the dtype gg.autocast computes the layers in (None: float32 tensors throughout)
AUTOCAST = {"fp32": None, "tf32": None, "bf16": "bfloat16", "fp16": "float16"}


@contextlib.contextmanager
def matmul_mode(precision):
    """Inside: gg.backends.matmul.allow_tf32 on for 'tf32', untouched for the others; after:
    as it was before, an error or an interrupt included, so that a tf32 run leaves no switch
    on behind it."""
    if precision != "tf32":
        yield
        return
    before = backends.matmul.allow_tf32
    backends.matmul.allow_tf32 = True
    try:
        yield
    finally:
        backends.matmul.allow_tf32 = before


def has_effect(precision, device):
    """False for tf32 off CUDA: TF32 is a math mode of NVIDIA tensor cores, and NumPy (the CPU
    and the strict device) computes float32 products in float32 whatever the switch says."""
    return precision != "tf32" or devices.get(device).is_cuda


def note(precision, device):
    """The line a run prints (and writes into its JSON) where its precision changes nothing on
    this device, else None."""
    if has_effect(precision, device):
        return None
    return (f"note: --precision tf32 has no effect on {device} (TF32 is a math mode of NVIDIA "
            f"GPUs; off CUDA float32 products are computed in float32): these are float32's "
            f"numbers")


def label(precision, device):
    """How the bench names a step in this precision: the precision, and for tf32 off CUDA what
    it really is (PyTorch on the CPU ignores its TF32 switch too)."""
    return precision if has_effect(precision, device) else f"{precision} (no-op off CUDA)"
