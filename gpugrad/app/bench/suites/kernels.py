"""The kernels suite: every activation backward beside the unfused composition, PyTorch's own
backward kernel and a device-to-device copy (the bandwidth yardstick)."""

import functools

import numpy as np

import gpugrad
from gpugrad import devices
from gpugrad.app.bench import table, torch_baseline
from gpugrad.app.bench.blocks import Blocks
from gpugrad.app.bench.yardstick import Yardstick
from gpugrad.devices.cuda import kernels as kernel_loader


def activation_backwards():
    """{activation kernel: (its declared activation, the params selecting it)}: every kernel of
    every declared activation (gpugrad/ops/activation.py), with the declared defaults."""
    from gpugrad.ops import activation as act

    return {kernel: (a, {**dict(a.params), **fixed})
            for a in act.ACTIVATIONS.values() for kernel, fixed in act.variant_params(a)}


# relu's and leaky_relu's backward read from the output, as the networks run it where the next
# layer keeps that output (relu_backward_from_output): {row name: (activation, its params)}
FROM_OUTPUT = {"relu from y": ("relu", {}),
               "leaky_relu from y": ("leaky_relu", {"negative_slope": 0.01, "leaky": True})}


def kernel_cases(activation, n, device):
    """{impl: callable} for one activation backward on n float32 elements, plus bytes moved.

    impls: "gpugrad" (fused on CUDA, the NumPy composition on the CPU), "unfused" (not on NumPy:
    the CuPy composition), "torch" (PyTorch's own backward kernel, when installed for this
    device) and "copy" (a device-to-device copy of n elements, the bandwidth yardstick).
    """
    be = devices.get(device)
    xp = be.xp
    base, params = FROM_OUTPUT.get(activation, (activation, None))
    declared, forward_params = activation_backwards()[base]
    saved_kind = declared.saves
    if params is not None:
        op, saved_kind = gpugrad.OPS["relu_backward_from_output"], "y"
    elif saved_kind == "mask":  # relu and leaky_relu share the backward from the mask
        op = gpugrad.OPS["relu_backward"]
        params = {"negative_slope": forward_params.get("negative_slope", 0.0)}
    else:
        op, params = gpugrad.OPS[f"{declared.name}_backward"], forward_params
    rng = np.random.default_rng(n)
    with be.active:
        x = xp.asarray((rng.standard_normal(n) * 3).astype(np.float32))
        g = xp.asarray(rng.standard_normal(n).astype(np.float32))
        y = gpugrad.OPS[declared.name].forward(xp, x, **forward_params)
        saved = {"x": x, "y": y, "mask": kernel_loader.pack_mask(xp, x > 0)}[saved_kind]
        dst = xp.empty_like(x)

    def run(on):
        if on == kernel_loader.enabled():  # the op as a backward pass calls it: no switch per call
            return functools.partial(op.forward, xp, g, saved, **params)

        def call():
            with kernel_loader.fused(on):
                return op.forward(xp, g, saved, **params)
        return call

    # repeat_times runs every case inside the device's context
    cases = {"gpugrad": run(True), "copy": lambda: xp.copyto(dst, x)}
    if xp is not np:  # a device with fused kernels (CUDA, or the strict device's stand-ins)
        cases["unfused"] = run(False)
    torch_case = torch_baseline.activation_backward(be, base, declared.name, g, x, y)
    if torch_case is not None:
        cases["torch"] = torch_case
    moved = g.nbytes + saved.nbytes + g.nbytes  # read g and the saved array, write dx, once each
    return cases, moved, 2 * x.nbytes


def kernels_suite(device, quick=True, progress=None, yardstick=None):
    """Rows for every activation backward and size: time, GB/s, % of copy, ratios; each size's
    cases (gpugrad, unfused, torch, copy) timed in turns, block after block (Blocks)."""
    be = devices.get(device)
    if not be.is_cuda:
        sizes = [2**16, 2**20] if quick else [2**16, 2**18, 2**20, 2**22]
    else:
        sizes = [2**16, 2**20, 2**24] if quick else [2**16, 2**18, 2**20, 2**22, 2**24, 2**26]
    yardstick = yardstick if yardstick is not None else Yardstick()
    rows = []
    work = [(a, n) for a in [*activation_backwards(), *FROM_OUTPUT] for n in sizes]
    for i, (activation, n) in enumerate(work):
        cases, moved, copy_bytes = kernel_cases(activation, n, device)
        impls = [impl for impl in ("gpugrad", "unfused", "torch") if impl in cases]
        # a turn of at least 5 repeats and 17 ms: three turns take the 50 ms of a single
        # measurement when nothing is taken again
        blocks = Blocks(cases, device, blocks=3 if quick else 5, min_seconds=0.017,
                        yardstick=yardstick)
        of_copy = {impl: (impl, "copy") for impl in impls}
        against_ours = {impl: ("gpugrad", impl) for impl in impls if impl != "gpugrad"}
        verdicts = blocks.settle([*of_copy.values(), *against_ours.values()])
        copy_secs = blocks.median("copy")
        for impl in impls:
            secs = blocks.median(impl)
            checks = [verdicts[of_copy[impl]]] + (
                [verdicts[against_ours[impl]]] if impl in against_ours else [])
            row = {
                "suite": "kernels", "activation": activation, "n": n, "impl": impl,
                "median_us": secs * 1e6, "GB/s": moved / secs / 1e9,
                "copy GB/s": copy_bytes / copy_secs / 1e9,
                "% of copy": table.ratio_of(checks[0], lambda r: 100 * moved / copy_bytes / r),
                "gpugrad time / this": table.ratio_of(checks[1]) if impl in against_ours else None,
            }
            rows.append(table.with_verdicts(row, checks))
        if progress:
            progress(i + 1, len(work), f"{activation} n={n}")
    return rows

